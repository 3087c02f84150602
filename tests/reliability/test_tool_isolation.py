"""Tools with ``isolation="process"``: a real child process per call, killed with its process group.

A thread cannot stop a tool that holds the GIL (a catastrophic regular expression): the issue saw a 5 s
timeout return after 63 s. In a child process the timeout holds, the message states it, and whatever
the tool started dies with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looplet import DefaultState, LoopConfig, MockLLMBackend, ToolCall, tool, tools_from
from looplet.tools import BaseToolRegistry, ToolSpec
from tests.reliability._wait import alive, wait_until
from tests.unit._harness import MODES, run


def catastrophic(text: str) -> bool:
    """Exponential backtracking inside the C regex engine: holds the GIL for minutes."""
    return re.match(r"(a+)+$", text) is not None


def boom(x: int) -> int:
    raise ValueError(f"bad x {x}")


def echo(data: dict) -> dict:
    return {"got": data, "pid": os.getpid()}


def leave_a_grandchild(pidfile: str) -> str:
    """Starts a process in the background, records its pid, then hangs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(120)
    return "never"


def exits() -> None:
    sys.exit(3)


def dies() -> None:
    os._exit(7)


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def registry(fn, timeout_s: float | None = 5.0) -> BaseToolRegistry:
    return tools_from([tool(fn, timeout_s=timeout_s, isolation="process")], include_done=True)


def test_a_regex_holding_the_gil_is_stopped_at_its_timeout():
    reg = registry(catastrophic, timeout_s=1.0)
    started = time.monotonic()
    result = reg.dispatch(ToolCall("catastrophic", {"text": "a" * 64 + "!"}, "c1"))
    elapsed = time.monotonic() - started
    assert result.error_kind == "timeout"
    assert "within 1s" in result.error and "process killed" in result.error
    assert elapsed < 8.0, elapsed  # ~1 s plus a process start; the regex alone would run for hours


@pytest.mark.parametrize("mode", MODES)
def test_the_loop_goes_on_after_a_process_tool_times_out(mode):
    llm = MockLLMBackend(
        [
            '{"tool": "catastrophic", "args": {"text": "' + "a" * 64 + '!"}}',
            '{"tool": "done", "args": {"answer": "gave up"}}',
        ]
    )
    steps, result = run(
        mode,
        llm=llm,
        task={"goal": "x"},
        tools=registry(catastrophic, timeout_s=1.0),
        state=DefaultState(max_steps=3),
        config=LoopConfig(max_steps=3),
    )
    assert result.stop_reason == "done"
    assert steps[0].tool_result.error_kind == "timeout"


def test_results_and_exceptions_come_back_as_plain_data():
    ok = registry(echo).dispatch(ToolCall("echo", {"data": {"a": [1, 2]}}, "c1"))
    assert ok.error is None and ok.data["got"] == {"a": [1, 2]} and ok.data["pid"] != os.getpid()
    bad = registry(boom).dispatch(ToolCall("boom", {"x": 3}, "c2"))
    assert bad.error_kind == "tool_exception" and bad.error == "Tool boom raised ValueError: bad x 3"
    exited = registry(exits).dispatch(ToolCall("exits", {}, "c3"))
    assert exited.error_kind == "tool_exception" and "SystemExit" in exited.error
    died = registry(dies).dispatch(ToolCall("dies", {}, "c4"))
    assert died.error_kind == "tool_exception" and "exit code 7" in died.error
    doubled = registry(async_double).dispatch(ToolCall("async_double", {"x": 21}, "c5"))
    assert doubled.data == 42


def test_a_tool_that_cannot_be_pickled_gets_a_clear_error():
    local = 5

    def closure(x: int) -> int:
        return x + local

    result = registry(closure).dispatch(ToolCall("closure", {"x": 1}, "c1"))
    assert result.error_kind == "tool_exception"
    assert "module-level function" in result.error


def test_the_whole_process_group_dies_at_the_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    reg = registry(leave_a_grandchild, timeout_s=3.0)
    result = reg.dispatch(ToolCall("leave_a_grandchild", {"pidfile": str(pidfile)}, "c1"))
    assert result.error_kind == "timeout"
    grandchild = int(pidfile.read_text())
    assert wait_until(lambda: not alive(grandchild)), "the tool's background process outlived the call"


def test_the_async_loop_is_not_blocked_while_a_process_tool_runs():
    reg = registry(catastrophic, timeout_s=1.0)

    async def main() -> tuple[int, object]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.05)

        task = asyncio.create_task(ticker())
        result = await reg.adispatch(ToolCall("catastrophic", {"text": "a" * 64 + "!"}, "c1"))
        task.cancel()
        return ticks, result

    ticks, result = asyncio.run(main())
    assert result.error_kind == "timeout"
    assert ticks >= 5  # the event loop kept turning during the ~1 s call


def test_isolation_is_checked():
    with pytest.raises(ValueError, match="isolation"):
        ToolSpec("x", "x", {}, echo, isolation="container")


def catastrophic_twice(text: str) -> bool:
    return not catastrophic(text) and not catastrophic(text)


def test_a_thread_timeout_held_up_by_the_gil_says_how_long_it_really_took():
    """Without isolation the timeout cannot fire while a regex holds the GIL (the thread is given up on
    only between two of them); the error says how long it really took instead of claiming 0.1 s."""
    # regex calls of ~1-2 s of C code each (26 characters): the waiter can run only between the two, well
    # after its 0.1 s, on a fast machine as on a slow one (shorter calls hand the GIL back in time there)
    reg = tools_from([tool(catastrophic_twice, timeout_s=0.1)], include_done=False)
    result = reg.dispatch(ToolCall("catastrophic_twice", {"text": "a" * 26 + "!"}, "c1"))
    assert result.error_kind == "timeout"
    assert "within 0.1s and was abandoned after" in result.error and "isolation='process'" in result.error
