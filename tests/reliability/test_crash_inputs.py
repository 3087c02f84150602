"""Model- and tool-controlled input never crashes the loop, and every run is torn down.

Each hostile input (tool arguments that are not a JSON object, a text answer of 50,000 ``[``, a tool
returning a structure nested too deep to print, or an object that is not data) ends with a RunResult
whose stop reason is documented, the run span exported and ``looplet_active_runs`` back to 0. Also:
bounded time (linear text parsing, ``run_timeout_s``), sync tools off the event loop, a genuine bug
surfacing after teardown, a caller breaking out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from looplet import (
    DefaultState,
    LLMResponse,
    LoopConfig,
    MockLLMBackend,
    ToolCall,
    ToolResult,
    async_composable_loop,
    composable_loop,
    tool,
    tools_from,
)
from looplet._engine import parse_text
from looplet.telemetry import MetricsHook, TracingHook
from looplet.types import STOP_REASONS

from ..unit._harness import MODES, run

DONE = '{"tool": "done", "args": {"answer": "ok"}}'


@tool(description="Echo a word.")
def echo(word: str) -> str:
    return word


def _deep(n: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(n):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return root


@tool(description="Returns a very deep list.")
def deep() -> list[Any]:
    return _deep(100_000)


@tool(description="Returns a ToolResult holding an object.")
def opaque() -> ToolResult:
    return ToolResult(data=object())


class Telemetry:
    """TracingHook + MetricsHook on a real in-memory OTel exporter and a fresh prometheus registry."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()
        self.hooks = [TracingHook(tracer_provider=provider), MetricsHook(registry=self.registry)]

    def run_span(self) -> Any:
        (span,) = [s for s in self.exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
        return span

    def active_runs(self) -> float:
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == "looplet_active_runs":
                    total += sample.value
        return total


def _torn_down(tel: Telemetry, result: Any) -> None:
    assert result.stop_reason.partition(":")[0] in STOP_REASONS
    assert tel.run_span().end_time is not None
    assert tel.active_runs() == 0


def script(*answers: Any) -> MockLLMBackend:
    return MockLLMBackend(list(answers))


# -- model-controlled input ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_tool_arguments_that_are_not_json_become_a_tool_error(mode: str) -> None:
    tel = Telemetry()
    bad = LLMResponse(tool_calls=[ToolCall("echo", {"__looplet_invalid_json__": 5}, "c1")])
    steps, result = run(
        mode, llm=script(bad, DONE), tools=tools_from([echo]), task={"goal": "x"}, hooks=tel.hooks
    )
    assert result.stop_reason == "done"
    assert steps[0].tool_result.error is not None and steps[0].tool_result.error_kind
    _torn_down(tel, result)


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_of_50000_brackets_is_fed_back_as_malformed(mode: str) -> None:
    tel = Telemetry()
    state = DefaultState()
    llm = script(LLMResponse(text="[" * 50_000), DONE)
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=tel.hooks, state=state
    )
    assert result.stop_reason == "done" and [s.tool_call.tool for s in steps] == ["done"]
    feedback = [m["content"] for m in state.transcript if m["role"] == "user" and "ERROR" in m["content"]]
    assert len(feedback) == 1 and "nested deeper" in feedback[0]  # the model was told why
    _torn_down(tel, result)


@pytest.mark.parametrize("mode", MODES)
def test_malformed_answers_that_never_improve_end_as_llm_error(mode: str) -> None:
    tel = Telemetry()
    llm = script(LLMResponse(text="[" * 50_000), LLMResponse(text="{" * 50_000))
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=tel.hooks)
    assert result.stop_reason == "llm_error" and "nested deeper" in (result.error or "")
    _torn_down(tel, result)


# -- tool-controlled input -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["deep", "opaque"])
def test_a_tool_result_that_cannot_be_shown_becomes_a_tool_error(mode: str, name: str) -> None:
    tel = Telemetry()
    llm = script(f'{{"tool": "{name}", "args": {{}}}}', DONE)
    steps, result = run(mode, llm=llm, tools=tools_from([deep, opaque]), task={"goal": "x"}, hooks=tel.hooks)
    assert result.stop_reason == "done"
    first = steps[0].tool_result
    assert first.error is not None or (first.text or "").startswith("ERROR")
    _torn_down(tel, result)


# -- bugs and callers ------------------------------------------------------------------------------


