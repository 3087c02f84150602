"""One timed agent run, for bench/compare_seed.py. Run by the Python of the venv under test:

    <venv>/bin/python bench/_compare_worker.py --impl ours|seed|agents --steps N --mode MODE

MODE is bare or telemetry (each framework's own), or for ours one hook alone: tracing, metrics, logs.

It prints one JSON line: seconds (the timed run, wall clock), cpu_seconds (CPU time of the whole
process over the same span, all threads: less sensitive to other work on the machine), steps, last
tool, stop, version, and for runs with tracing how many spans were exported. Only the standard
library is imported at module level: the framework under test is imported inside its function, so
the same file runs in every venv.

The workload is the same everywhere: the framework's own scripted model proposes ``echo(x=1)``
N-1 times, then ``done(answer=...)``; one tool call per model response; the run ends on ``done``.
A short warm-up run (same mode) precedes the timed one, so one-off costs (lazy imports, first calls)
count in the import figures, not here. The timed region covers building the run and iterating it
to the end, and, with telemetry on, flushing the span pipeline (so export work is counted too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

WARMUP_STEPS = 20


# --------------------------------------------------------------------------------------------- ours
def ours(steps: int, mode: str) -> dict[str, Any]:
    import looplet
    from looplet import LoopConfig, MockLLMBackend, composable_loop, tool, tools_from

    @tool(description="Echo the number back.")
    def echo(x: int) -> dict:
        return {"x": x}

    tools = tools_from([echo], include_done=True)
    parts = {"telemetry": ("tracing", "metrics", "logs"), "bare": ()}.get(mode, (mode,))
    telemetry = _ours_telemetry(parts) if parts else None

    def one(n: int) -> tuple[int, Any, Any]:
        script = ['{"tool": "echo", "args": {"x": 1}}'] * (n - 1) + [
            '{"tool": "done", "args": {"answer": "ok"}}'
        ]
        llm = MockLLMBackend(script)
        hooks = telemetry["hooks"]() if telemetry else None
        count, last = 0, None
        gen = composable_loop(
            llm=llm, tools=tools, hooks=hooks, config=LoopConfig(max_steps=n), task={"goal": "bench"}
        )
        while True:
            try:
                last = next(gen)
                count += 1
            except StopIteration as stop:
                result = stop.value
                break
        if telemetry:
            telemetry["flush"]()
        return count, last, result

    one(WARMUP_STEPS)
    if telemetry:
        telemetry["reset"]()
    t0, c0 = time.perf_counter(), time.process_time()
    count, last, result = one(steps)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": count,
        "last_tool": last.tool_call.tool,
        "stop": result.stop_reason,
        "version": looplet.__version__,
        "file": looplet.__file__,
    }
    if telemetry:
        out.update(telemetry["check"]())
    return out


def _ours_telemetry(parts: tuple[str, ...]) -> dict[str, Any]:
    """``parts`` of: tracing (SDK TracerProvider, BatchSpanProcessor, in-memory exporter; content capture at its
    default, off), metrics (a private prometheus registry) and JSON logs (``configure_logging(json=True)``
    to /dev/null, one line per LLM call and per tool call): looplet.telemetry's own hooks."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.metrics import MetricsHook
    from looplet.telemetry.tracing import TracingHook

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    hooks: list[Any] = []
    if "tracing" in parts:
        hooks.append(TracingHook(tracer_provider=provider))
    if "metrics" in parts:
        hooks.append(MetricsHook(registry=CollectorRegistry()))
    if "logs" in parts:
        hooks.append(_ours_logging_hook(open("/dev/null", "w")))

    def check() -> dict[str, Any]:
        if "tracing" not in parts:
            return {}
        spans = exporter.get_finished_spans()
        return {"spans": len(spans), "span_names": sorted({s.name.split(" ")[0] for s in spans})}

    return {
        "hooks": lambda: list(hooks),
        "flush": provider.force_flush,
        "reset": exporter.clear,
        "check": check,
    }


def _ours_logging_hook(sink: Any) -> Any:
    """LoggingHook on the pipeline ``configure_logging(json=True)`` builds, writing to ``sink``."""
    from looplet.telemetry.logging import LoggingHook, configure_logging

    return LoggingHook(logger=configure_logging(json=True, file=sink))


