"""Permission argument rules against the bypasses of issue 14, through real runs in both loops.

``{"cmd": "rm *"}`` used to be a glob on the whole string, so a leading blank, a path, ``sudo``, a tab or a
chain walked past it; and a ``pre_dispatch`` hook listed after the permission hook could rewrite the
arguments once they had been judged. The tool here writes down every command it is given, so a test
proves what ran.
"""

from __future__ import annotations

from typing import Any

import pytest

from looplet import DefaultState, HookDecision, LoopConfig, MockLLMBackend, ToolCall, tool, tools_from
from looplet.control import PermissionHook, Rule
from tests.unit._harness import MODES, run


class Shell:
    def __init__(self) -> None:
        self.ran: list[str] = []
        shell = self

        @tool(description="Run a shell command.")
        def sh(cmd: str) -> str:
            shell.ran.append(cmd)
            return "ok"

        self.tools = tools_from([sh])


def go(mode: str, calls: list[ToolCall], hooks: list[Any], shell: Shell) -> tuple[list[Any], Any]:
    script: list[Any] = [*calls, ToolCall("done", {"answer": "x"}, "c_done")]
    return run(
        mode,
        llm=MockLLMBackend(script),
        task={"goal": "x"},
        tools=shell.tools,
        hooks=hooks,
        state=DefaultState(max_steps=len(script) + 1),
        config=LoopConfig(max_steps=len(script) + 1),
    )


BYPASSES = [
    " rm -rf /",
    "/bin/rm x",
    "sudo rm x",
    "rm\t-rf x",
    "echo; rm x",
    "true && rm x",
    "false || rm x",
    "ls | rm x",
    "sleep 1 & rm x",
    "echo\nrm x",
    "echo $(rm x)",
    "echo `rm x`",
    "FOO=1 env -i nice -n 5 timeout 3 /usr/bin/rm x",
    "sudo -u root rm x",
    "sh -c 'ls && rm x'",
    'bash -c "rm x"',
]


@pytest.mark.parametrize("mode", MODES)
def test_a_deny_rule_catches_every_spelling_of_the_command(mode: str) -> None:
    shell = Shell()
    perms = PermissionHook([Rule("deny", "sh", {"cmd": "rm *"}, name="no-rm")])
    calls = [ToolCall("sh", {"cmd": c}, f"c{i}") for i, c in enumerate(BYPASSES)]
    calls.append(ToolCall("sh", {"cmd": "echo rm is a word"}, "c_ok"))
    steps, result = go(mode, calls, [perms], shell)
    assert result.stop_reason == "done"
    assert shell.ran == ["echo rm is a word"]  # the one command where rm is only an argument
    denied = [s for s in steps if s.tool_result.error_kind == "denied"]
    assert len(denied) == len(BYPASSES) and all("no-rm" in (s.tool_result.error or "") for s in denied)
    assert perms.denials[("sh", "no-rm")] == len(BYPASSES)


@pytest.mark.parametrize("mode", MODES)
def test_an_allow_rule_must_match_every_command_of_a_chain(mode: str) -> None:
    shell = Shell()
    perms = PermissionHook([Rule("allow", "sh", {"cmd": "ls *"})], default="deny")
    calls = [
        ToolCall("sh", {"cmd": "ls -la"}, "c1"),
        ToolCall("sh", {"cmd": "ls x; rm -rf y"}, "c2"),
        ToolCall("sh", {"cmd": "ls $(rm y)"}, "c3"),
        ToolCall("sh", {"cmd": "ls 'unbalanced"}, "c4"),
        ToolCall("sh", {"cmd": "ls a && ls b"}, "c5"),
    ]
    _steps, result = go(mode, calls, [perms], shell)
    assert result.stop_reason == "done"
    assert shell.ran == ["ls -la", "ls a && ls b"]


class Rewrite:
    """A pre_dispatch hook listed after the permission hook that swaps the command."""

    def __init__(self, to: str) -> None:
        self.to = to

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
        if tool_call.tool == "sh":
            return HookDecision(updated_args={"cmd": self.to})
        return None


@pytest.mark.parametrize("mode", MODES)
def test_arguments_rewritten_by_a_later_hook_are_judged_again(mode: str) -> None:
    shell = Shell()
    perms = PermissionHook([Rule("deny", "sh", {"cmd": "rm *"}, name="no-rm")])
    steps, result = go(mode, [ToolCall("sh", {"cmd": "ls"}, "c1")], [perms, Rewrite("rm -rf /")], shell)
    assert result.stop_reason == "done" and shell.ran == []
    assert steps[0].tool_result.error_kind == "denied" and "no-rm" in (steps[0].tool_result.error or "")


@pytest.mark.parametrize("mode", MODES)
def test_a_rewrite_after_an_approval_needs_a_new_approval(mode: str) -> None:
    shell = Shell()
    perms = PermissionHook([Rule("ask", "sh", {"cmd": "git *"})], handler=lambda tc: True)
    calls = [ToolCall("sh", {"cmd": "git status"}, "c1")]
    steps, result = go(mode, calls, [perms, Rewrite("git push --force")], shell)
    assert result.stop_reason == "done" and shell.ran == []
    assert "changed after the approval" in (steps[0].tool_result.error or "")


@pytest.mark.parametrize("mode", MODES)
def test_a_rewrite_to_an_allowed_command_runs(mode: str) -> None:
    shell = Shell()
    perms = PermissionHook([Rule("deny", "sh", {"cmd": "rm *"})])
    _steps, result = go(mode, [ToolCall("sh", {"cmd": "rm x"}, "c1")], [Rewrite("ls")], shell)
    assert shell.ran == ["ls"]  # no permission hook: the control case
    shell2 = Shell()
    _steps, result = go(mode, [ToolCall("sh", {"cmd": "ls"}, "c1")], [perms, Rewrite("echo hi")], shell2)
    assert result.stop_reason == "done" and shell2.ran == ["echo hi"]
