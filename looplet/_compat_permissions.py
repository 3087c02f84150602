"""Deprecated (removal in 0.7): ``PermissionHook(PermissionEngine(...))`` deciding the 0.4.1 way.

Given a 0.4.1 :class:`looplet.compat.PermissionEngine`, ``PermissionHook`` makes an
:class:`EngineHook`: every call is judged by ``engine.evaluate(call)`` (so its ``ask_handler`` is asked,
once, and ``engine.denials`` records each denial), a call whose arguments, rules or ``policy_version``
changed between the approval and the tool running is denied without asking again, and
``hook.check_permission(call, state) -> bool`` answers as it did. 0.5's ``PermissionHook(rules,
handler=...)`` takes ``looplet.control.Rule``\\ s; an ``ask`` there goes to ``handler`` or pauses the run.
"""

from __future__ import annotations

import copy
from typing import Any

from looplet.compat import warn_renamed
from looplet.control.permission import PermissionHook
from looplet.hooks import Deny, current_run
from looplet.types import ToolCall, ToolResult

__all__ = ["EngineHook"]


def _snapshot(engine: Any, call: ToolCall) -> tuple[Any, ...]:
    """What an approval was given for: the call, the rules and the policy version at that moment."""
    return (call.tool, copy.deepcopy(call.args), list(engine.rules), engine.policy_version)


class EngineHook(PermissionHook):
    """``PermissionHook`` over a 0.4.1 ``PermissionEngine`` (made by ``PermissionHook(engine)``)."""

    def __init__(self, engine: Any, default: str = "allow", **options: Any) -> None:
        super().__init__(engine, default, **options)
        self.engine = engine

    def _deny(self, call: ToolCall, reason: str) -> str:
        self.engine.denials.append({"tool": call.tool, "reason": reason, "args": dict(call.args)})
        return f"{reason} (permission engine)"

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
        outcome = self.engine.evaluate(tool_call)
        if outcome.denied:
            return Deny(f"{outcome.reason} (permission engine)")
        run = current_run()
        if run is not None:  # what was judged, so wrap_tool can tell a later change
            run.scratch.setdefault(self, {})[tool_call.id] = _snapshot(self.engine, tool_call)
        return None

    def wrap_tool(self, tool_call: ToolCall, call_next: Any) -> Any:
        """Right before the tool runs: a call whose arguments, rules or policy version changed since it
        was judged runs only when the engine now allows it without asking."""
        run = current_run()
        judged = run.scratch.get(self, {}).get(tool_call.id) if run is not None else None
        if judged is None or judged == _snapshot(self.engine, tool_call):
            return call_next(tool_call)
        rule = next((r for r in self.engine.rules if r.matches(tool_call)), None)
        action = rule.action if rule is not None else self.engine.default
        if action == "allow":
            return call_next(tool_call)
        text = "Denied: " + self._deny(tool_call, "the call or the policy changed after it was approved")
        return ToolResult(error=f"{text}. Do not retry this call.", error_kind="denied")

    def check_permission(self, tool_call: ToolCall, state: Any) -> bool:
        """0.4.1's ``hook.check_permission(call, state)``: whether the engine allows ``call``."""
        warn_renamed("PermissionHook.check_permission(call, state)", "PermissionHook.rule_for(call).action")
        return not self.engine.evaluate(tool_call).denied