# --------------------------------------------------------------------------------------------- seed
def seed(steps: int, mode: str) -> dict[str, Any]:
    """looplet 0.4.1 from PyPI, with its defaults (native tool calls from its MockLLMBackend), its own
    TracingHook(Tracer()) and MetricsHook(MetricsCollector()) when mode is "telemetry"."""
    import looplet
    from looplet import (
        DefaultState,
        LoopConfig,
        MetricsCollector,
        MetricsHook,
        MockLLMBackend,
        Tracer,
        TracingHook,
        composable_loop,
        tools_from,
    )

    def echo(x: int) -> dict:
        """Echo the number back."""
        return {"x": x}

    tools = tools_from([echo], include_done=True)
    tracers: list[Any] = []

    def one(n: int) -> tuple[int, Any]:
        script = ['{"tool": "echo", "args": {"x": 1}}'] * (n - 1) + [
            '{"tool": "done", "args": {"answer": "ok"}}'
        ]
        llm = MockLLMBackend(script, cycle=False)
        hooks: list[Any] = []
        if mode == "telemetry":
            tracer = Tracer()
            tracers.append(tracer)
            hooks = [TracingHook(tracer), MetricsHook(MetricsCollector())]
        count, last = 0, None
        for last in composable_loop(  # noqa: B007 - the last step is returned
            llm=llm,
            tools=tools,
            hooks=hooks,
            state=DefaultState(max_steps=n),
            config=LoopConfig(max_steps=n),
            task={"goal": "bench"},
        ):
            count += 1
        return count, last

    one(WARMUP_STEPS)
    tracers.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    count, last = one(steps)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": count,
        "last_tool": last.tool_call.tool,
        "stop": "done" if last.tool_call.tool == "done" else "?",
        "version": looplet.__version__,
        "file": looplet.__file__,
    }
    if tracers:

        def walk(spans: list[Any]) -> int:
            return sum(1 + walk(s.children) for s in spans)

        out["spans"] = walk(tracers[0].root_spans)
    return out


# ------------------------------------------------------------------------------------------- agents
def agents(steps: int, mode: str) -> dict[str, Any]:
    """The OpenAI Agents SDK with a Model subclass that answers from a script (no network). Tracing off
    (RunConfig(tracing_disabled=True)) for "bare"; for "telemetry", the SDK's tracing on, exported by
    openai-agents-opentelemetry's processor to an SDK TracerProvider (BatchSpanProcessor, in-memory
    exporter); the default processor (which uploads to OpenAI) is replaced in both modes."""
    import asyncio
    from importlib.metadata import version

    from agents import (
        Agent,
        ModelResponse,
        RunConfig,
        Runner,
        Usage,
        function_tool,
        generation_span,
        set_trace_processors,
    )
    from agents.agent import StopAtTools
    from agents.models.interface import Model
    from openai.types.responses import ResponseFunctionToolCall

    class ScriptedModel(Model):
        def __init__(self, n: int) -> None:
            self.n = n
            self.calls = 0

        async def get_response(
            self,
            system_instructions: Any,
            input: Any,
            model_settings: Any,
            tools: Any,
            output_schema: Any,
            handoffs: Any,
            tracing: Any,
            *,
            previous_response_id: Any = None,
            conversation_id: Any = None,
            prompt: Any = None,
        ) -> Any:
            self.calls += 1
            i = self.calls
            name, args = ("echo", '{"x": 1}') if i < self.n else ("done", '{"answer": "ok"}')
            item = ResponseFunctionToolCall(
                id=f"fc_{i}", call_id=f"call_{i}", type="function_call", name=name, arguments=args
            )
            response = ModelResponse(output=[item], usage=Usage(), response_id=f"resp_{i}")
            if tracing.is_disabled():
                return response
            with generation_span(model="scripted", model_config={}):  # what the SDK's own models do
                return response

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    @function_tool
    def echo(x: int) -> dict:
        """Echo the number back."""
        return {"x": x}

    @function_tool
    def done(answer: str) -> str:
        """Finish with the answer."""
        return answer

    provider = exporter = None
    if mode == "telemetry":
        from openai_agents_opentelemetry import OpenTelemetryTracingProcessor
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        set_trace_processors([OpenTelemetryTracingProcessor()])
    else:
        set_trace_processors([])

    def one(n: int) -> Any:
        agent = Agent(
            name="bench",
            instructions="You are a benchmark.",
            tools=[echo, done],
            model=ScriptedModel(n),
            tool_use_behavior=StopAtTools(stop_at_tool_names=["done"]),
        )
        result = asyncio.run(
            Runner.run(
                agent, "bench", max_turns=n + 5, run_config=RunConfig(tracing_disabled=mode != "telemetry")
            )
        )
        if provider is not None:
            provider.force_flush()
        return result

    one(WARMUP_STEPS)
    if exporter is not None:
        exporter.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    result = one(steps)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    calls = [i for i in result.new_items if type(i).__name__ == "ToolCallItem"]
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": len(calls),
        "last_tool": getattr(calls[-1].raw_item, "name", "?"),
        "stop": "done" if result.final_output == "ok" else repr(result.final_output),
        "version": version("openai-agents"),
    }
    if exporter is not None:
        out["spans"] = len(exporter.get_finished_spans())
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "seed", "agents"], required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument(
        "--mode",
        choices=["bare", "telemetry", "tracing", "metrics", "logs"],
        default="bare",
        help="telemetry: each one's full set; tracing/metrics/logs: one of ours alone",
    )
    args = parser.parse_args()
    fn = {"ours": ours, "seed": seed, "agents": agents}[args.impl]
    print(json.dumps(fn(args.steps, args.mode)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
