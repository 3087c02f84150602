"""looplet 0.4.1's hook-return helpers, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

0.4.1 exported ``normalize_hook_return(value, slot=...)`` (what a hook's plain return value means in a
given hook method) and ``hook_effect_fields(slot)`` (which ``HookDecision`` fields that method acts
on). In 0.5 the loop reads hook returns itself, as docs/hooks.md lists per method; these functions
answer by that table.
"""

from __future__ import annotations

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
