"""Resident memory of a long run with compaction: 10,000 steps on MockLLMBackend(cycle=True).

    .venv/bin/python bench/memory_long_run.py [--steps 10000] [--mode sync|async] [--json]

The tool returns ~1.5 KB each step, so without compaction the transcript would reach ~15 MB of text
(and the model's context would overflow after a few dozen steps). ``ThresholdCompactHook`` with
``compact_chain(Prune(), Summarize(mock), Truncate())`` keeps it near 6,000 tokens. Resident memory
(RSS, from /proc/self/statm) is read after a 200-step warm-up and at the end; the target is a growth
of at most 50 MB. What still grows by design is ``state.steps`` (every Step with its result is kept for
the RunResult); the figures show how much that is.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

WARMUP = 200
LIMIT_MB = 50.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(steps: int) -> dict[str, Any]:
    from looplet import LLMResponse, MockLLMBackend, Usage, tool, tools_from
    from looplet.context import Prune, Summarize, ThresholdCompactHook, Truncate, compact_chain

    @tool(description="Read one page of a log.")
    def read_page(page: int) -> str:
        return f"page {page}: " + " ".join(
            f"event-{page}-{i} status=ok latency_ms={i * 7 % 300}" for i in range(40)
        )

    class Count:
        def __init__(self) -> None:
            self.compactions: dict[str, int] = {}
            self.max_messages = 0

        def on_event(self, name: str, attributes: dict[str, Any]) -> None:
            if name == "compaction":
                self.compactions[attributes["strategy"]] = self.compactions.get(attributes["strategy"], 0) + 1

        def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
            self.max_messages = max(self.max_messages, len(session_log))

    script = [json.dumps({"tool": "read_page", "args": {"page": i}}) for i in range(1, 8)]
    summarizer = MockLLMBackend(
        [LLMResponse(text="Read pages; all events ok, latencies under 300 ms.", usage=Usage(2000, 30))],
        cycle=True,
        model="gpt-4o-mini",
    )
    counter = Count()
    hook = ThresholdCompactHook(
        max_tokens=6000,
        strategy=compact_chain(Prune(keep_last=6), Summarize(summarizer, keep_last=4), Truncate(keep_last=2)),
    )
    return dict(
        llm=MockLLMBackend(script, cycle=True, usage="estimate", model="gpt-4o-mini"),
        tools=tools_from([read_page], include_done=True),
        task={"goal": "Read the log."},
        hooks=[counter, hook],
        max_steps=steps,
        counter=counter,
    )


def run(steps: int, mode: str) -> dict[str, Any]:
    from looplet import DefaultState, async_composable_loop, composable_loop
    from looplet.context import estimate_tokens

    kw = build(steps)
    counter = kw.pop("counter")
    state = DefaultState(max_steps=steps)
    marks: dict[str, float] = {}

    def mark(n: int) -> None:
        if n == WARMUP:
            gc.collect()
            marks["rss_start"] = rss_mb()
            marks["t_start"] = time.perf_counter()

    if mode == "sync":
        for step in composable_loop(state=state, **kw):
            mark(step.number)
    else:

        async def main() -> None:
            async for step in async_composable_loop(state=state, **kw):
                mark(step.number)

        asyncio.run(main())
    elapsed = time.perf_counter() - marks["t_start"]
    gc.collect()
    rss_end = rss_mb()
    result = state.result
    assert result is not None
    return {
        "mode": mode,
        "steps": len(result.steps),
        "stop": result.stop_reason,
        "rss_start_mb": round(marks["rss_start"], 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - marks["rss_start"], 1),
        "limit_mb": LIMIT_MB,
        "steps_per_s": round((len(result.steps) - WARMUP) / elapsed, 1),
        "compactions": counter.compactions,
        "max_transcript_messages": counter.max_messages,
        "final_transcript_tokens": estimate_tokens(state.transcript),
        "kept_step_results_mb": round(sum(len(str(s.tool_result.data)) for s in state.steps) / 2**20, 1),
        "run_cost_usd": round(
            result.cost_usd or 0.0, 4
        ),  # mock prices: gpt-4o-mini rates on estimated tokens
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be more than the {WARMUP}-step warm-up")
    out = run(args.steps, args.mode)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:26} {v}")
    ok = out["rss_growth_mb"] <= LIMIT_MB and out["steps"] == args.steps
    if not ok:
        print(f"FAIL: RSS grew {out['rss_growth_mb']} MB (limit {LIMIT_MB} MB)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
