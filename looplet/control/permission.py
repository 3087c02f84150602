"""PermissionHook: allow, deny or ask, by tool name and argument patterns; the first matching rule wins.

A pattern is a glob (``"rm *"``, matched with ``fnmatch``) or a compiled regular expression
(``re.compile(r"rm\\s+-rf")``, found with ``search``). Argument values that are not strings are matched
as their JSON text.

Values are also read as shell command lines (``shlex``): split into the commands of a ``;``, ``&&``,
``||``, ``|``, ``&``, newline, ``$(...)`` or backtick chain, each command's words joined by one space.
A ``deny`` or ``ask`` pattern matches when it matches the whole value or any one command, read a second
way too: leading ``VAR=value`` words and wrappers (``sudo``, ``doas``, ``env``, ``nohup``, ``nice``,
``time``, ``timeout``, ``command``, ``exec``, ``xargs``, with their options) dropped, the program named
without its path, and ``sh -c '...'`` read inside. So ``{"cmd": "rm *"}`` catches ``" rm -rf /"``,
``"/bin/rm x"``, ``"sudo rm x"``, ``"rm\\t-rf"`` and ``"echo; rm x"``. An ``allow`` pattern is strict:
it must match every command of the chain as written (so ``"ls *"`` does not allow ``"ls; rm x"``), and a
value that does not parse is not allowed.

The arguments are checked again right before the tool runs (``wrap_tool``): a later ``pre_dispatch`` hook
that rewrote them gets its rewrite judged by the same rules. A denied call becomes an error step whose
message tells the model which rule refused it; ``ask`` rules go through an :class:`ApprovalHook`.

What it does not promise: a program the command runs (a script, ``python -c``, ``find -exec``) can do
anything the rules name; patterns judge text, not effects. Use it with a sandbox for untrusted models.

Observability: every denial is ``emit_event("permission", tool=..., rule=..., decision="deny")``, a log
line, and a count in ``hook.denials[(tool, rule)]``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from looplet.control.approval import ApprovalHook
from looplet.hooks import Deny, current_run, emit_event
from looplet.types import ToolCall, ToolResult

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
        judge = _allows if self.action == "allow" else _catches
        for key, pattern in (self.args or {}).items():
            if key not in tc.args or not judge(pattern, _text(tc.args[key])):
                return False
        return True


def _match(pattern: Pattern, value: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(value) is not None
    return fnmatch.fnmatchcase(value, pattern)


def _catches(pattern: Pattern, value: str) -> bool:
    """deny/ask: the whole value, or any command of it as written or with its wrappers dropped."""
    if _match(pattern, value):
        return True
    commands = split_commands(value)
    if commands is None:  # unbalanced quotes: words split on blanks and separators
        commands = [c.split() for c in re.split(r"[;&|()<>`\n]+|\$\(", value)]
    for words in commands:
        if words and _match(pattern, " ".join(words)):
            return True
        if any(_match(pattern, " ".join(c)) for c in program_commands(words) if c):
            return True
    return False


def _allows(pattern: Pattern, value: str) -> bool:
    """allow: every command of the value, as written, matches (a value that does not parse: no)."""
    commands = split_commands(value)
    if not commands:
        return _match(pattern, value) if commands == [] else False
    return all(_match(pattern, " ".join(words)) for words in commands)


_SEPARATOR_CHARS = frozenset(";&|()<>")
# wrapper -> (its options that take a value, positional words it takes before the command)
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "sudo": (frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "env": (frozenset({"-u", "-C", "-S"}), 0),
    "nohup": (frozenset(), 0),
    "nice": (frozenset({"-n"}), 0),
    "time": (frozenset({"-f", "-o"}), 0),
    "timeout": (frozenset({"-s", "-k"}), 1),
    "command": (frozenset(), 0),
    "exec": (frozenset({"-a"}), 0),
    "builtin": (frozenset(), 0),
    "xargs": (frozenset({"-I", "-n", "-P", "-L", "-d", "-E", "-s", "-a"}), 0),
}
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def split_commands(value: str) -> list[list[str]] | None:
    """The commands of a shell-like string, each as its words (None when the quotes do not balance)."""
    lexer = shlex.shlex(value.replace("`", ";").replace("\n", ";"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    try:
        for token in lexer:
            if token and set(token) <= _SEPARATOR_CHARS:
                commands.append([])
            elif token != "$":
                commands[-1].append(token)
    except ValueError:
        return None
    return [c for c in commands if c]


def program_commands(words: list[str], depth: int = 0) -> list[list[str]]:
    """``words`` with assignments and wrappers dropped and the program named without its path; a
    ``sh -c 'script'`` gives the commands of the script."""
    i = 0
    while i < len(words):
        word = words[i]
        if _ASSIGNMENT.match(word):
            i += 1
            continue
        name = os.path.basename(word)
        if name not in _WRAPPERS:
            break
        takes_value, positionals = _WRAPPERS[name]
        i += 1
        while i < len(words) and (words[i].startswith("-") or _ASSIGNMENT.match(words[i])):
            i += 2 if words[i] in takes_value else 1
        i += positionals
    rest = words[i:]
    if not rest:
        return []
    program = os.path.basename(rest[0])
    if program in _SHELLS and "-c" in rest and depth < 3:
        at = rest.index("-c")
        inner = split_commands(rest[at + 1]) if at + 1 < len(rest) else None
        return [c for words2 in inner or () for c in program_commands(words2, depth + 1)]
    return [[program, *rest[1:]]]


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


def _frozen(args: Any) -> str:
    return _text(args)


class PermissionHook:
    """Check every tool call against ``rules`` in order; the first match decides, else ``default``
    (the done tool is allowed when no rule matches it, so ``default="deny"`` still lets a run finish).

    handler / checkpoint_dir: for ``ask`` decisions, as in :class:`ApprovalHook` (no handler: the run
    pauses with ``awaiting_approval``).
    """

    handles_approvals = True

    def __new__(cls, rules: Any = None, *args: Any, **kwargs: Any) -> PermissionHook:
        if cls is PermissionHook and getattr(rules, "looplet_engine", False):
            from looplet._compat_permissions import EngineHook  # looplet 0.4.1's PermissionEngine

            cls = EngineHook
        return object.__new__(cls)

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
        if rule.action == "deny":
            return Deny(self._denied(tool_call, rule))
        decision = None if rule.action == "allow" else self.approval.decide(state, tool_call, step_num)
        if run is not None:  # what was judged, so wrap_tool can tell a later rewrite
            run.scratch.setdefault(self, {})[tool_call.id] = (tool_call.tool, _frozen(tool_call.args))
        return decision

    def wrap_tool(self, tool_call: ToolCall, call_next: Any) -> Any:
        """Right before the tool runs: arguments that a later hook rewrote are judged again (an ``ask``
        rule there refuses: the approval was for other arguments)."""
        run = current_run()
        judged = run.scratch.get(self, {}).get(tool_call.id) if run is not None else None
        if judged == (tool_call.tool, _frozen(tool_call.args)):
            return call_next(tool_call)
        rule = self.rule_for(tool_call, getattr(getattr(run, "config", None), "done_tool", "done"))
        if rule.action == "allow":
            return call_next(tool_call)
        message = (
            self._denied(tool_call, rule)
            if rule.action == "deny"
            else f"the arguments changed after the approval check and need approval (rule {rule.name!r})"
        )
        text = f"Denied: {message}. Do not retry this call."
        return ToolResult(error=text, error_kind="denied", text=f"ERROR: {text}")

    def _denied(self, tool_call: ToolCall, rule: Rule) -> str:
        self.denials[(tool_call.tool, rule.name or "")] += 1
        emit_event("permission", tool=tool_call.tool, rule=rule.name, decision="deny")
        log.info("permission: %s denied by rule %s", tool_call.tool, rule.name)
        reason = rule.reason or "this call is not permitted"
        return f"{reason} (permission rule {rule.name!r})"

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        self.approval.on_loop_end(state, session_log, context, result)
