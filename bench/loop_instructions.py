"""Instructions per step of the bare loop, counted by valgrind (repeatable on a loaded machine).

    python bench/loop_instructions.py [--baseline DIR] [--configs sync sync-inline async]

Each figure is (instructions of a 2,200-step run - those of a 200-step run) / 2,000, so start-up and imports
cancel out. ``callgrind`` counts instructions, not time: the same tree, inputs and interpreter give the same
count within about 1% (hash randomisation), whatever else the machine does. Configurations as in
``bench/loop_overhead.py`` (MockLLMBackend, one trivial tool call per answer, no hooks). Needs ``valgrind``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

SHORT, LONG = 200, 2_200

CHILD = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
config, n = sys.argv[2], int(sys.argv[3])
from looplet import DefaultState, LoopConfig, MockLLMBackend, async_composable_loop, composable_loop, tool, tools_from
def noop(x: int) -> int:
    return x
async def anoop(x: int) -> int:
    return x
spec = tool(anoop if config == "async" else noop)
llm = MockLLMBackend([json.dumps({"tool": spec.name, "args": {"x": 1}})], cycle=True)
kw = {"tool_timeout_s": None} if config == "sync-inline" else {}
go = dict(tools=tools_from([spec]), task={"goal": "bench"}, config=LoopConfig(max_steps=n, **kw),
          state=DefaultState(max_steps=n))
async def drive():
    async for _ in async_composable_loop(llm=llm, **go):
        pass
if config == "async":
    asyncio.run(drive())
else:
    for _ in composable_loop(llm=llm, **go):
        pass
"""


def instructions(tree: str, config: str, steps: int, script: str) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            tree,
            config,
            str(steps),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"refs:\s*([\d,]+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="another checkout of looplet, counted the same way")
    ap.add_argument("--configs", nargs="+", default=["sync", "sync-inline", "async"])
    args = ap.parse_args()
    trees = {"this tree": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(CHILD)
    try:
        print("| tree | " + " | ".join(args.configs) + " |")
        print("| --- |" + " ---: |" * len(args.configs))
        for label, tree in trees.items():
            cells = []
            for config in args.configs:
                per_step = (
                    instructions(tree, config, LONG, f.name) - instructions(tree, config, SHORT, f.name)
                ) / (LONG - SHORT)
                cells.append(f"{per_step / 1000:.1f}k")
            print(f"| {label} | " + " | ".join(cells) + " |")
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