class Buggy:
    """A state whose record() has a bug: not a hook, so nothing isolates it."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def record(self, step: Any) -> None:
        raise ZeroDivisionError("a bug in the state")


@pytest.mark.parametrize("mode", MODES)
def test_a_genuine_bug_surfaces_after_teardown_with_its_traceback(mode: str) -> None:
    tel = Telemetry()
    ended: list[Any] = []

    class End:
        def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
            ended.append(result)

    with pytest.raises(ZeroDivisionError) as info:
        run(
            mode,
            llm=script(DONE),
            tools=tools_from([echo]),
            task={"goal": "x"},
            hooks=[*tel.hooks, End()],
            state=Buggy(),
        )
    assert "record" in "".join(str(e.name) for e in info.traceback)
    [result] = ended
    assert result.stop_reason == "error" and "ZeroDivisionError" in result.error
    _torn_down(tel, result)


def test_a_caller_breaking_out_still_tears_down() -> None:
    tel = Telemetry()
    ended: list[Any] = []

    class End:
        def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
            ended.append(result)

    llm = MockLLMBackend(['{"tool": "echo", "args": {"word": "a"}}'], cycle=True)
    for _step in composable_loop(
        llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[*tel.hooks, End()]
    ):
        break
    [result] = ended
    assert result.stop_reason == "cancelled"
    _torn_down(tel, result)


# -- bounded time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fragment", ['{"x":"', '["', "[", "{", '{"a": [', '"\\\\"', "} {"])
def test_parsing_a_1mb_answer_is_linear(fragment: str) -> None:
    text = fragment * (1_000_000 // len(fragment))
    started = time.process_time()
    calls, _problem = parse_text(text)
    took = time.process_time() - started
    assert calls == []
    assert took < 5.0, took  # generous on a loaded machine; linear parsing takes well under a second


def test_a_call_inside_junk_is_still_found() -> None:
    text = (
        'thinking [ not json { "tool": "echo" ' + '{"tool": "echo", "args": {"word": "hi"}}' + " ] trailing {"
    )
    calls, _ = parse_text(text)
    assert [(c.tool, c.args) for c in calls] == [("echo", {"word": "hi"})]
    text = 'He said "hi. {"tool": "echo", "args": {"word": "a \\" }"}}'
    calls, _ = parse_text(text)
    assert [(c.tool, c.args) for c in calls] == [("echo", {"word": 'a " }'})]


@pytest.mark.parametrize("mode", MODES)
def test_run_timeout_ends_the_run_as_timeout(mode: str) -> None:
    tel = Telemetry()

    @tool(description="Sleep a little.")
    def nap() -> str:
        time.sleep(0.05)
        return "rested"

    llm = MockLLMBackend(['{"tool": "nap", "args": {}}'], cycle=True)
    config = LoopConfig(max_steps=10_000, run_timeout_s=0.3)
    started = time.perf_counter()
    steps, result = run(
        mode,
        llm=llm,
        tools=tools_from([nap]),
        task={"goal": "x"},
        hooks=tel.hooks,
        config=config,
        state=DefaultState(max_steps=10_000),
    )
    assert result.stop_reason == "timeout" and "run_timeout_s" in (result.error or "")
    assert 1 <= len(steps) < 10_000
    assert time.perf_counter() - started < 30.0
    _torn_down(tel, result)


def test_tool_timeout_has_a_finite_default() -> None:
    assert LoopConfig().tool_timeout_s is not None and LoopConfig().tool_timeout_s > 0


def test_async_runs_keep_the_event_loop_free_of_sync_tools() -> None:
    """50 concurrent async runs, each calling a sync tool that blocks 0.2 s: run in worker threads,
    they overlap (serialised on the event loop they would take 50 * 0.2 = 10 s)."""

    @tool(description="Block for a while.")
    def block() -> str:
        time.sleep(0.2)
        return "done blocking"

    async def one() -> Any:
        llm = MockLLMBackend(['{"tool": "block", "args": {}}', DONE])
        state = DefaultState()
        async for _ in async_composable_loop(
            llm=llm, tools=tools_from([block]), task={"goal": "x"}, state=state
        ):
            pass
        return state.result

    async def main() -> list[Any]:
        return await asyncio.gather(*(one() for _ in range(50)))

    started = time.perf_counter()
    results = asyncio.run(main())
    took = time.perf_counter() - started
    assert [r.stop_reason for r in results] == ["done"] * 50
    assert took < 5.0, took  # well under 50 * 0.2 s
