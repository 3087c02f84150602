"""Sync tools with a timeout on the main thread run inline, bounded by SIGALRM (looplet.tools.Alarm).

Real signals and real blocking calls; the timeouts are short but every bound is generous.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import pytest

from looplet import LoopConfig, MockLLMBackend, composable_loop, run_loop, tool, tools_from

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX interval timers")


def calls(*items: tuple[str, dict[str, Any]]) -> MockLLMBackend:
    answers = [json.dumps({"tool": name, "args": args}) for name, args in items]
    return MockLLMBackend([*answers, json.dumps({"tool": "done", "args": {"answer": "ok"}})])


def make_tools(seen: list[str]) -> list[Any]:
    @tool(description="Sleep.")
    def nap(s: float) -> str:
        seen.append(threading.current_thread().name)
        time.sleep(s)
        return "rested"

    @tool(description="Sleep, swallowing every Exception.")
    def stubborn(s: float) -> str:
        try:
            time.sleep(s)
        except Exception:  # the timeout is not an Exception: it is not swallowed here
            return "swallowed"
        return "rested"

    @tool(description="Quick, with a short timeout of its own.", timeout_s=0.2)
    def quick() -> str:
        return "quick"

    return [nap, stubborn, quick]


def test_a_blocked_tool_is_interrupted_on_the_loop_thread_and_the_run_goes_on() -> None:
    seen: list[str] = []
    llm = calls(("nap", {"s": 30}), ("stubborn", {"s": 30}), ("nap", {"s": 0}))
    started = time.perf_counter()
    result = run_loop(
        llm=llm, tools=tools_from(make_tools(seen)), task={"goal": "t"}, config=LoopConfig(tool_timeout_s=0.3)
    )
    assert time.perf_counter() - started < 5
    first, second, third = result.steps[:3]
    assert first.tool_result.error_kind == "timeout"
    assert "was interrupted" in first.tool_result.error
    assert second.tool_result.error_kind == "timeout"  # `except Exception` did not swallow it
    assert third.tool_result.data == "rested"
    assert result.stop_reason == "done"
    assert seen == ["MainThread", "MainThread"]  # no thread handoff
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # given back
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_read_on_a_fifo_with_no_writer_is_interrupted(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    @tool(description="Read a FIFO.")
    def read_fifo() -> str:
        with open(fifo) as f:  # blocks in open(): nobody writes
            return f.read()

    result = run_loop(
        llm=calls(("read_fifo", {})),
        tools=tools_from([read_fifo]),
        task={"goal": "t"},
        config=LoopConfig(tool_timeout_s=0.3),
    )
    assert result.steps[0].tool_result.error_kind == "timeout"
    assert result.stop_reason == "done"


def test_a_timer_armed_for_an_earlier_shorter_call_does_not_cut_a_later_call_short() -> None:
    seen: list[str] = []
    llm = calls(("quick", {}), ("nap", {"s": 0.5}))  # the timer is armed for quick's 0.2 s
    result = run_loop(
        llm=llm, tools=tools_from(make_tools(seen)), task={"goal": "t"}, config=LoopConfig(tool_timeout_s=3.0)
    )
    assert [s.tool_result.data for s in result.steps[:2]] == ["quick", "rested"]
    assert result.stop_reason == "done"


def test_breaking_out_of_the_loop_gives_sigalrm_back() -> None:
    seen: list[str] = []
    llm = calls(("nap", {"s": 0}), ("nap", {"s": 0}))
    for step in composable_loop(llm=llm, tools=tools_from(make_tools(seen)), task={"goal": "t"}):
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL  # held while the run runs
        assert step.number == 1
        break
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_handler_of_the_users_is_left_alone_and_the_tool_runs_on_the_worker() -> None:
    fired: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        seen: list[str] = []
        result = run_loop(
            llm=calls(("nap", {"s": 30}), ("nap", {"s": 0})),
            tools=tools_from(make_tools(seen)),
            task={"goal": "t"},
            config=LoopConfig(tool_timeout_s=0.3),
        )
        assert "was abandoned" in result.steps[0].tool_result.error  # the worker's timeout
        assert all(name.startswith("looplet-tool") for name in seen)
        assert signal.getsignal(signal.SIGALRM) is mine
        assert fired == []
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_run_on_another_thread_uses_the_worker() -> None:
    seen: list[str] = []
    out: dict[str, Any] = {}

    def go() -> None:
        out["result"] = run_loop(
            llm=calls(("nap", {"s": 30})),
            tools=tools_from(make_tools(seen)),
            task={"goal": "t"},
            config=LoopConfig(tool_timeout_s=0.3),
        )

    t = threading.Thread(target=go)
    t.start()
    t.join(10)
    assert out["result"].steps[0].tool_result.error_kind == "timeout"
    assert seen and seen[0].startswith("looplet-tool")


def test_a_nested_run_inside_a_tool_keeps_both_timeouts() -> None:
    seen: list[str] = []
    inner_tools = tools_from(make_tools(seen))

    @tool(description="Run a sub-agent.")
    def delegate() -> str:
        inner = run_loop(
            llm=calls(("nap", {"s": 30})),
            tools=inner_tools,
            task={"goal": "sub"},
            config=LoopConfig(tool_timeout_s=0.3),
        )
        return inner.steps[0].tool_result.error_kind or "?"

    outer = run_loop(
        llm=calls(("delegate", {}), ("nap", {"s": 30})),
        tools=tools_from([delegate, *make_tools(seen)]),
        task={"goal": "t"},
        config=LoopConfig(tool_timeout_s=2.0),
    )
    assert outer.steps[0].tool_result.data == "timeout"  # the inner run's tool (on the worker) timed out
    assert outer.steps[1].tool_result.error_kind == "timeout"  # the outer run's alarm still works
    assert seen[0].startswith("looplet-tool") and seen[1] == "MainThread"
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_a_sub_agent_run_past_its_timeout_is_interrupted_and_torn_down() -> None:
    ended: list[str] = []

    class Watch:
        def on_loop_end(self, state: Any, log: Any, ctx: Any, result: Any) -> None:
            ended.append(result.stop_reason)

    inner_tools = tools_from(make_tools([]))

    @tool(description="Run a sub-agent whose tool has no timeout.")
    def delegate() -> str:
        run_loop(
            llm=calls(("nap", {"s": 30})),
            tools=inner_tools,
            task={"goal": "sub"},
            hooks=[Watch()],
            config=LoopConfig(tool_timeout_s=None),
        )
        return "finished"

    started = time.perf_counter()
    outer = run_loop(
        llm=calls(("delegate", {})),
        tools=tools_from([delegate]),
        task={"goal": "t"},
        config=LoopConfig(tool_timeout_s=0.5),
    )
    assert time.perf_counter() - started < 5
    assert outer.steps[0].tool_result.error_kind == "timeout"
    assert ended == ["cancelled"]  # the child's teardown ran before the parent went on
    assert outer.stop_reason == "done"


def test_a_tool_that_uses_sigalrm_itself_does_not_break_later_timeouts() -> None:
    @tool(description="Use a signal timeout of its own, as some libraries do, and put ours back.")
    def own_alarm() -> str:
        previous = signal.signal(signal.SIGALRM, lambda *_: None)
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        signal.setitimer(signal.ITIMER_REAL, 0)  # cancels the looplet timer as well
        signal.signal(signal.SIGALRM, previous)
        return "ok"

    @tool(description="Take SIGALRM and keep it.")
    def keep_alarm() -> str:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        return "kept"

    seen: list[str] = []
    tools = tools_from([own_alarm, keep_alarm, *make_tools(seen)])
    time.sleep(1.1)  # past the once-a-second re-arm of any earlier run in this process
    result = run_loop(
        llm=calls(("own_alarm", {}), ("nap", {"s": 1.2}), ("nap", {"s": 30})),
        tools=tools,
        task={"goal": "t"},
        config=LoopConfig(tool_timeout_s=0.5),
    )
    # the call right after may find the timer cancelled (it is re-armed within a second of calls); the
    # hung call after it is bounded again
    assert [s.tool_result.error_kind for s in result.steps[:3]][::2] == [None, "timeout"]
    try:
        result = run_loop(
            llm=calls(("keep_alarm", {}), ("nap", {"s": 1.2}), ("nap", {"s": 30})),
            tools=tools,
            task={"goal": "t"},
            config=LoopConfig(tool_timeout_s=0.5),
        )
        kinds = [s.tool_result.error_kind for s in result.steps[:3]]
        assert kinds[::2] == [None, "timeout"]  # the worker took over
        assert "was abandoned" in (result.steps[2].tool_result.error or "")
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_IGN  # theirs, left alone
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
