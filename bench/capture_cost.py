"""What content capture costs per ``chat`` span, by transcript length, in this tree and in another one.

    python bench/capture_cost.py [--base DIR] [--rounds 3] [--calls 30] [--lengths 20 200 2000]

Workload: a sync loop over MockLLMBackend proposing one tool call per answer; the tool returns ~300
characters of text with newlines. A ``pre_prompt`` hook pads the transcript once, at the first prompt, to the
length wanted (system prompt, task, then assistant tool calls and tool results of the same shape as the
loop's own), so each length costs one run, not the run that would reach it; every step then adds two
messages. A hook in front of ``TracingHook`` times its ``wrap_llm_call`` (the chat span, with the mock
backend inside it) in the calling thread's CPU time; the first 3 calls of a run are left out (the first
one converts the padded transcript whole), the median of the rest is taken, with capture on and off.
Spans go to a TracerProvider with no processor (recorded, not exported).

``--base DIR``: a directory holding another ``looplet`` package (e.g. ``git archive <rev> looplet | tar -x
-C DIR``); each round runs a worker process on it and one on this tree, in alternating order, so a change
in machine load hits both alike. Medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
RESULT = "x" * 40 + "\nline two of the result, with a number 12345 and some words\n" + "y" * 200


def _worker(lengths: list[int], calls: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider

    import looplet
    from looplet import DefaultState, LoopConfig, MockLLMBackend, composable_loop, tool, tools_from
    from looplet.telemetry.tracing import TracingHook

    @tool(description="Look something up.")
    def lookup(key: str) -> str:
        return RESULT

    class Pad:
        def __init__(self, length: int) -> None:
            self.length, self.done = length, False

        def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
            if self.done:
                return
            self.done = True
            for i in range((self.length - len(session_log)) // 2):
                call = {"id": f"pad_{i}", "type": "function"}
                call["function"] = {"name": "lookup", "arguments": json.dumps({"key": f"k{i}"})}
                session_log.append({"role": "assistant", "content": None, "tool_calls": [call]})
                session_log.append({"role": "tool", "tool_call_id": f"pad_{i}", "content": RESULT})

    class Clock:
        def __init__(self) -> None:
            self.us: list[float] = []

        def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return call_next(call)
            finally:
                self.us.append((time.thread_time_ns() - t0) / 1000.0)

    provider = TracerProvider()
    out: dict[str, Any] = {"looplet": looplet.__file__}
    for length in lengths:
        for capture in (False, True):
            clock = Clock()
            hooks = [Pad(length), clock, TracingHook(provider, capture_content=capture)]
            llm = MockLLMBackend(['{"tool": "lookup", "args": {"key": "k"}}'], cycle=True, model="m")
            steps = calls + 3
            config = LoopConfig(max_steps=steps, agent_name="bench", tool_timeout_s=None)
            state = DefaultState(max_steps=steps)
            tools = tools_from([lookup])
            for _ in composable_loop(
                llm, {"goal": "bench"}, tools, hooks, config, state, system_prompt="You are a bench."
            ):
                pass
            out[f"{length}/{'on' if capture else 'off'}"] = statistics.median(clock.us[3:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="a directory holding the looplet package to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--lengths", type=int, nargs="+", default=[20, 200, 2000])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.lengths, args.calls)))
        return
    trees = {"this": str(HERE)}
    if args.base:
        trees = {"base": str(Path(args.base).resolve()), **trees}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    print(f"load before: {os.getloadavg()}")
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            env = {**os.environ, "PYTHONPATH": trees[name]}
            cmd = [sys.executable, __file__, "--worker", "--calls", str(args.calls), "--lengths"]
            cmd += [str(n) for n in args.lengths]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(done.stdout))
    print(f"load after: {os.getloadavg()}")
    for name, runs in results.items():
        print(f"{name}: looplet from {runs[0]['looplet']}")
    print("µs CPU per chat span (median over rounds of per-run medians)")
    print(f"{'messages':>9} " + " ".join(f"{n + ' ' + c:>14}" for n in trees for c in ("off", "on")))
    for length in args.lengths:
        cells = []
        for name in trees:
            for c in ("off", "on"):
                cells.append(f"{statistics.median(run[f'{length}/{c}'] for run in results[name]):14.1f}")
        print(f"{length:>9} " + " ".join(cells))


if __name__ == "__main__":
    main()
