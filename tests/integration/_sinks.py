"""One run seen through every telemetry sink at once, for the tests that compare them.

The run (``scenario``): a first LLM attempt that fails with a retryable 503 and is retried, two parallel
lookups from one answer, a tool that raises, a call a hook denies, a sub-agent (two LLM calls of its own, on
another model) and ``done``. The sinks (``Sinks``): a real OpenTelemetry SDK with an in-memory exporter, a
fresh Prometheus registry, JSON log lines in memory (``configure_logging``, stdlib lines included) and a
``ProvenanceSink`` folder.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from looplet import (
    DefaultState,
    Deny,
    LoopConfig,
    Usage,
    async_composable_loop,
    composable_loop,
    tool,
    tools_from,
)
from looplet.backends.mock import MockLLMBackend
from looplet.errors import LLMError
from looplet.provenance import ProvenanceSink
from looplet.subagents import agent_tool
from looplet.telemetry.logging import LoggingHook, configure_logging, reset_logging
from looplet.telemetry.metrics import MetricsHook
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import run

PARENT_USAGE = Usage(100, 20, cached_input_tokens=30)
CHILD_USAGE = Usage(50, 10)


@tool(description="Look a key up.", concurrent_safe=True)
def lookup(key: str) -> dict[str, Any]:
    return {"key": key, "value": len(key)}


@tool(description="Always fails.")
def explode() -> None:
    raise RuntimeError("the disk is full")


@tool(description="Deletes everything.")
def danger() -> str:  # pragma: no cover - always denied
    raise AssertionError("a denied tool ran")


class DenyDanger:
    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        return Deny("too dangerous") if tool_call.tool == "danger" else None


PARENT_SCRIPT = [
    '[{"tool": "lookup", "args": {"key": "a"}}, {"tool": "lookup", "args": {"key": "bb"}}]',
    '{"tool": "explode", "args": {}}',
    '{"tool": "danger", "args": {}}',
    '{"tool": "research", "args": {"question": "why"}}',
    '{"tool": "done", "args": {"answer": "42"}}',
]
CHILD_SCRIPT = [
    '{"tool": "lookup", "args": {"key": "ccc"}}',
    '{"tool": "done", "args": {"answer": "because"}}',
]
#: LLM attempts that reached a model: the parent's 5 answers and 1 failed attempt, the child's 2 answers
ATTEMPTS, FAILED = 8, 1


def parent_llm() -> MockLLMBackend:
    busy = LLMError("overloaded", retryable=True, status=503)
    return MockLLMBackend([busy, *PARENT_SCRIPT], model="gpt-4o-mini", usage=PARENT_USAGE)


def tools_for(mode: str, hooks: list[Any]) -> Any:
    """The parent's tools; ``research`` runs a child agent with the same telemetry hooks."""

    def child_kwargs() -> dict[str, Any]:
        llm = MockLLMBackend(list(CHILD_SCRIPT), model="gpt-4o", usage=CHILD_USAGE)
        config = LoopConfig(agent_name="child", max_steps=5)
        return dict(llm=llm, task={"goal": "why"}, tools=tools_from([lookup]), hooks=hooks, config=config)

    if mode == "sync":

        @agent_tool(description="Ask the research agent.")
        def research(question: str) -> Any:
            return composable_loop(**child_kwargs())

    else:

        @agent_tool(description="Ask the research agent.")
        async def research(question: str) -> Any:
            return async_composable_loop(**child_kwargs(), state=DefaultState(max_steps=5))

    return tools_from([lookup, explode, danger, research])


class Sinks:
    """Every sink of one run, fresh."""

    def __init__(self, tmp: Path, order: tuple[str, ...] = ("tracing", "metrics", "logging", "trajectory")):
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()
        self.log = io.StringIO()
        logger = configure_logging(json=True, file=self.log)
        self.folder = tmp / "trajectories"
        self.sink = ProvenanceSink(self.folder)
        made: dict[str, Callable[[], Any]] = {
            "tracing": lambda: TracingHook(self.provider),
            "metrics": lambda: MetricsHook(self.registry),
            "logging": lambda: LoggingHook(logger),
            "trajectory": lambda: self.sink.trajectory_hook(),
        }
        self.hooks = [made[name]() for name in order]

    def close(self) -> None:
        reset_logging()
        self.provider.shutdown()

    # -- what each sink holds ---------------------------------------------------------------------------

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line.strip()]

    def sample(self, name: str, **labels: str) -> float:
        """The sum of every sample called ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def trajectories(self) -> dict[str, dict[str, Any]]:
        """trajectory.json of each run written, by agent name."""
        self.sink.flush()
        out = {}
        for path in sorted(self.folder.rglob("trajectory.json")):
            data = json.loads(path.read_text())
            out[data["agent"]] = data
        return out


def run_scenario(mode: str, sinks: Sinks, extra_hooks: list[Any] | None = None) -> tuple[list[Any], Any]:
    """The scenario's run in ``mode`` with the sinks' hooks (plus ``extra_hooks`` after them)."""
    hooks = [DenyDanger(), *sinks.hooks, *(extra_hooks or [])]
    kwargs: dict[str, Any] = dict(
        llm=parent_llm(),
        task={"goal": "answer"},
        tools=tools_for(mode, hooks),
        hooks=hooks,
        config=LoopConfig(
            agent_name="parent", parallel_tools=True, llm_retries=2, llm_backoff_s=0.001, max_steps=10
        ),
    )
    return run(mode, **kwargs, state=DefaultState(max_steps=10))
