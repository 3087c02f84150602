"""Tool faults: whatever a tool does, the run goes on, nothing is lost, the model is told."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from looplet import DefaultState, LoopConfig, MockLLMBackend, tool, tools_from

from ..unit._harness import MODES, run


@tool
def raises() -> None:
    raise ConnectionError("upstream down")


@tool(timeout_s=0.05)
def hangs() -> str:
    time.sleep(2)
    return "never seen"


@tool
def nan() -> dict:
    return {"value": float("nan")}


@tool
def blob() -> bytes:
    return b"\x89PNG"


@tool
def cyclic() -> list:
    x: list = []
    x.append(x)
    return x


@tool
def huge() -> str:
    return "y" * 2_000_000


@tool
def chatty() -> str:
    print("debug output from a tool")
    sys.stderr.write("more noise\n")
    return "fine"


@tool
def exits() -> None:
    sys.exit(3)


@tool(timeout_s=1)
def thread_exit() -> None:
    import _thread

    _thread.exit()  # ends the thread running the tool


@tool
def obj() -> object:
    return object()


CASES = [
    ("raises", "tool_exception"),
    ("hangs", "timeout"),
    ("nan", "unserializable_result"),
    ("blob", "unserializable_result"),
    ("cyclic", "unserializable_result"),
    ("huge", None),
    ("chatty", None),
    ("exits", "tool_exception"),
    ("thread_exit", "tool_exception"),
    ("obj", "unserializable_result"),
]


@pytest.mark.parametrize("mode", MODES)
def test_every_tool_fault_is_an_error_step_and_the_run_finishes(mode: str, capsys) -> None:
    script = [json.dumps({"tool": name, "args": {}}) for name, _ in CASES]
    script.append('{"tool": "done", "args": {"answer": "survived"}}')
    state = DefaultState(max_steps=20)
    started = time.perf_counter()
    steps, result = run(
        mode,
        llm=MockLLMBackend(script),
        tools=tools_from([raises, hangs, nan, blob, cyclic, huge, chatty, exits, thread_exit, obj]),
        task={"goal": "x"},
        state=state,
        config=LoopConfig(max_steps=20, max_tool_output_chars=10_000),
    )
    assert result.stop_reason == "done" and result.final_output == "survived"
    assert [s.tool_result.error_kind for s in steps[:-1]] == [kind for _, kind in CASES]
    assert len(steps) == len(CASES) + 1 and len(state.steps) == len(steps)  # nothing lost
    assert time.perf_counter() - started < 1.5  # the hanging tool was abandoned at its timeout
    huge_text = [m["content"] for m in state.transcript if m["role"] == "tool"][5]
    assert len(huge_text) < 10_200 and "not shown" in huge_text
    assert steps[5].tool_result.data == "y" * 2_000_000  # the full result stays on the Step
    for s in steps:  # every step serialises
        json.dumps(s.to_dict())
    assert "debug output from a tool" in capsys.readouterr().out


def test_abandoned_tool_threads_do_not_block_exit_or_the_next_call() -> None:
    before = threading.active_count()
    steps, result = run(
        "sync",
        llm=MockLLMBackend(
            ['{"tool": "hangs", "args": {}}'] * 3 + ['{"tool": "done", "args": {"answer": "x"}}']
        ),
        tools=tools_from([hangs]),
        task={"goal": "x"},
    )
    assert [s.tool_result.error_kind for s in steps[:3]] == ["timeout"] * 3
    assert all(t.daemon for t in threading.enumerate()[before:])
