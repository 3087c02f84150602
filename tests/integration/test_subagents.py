"""Sub-agents: an agent as a tool of another, on both loops, with real OpenTelemetry and Prometheus.

What must hold: the child's ``invoke_agent`` span nests under the parent's ``execute_tool`` span; the child's
tokens and cost reach the parent's RunResult and the calling Step's cost, and are counted once in spans and
metrics; the child's Steps hang under the calling Step; a child that fails becomes a tool error.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from looplet import (
    DefaultState,
    LoopConfig,
    MockLLMBackend,
    Usage,
    async_composable_loop,
    composable_loop,
    run_loop,
    tool,
    tools_from,
)
from looplet.subagents import agent_tool
from looplet.telemetry.cost import cost_of
from looplet.telemetry.metrics import MetricsHook
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import MODES, run

MODEL = "gpt-4o-mini"
U_PARENT = Usage(1000, 100)
U_CHILD = Usage(300, 30)
C_PARENT = cost_of(MODEL, U_PARENT)
C_CHILD = cost_of(MODEL, U_CHILD)


@tool(description="Look a fact up.")
def lookup(q: str) -> str:
    return f"fact about {q}"


def call(name: str, **args: object) -> str:
    return json.dumps({"tool": name, "args": args})


def child_llm(answer: str = "42", steps: int = 1) -> MockLLMBackend:
    script = [call("lookup", q=f"q{i}") for i in range(steps)] + [call("done", answer=answer)]
    return MockLLMBackend(script, model=MODEL, usage=U_CHILD)


def make_agent(mode: str, hooks_for_child, answer: str = "42", max_steps: int = 5, steps: int = 1, **kw):
    """A sub-agent tool: sync (returns the composable_loop generator) or async (returns the async loop)."""
    cfg = LoopConfig(agent_name="researcher", max_steps=max_steps)
    if mode == "sync":

        @agent_tool(description="Research a question.", **kw)
        def research(question: str):
            return composable_loop(
                child_llm(answer, steps),
                task={"goal": question},
                tools=tools_from([lookup]),
                hooks=hooks_for_child(),
                config=cfg,
            )
    else:

        @agent_tool(description="Research a question.", **kw)
        async def research(question: str):
            return async_composable_loop(
                child_llm(answer, steps),
                task={"goal": question},
                tools=tools_from([lookup]),
                hooks=hooks_for_child(),
                config=cfg,
            )

    return research


def parent_llm(*calls: str) -> MockLLMBackend:
    return MockLLMBackend(list(calls) + [call("done", answer="finished")], model=MODEL, usage=U_PARENT)


def by_name(exporter: InMemorySpanExporter, prefix: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


@pytest.mark.parametrize("mode", MODES)
def test_child_run_nests_under_the_parent_execute_tool_span(mode: str, spans) -> None:
    provider, exporter = spans
    research = make_agent(mode, lambda: [TracingHook(tracer_provider=provider)])
    _, result = run(
        mode,
        llm=parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        hooks=[TracingHook(tracer_provider=provider)],
        task={"goal": "answer"},
    )
    assert result.stop_reason == "done"
    agents = {s.attributes["gen_ai.agent.name"]: s for s in by_name(exporter, "invoke_agent")}
    tool_span = next(s for s in by_name(exporter, "execute_tool") if s.name == "execute_tool research")
    child, parent = agents["researcher"], agents["looplet"]
    assert child.parent.span_id == tool_span.context.span_id
    assert child.context.trace_id == parent.context.trace_id == tool_span.context.trace_id
    assert parent.parent is None
    # the child's step spans and chat spans hang under its own invoke_agent, in the same trace
    child_chats = [s for s in by_name(exporter, "chat") if s.context.trace_id == child.context.trace_id]
    assert len(child_chats) == 4  # 2 parent calls + 2 child calls, one trace
    assert all(s.end_time is not None for s in exporter.get_finished_spans())
    # the child's Steps carry its own span ids; the parent's Step carries the parent's
    assert result.steps[0].children[0].trace_id == format(child.context.trace_id, "032x")


@pytest.mark.parametrize("mode", MODES)
def test_usage_and_cost_roll_up_once(mode: str) -> None:
    research = make_agent(mode, lambda: [], steps=2)  # child: 3 LLM calls
    _, result = run(
        mode,
        llm=parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        task={"goal": "answer"},
    )
    assert result.stop_reason == "done"
    first = result.steps[0]
    # parent: 2 calls; child: 3 calls; all in the parent's totals, each once
    assert result.usage.input_tokens == 2 * U_PARENT.input_tokens + 3 * U_CHILD.input_tokens
    assert result.usage.output_tokens == 2 * U_PARENT.output_tokens + 3 * U_CHILD.output_tokens
    assert result.cost_usd == pytest.approx(2 * C_PARENT + 3 * C_CHILD)
    # the calling Step's usage and cost are its own LLM call's; the child's spend is on its tool result
    assert first.cost_usd == pytest.approx(C_PARENT) and first.usage == U_PARENT
    assert first.tool_result.usage.input_tokens == 3 * U_CHILD.input_tokens
    assert first.tool_result.cost_usd == pytest.approx(3 * C_CHILD)
    # each number counted once: the run = the parent's calls + what its tools spent
    spent = sum(s.cost_usd for s in result.steps) + sum(s.tool_result.cost_usd or 0.0 for s in result.steps)
    assert spent == pytest.approx(result.cost_usd)
    assert result.llm_calls == 2  # the parent's own calls
    # the child's Steps are reachable from the parent Step, and serialised with it
    assert [c.tool_call.tool for c in first.children] == ["lookup", "lookup", "done"]
    assert first.tool_result.data == "42"
    d = first.to_dict()
    assert [c["tool_call"]["tool"] for c in d["children"]] == ["lookup", "lookup", "done"]
    assert d["tool_result"]["cost_usd"] == pytest.approx(3 * C_CHILD)


@pytest.mark.parametrize("mode", MODES)
def test_tokens_counted_once_in_spans(mode: str, spans) -> None:
    provider, exporter = spans
    research = make_agent(mode, lambda: [TracingHook(tracer_provider=provider)])
    _, result = run(
        mode,
        llm=parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        hooks=[TracingHook(tracer_provider=provider)],
        task={"goal": "answer"},
    )
    # per-call token counts live on chat spans only, so a backend summing them over the trace gets the truth
    chats = by_name(exporter, "chat")
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == result.usage.input_tokens
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == result.usage.output_tokens
    assert sum(s.attributes["looplet.cost_usd"] for s in chats) == pytest.approx(result.cost_usd)
    for prefix in ("invoke_agent", "execute_tool", "looplet.step"):
        assert not any("gen_ai.usage.input_tokens" in s.attributes for s in by_name(exporter, prefix))
    # the run span's aggregates (looplet.* keys) include the child's, as the RunResult does
    parent = next(
        s for s in by_name(exporter, "invoke_agent") if s.attributes["gen_ai.agent.name"] == "looplet"
    )
    assert parent.attributes["looplet.usage.input_tokens"] == result.usage.input_tokens


@pytest.mark.parametrize("mode", MODES)
def test_tokens_counted_once_in_metrics(mode: str) -> None:
    registry = CollectorRegistry()
    metrics = MetricsHook(registry=registry)  # one hook object shared by parent and child, like configure()
    research = make_agent(mode, lambda: [metrics])
    _, result = run(
        mode,
        llm=parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        hooks=[metrics],
        task={"goal": "answer"},
    )
    # the child's MetricsHook counted the child's tokens and cost; the parent must not count them again
    tokens = sum(
        registry.get_sample_value("looplet_tokens_total", {"agent": a, "model": MODEL, "type": "input"})
        or 0.0
        for a in ("looplet", "researcher")
    )
    cost = sum(
        registry.get_sample_value("looplet_cost_usd_total", {"agent": a, "model": MODEL}) or 0.0
        for a in ("looplet", "researcher")
    )
    assert tokens == result.usage.input_tokens
    assert cost == pytest.approx(result.cost_usd)


@pytest.mark.parametrize("mode", MODES)
def test_a_child_that_does_not_finish_is_a_tool_error_and_the_parent_goes_on(mode: str) -> None:
    research = make_agent(mode, lambda: [], steps=5, max_steps=2)  # stops at max_steps before `done`
    _, result = run(
        mode,
        llm=parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        task={"goal": "answer"},
    )
    assert result.stop_reason == "done" and result.final_output == "finished"
    first = result.steps[0]
    assert first.tool_result.error_kind == "subagent_incomplete"
    assert "max_steps" in first.tool_result.error and "research" in first.tool_result.error
    # what the child spent is still counted, and its steps are still visible
    assert len(first.children) == 2
    assert result.usage.input_tokens == 2 * U_PARENT.input_tokens + 2 * U_CHILD.input_tokens


@pytest.mark.parametrize("mode", MODES)
def test_an_agent_that_returns_its_own_answer(mode: str) -> None:
    """A function that runs the loop itself and returns something else: that value is the result."""
    if mode == "sync":

        @agent_tool
        def summarise(text: str) -> str:
            """Summarise text."""
            r = run_loop(child_llm("short"), task={"goal": text}, tools=tools_from([lookup]))
            return f"summary: {r.final_output}"
    else:

        @agent_tool
        async def summarise(text: str) -> str:
            """Summarise text."""
            state = DefaultState()
            async for _ in async_composable_loop(
                child_llm("short"), task={"goal": text}, tools=tools_from([lookup]), state=state
            ):
                pass
            return f"summary: {state.result.final_output}"

    assert summarise.description == "Summarise text."
    assert summarise.parameters["required"] == ["text"]
    _, result = run(
        mode,
        llm=parent_llm(call("summarise", text="long")),
        tools=tools_from([summarise]),
        task={"goal": "x"},
    )
    first = result.steps[0]
    assert first.tool_result.data == "summary: short"
    assert len(first.children) == 2
    assert result.cost_usd == pytest.approx(2 * C_PARENT + 2 * C_CHILD)


@pytest.mark.parametrize("mode", MODES)
def test_an_agent_that_raises_is_a_tool_exception(mode: str) -> None:
    if mode == "sync":

        @agent_tool(description="Breaks.")
        def broken(q: str) -> str:
            raise RuntimeError("the sub-agent's database is down")
    else:

        @agent_tool(description="Breaks.")
        async def broken(q: str) -> str:
            raise RuntimeError("the sub-agent's database is down")

    _, result = run(
        mode, llm=parent_llm(call("broken", q="x")), tools=tools_from([broken]), task={"goal": "x"}
    )
    assert result.stop_reason == "done"
    assert result.steps[0].tool_result.error_kind == "tool_exception"
    assert "database is down" in result.steps[0].tool_result.error


@pytest.mark.parametrize("mode", MODES)
def test_parallel_sub_agents_each_nest_under_their_own_tool_span(mode: str, spans) -> None:
    provider, exporter = spans
    research = make_agent(mode, lambda: [TracingHook(tracer_provider=provider)], concurrent_safe=True)
    both = MockLLMBackend(
        [
            json.dumps(
                [
                    {"tool": "research", "args": {"question": "a"}},
                    {"tool": "research", "args": {"question": "b"}},
                ]
            ),
            call("done", answer="ok"),
        ],
        model=MODEL,
        usage=U_PARENT,
    )
    _, result = run(
        mode,
        llm=both,
        tools=tools_from([research]),
        hooks=[TracingHook(tracer_provider=provider)],
        task={"goal": "x"},
        config=LoopConfig(parallel_tools=True),
    )
    assert result.stop_reason == "done"
    tools = {s.context.span_id for s in by_name(exporter, "execute_tool research")}
    children = [
        s for s in by_name(exporter, "invoke_agent") if s.attributes["gen_ai.agent.name"] == "researcher"
    ]
    assert len(tools) == 2 and len(children) == 2
    assert {c.parent.span_id for c in children} == tools  # one child under each tool span, none a root
    # each parallel call rolled up only its own child
    assert [len(s.children) for s in result.steps[:2]] == [2, 2]
    assert result.cost_usd == pytest.approx(2 * C_PARENT + 4 * C_CHILD)


def test_a_timed_out_async_child_is_cancelled_and_its_spans_end(spans) -> None:
    provider, exporter = spans
    slow = MockLLMBackend(
        [call("lookup", q="x"), call("done", answer="late")], model=MODEL, usage=U_CHILD, latency_s=2.0
    )

    @agent_tool(description="Slow research.", timeout_s=0.3)
    async def research(question: str):
        return async_composable_loop(
            slow,
            task={"goal": question},
            tools=tools_from([lookup]),
            hooks=[TracingHook(tracer_provider=provider)],
            config=LoopConfig(agent_name="researcher"),
        )

    started = time.perf_counter()
    _, result = run(
        "async",
        llm=parent_llm(call("research", question="q")),
        tools=tools_from([research]),
        hooks=[TracingHook(tracer_provider=provider)],
        task={"goal": "x"},
    )
    assert time.perf_counter() - started < 1.8
    assert result.steps[0].tool_result.error_kind == "timeout"
    assert result.stop_reason == "done"
    child = next(
        s for s in by_name(exporter, "invoke_agent") if s.attributes["gen_ai.agent.name"] == "researcher"
    )
    assert child.end_time is not None and child.attributes["looplet.stop_reason"] == "cancelled"
    assert all(s.end_time is not None for s in exporter.get_finished_spans())


def test_sync_agent_may_run_an_async_loop() -> None:
    """A plain function returning ``async_composable_loop(...)`` works in the sync loop (no running loop)."""

    @agent_tool(description="Research.")
    def research(question: str):
        return async_composable_loop(child_llm(), task={"goal": question}, tools=tools_from([lookup]))

    result = run_loop(
        parent_llm(call("research", question="q")), tools=tools_from([research]), task={"goal": "x"}
    )
    assert result.steps[0].tool_result.data == "42"
    assert len(result.steps[0].children) == 2


def test_bad_arguments_fail_fast() -> None:
    with pytest.raises(TypeError, match="function that runs an agent"):
        agent_tool(42)

    async def main() -> None:  # the sub-agent's schema validates the model's arguments like any tool
        research = make_agent("async", lambda: [])
        result = await research.execute(question="q")
        assert result.data == "42"

    asyncio.run(main())


DOC = Path(__file__).resolve().parents[2] / "docs" / "subagents.md"
DOC_BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(DOC_BLOCKS)))
def test_docs_examples_run(index: int, capsys) -> None:
    exec(compile(DOC_BLOCKS[index], f"{DOC}#{index}", "exec"), {"__name__": "__doc_example__"})
    assert "✓" in capsys.readouterr().out


def test_looplet_show_prints_the_child_steps_indented(tmp_path) -> None:
    """The parent's trajectory, as recorded by ProvenanceSink, keeps the child's Steps under the calling step."""
    import subprocess
    import sys

    from looplet import ProvenanceSink

    sink = ProvenanceSink(tmp_path)
    research = make_agent("sync", lambda: [])
    result = run_loop(
        parent_llm(call("research", question="why?")),
        tools=tools_from([research]),
        task={"goal": "answer"},
        hooks=[sink.trajectory_hook()],
    )
    assert result.stop_reason == "done"
    folder = sink.last_path
    assert folder is not None
    out = subprocess.run(
        [sys.executable, "-m", "looplet", "show", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    parent_line = next(i for i, line in enumerate(lines) if "research(" in line)
    assert "lookup(" in lines[parent_line + 1] and lines[parent_line + 1].startswith("    ")
    assert "done(" in lines[parent_line + 2] and lines[parent_line + 2].startswith("    ")
