"""Telemetry never changes a run (engine side): a wrap_* hook that raises after its call_next returned
keeps the inner value (a paid answer, an unchanged tool result); one that raises before call_next is
skipped for that call; both are reported through on_hook_error. strict_hooks=True fails loudly."""

from __future__ import annotations

from typing import Any

import pytest

from looplet import LoopConfig, MockLLMBackend, Usage, tool, tools_from
from looplet.errors import HookError
from tests.unit._harness import MODES, run

SCRIPT = ['{"tool": "echo", "args": {"word": "a"}}', '{"tool": "done", "args": {"answer": "42"}}']


@tool(description="Echo a word.")
def echo(word: str) -> str:
    return word


class RaisesAfter:
    """Telemetry code that fails after the wrapped call came back (a redactor, an exporter)."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        call_next(call)
        raise ValueError("after the llm call")

    async def awrap_llm_call(self, call: Any, call_next: Any) -> Any:
        await call_next(call)
        raise ValueError("after the llm call")

    def wrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        call_next(tool_call)
        raise ValueError("after the tool")

    async def awrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        await call_next(tool_call)
        raise ValueError("after the tool")

    def on_hook_error(self, hook: Any, method: str, error: BaseException) -> None:
        self.errors.append((method, str(error)))


class RaisesBefore(RaisesAfter):
    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        raise ValueError("before the llm call")

    async def awrap_llm_call(self, call: Any, call_next: Any) -> Any:
        raise ValueError("before the llm call")

    def wrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        raise ValueError("before the tool")

    async def awrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        raise ValueError("before the tool")


def plain(mode: str) -> tuple[list[Any], Any]:
    llm = MockLLMBackend(SCRIPT, usage=Usage(10, 2), model="gpt-4o-mini")
    return run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hook_type", [RaisesAfter, RaisesBefore])
def test_a_raising_wrap_hook_changes_nothing_and_is_reported(mode: str, hook_type: type) -> None:
    hook = hook_type()
    llm = MockLLMBackend(SCRIPT, usage=Usage(10, 2), model="gpt-4o-mini")
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[hook])
    base_steps, base = plain(mode)
    assert result.stop_reason == base.stop_reason == "done"
    assert [(s.tool_call.tool, s.tool_result.data, s.tool_result.error) for s in steps] == [
        (s.tool_call.tool, s.tool_result.data, s.tool_result.error) for s in base_steps
    ]
    assert result.llm_calls == base.llm_calls == 2 and result.llm_errors == 0  # no paid answer thrown away
    assert result.usage == base.usage and result.cost_usd == base.cost_usd
    methods = [m for m, _ in hook.errors]
    assert methods.count("wrap_llm_call") == 2 and methods.count("wrap_tool") == 2  # echo and done


@pytest.mark.parametrize("mode", MODES)
def test_strict_hooks_still_fail_loudly(mode: str) -> None:
    llm = MockLLMBackend(SCRIPT)
    config = LoopConfig(strict_hooks=True)
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[RaisesAfter()], config=config
    )
    assert result.stop_reason == "llm_error" and "after the llm call" in (result.error or "")


@pytest.mark.parametrize("mode", MODES)
def test_a_strict_observer_fault_is_a_hook_error(mode: str) -> None:
    class Bad:
        def on_step(self, state: Any, step: Any) -> None:
            raise RuntimeError("observer bug")

    with pytest.raises(HookError):
        run(
            mode,
            llm=MockLLMBackend(SCRIPT),
            tools=tools_from([echo]),
            task={"goal": "x"},
            hooks=[Bad()],
            config=LoopConfig(strict_hooks=True),
        )
