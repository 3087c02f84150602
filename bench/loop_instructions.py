"""Instructions per step of the bare loop, counted by valgrind (repeatable on a loaded machine).

    python bench/loop_instructions.py [--baseline DIR] [--configs sync sync-inline async]

Each figure is (instructions of a 2,200-step run - those of a 200-step run) / 2,000, so start-up and imports
cancel out. ``callgrind`` counts instructions, not time: the same tree, inputs and interpreter give the same
count within about 1% (hash randomisation), whatever else the machine does. The run and its
configurations are ``bench/loop_overhead.py``'s (MockLLMBackend, one trivial tool call per answer, no hooks). Needs ``valgrind``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

SHORT, LONG = 200, 2_200
BENCH = os.path.dirname(os.path.abspath(__file__))

#: One run: loop_overhead.py's ``_run``, so both benches measure the same loop in the same configurations.
#: Run in the bench folder (``python -c`` puts the working directory first on sys.path: it must not be a
#: checkout of looplet), so that ``PYTHONPATH`` picks the tree.
CHILD = "import sys, loop_overhead as b; b._run(sys.argv[1], int(sys.argv[2]))"


def instructions(tree: str, config: str, steps: int) -> int:
    """Instructions of one run of ``steps`` steps in ``config``, looplet imported from ``tree``."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            config,
            str(steps),
        ],
        cwd=BENCH,
        env={**os.environ, "PYTHONPATH": tree},
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
    trees = {"this tree": os.path.dirname(BENCH)}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    print("| tree | " + " | ".join(args.configs) + " |")
    print("| --- |" + " ---: |" * len(args.configs))
    for label, tree in trees.items():
        cells = []
        for config in args.configs:
            per_step = (instructions(tree, config, LONG) - instructions(tree, config, SHORT)) / (LONG - SHORT)
            cells.append(f"{per_step / 1000:.1f}k")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
