"""PermissionHook: allow, deny or ask, by tool name and argument patterns; the first matching rule wins.

A pattern is a glob (``"rm *"``, matched against the whole value with ``fnmatch``) or a compiled regular
expression (``re.compile(r"rm\\s+-rf")``, found anywhere in the value with ``search``). Argument values
that are not strings are matched as their JSON text. A denied call becomes an error step whose message
tells the model which rule refused it; ``ask`` rules go through an :class:`ApprovalHook`.

Observability: every denial is ``emit_event("permission", tool=..., rule=..., decision="deny")``, a log
line, and a count in ``hook.denials[(tool, rule)]``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from looplet.control.approval import ApprovalHook
from looplet.hooks import Deny, current_run, emit_event
from looplet.types import ToolCall

__all__ = ["PermissionHook", "Rule"]

log = logging.getLogger("looplet")

ACTIONS = ("allow", "deny", "ask")
Pattern = str | re.Pattern[str]


@dataclass(frozen=True)
class Rule:
    """``Rule("deny", "shell", {"cmd": re.compile(r"rm\\s+-rf")}, reason="destructive")``.

    action: ``allow``, ``deny`` or ``ask``. tool: a glob or regex on the tool name (default every tool).
    args: argument name -> pattern; every one must match (a missing argument does not match).
    reason: what the model is told when denied. name: the rule's name in events and counts (default
    ``"<action>:<tool>"``); keep names few and fixed, they become metric labels.
    """

    action: str
    tool: Pattern = "*"
    args: Mapping[str, Pattern] | None = None
    reason: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Rule action must be one of {ACTIONS}, got {self.action!r}")
        if self.name is None:
            tool = self.tool.pattern if isinstance(self.tool, re.Pattern) else self.tool
            object.__setattr__(self, "name", f"{self.action}:{tool}")

    def matches(self, tc: ToolCall) -> bool:
        if not _match(self.tool, tc.tool):
            return False
        for key, pattern in (self.args or {}).items():
            if key not in tc.args or not _match(pattern, _text(tc.args[key])):
                return False
        return True


def _match(pattern: Pattern, value: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(value) is not None
    return fnmatch.fnmatchcase(value, pattern)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _rule(item: Any) -> Rule:
    if isinstance(item, Rule):
        return item
    if isinstance(item, Mapping):
        return Rule(**item)
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 5:
        return Rule(*item)
    raise TypeError(f"a permission rule is a Rule, a dict or a tuple (action, tool, args), got {item!r}")


_DONE = Rule("allow", name="done")


class PermissionHook:
    """Check every tool call against ``rules`` in order; the first match decides, else ``default``
    (the done tool is allowed when no rule matches it, so ``default="deny"`` still lets a run finish).

    handler / checkpoint_dir: for ``ask`` decisions, as in :class:`ApprovalHook` (no handler: the run
    pauses with ``awaiting_approval``).
    """

    handles_approvals = True

    def __init__(
        self,
        rules: Iterable[Any],
        default: str = "allow",
        *,
        handler: Callable[[ToolCall], Any] | None = None,
        checkpoint_dir: Any = None,
    ) -> None:
        if default not in ACTIONS:
            raise ValueError(f"PermissionHook(default={default!r}): must be one of {ACTIONS}")
        self.rules = tuple(_rule(r) for r in rules)
        self.default = Rule(default, name=f"default:{default}")
        self.approval = ApprovalHook(handler=handler, checkpoint_dir=checkpoint_dir)
        self.denials: Counter[tuple[str, str]] = Counter()

    def rule_for(self, tc: ToolCall, done_tool: str = "done") -> Rule:
        """The rule that decides ``tc``. The loop's done tool is allowed unless a rule names it."""
        rule = next((r for r in self.rules if r.matches(tc)), None)
        if rule is None:
            return _DONE if tc.tool == done_tool else self.default
        return rule

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        return self.approval.still_waiting(state, lambda tc: self.rule_for(tc).action == "ask")

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
        run = current_run()
        rule = self.rule_for(tool_call, getattr(getattr(run, "config", None), "done_tool", "done"))
        if rule.action == "allow":
            return None
        if rule.action == "ask":
            return self.approval.decide(state, tool_call, step_num)
        self.denials[(tool_call.tool, rule.name or "")] += 1
        emit_event("permission", tool=tool_call.tool, rule=rule.name, decision="deny")
        log.info("permission: %s denied by rule %s", tool_call.tool, rule.name)
        reason = rule.reason or "this call is not permitted"
        return Deny(f"{reason} (permission rule {rule.name!r})")

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        self.approval.on_loop_end(state, session_log, context, result)
