"""Hooks: plain objects whose methods the loop calls, and the decisions they may return.

Two kinds of method:

* observers — ``on_loop_start``, ``pre_prompt``, ``pre_dispatch``, ``post_dispatch``, ``check_done``,
  ``should_stop``, ``on_step``, ``on_loop_end`` and the notifications ``on_llm_call`` (every LLM call
  attempt, answered or failed: an :class:`~looplet.types.LLMCall` carrying its facts), ``on_llm_chunk``,
  ``on_llm_retry``, ``on_hook_error``, ``on_event``. They are called in hook order; an exception is reported and isolated (unless
  ``LoopConfig(strict_hooks=True)``), a returned decision always takes effect.
* around-hooks — ``wrap_llm_call(call, call_next)`` and ``wrap_tool(tool_call, call_next)``. They fold into
  a chain, first hook outermost, so the work runs inside them.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from looplet.compat import HOOK_DECISION_KEYWORDS, LegacyHookDecision, old_hooks, old_keywords, warn_renamed

__all__ = [
    "HookDecision",
    "Deny",
    "Allow",
    "InjectContext",
    "Stop",
    "Run",
    "current_run",
    "emit_event",
    "OBSERVER_METHODS",
    "WRAP_METHODS",
]

log = logging.getLogger("looplet")

#: Observer methods and the names of their positional arguments (checked once per run).
OBSERVER_METHODS: dict[str, tuple[str, ...]] = {
    "on_loop_start": ("state", "session_log", "context"),
    "pre_prompt": ("state", "session_log", "context", "step_num"),
    "pre_dispatch": ("state", "session_log", "tool_call", "step_num"),
    "post_dispatch": ("state", "session_log", "tool_call", "tool_result", "step_num"),
    "check_done": ("state", "session_log", "context", "step_num"),
    "should_stop": ("state", "step_num", "new_entities"),
    "on_step": ("state", "step"),
    "on_loop_end": ("state", "session_log", "context", "result"),
    "on_llm_chunk": ("state", "chunk", "step_num"),
    "on_llm_call": ("state", "call"),
    "on_llm_retry": ("state", "attempt", "error", "delay_s"),
    "on_hook_error": ("hook", "method", "error"),
    "on_event": ("name", "attributes"),
}
WRAP_METHODS = ("wrap_llm_call", "wrap_tool")


@old_keywords(HOOK_DECISION_KEYWORDS)  # looplet 0.4.1's permission=, rewrite_thread=, metadata=
@dataclass(slots=True)
class HookDecision(LegacyHookDecision):  # 0.4.1's is_block()/is_stop()/... (looplet.compat)
    """What a hook wants. Every field is optional; None means "no opinion".

    block: deny the tool call with this reason (``pre_dispatch``).
    stop: end the run with stop reason ``hook_stop:<stop>``.
    updated_args: replace the tool call's arguments before it runs.
    updated_result: replace the tool's result (``post_dispatch``).
    additional_context: text added to the next prompt (``pre_prompt``) or to the tool result (``post_dispatch``).
    retry: with ``block``, tell the model it may retry with other arguments.
    allow: explicit approval; other hooks are still asked and a later ``block`` still wins.
    """

    block: str | None = None
    stop: str | None = None
    updated_args: dict[str, Any] | None = None
    updated_result: Any = None
    additional_context: str | None = None
    retry: bool = False
    allow: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> HookDecision:
        if kwargs and cls is HookDecision and ("metadata" in kwargs or "permission" in kwargs):
            from looplet._compat_decisions import OldHookDecision  # looplet 0.4.1's keywords, kept

            cls = OldHookDecision
        return object.__new__(cls)


class Deny(HookDecision):
    """Refuse a tool call; the model sees ``reason``. ``retry=True`` invites a corrected call."""

    def __init__(self, reason: str, retry: bool = False) -> None:
        super().__init__(block=reason, retry=retry)


class Allow(HookDecision):
    """Explicit approval (informational: a later hook's ``Deny`` still wins)."""

    def __init__(self, *, updated_args: dict[str, Any] | None = None) -> None:
        if updated_args is not None:  # looplet 0.4.1's Allow(updated_args=...), deprecated
            warn_renamed("Allow(updated_args=...)", "HookDecision(updated_args=...)")
        super().__init__(allow=True, updated_args=updated_args)


class InjectContext(HookDecision):
    """Add text to the next prompt (from ``pre_prompt``) or to the tool result (from ``post_dispatch``)."""

    def __init__(self, text: str) -> None:
        super().__init__(additional_context=text)


class Stop(HookDecision):
    """End the run with stop reason ``hook_stop:<reason>``."""

    def __init__(self, reason: str) -> None:
        super().__init__(stop=reason)


class Run:
    """The run in progress, as hooks see it through :func:`current_run` (ids, config, per-hook scratch).

    ``scratch`` is a dict hooks key by themselves (``run.scratch[self]``) to keep per-run data without
    sharing it between concurrent runs. ``trace_id``/``span_id`` are set by a tracing hook and copied onto
    each Step.
    """

    __slots__ = (
        "run_id",
        "agent_name",
        "state",
        "config",
        "task",
        "scratch",
        "trace_id",
        "span_id",
        "model",
        "provider",
        "parent",
        "links",
        "hooks",
        "_events",
        "_totals",
    )

    def __init__(self, run_id: str, agent_name: str, state: Any, config: Any, task: Any) -> None:
        self.run_id = run_id
        self.agent_name = agent_name
        self.state = state
        self.config = config
        self.task = task
        self.scratch: dict[Any, Any] = {}
        self.trace_id: str | None = None
        self.span_id: str | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.parent: Any = None  # a W3C traceparent string or an OpenTelemetry Context, for tracing hooks
        self.links: list[Any] = []  # traceparents of earlier runs this one continues (resume)
        self.hooks: ResolvedHooks | None = None
        self._events: tuple[Callable[..., Any], ...] = ()
        self._totals: Any = None  # the engine's running totals (LLM calls a hook makes join them)


_CURRENT_RUN: contextvars.ContextVar[Run | None] = contextvars.ContextVar("looplet_run", default=None)


def current_run() -> Run | None:
    """The run whose hook, LLM call or tool is executing now (None outside a run)."""
    return _CURRENT_RUN.get()


def emit_event(name: str, **attributes: Any) -> None:
    """Tell the current run's ``on_event`` hooks that something happened (compaction, approval, ...).

    Tracing hooks turn it into a span event, metrics hooks into a counter, logging hooks into a line.
    Outside a run, or when no hook listens, it costs a lookup.
    """
    run = _CURRENT_RUN.get()
    if run is None:
        return
    for fn in run._events:
        try:
            fn(name, attributes)
        except Exception:
            log.exception("on_event hook failed for %s", name)


Bound = tuple[tuple[Any, Callable[..., Any]], ...]  # (hook, its bound method) for each hook that has it


class ResolvedHooks:
    """The hooks of one run, resolved once: one tuple per method holding only the hooks that have it."""

    __slots__ = ("hooks", "async_mode") + tuple(OBSERVER_METHODS) + WRAP_METHODS

    on_loop_start: Bound
    pre_prompt: Bound
    pre_dispatch: Bound
    post_dispatch: Bound
    check_done: Bound
    should_stop: Bound
    on_step: Bound
    on_loop_end: Bound
    on_llm_chunk: Bound
    on_llm_call: Bound
    on_llm_retry: Bound
    on_hook_error: Bound
    on_event: Bound
    wrap_llm_call: Bound
    wrap_tool: Bound

    def __init__(self, hooks: list[Any], *, async_mode: bool, tools: Any = None) -> None:
        hooks = old_hooks(hooks, tools)  # hooks written for looplet 0.4.1 (pre_loop, ...): looplet.compat
        self.hooks = tuple(hooks)
        self.async_mode = async_mode  # hooks that make their own LLM calls pick generate or agenerate by it
        for method, params in OBSERVER_METHODS.items():
            setattr(self, method, tuple(_bound(h, method, params) for h in hooks if _has(h, method)))
        for method in WRAP_METHODS:
            found = []
            for h in hooks:
                fn = getattr(h, "a" + method, None) if async_mode else None
                fn = fn or getattr(h, method, None)
                if callable(fn):
                    _check_signature(h, method, fn, ("call", "call_next"))
                    found.append((h, fn))
            setattr(self, method, tuple(found))


def _has(hook: Any, method: str) -> bool:
    return callable(getattr(hook, method, None))


def _bound(hook: Any, method: str, params: tuple[str, ...]) -> tuple[Any, Callable[..., Any]]:
    fn = getattr(hook, method)
    _check_signature(hook, method, fn, params)
    return hook, fn


#: (function of a bound hook method, parameters) whose signature was checked and fits: a class's
#: methods are checked once, not at every run (inspect.signature costs ~20 µs a method). Bounded.
_FITS: set[tuple[Any, tuple[str, ...]]] = set()


def _check_signature(hook: Any, method: str, fn: Callable[..., Any], params: tuple[str, ...]) -> None:
    func = getattr(fn, "__func__", None)  # the same for every instance of the class
    if func is not None and (func, params) in _FITS:
        return
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*params)
    except TypeError:
        raise TypeError(
            f"hook {type(hook).__name__}.{method}{sig} cannot take the arguments the loop passes: "
            f"({', '.join(params)}). Change it to `def {method}(self, {', '.join(params)})`."
        ) from None
    if func is not None and len(_FITS) < 4096:
        _FITS.add((func, params))
