"""What a checkpointed run writes when tools return large outputs (issue 14: five 10 MB results).

    .venv/bin/python bench/checkpoint_blobs.py [--results 5] [--mb 10]

A scripted run calls a tool that returns ``--mb`` MB of text ``--results`` times, then ``done``, with a
``CheckpointHook``. It prints the bytes written at each save (from the hook's ``checkpoint`` events),
their total, the final size of ``checkpoint.json`` and of ``blobs/``, the process's peak RSS and the wall
time. Run it with ``PYTHONPATH`` pointing at an older tree to compare (the figures in
docs/reliability.md are from such a pair of runs).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--results", type=int, default=5)
    p.add_argument("--mb", type=int, default=10)
    args = p.parse_args()

    from looplet import LoopConfig, MockLLMBackend, run_loop, tool, tools_from
    from looplet.control import CheckpointHook

    size: int = args.mb * 1024 * 1024

    @tool(description="Fetch a large page.")
    def fetch(i: int) -> str:
        return chr(ord("a") + i % 26) * size

    class Bytes:
        def __init__(self) -> None:
            self.per_save: list[int] = []

        def on_event(self, name: str, attributes: dict[str, Any]) -> None:
            if name == "checkpoint":
                self.per_save.append(int(attributes["bytes"]))

    script = [f'{{"tool": "fetch", "args": {{"i": {i}}}}}' for i in range(args.results)]
    script.append('{"tool": "done", "args": {"answer": "fetched"}}')
    written = Bytes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = run_loop(
            MockLLMBackend(script),
            {"goal": "fetch"},
            tools_from([fetch]),
            hooks=[CheckpointHook(folder), written],
            config=LoopConfig(max_steps=args.results + 2, max_tool_output_chars=100),
        )
        wall = time.perf_counter() - started
        checkpoint = os.path.getsize(Path(folder) / "checkpoint.json")
        blobs = (
            sum(f.stat().st_size for f in (Path(folder) / "blobs").glob("*"))
            if (Path(folder) / "blobs").is_dir()
            else 0
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stop reason: {result.stop_reason}")
    print(f"bytes written per save (MB): {[round(n / 1e6, 1) for n in written.per_save]}")
    print(f"total written: {sum(written.per_save) / 1e6:.1f} MB")
    print(f"checkpoint.json: {checkpoint / 1e6:.3f} MB, blobs: {blobs / 1e6:.1f} MB")
    print(f"peak RSS: {peak:.0f} MB, wall: {wall:.2f} s, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
