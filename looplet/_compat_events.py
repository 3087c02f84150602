"""Deprecated (removal in 0.7): looplet 0.4.1's lifecycle events, ``hook.on_event(payload)``.

A 0.4.1 hook had one ``on_event(payload)`` method for every lifecycle event (``payload.event`` a
:class:`LifecycleEvent`), whose return value could steer the run like a named hook method's. In 0.5
hooks have named methods that return decisions, and ``on_event(name, attributes)`` only observes
events such as ``permission`` or ``compaction``.

:class:`OldEventHook` wraps such a hook (``looplet.compat.old_hooks`` does it, with a warning) and
raises 0.4.1's events from 0.5's hook methods:

- ``session_start`` from ``on_loop_start``;
- ``pre_llm_call`` from ``pre_prompt`` (``context_budget``: the transcript's characters and estimated
  tokens): text or ``InjectContext`` goes into this prompt;
- ``post_llm_response`` before the first tool call of a response runs (``pre_dispatch``): text or
  ``InjectContext`` goes into the next prompt;
- ``pre_tool_use`` from ``pre_dispatch`` (a ``Deny``/``Block`` refuses the call),
  ``post_tool_use``/``post_tool_failure`` from ``post_dispatch`` (a note for the model);
- ``stop`` from ``on_loop_end`` (``termination_reason`` is the run's stop reason).

A ``Stop(reason)`` returned for any of them ends the run after the step in progress, with stop reason
``hook_stop:<reason>``, as in 0.4.1. 0.5's own events (``on_event(name, attributes)``) are not passed on.
The hook's own methods of the same names still run after the event.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

from looplet._compat_compact import EventPayload, LifecycleEvent  # 0.4.1's records, shared
from looplet.compat import warn_renamed
from looplet.hooks import HookDecision

__all__ = ["EventPayload", "LifecycleEvent", "OldEventHook", "emit_event", "emit_event_async"]


log = logging.getLogger("looplet")


def _then(value: Any, then: Callable[[Any], Any]) -> Any:
    """``then(value)``; when ``value`` is awaitable (an ``async def on_event``), a coroutine that awaits
    it first (and what ``then`` returns, if that is awaitable too)."""
    if not inspect.isawaitable(value):
        return then(value)

    async def chained() -> Any:
        out = then(await value)
        return (await out) if inspect.isawaitable(out) else out

    return chained()


def _text(answer: Any) -> Any:
    """Context an event's answer adds for the model: a string, or an ``InjectContext``'s text."""
    if isinstance(answer, str):
        return answer or None
    if isinstance(answer, HookDecision):
        return answer.additional_context
    return None


class OldEventHook:
    """A hook with 0.4.1's ``on_event(payload)``, as the 0.5 loop sees it (see the module's text)."""

    def __init__(self, hook: Any) -> None:
        self._hook = hook
        self._stop: str | None = None  # a Stop an event asked for: the run ends after this step
        self._carry: str | None = None  # context from post_llm_response, for the next prompt
        self._responded = -1  # the last step whose post_llm_response was raised

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)

    def __repr__(self) -> str:
        return f"OldEventHook({self._hook!r})"

    def _raise(self, event: LifecycleEvent, **fields: Any) -> Any:
        return self._hook.on_event(EventPayload(event, **fields))

    def _steer(self, answer: Any) -> Any:
        """Keep a Stop for should_stop; give back what else the answer says."""
        if isinstance(answer, HookDecision) and answer.stop:
            self._stop = self._stop or answer.stop
            return None
        return answer

    def _methods(self) -> frozenset[str]:
        return _methods(self._hook)

    def _own(self, name: str, *args: Any) -> Any:
        own = getattr(self._hook, name, None)
        return own(*args) if callable(own) else None

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        """0.5's events have no 0.4.1 payload: not passed on."""

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> Any:
        self._stop, self._carry, self._responded = None, None, -1
        first = self._raise(
            LifecycleEvent.SESSION_START, state=state, session_log=session_log, context=context
        )
        return _then(
            first, lambda a: (self._steer(a), self._own("on_loop_start", state, session_log, context))[1]
        )

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        fields = dict(step_num=step_num, state=state, session_log=session_log, context=context)
        fields["context_budget"] = _budget(session_log)

        def combine(answer: Any) -> Any:
            texts = [self._carry, _text(self._steer(answer))]
            self._carry = None
            return _then(
                self._own("pre_prompt", state, session_log, context, step_num), lambda own: _join(texts, own)
            )

        return _then(self._raise(LifecycleEvent.PRE_LLM_CALL, **fields), combine)

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        fields = dict(step_num=step_num, state=state, session_log=session_log)
        if step_num != self._responded:  # the first call of this response
            self._responded = step_num
            answered = self._raise(LifecycleEvent.POST_LLM_RESPONSE, **fields)
            return _then(answered, lambda a: self._responded_then(a, state, session_log, tool_call, step_num))
        return self._tool_use(state, session_log, tool_call, step_num)

    def _responded_then(
        self, answer: Any, state: Any, session_log: Any, tool_call: Any, step_num: int
    ) -> Any:
        self._carry = _text(self._steer(answer)) or self._carry
        return self._tool_use(state, session_log, tool_call, step_num)

    def _tool_use(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        if "pre_dispatch" in self._methods():  # 0.4.1 asked it once: the method
            return self._own("pre_dispatch", state, session_log, tool_call, step_num)
        fields = dict(step_num=step_num, state=state, session_log=session_log, tool_call=tool_call)

        def decide(answer: Any) -> Any:
            answer = self._steer(answer)
            if isinstance(answer, HookDecision) and answer.block:
                return answer
            return self._own("pre_dispatch", state, session_log, tool_call, step_num)

        return _then(self._raise(LifecycleEvent.PRE_TOOL_USE, **fields), decide)

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> Any:
        if "post_dispatch" in self._methods():  # 0.4.1 asked it once: the method
            return self._own("post_dispatch", state, session_log, tool_call, tool_result, step_num)
        event = LifecycleEvent.POST_TOOL_FAILURE if tool_result.error else LifecycleEvent.POST_TOOL_USE
        fields = dict(step_num=step_num, state=state, session_log=session_log, tool_call=tool_call)

        def combine(answer: Any) -> Any:
            note = _text(self._steer(answer))
            own = self._own("post_dispatch", state, session_log, tool_call, tool_result, step_num)
            return _then(
                own,
                lambda mine: (
                    mine if note is None else (f"{note}\n\n{mine}" if isinstance(mine, str) else mine or note)
                ),
            )

        return _then(self._raise(event, tool_result=tool_result, **fields), combine)

    def should_stop(self, state: Any, step_num: int, new_entities: Any) -> Any:
        if self._stop is not None:
            return HookDecision(stop=self._stop)
        return self._own("should_stop", state, step_num, new_entities)

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> Any:
        reason = getattr(result, "stop_reason", None)
        fields = dict(state=state, session_log=session_log, context=context, termination_reason=reason)
        return _then(
            self._raise(LifecycleEvent.STOP, **fields),
            lambda _: self._own("on_loop_end", state, session_log, context, result),
        )


def _join(texts: list[Any], own: Any) -> Any:
    """The context of a prompt: the events' texts, then what the hook's own ``pre_prompt`` returned."""
    parts = [t for t in texts if t]
    if not parts:
        return own
    if own is None or isinstance(own, str):
        return "\n\n".join([*parts, *([own] if own else [])])
    return own  # a decision of the hook's own pre_prompt (a Stop, ...) wins


def _budget(session_log: Any) -> dict[str, int]:
    """0.4.1's ``payload.context_budget`` of a prompt: its characters, and tokens estimated at four
    characters each (the transcript's text; the tool list is not counted)."""
    chars = sum(len(str(m.get("content") or "")) for m in session_log or () if isinstance(m, dict))
    return {"prompt_chars": chars, "estimated_tokens": (chars + 3) // 4}


#: 0.4.1 events a hook does not get through ``on_event`` when it has the named method for them.
_EQUIVALENT = {
    LifecycleEvent.PRE_TOOL_USE: "pre_dispatch",
    LifecycleEvent.POST_TOOL_USE: "post_dispatch",
    LifecycleEvent.POST_TOOL_FAILURE: "post_dispatch",
}


def _methods(hook: Any) -> frozenset[str]:
    return frozenset(m for m in ("pre_dispatch", "post_dispatch") if callable(getattr(hook, m, None)))


def _listeners(hooks: list[Any], event: Any) -> Iterator[Any]:
    """The ``on_event(payload)`` of each hook that gets ``event``, read from the live list (a hook one
    of them adds is asked too)."""
    from looplet.compat import _event_payload

    i = 0
    while i < len(hooks):
        hook = hooks[i]
        i += 1
        skip = _EQUIVALENT.get(event)
        if _event_payload(hook) and not (skip and callable(getattr(hook, skip, None))):
            yield hook.on_event


def emit_event(hooks: Any, event: Any = None, **fields: Any) -> Any:
    """0.4.1's ``emit_event(hooks, event, **payload)``: every hook's ``on_event(payload)`` (not those with
    the named method for that event), a hook that raises logged and skipped; returns the decisions they
    gave. Given a name first (``emit_event("compaction", **attributes)``) it is 0.5's
    :func:`looplet.emit_event`."""
    if isinstance(hooks, str):
        from looplet.hooks import emit_event as emit

        return emit(hooks, **fields)
    warn_renamed(
        "emit_event(hooks, event, ...)", "the named hook methods; looplet.emit_event(name, **attributes)"
    )
    decisions = []
    for fn in _listeners(hooks, event):
        try:
            answer = fn(EventPayload(event, **fields))
        except Exception:
            log.exception("on_event hook raised; continuing")
            continue
        if isinstance(answer, HookDecision):
            decisions.append(answer)
    return decisions


async def emit_event_async(hooks: list[Any], event: Any, **fields: Any) -> list[Any]:
    """:func:`emit_event` awaiting the hooks' ``async def on_event``."""
    warn_renamed("emit_event_async(hooks, event, ...)", "the named hook methods (the async loop awaits them)")
    decisions = []
    for fn in _listeners(hooks, event):
        try:
            answer = fn(EventPayload(event, **fields))
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            log.exception("on_event hook raised; continuing")
            continue
        if isinstance(answer, HookDecision):
            decisions.append(answer)
    return decisions
