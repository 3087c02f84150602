"""How many spans per second ProvenanceSink turns into trajectory folders, and what its hook costs a step.

    python bench/provenance_throughput.py [--runs 40] [--repeat 3] [--write]

Spans: the scripted demo agent (about 27 spans a run: the run, its steps, LLM calls and tool calls) traced
by the real TracingHook into an in-memory exporter, with and without content capture. Throughput: those spans
handed to ``sink.export()`` in batches of 512 (a BatchSpanProcessor's default batch), each run's folder
written under a fresh directory (default: bench/, on the machine's disk), with the writer process (the
default) and in-process, fsync off (the default) and on, redaction off and on; wall time of the whole
batch loop; every configuration once per round, median of --repeat rounds. Target: 20,000 spans/s.

Per step: the demo agent without LLM latency, bare, with ``sink.trajectory_hook()`` (which writes the
folder at the end of the run, on the loop's thread), and traced with the sink behind a BatchSpanProcessor
against an in-memory exporter in the same place; best of --repeat, divided by the steps.
``--write`` puts the table into docs/benchmarks.md (its own section).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, revision, settle, today, write_section
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import DefaultState, ProvenanceSink, TracingHook, composable_loop
from looplet.demo import TASK, build

TARGET = 20_000


def record_spans(runs: int, capture: bool) -> list:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    hook = TracingHook(tracer_provider=provider, capture_content=capture)
    for _ in range(runs):
        llm, tools, config = build(latency_s=0.0)
        for _step in composable_loop(
            llm=llm,
            tools=tools,
            task=TASK,
            config=config,
            hooks=[hook],
            state=DefaultState(max_steps=config.max_steps),
        ):
            pass
    return list(memory.get_finished_spans())


_ROOTS: list[Path] = []  # every folder the bench writes, removed at the end


def fresh_dir(where: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=".looplet-bench-", dir=where))
    _ROOTS.append(root)
    return root


def throughput_pass(spans: list, where: str, **sink_args) -> tuple[float, int]:
    """One pass: spans per second and folders written. It writes under a fresh directory, after an
    ``os.sync()`` so the pages an earlier pass left dirty are not flushed on this one's time. Nothing is
    removed until the bench ends: on a disk mounted with ``discard`` (this VM's), deleting thousands of
    files slows every writer for seconds after, and that is not the sink's cost."""
    root = fresh_dir(where)
    sink = ProvenanceSink(root, **sink_args)
    os.sync()
    t = time.perf_counter()
    for i in range(0, len(spans), 512):
        sink.export(spans[i : i + 512])
    sink.force_flush()
    elapsed = time.perf_counter() - t
    return len(spans) / elapsed, len(list(root.iterdir()))


def per_step(repeat: int, where: str, make_hooks, runs: int = 20) -> float:
    """Microseconds per step of the demo agent (no LLM latency) with the hooks ``make_hooks(root)`` returns
    (a list, and a function to call after the runs, inside the timing: a flush), best of ``repeat`` (the
    demo's parallel tool calls make single runs noisy)."""
    times = []
    for _ in range(repeat):
        root = fresh_dir(where)
        hooks, finish = make_hooks(root)
        t = time.perf_counter()
        n = 0
        for _ in range(runs):
            llm, tools, config = build(latency_s=0.0)
            for _step in composable_loop(
                llm=llm,
                tools=tools,
                task=TASK,
                config=config,
                hooks=hooks,
                state=DefaultState(max_steps=config.max_steps),
            ):
                n += 1
        finish()
        times.append((time.perf_counter() - t) / n * 1e6)
    return min(times)


def traced(root: Path, exporter: str, **sink_args):
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    target = ProvenanceSink(root, **sink_args) if exporter == "sink" else InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(target))
    return [TracingHook(tracer_provider=provider, capture_content=True)], provider.force_flush


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    finally:
        for root in _ROOTS:
            shutil.rmtree(root, ignore_errors=True)


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="demo runs whose spans are exported per pass")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--dir",
        default=str(Path(__file__).resolve().parent),
        help="where the folders are written (temporary sub-folders, removed; default: bench/)",
    )
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)

    print(
        f"writing under {args.dir}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    # Every configuration once per round, rounds repeated: the disk's good and bad moments (they last
    # seconds here) fall on all configurations alike; the median of the rounds is reported.
    spans = {capture: record_spans(args.runs, capture) for capture in (True, False)}
    # The fsync configurations get rounds of their own, after the others: each of their files waits for a
    # disk flush, which would also slow whichever configuration came next.
    throughput_pass(spans[False], args.dir)  # a warm-up pass: imports, the writer process, the disk
    print(
        f"waited {settle(fresh_dir(args.dir)):.1f} s for file creation under {args.dir} to run at its usual speed",
        flush=True,
    )
    configs, rates = [], {}
    for fsync in (False, True):
        group = [
            (capture, writer, fsync, redact)
            for capture in (True, False)
            for writer in ("process", "inline")
            for redact in (False, True)
        ]
        configs += group
        rates.update({c: [] for c in group})
        for _round in range(args.repeat):
            for c in group:
                capture, writer, fsync, redact = c
                rate, folders = throughput_pass(
                    spans[capture], args.dir, writer=writer, fsync=fsync, redact=True if redact else None
                )
                assert folders == args.runs, (folders, args.runs)
                rates[c].append(rate)
    rows = []
    for c in configs:
        capture, writer, fsync, redact = c
        rate, per_run = statistics.median(rates[c]), len(spans[capture]) / args.runs
        rows.append((capture, writer, fsync, redact, rate, per_run, min(rates[c]), max(rates[c])))
        print(
            f"content={'on ' if capture else 'off'} writer={writer:<7} fsync={'on ' if fsync else 'off'} "
            f"redact={'on ' if redact else 'off'}: {rate:>9,.0f} spans/s "
            f"({rate / per_run:>6,.0f} runs/s, {1e6 / rate:5.1f} µs/span; rounds {min(rates[c]):,.0f}–"
            f"{max(rates[c]):,.0f}){'  ✓' if rate >= TARGET else '  below the 20,000 target'}",
            flush=True,
        )
    step_rows = []
    configs = [
        ("bare loop", lambda root: ([], lambda: None)),
        (
            "trajectory_hook, redact",
            lambda root: ([ProvenanceSink(root, redact=True).trajectory_hook()], lambda: None),
        ),
        (
            "trajectory_hook, redact, fsync on",
            lambda root: ([ProvenanceSink(root, redact=True, fsync=True).trajectory_hook()], lambda: None),
        ),
        (
            "TracingHook (content) + BatchSpanProcessor(in-memory exporter)",
            lambda root: traced(root, "memory"),
        ),
        (
            "TracingHook (content) + BatchSpanProcessor(ProvenanceSink, redact)",
            lambda root: traced(root, "sink", redact=True),
        ),
        (
            "TracingHook (content) + BatchSpanProcessor(ProvenanceSink, redact, writer inline)",
            lambda root: traced(root, "sink", redact=True, writer="inline"),
        ),
    ]
    for label, make in configs:
        us = per_step(args.repeat, args.dir, make)
        step_rows.append((label, us))
        print(f"per step (demo agent, 20 runs, flush included): {label}: {us:.1f} µs", flush=True)

    if args.write:
        lines = [
            "## ProvenanceSink throughput",
            "",
            f"Measured {today()} on {machine()}, revision {revision()}, load average "
            f"{os.getloadavg()[0]:.1f}, folders under {args.dir}. "
            f"`python bench/provenance_throughput.py --runs {args.runs} --repeat {args.repeat}`",
            "",
            "Spans exported to `ProvenanceSink` in batches of 512 (demo agent), folders "
            "written (target ≥ 20,000 spans/s):",
            "",
            "| content | writer | fsync | redact | spans/s (median) | rounds | runs/s | µs/span |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for capture, writer, fsync, redact, rate, per_run, lo, hi in rows:
            lines.append(
                f"| {'on' if capture else 'off'} | {writer} | {'on' if fsync else 'off'} "
                f"| {'on' if redact else 'off'} | {rate:,.0f} | {lo:,.0f}–{hi:,.0f} | {rate / per_run:,.0f} "
                f"| {1e6 / rate:.1f} |"
            )
        lines += [
            "",
            "Per step of the demo agent without LLM latency (20 runs, the final flush included, best of "
            f"{args.repeat}):",
            "",
            "| configuration | µs/step |",
            "| --- | ---: |",
        ]
        lines += [f"| {label} | {us:.1f} |" for label, us in step_rows]
        print(f"wrote {write_section('provenance_throughput', chr(10).join(lines))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
