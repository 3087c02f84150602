"""Many agents in one event loop: does concurrency cost wall time, and does memory stay bounded?

    .venv/bin/python bench/async_scale.py [--steps 5] [--latency 0.05] [--no-write]

Each run is ``async_composable_loop`` on ``MockLLMBackend(latency_s=0.05)`` (an ``asyncio.sleep`` per
model call, standing in for a model server) and an ``async def`` tool, ``--steps`` steps long (the
last one ``done``). Measured, in this order, in one process:

1. one run alone (median of 5): the reference wall time;
2. 1,000 runs together, three waves (first, so nothing else has grown the heap yet): wall time,
   resident memory before, during (sampled from a thread) and after each wave, and the process's
   peak (``resource.getrusage``), so growth per run and growth across waves (a leak) show;
3. 100 runs started together with ``asyncio.gather`` (median of 5 waves): wall time ÷ the reference
   (target ≤ 1.3×); the same with looplet's tracing, metrics and JSON-log hooks on, when they exist;
4. one more 1,000-run wave under ``tracemalloc``: peak Python allocation per run, and what is still
   allocated once the wave is over and collected.

Figures go to stdout and, between ``<!-- async-scale:start -->`` and ``<!-- async-scale:end -->``,
to docs/benchmarks.md; raw numbers to bench/results/async_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, revision, today, write_section

from looplet import LoopConfig, MockLLMBackend, async_composable_loop, tool, tools_from

RESULTS = ROOT / "bench" / "results" / "async_scale.json"


@tool(description="Look a key up.")
async def lookup(key: str) -> dict:
    return {"key": key, "value": len(key)}


TOOLS = tools_from([lookup], include_done=True)


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


class RssSampler:
    """Samples the resident set size from a thread every few milliseconds; ``peak`` is the largest seen
    since ``start()`` (``resource.getrusage`` only knows the whole process's peak)."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.peak = rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak


async def settle() -> None:
    """Let the event loop drop its references to finished tasks, then collect."""
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


async def one_run(steps: int, latency: float, hooks: Any = None) -> str:
    script = [{"tool": "lookup", "args": {"key": f"k{i}"}} for i in range(steps - 1)]
    script.append({"tool": "done", "args": {"answer": "ok"}})
    llm = MockLLMBackend(script, latency_s=latency)
    config = LoopConfig(max_steps=steps)
    n = 0
    state_holder: dict[str, Any] = {}
    gen = async_composable_loop(
        llm=llm, tools=TOOLS, hooks=hooks() if hooks else None, config=config, task={"goal": "scale"}
    )
    async for step in gen:
        n += 1
        state_holder["last"] = step
    assert n == steps and state_holder["last"].tool_call.tool == "done", (n, state_holder)
    return "done"


async def wave(count: int, steps: int, latency: float, hooks: Any = None) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one_run(steps, latency, hooks) for _ in range(count)))
    wall = time.perf_counter() - t0
    assert results.count("done") == count
    return wall


