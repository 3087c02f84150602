"""What ProvenanceSink costs a step, for short and long runs, and on top of the telemetry hooks.

    python bench/provenance_throughput.py [--short 100] [--long 4000] [--rounds 5] [--steps 1000] [--write]

1. **Flat per step.** One agent (MockLLMBackend with usage, one trivial tool call per response, no
   latency) run for --short and for --long steps. For each length, the sink's own work per step:
   * exporter, content off / on: the run's spans (real TracingHook into an in-memory exporter, recorded
     once, untimed) handed to ``ProvenanceSink.export()`` until the folder is on disk;
   * ``trajectory_hook()``: the run with the hook minus the same run without it (recording and writing).
   Every configuration once per round, rounds interleaved; the median and the range of the rounds, and
   the ratio long/short per step (target: <= 1.2).
2. **On top of the telemetry hooks.** Runs of 50 steps, --steps steps in all, with TracingHook
   (BatchSpanProcessor into an in-memory exporter), MetricsHook (private registry) and LoggingHook (JSON to
   /dev/null), with and without a second BatchSpanProcessor holding the sink; the loop's wall time per step
   (the folders are written on the processor's thread meanwhile; their flush after the loop is not in it).
   Target: <= 30 µs/step.
``--write`` puts the tables into docs/benchmarks.md (section ``provenance_throughput``).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, revision, today, write_section
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from looplet import LoopConfig, MockLLMBackend, ProvenanceSink, Usage, run_loop, tool, tools_from
from looplet.telemetry.logging import LoggingHook, configure_logging
from looplet.telemetry.metrics import MetricsHook
from looplet.telemetry.tracing import TracingHook


@tool(description="Look something up.")
def lookup(key: str) -> dict[str, Any]:
    return {"key": key, "value": 42}


TOOLS = tools_from([lookup])


def agent(steps: int, hooks: list[Any]) -> float:
    """One run of ``steps`` tool calls then ``done``; its wall time in seconds."""
    script = [f'{{"tool": "lookup", "args": {{"key": "k{i}"}}}}' for i in range(steps)]
    llm = MockLLMBackend([*script, '{"tool": "done", "args": {"answer": "ok"}}'], usage=Usage(1200, 80))
    config = LoopConfig(max_steps=steps + 1, agent_name="bench")
    gc.collect()
    t = time.perf_counter()
    result = run_loop(llm, {"goal": "look things up"}, TOOLS, hooks=hooks, config=config)
    took = time.perf_counter() - t
    assert result.stop_reason == "done", result.stop_reason
    return took


def recorded_spans(steps: int, capture: bool) -> list[Any]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    agent(steps, [TracingHook(tracer_provider=provider, capture_content=capture)])
    return list(memory.get_finished_spans())


def med(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def flatness(short: int, long: int, rounds: int, root: Path) -> list[str]:
    spans = {(n, c): recorded_spans(n, c) for n in (short, long) for c in (False, True)}
    per_step: dict[tuple[str, int], list[float]] = {}

    def exporter(n: int, capture: bool) -> float:
        sink = ProvenanceSink(tempfile.mkdtemp(dir=root))
        gc.collect()
        t = time.perf_counter()
        sink.export(spans[(n, capture)])
        took = time.perf_counter() - t
        assert sink.last_path is not None
        return took

    def hook(n: int) -> float:
        bare = agent(n, [])
        sink = ProvenanceSink(tempfile.mkdtemp(dir=root))
        hooked = agent(n, [sink.trajectory_hook()])
        assert sink.last_path is not None
        return hooked - bare

    ways: dict[str, Callable[[int], float]] = {
        "exporter, content off": lambda n: exporter(n, False),
        "exporter, content on": lambda n: exporter(n, True),
        "trajectory_hook()": hook,
    }
    for _ in range(rounds):
        for name, fn in ways.items():
            for n in (short, long):
                per_step.setdefault((name, n), []).append(fn(n) / n * 1e6)
    lines = [
        f"| route | µs/step, {short} steps | µs/step, {long} steps | ratio {long}/{short} |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ways:
        a, b = per_step[(name, short)], per_step[(name, long)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        lines.append(
            f"| {name} | {med(a)} | {med(b)} | {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    return lines


def on_top(steps: int, rounds: int, root: Path) -> list[str]:
    logger = configure_logging(json=True, file=open(os.devnull, "w"), stdlib=False)
    runs = max(1, steps // 50)

    def loop(with_sink: bool) -> float:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        sink = ProvenanceSink(tempfile.mkdtemp(dir=root))
        if with_sink:
            provider.add_span_processor(BatchSpanProcessor(sink))
        hooks = [TracingHook(provider), MetricsHook(CollectorRegistry()), LoggingHook(logger)]
        took = sum(agent(50, hooks) for _ in range(runs))
        provider.shutdown()  # untimed: the remaining folders are written here
        assert not with_sink or len(sink.written) == runs
        return took / (runs * 50) * 1e6

    hooks_only: list[float] = []
    with_sink: list[float] = []
    for _ in range(rounds):
        hooks_only.append(loop(False))
        with_sink.append(loop(True))
    diff = [b - a for a, b in zip(hooks_only, with_sink, strict=True)]
    return [
        "| loop | µs/step |",
        "| --- | ---: |",
        f"| TracingHook + MetricsHook + LoggingHook | {med(hooks_only)} |",
        f"| the same + BatchSpanProcessor(ProvenanceSink) | {med(with_sink)} |",
        f"| **the exporter's share** (target <= 30) | **{med(diff)}** |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import logging

    logging.getLogger("looplet").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="looplet-prov-bench-", dir=Path(__file__).resolve().parent))
    try:
        flat = flatness(args.short, args.long, args.rounds, root)
        top = on_top(args.steps, args.rounds, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cmd = (
        f"python bench/provenance_throughput.py --short {args.short} --long {args.long} "
        f"--rounds {args.rounds} --steps {args.steps}"
    )
    lines = [
        "## ProvenanceSink cost per step",
        "",
        f"`{cmd}`, {today()}, {machine()}, commit {revision()}; median (range) of {args.rounds} rounds.",
        "",
        "The sink's own work per step, by run length:",
        "",
        *flat,
        "",
        "The exporter on top of the three telemetry hooks (the loop's wall time per step):",
        "",
        *top,
    ]
    print("\n".join(lines))
    if args.write:
        print(f"wrote {write_section('provenance_throughput', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
