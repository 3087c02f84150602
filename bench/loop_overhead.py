"""The loop's own cost per step, and the cold import time.

    python bench/loop_overhead.py [--repeat 5] [--baseline DIR] [--write]

Per-step: MockLLMBackend (no latency, no usage) proposing one trivial tool call per response, no hooks,
at 100, 1,000 and 10,000 steps, in four configurations:

* ``sync``: ``composable_loop``, default ``LoopConfig``: a sync tool with the default 120 s
  ``tool_timeout_s`` runs on the loop's thread, bounded by the run's SIGALRM timer (``looplet.tools.Alarm``);
* ``sync-inline``: the same with ``tool_timeout_s=None``: the tool runs on the loop's thread (the
  loop's own work, nothing else);
* ``async``: ``async_composable_loop``, default config, an ``async def`` tool (awaited on the loop);
* ``async-sync-tool``: the same with a sync tool, which always runs on the worker thread.

Each round runs every configuration once in a fresh interpreter (``--child``), the trees in turn (A B A
B) when ``--baseline DIR`` names another checkout of looplet to compare with in the same run. The figure
is the process's CPU time (all threads) per step; median (min-max) over the rounds.
Import: a fresh interpreter running ``import looplet`` against one running ``pass``, medians of 15 each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _report

STEPS = (100, 1_000, 10_000)
CONFIGS = ("sync", "sync-inline", "async", "async-sync-tool")


def _run(config: str, n: int, gc_off: bool = False) -> float:
    """CPU seconds of one run of ``n`` steps in ``config`` (looplet imported from sys.path)."""
    from looplet import (
        DefaultState,
        LoopConfig,
        MockLLMBackend,
        async_composable_loop,
        composable_loop,
        tool,
        tools_from,
    )

    def noop(x: int) -> int:
        return x

    async def anoop(x: int) -> int:
        return x

    spec = tool(anoop if config == "async" else noop)
    llm = MockLLMBackend([json.dumps({"tool": spec.name, "args": {"x": 1}})], cycle=True)
    kw = {"tool_timeout_s": None} if config == "sync-inline" else {}
    cfg, state = LoopConfig(max_steps=n, **kw), DefaultState(max_steps=n)
    go = {"tools": tools_from([spec]), "task": {"goal": "bench"}, "config": cfg, "state": state}

    async def drive() -> None:
        async for _ in async_composable_loop(llm=llm, **go):
            pass

    if gc_off:
        gc.disable()
    t = time.process_time()
    try:
        if config.startswith("sync"):
            for _ in composable_loop(llm=llm, **go):
                pass
        else:
            asyncio.run(drive())
        return time.process_time() - t
    finally:
        gc.enable()


def child() -> None:
    """One round in this interpreter: every configuration at every size, µs/step as JSON."""
    out: dict[str, float] = {}
    for config in CONFIGS:
        _run(config, 100)  # warm up
        for n in STEPS:
            out[f"{config}/{n}"] = _run(config, n) / n * 1e6
    out[f"sync-inline-gc-off/{STEPS[-1]}"] = _run("sync-inline", STEPS[-1], gc_off=True) / STEPS[-1] * 1e6
    print(json.dumps(out))


def rounds(trees: dict[str, str], repeat: int) -> dict[str, dict[str, list[float]]]:
    """{tree: {key: [µs/step per round]}}, the trees' rounds interleaved."""
    got: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    me = os.path.abspath(__file__)
    for _ in range(repeat):
        for name, path in trees.items():
            env = {**os.environ, "PYTHONPATH": path}
            res = subprocess.run(
                [sys.executable, me, "--child"], env=env, capture_output=True, text=True, check=True
            )
            for key, value in json.loads(res.stdout).items():
                got[name].setdefault(key, []).append(value)
    return got


def cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def import_ms(stmt: str, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def import_inside_ms(stmt: str, repeat: int = 15) -> float:
    """The import timed inside a fresh interpreter (interpreter start-up noise left out)."""
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    return (
        statistics.median(
            float(
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(repeat)
        )
        * 1000
    )


def third_party_modules() -> list[str]:
    code = (
        "import sys; before=set(sys.modules); import looplet; import looplet.loop, looplet.async_loop; "
        "import looplet.backends.mock; new=set(sys.modules)-before; "
        "std=set(sys.stdlib_module_names); "
        "print(sorted(m for m in new if m.split('.')[0] not in std and not m.startswith('looplet')))"
    )
    return eval(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", help="another checkout of looplet, measured in the same run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    args = ap.parse_args()
    if args.child:
        return child()
    trees = {"this tree": str(_report.ROOT)}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    got = rounds(trees, args.repeat)
    bare, lib = import_ms("pass"), import_ms("import looplet")
    resolve = "import looplet; looplet.composable_loop; looplet.MockLLMBackend; looplet.tools_from"
    inside, inside_full = import_inside_ms("import looplet"), import_inside_ms(resolve)
    extra = third_party_modules()
    flag = f" --baseline {args.baseline}" if args.baseline else ""
    base = f"; baseline: {args.baseline} at {_report.revision_of(args.baseline)}" if args.baseline else ""
    lines = [
        "## The loop's own overhead",
        "",
        f"Measured {_report.today()} on {_report.machine()}; looplet at {_report.revision()}{base}; "
        f"load average {os.getloadavg()[0]:.2f} at the end.  ",
        f"Command: `python bench/loop_overhead.py --repeat {args.repeat}{flag} --write`",
        "",
        "MockLLMBackend (no latency) proposing one trivial tool call per answer, no hooks. CPU time of the "
        f"process (all its threads) per step in µs, median (min–max) of {args.repeat} rounds, each round a "
        "fresh interpreter, the trees' rounds interleaved; the garbage collector on, as users run it.",
        "",
        "- **sync**: default `LoopConfig`; the sync tool has the default 120 s `tool_timeout_s`: it runs on "
        "the loop's thread, bounded by the run's SIGALRM timer (9e84799 had no default timeout: inline, unbounded).",
        "- **sync, inline**: `tool_timeout_s=None`: the tool runs on the loop's thread: the loop's own work.",
        "- **async**: `async_composable_loop`, default config, an `async def` tool.",
        "- **async, sync tool**: a sync tool, which the async loop always runs on the worker thread.",
        "",
        "| tree | steps | sync | sync, inline | async | async, sync tool |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, values in got.items():
        for n in STEPS:
            cells = " | ".join(cell(values.get(f"{c}/{n}")) for c in CONFIGS)
            lines.append(f"| {name} | {n:,} | {cells} |")
    gc_key = f"sync-inline-gc-off/{STEPS[-1]}"
    lines += [
        "",
        f"Sync, inline, 10,000 steps with the garbage collector off: {cell(got['this tree'].get(gc_key))} "
        "µs/step. What grows at 10,000 steps with it on is CPython's collector walking the run's own "
        "history (every Step and transcript message is kept, as the run's record).",
        "",
        f"Cold start (fresh interpreter, median of 15): bare interpreter {bare:.1f} ms, with "
        f"`import looplet` {lib:.1f} ms ({lib - bare:+.1f} ms). Timed inside the process: `import looplet` "
        f"{inside:.1f} ms; with the loop, tools and mock backend resolved {inside_full:.1f} ms. "
        f"Third-party modules loaded by the core: {extra or 'none'}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        print(f"\nwritten to {_report.write_section('loop-overhead', text)}")


if __name__ == "__main__":
    main()