def telemetry_hooks() -> tuple[Any, Any] | None:
    """looplet's tracing (SDK provider, batch processor, in-memory exporter), metrics (private registry)
    and JSON-log hooks, when looplet.telemetry has them; else None."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from prometheus_client import CollectorRegistry

        from looplet.telemetry.metrics import MetricsHook
        from looplet.telemetry.tracing import TracingHook
    except ImportError:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _compare_worker import _ours_logging_hook

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    hooks = [
        TracingHook(tracer_provider=provider),
        MetricsHook(registry=CollectorRegistry()),
        _ours_logging_hook(open("/dev/null", "w")),
    ]
    return (lambda: hooks), provider


async def measure(steps: int, latency: float, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": steps, "latency_s": latency}
    await wave(3, steps, latency)  # warm-up: first-call costs out of the way
    singles = [await wave(1, steps, latency) for _ in range(5)]
    out["single_s"] = singles
    log(f"one run: {statistics.median(singles) * 1e3:.1f} ms (median of 5)")

    await settle()
    base_rss = rss_mb()
    out["rss_before_mb"], out["process_peak_before_mb"] = base_rss, peak_rss_mb()
    waves = []
    sampler = RssSampler()
    for i in range(3):
        before = rss_mb()
        sampler.start()
        wall = await wave(1000, steps, latency)
        peak = sampler.stop()
        await settle()
        after = rss_mb()
        waves.append({"wall_s": wall, "rss_before_mb": before, "peak_rss_mb": peak, "rss_after_mb": after})
        log(
            f"1,000 concurrent, wave {i + 1}: {wall * 1e3:.0f} ms, RSS {before:.1f} -> peak {peak:.1f} -> "
            f"{after:.1f} MB after"
        )
    out["thousand_waves"] = waves
    out["process_peak_after_mb"] = peak_rss_mb()

    hundreds = [await wave(100, steps, latency) for _ in range(5)]
    out["hundred_s"] = hundreds
    ratio = statistics.median(hundreds) / statistics.median(singles)
    out["hundred_ratio"] = ratio
    log(f"100 concurrent: {statistics.median(hundreds) * 1e3:.1f} ms (median of 5) = {ratio:.2f}x one run")

    tele = telemetry_hooks()
    if tele:
        hooks, provider = tele
        await wave(3, steps, latency, hooks)
        t_single = [await wave(1, steps, latency, hooks) for _ in range(5)]
        t_hundred = [await wave(100, steps, latency, hooks) for _ in range(5)]
        provider.force_flush()
        out["telemetry_single_s"], out["telemetry_hundred_s"] = t_single, t_hundred
        out["telemetry_hundred_ratio"] = statistics.median(t_hundred) / statistics.median(singles)
        log(
            f"100 concurrent with telemetry: {statistics.median(t_hundred) * 1e3:.1f} ms = "
            f"{out['telemetry_hundred_ratio']:.2f}x one bare run"
        )
        provider.shutdown()
        del hooks, provider, tele

    await settle()
    tracemalloc.start()
    tracemalloc.reset_peak()
    start_cur, _ = tracemalloc.get_traced_memory()
    await wave(1000, steps, latency)
    _, peak = tracemalloc.get_traced_memory()
    await settle()
    end_cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["tracemalloc_peak_mb"] = (peak - start_cur) / 2**20
    out["tracemalloc_retained_kb"] = (end_cur - start_cur) / 1024
    log(
        f"tracemalloc, 1,000 concurrent: peak {out['tracemalloc_peak_mb']:.1f} MB "
        f"({(peak - start_cur) / 1000 / 1024:.1f} KB per run), "
        f"retained after the wave {out['tracemalloc_retained_kb']:.1f} KB"
    )
    return out


def report(r: dict[str, Any], command: str) -> str:
    med = statistics.median
    single = med(r["single_s"])
    waves = r["thousand_waves"]
    lines = [
        "## Many runs in one event loop\n",
        f"Measured {today()} on {machine()}; looplet at {revision()}; 1-minute load average "
        f"{r['load'][0]} at the start and {r['load'][1]} at the end.  ",
        f"Command: `{command}` (bench/async_scale.py).\n",
        f"Each run: `async_composable_loop`, `MockLLMBackend(latency_s={r['latency_s']})` (an `asyncio.sleep` "
        f"per model call), an `async def` tool, {r['steps']} steps (the last one `done`); runs started together "
        "with `asyncio.gather` in one event loop.\n",
        "| runs at once | wall time (ms, median) | ÷ one run | target |",
        "| ---: | ---: | ---: | --- |",
        f"| 1 | {single * 1e3:.1f} (n={len(r['single_s'])}) | 1.00× | |",
        f"| 100 | {med(r['hundred_s']) * 1e3:.1f} (n={len(r['hundred_s'])}) | {r['hundred_ratio']:.2f}× | "
        f"≤ 1.3× — **{'met' if r['hundred_ratio'] <= 1.3 else 'missed'}** |",
    ]
    if "telemetry_hundred_s" in r:
        lines.append(
            f"| 100, with tracing + metrics + JSON logs | {med(r['telemetry_hundred_s']) * 1e3:.1f} "
            f"(n={len(r['telemetry_hundred_s'])}) | {r['telemetry_hundred_ratio']:.2f}× | |"
        )
    lines.append(
        f"| 1,000 | {med([w['wall_s'] for w in waves]) * 1e3:.1f} (n={len(waves)}) | "
        f"{med([w['wall_s'] for w in waves]) / single:.2f}× | completes |"
    )
    lines.append("")
    growth = max(w["peak_rss_mb"] - w["rss_before_mb"] for w in waves)
    drift = waves[-1]["rss_after_mb"] - waves[0]["rss_after_mb"]
    lines += [
        "Memory with 1,000 runs at once (resident set size in MB, sampled every 5 ms from a thread):\n",
        "| | RSS before | peak RSS during | RSS after (collected) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for i, w in enumerate(waves):
        lines.append(
            f"| wave {i + 1} | {w['rss_before_mb']:.1f} | {w['peak_rss_mb']:.1f} | {w['rss_after_mb']:.1f} |"
        )
    lines += [
        "",
        f"- Largest RSS growth during a 1,000-run wave: {growth:.1f} MB ({growth * 1024 / 1000:.1f} KB per run); "
        f"process peak (`getrusage` ru_maxrss) {r['process_peak_after_mb']:.1f} MB against "
        f"{r['rss_before_mb']:.1f} MB before the first wave.",
        f"- RSS after wave 3 against after wave 1: {drift:+.1f} MB (what the allocator keeps for reuse, "
        "not Python objects: see the next line).",
        f"- tracemalloc over one 1,000-run wave: peak {r['tracemalloc_peak_mb']:.1f} MB of Python allocations "
        f"({r['tracemalloc_peak_mb'] * 1024 / 1000:.1f} KB per run); still allocated after the wave and a "
        f"collection: {r['tracemalloc_retained_kb']:.1f} KB.",
        "",
    ]
    if "telemetry_hundred_s" not in r:
        lines.append(
            "- The row with tracing, metrics and JSON logs is missing: looplet.telemetry's hooks were not "
            "importable when this ran.\n"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print only: write neither docs/benchmarks.md nor bench/results/",
    )
    args = parser.parse_args(argv)
    command = "python bench/async_scale.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {msg}", flush=True)

    load_at_start = f"{os.getloadavg()[0]:.2f}"
    r = asyncio.run(measure(args.steps, args.latency, log))
    r["load"] = (load_at_start, f"{os.getloadavg()[0]:.2f}")
    text = report(r, command)
    print()
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {"date": today(), "machine": machine(), "revision": revision(), "command": command, **r},
                indent=1,
            )
            + "\n"
        )
        write_section("async-scale", text)
        log(f"wrote docs/benchmarks.md and {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
