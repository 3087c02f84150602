"""``looplet batch``: the local engine against Ray on this machine, 2,000 tasks with 50 ms mock latency.

    .venv/bin/python bench/batch_scale.py [--tasks 2000] [--latency 0.05] [--repeat 3] [--no-write]

Each task is one run of :func:`agent` below: a ``MockLLMBackend`` that waits ``--latency`` seconds per
call (standing in for a model server) and answers with one ``echo`` call and then ``done`` (two LLM
calls, so about 100 ms of waiting per run). Each configuration runs ``looplet batch`` as a real command
(a fresh results file every time) and measures:

* runs/s: the driver's own figure (tasks ÷ time from the engine being up to the last result; the time
  to start Ray is reported apart);
* CPU per run: the CPU time of the driver's whole process tree (driver, and for Ray its raylet, GCS and
  worker processes), sampled from ``/proc`` every 0.2 s and summed per process, divided by the tasks;
  start-up included;
* wall: the whole command, start-up and shutdown included.

Configurations: the local engine with 16 runs at a time (threads); Ray with 16 at a time
(``--cpus-per-run 0.125``: 16 worker processes on the 2 cores); Ray with one run per core
(``--cpus-per-run 1``, Ray's default packing). Median and range over ``--repeat`` rounds, configurations
interleaved within a round. Figures go to stdout and, between ``<!-- batch-scale:start -->`` and
``<!-- batch-scale:end -->``, to docs/benchmarks.md; raw numbers to bench/results/batch_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, revision, today, write_section

CONFIGS = {
    "local, 16 at a time": ["--engine", "local", "--concurrency", "16"],
    "ray, 16 at a time (0.125 CPU/run)": ["--engine", "ray", "--cpus-per-run", "0.125"],
    "ray, 1 per core (1 CPU/run)": ["--engine", "ray", "--cpus-per-run", "1"],
}
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def agent() -> dict[str, Any]:
    """The benched agent (``looplet batch --agent bench/batch_scale.py:agent``)."""
    from looplet import MockLLMBackend, tool, tools_from
    from looplet.types import Usage

    @tool(description="Echo the word back.")
    def echo(word: str) -> str:
        return word

    latency = float(os.environ.get("BENCH_LATENCY_S", "0.05"))
    script = ['{"tool": "echo", "args": {"word": "hi"}}', '{"tool": "done", "args": {"answer": "ok"}}']
    llm = MockLLMBackend(script, model="gpt-4o-mini", usage=Usage(100, 20), latency_s=latency)
    return {"llm": llm, "tools": tools_from([echo])}


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) for every process we can read."""
    table: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


class TreeCPU:
    """CPU seconds used by a process and all its descendants, sampled until :meth:`stop`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        table = _proc_table()
        tree = {self.root} | set(self.seen)
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _cpu) in table.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            if pid in table:
                self.seen[pid] = max(self.seen.get(pid, 0.0), table[pid][1])

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> float:
        self._sample()
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def run_one(name: str, tasks: Path, n: int, latency: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        cmd = [sys.executable, "-m", "looplet", "batch", str(tasks), "--agent", f"{__file__}:agent"]
        cmd += ["--out", str(out), "--quiet", *CONFIGS[name]]
        env = dict(os.environ, BENCH_LATENCY_S=str(latency), RAY_ADDRESS="", LOOPLET_PROGRESS="off")
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        cpu = TreeCPU(proc.pid)
        _, err = proc.communicate(timeout=3600)
        wall = time.perf_counter() - started
        cpu_s = cpu.stop()
        if proc.returncode != 0:
            raise SystemExit(f"{name}: looplet batch failed ({proc.returncode}):\n{err[-2000:]}")
        m = re.search(r"(\d+) runs in ([\d.]+)s \(([\d.]+) runs/s", err)
        if not m or int(m.group(1)) != n:
            raise SystemExit(f"{name}: unexpected summary:\n{err[-2000:]}")
        lines = out.read_text().splitlines()
        assert len(lines) == n, f"{name}: {len(lines)} result lines for {n} tasks"
        runs_s = float(m.group(3))
        return {
            "runs_per_s": runs_s,
            "run_phase_s": float(m.group(2)),
            "wall_s": wall,
            "startup_s": wall - float(m.group(2)),
            "cpu_s": cpu_s,
            "cpu_ms_per_run": cpu_s / n * 1000.0,
            "nodes": len({json.loads(x)["node"] for x in lines}),
            "processes": len({json.loads(x)["pid"] for x in lines}),
        }


def _fmt(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp) / "tasks.jsonl"
        with tasks.open("w") as f:
            for i in range(args.tasks):
                f.write(json.dumps({"id": i, "task": {"goal": f"task {i}"}}) + "\n")
        for round_ in range(args.repeat):
            for name in CONFIGS:
                r = run_one(name, tasks, args.tasks, args.latency)
                results[name].append(r)
                print(
                    f"round {round_ + 1} {name}: {r['runs_per_s']:.1f} runs/s, {r['cpu_ms_per_run']:.2f} ms CPU/run, "
                    f"start-up {r['startup_s']:.1f}s, wall {r['wall_s']:.1f}s, {r['processes']} processes",
                    flush=True,
                )

    rows = [
        "| configuration | runs/s | CPU per run (ms) | start-up + shutdown (s) | wall (s) | worker processes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rs in results.items():
        rows.append(
            f"| {name} | {_fmt([r['runs_per_s'] for r in rs])} | {_fmt([r['cpu_ms_per_run'] for r in rs], 2)} "
            f"| {_fmt([r['startup_s'] for r in rs])} | {_fmt([r['wall_s'] for r in rs])} "
            f"| {max(r['processes'] for r in rs)} |"
        )
    body = "\n".join(
        [
            "## looplet batch: local engine and Ray",
            "",
            f"`python bench/batch_scale.py --tasks {args.tasks} --latency {args.latency} --repeat {args.repeat}`, "
            f"{today()}, {machine()}, commit {revision()}. {args.tasks} tasks, each a run of two mock LLM calls "
            f"of {args.latency * 1000:.0f} ms; median (range) over {args.repeat} rounds. CPU is the whole process "
            "tree's (driver, Ray daemons and workers), start-up included; runs/s counts from the engine being up.",
            "",
            *rows,
        ]
    )
    print("\n" + body)
    if not args.no_write:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        raw = {"tasks": args.tasks, "latency_s": args.latency, "machine": machine(), "results": results}
        (ROOT / "bench" / "results" / "batch_scale.json").write_text(json.dumps(raw, indent=2) + "\n")
        write_section("batch-scale", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
