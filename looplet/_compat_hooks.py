"""looplet 0.4.1's hook-return helpers, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

0.4.1 exported ``normalize_hook_return(value, slot=...)`` (what a hook's plain return value means in a
given hook method) and ``hook_effect_fields(slot)`` (which ``HookDecision`` fields that method acts
on). In 0.5 the loop reads hook returns itself, as docs/hooks.md lists per method; these functions
answer by that table.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import fields
from typing import Any

from looplet.compat import warn_renamed

__all__ = ["hook_effect_fields", "ignored_effects", "normalize_hook_return"]

log = logging.getLogger("looplet.compat")

#: The HookDecision fields each 0.5 hook method acts on (docs/hooks.md); 0.4.1's other names for them.
_EFFECTS = {
    "pre_prompt": ("stop", "additional_context"),
    "pre_dispatch": ("block", "stop", "updated_args", "updated_result", "retry", "allow"),
    "post_dispatch": ("stop", "updated_result", "additional_context"),
    "check_done": ("block",),
    "should_stop": ("stop",),
    "stop": (),
}
_ALIASES = {
    "pre_tool_use": "pre_dispatch",
    "check_permission": "pre_dispatch",
    "post_tool_use": "post_dispatch",
    "post_tool_failure": "post_dispatch",
    "build_briefing": "pre_prompt",
}
_TEXT_IS_CONTEXT = frozenset({"pre_prompt", "post_dispatch"})


def hook_effect_fields(slot: str) -> frozenset[str]:
    """The ``HookDecision`` fields the hook method ``slot`` acts on (all of them for a slot 0.5 does not
    know)."""
    from looplet.hooks import HookDecision

    slot = _ALIASES.get(slot, slot)
    if slot not in _EFFECTS:
        return frozenset(f.name for f in fields(HookDecision))
    return frozenset(_EFFECTS[slot])


def ignored_effects(decision: Any, slot: str) -> tuple[str, ...]:
    """The fields ``decision`` sets that the hook method ``slot`` does not act on, in field order."""
    acts_on = hook_effect_fields(slot)
    return tuple(
        f.name
        for f in fields(decision)
        if f.name not in acts_on and getattr(decision, f.name) not in (None, False)
    )


def normalize_hook_return(value: Any, *, slot: str) -> Any:
    """0.4.1's ``normalize_hook_return(value, slot=...)``: a hook's return as a ``HookDecision`` (or
    None). A string is extra context (``pre_prompt``, ``post_dispatch``) or a refusal (``check_done``,
    ``pre_dispatch``); a bool is a permission (``check_permission``) or a stop (``should_stop``); a
    ``ToolResult`` replaces the tool's result. Fields the slot does not act on are logged."""
    from looplet.hooks import HookDecision
    from looplet.types import ToolResult

    warn_renamed("normalize_hook_return(value, slot=...)", "return the values docs/hooks.md lists per method")
    canonical = _ALIASES.get(slot, slot)
    if value is None:
        return None
    if isinstance(value, HookDecision):
        ignored = ignored_effects(value, slot)
        if ignored:
            log.warning("hook slot %r ignores effect fields %s", slot, ", ".join(ignored))
        if value.block is not None and (canonical == "pre_dispatch" or slot == "check_permission"):
            from looplet._compat_decisions import as_denial

            return as_denial(value)
        return value
    if isinstance(value, ToolResult):
        return HookDecision(updated_result=value)
    if isinstance(value, bool):
        if slot == "check_permission":
            return HookDecision(allow=True) if value else HookDecision(block="permission denied")
        if canonical in ("should_stop", "stop"):
            return HookDecision(stop="should_stop") if value else None
    elif isinstance(value, str):
        if canonical in _TEXT_IS_CONTEXT:
            return HookDecision(additional_context=value)
        return HookDecision(block=value)
    raise TypeError(
        f"a {slot} hook returned {type(value).__name__}: expected None, str, bool, ToolResult or HookDecision"
    )


# ---------------------------------------------------------------- check_permission after every pre_dispatch


def permission_last(original: list[Any], hooks: list[Any]) -> list[Any]:
    """0.4.1's order for hook lists that mix ``check_permission`` with other ``pre_dispatch`` hooks:
    every ``pre_dispatch`` first (in list order, arguments rewritten as they go, a supplied result
    kept), then every ``check_permission`` on the final call, even when a hook supplied the result.
    ``original`` is the hook list as given, ``hooks`` the same list as :func:`looplet.compat.old_hooks`
    wrapped it; returns ``hooks`` unchanged unless the order matters (or a ``pre_dispatch`` is async)."""
    gates = [(h, h.pre_dispatch) for h in original if callable(getattr(h, "pre_dispatch", None))]
    permits = [(h, h.check_permission) for h in original if callable(getattr(h, "check_permission", None))]
    involved = [i for i, h in enumerate(original) if any(h is g for g, _ in gates + permits)]
    if not permits or len(involved) < 2 or any(inspect.iscoroutinefunction(fn) for _, fn in gates):
        return hooks
    out: list[Any] = [_Hidden(h) if i in involved else h for i, h in enumerate(hooks)]
    out.insert(involved[0], PermissionLast(gates, permits))
    return out


class _Hidden:
    """A hook whose ``pre_dispatch`` :class:`PermissionLast` calls instead of the loop."""

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        if name == "pre_dispatch":
            raise AttributeError(name)
        return getattr(self._hook, name)

    def __repr__(self) -> str:
        return repr(self._hook)


class PermissionLast:
    """The ``pre_dispatch`` of a 0.4.1 hook list (see :func:`permission_last`). A ``pre_dispatch`` that
    raises is logged and skipped, as the loop does; a ``check_permission`` that raises denies."""

    def __init__(self, gates: list[tuple[Any, Any]], permits: list[tuple[Any, Any]]) -> None:
        self.gates = gates
        self.permits = permits

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        from looplet.hooks import Deny, HookDecision
        from looplet.types import ToolCall, ToolResult

        call, result = tool_call, None
        for hook, fn in self.gates:
            try:
                r = fn(state, session_log, call, step_num)
            except Exception:
                log.warning("hook %s.pre_dispatch raised", type(hook).__name__, exc_info=True)
                continue
            if isinstance(r, ToolResult):
                result = r
                break
            if isinstance(r, HookDecision):
                if r.block is not None or r.stop:
                    return r  # refused or stopped: permission is not asked
                if r.updated_args is not None:
                    call = ToolCall(call.tool, dict(r.updated_args), call.id, call.reasoning)
                if r.updated_result is not None:
                    result = r.updated_result
                    break
        for hook, permit in self.permits:
            try:
                denied = permission_answer(permit(call, state))
            except Exception:
                log.warning("hook %s.check_permission raised: denied", type(hook).__name__, exc_info=True)
                denied = Deny("permission denied")
            if denied is not None:
                return denied
        if result is not None:
            return result
        return HookDecision(updated_args=dict(call.args)) if call is not tool_call else None


def permission_answer(answer: Any) -> Any:
    """What a 0.4.1 ``check_permission`` answer means: ``False`` denies, a decision with ``block`` denies
    with its reason; anything else allows (None)."""
    from looplet.hooks import Deny, HookDecision

    if answer is False:
        return Deny("permission denied")
    if isinstance(answer, HookDecision) and answer.block is not None:
        return Deny(answer.block, retry=answer.retry)
    return None
