"""The loop's own cost per step, and the cold import time.

    python bench/loop_overhead.py [--repeat 5]

Per-step: MockLLMBackend (no latency, no usage) proposing one trivial tool call per response, no hooks,
at 100, 1,000 and 10,000 steps, sync and async; the median of --repeat runs, divided by the steps.
Import: a fresh interpreter running `import looplet` against one running `pass`, medians of 15 each.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import time

from looplet import DefaultState, LoopConfig, MockLLMBackend, async_composable_loop, composable_loop, tool, tools_from


@tool
def noop(x: int) -> int:
    return x


def _setup(n: int):
    llm = MockLLMBackend(['{"tool": "noop", "args": {"x": 1}}'], cycle=True)
    return llm, tools_from([noop]), LoopConfig(max_steps=n), DefaultState(max_steps=n)


def sync_run(n: int) -> float:
    llm, tools, config, state = _setup(n)
    t = time.perf_counter()
    for _ in composable_loop(llm=llm, tools=tools, task={"goal": "bench"}, config=config, state=state):
        pass
    return time.perf_counter() - t


def async_run(n: int) -> float:
    llm, tools, config, state = _setup(n)

    async def main() -> float:
        t = time.perf_counter()
        async for _ in async_composable_loop(llm=llm, tools=tools, task={"goal": "bench"}, config=config,
                                             state=state):
            pass
        return time.perf_counter() - t

    return asyncio.run(main())


def per_step_us(fn, n: int, repeat: int) -> float:
    fn(min(n, 100))  # warm up
    return statistics.median(fn(n) for _ in range(repeat)) / n * 1e6


def import_ms(stmt: str, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def third_party_modules() -> list[str]:
    code = ("import sys; before=set(sys.modules); import looplet; import looplet.loop, looplet.async_loop; "
            "import looplet.backends.mock; new=set(sys.modules)-before; "
            "std=set(sys.stdlib_module_names); "
            "print(sorted(m for m in new if m.split('.')[0] not in std and not m.startswith('looplet')))")
    return eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"# looplet loop overhead — {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'steps':>7} {'sync µs/step':>13} {'async µs/step':>14}")
    for n in (100, 1_000, 10_000):
        print(f"{n:>7} {per_step_us(sync_run, n, args.repeat):>13.1f} {per_step_us(async_run, n, args.repeat):>14.1f}")
    bare = import_ms("pass")
    lib = import_ms("import looplet")
    full = import_ms("import looplet; looplet.composable_loop; looplet.MockLLMBackend; looplet.tools_from")
    print(f"\ncold start: bare interpreter {bare:.1f} ms, `import looplet` {lib:.1f} ms (+{lib - bare:.1f} ms), "
          f"with the loop, tools and mock backend resolved {full:.1f} ms (+{full - bare:.1f} ms)")
    print(f"third-party modules loaded by the core: {third_party_modules() or 'none'}")


if __name__ == "__main__":
    main()
