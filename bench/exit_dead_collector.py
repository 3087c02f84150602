"""How long a whole demo process takes with a dead OTLP endpoint, beside the same process exporting to memory.

    python bench/exit_dead_collector.py [--runs 11] [--steps 9] [--baseline DIR]

Runs ``python -m looplet demo --quiet`` three ways, in turn A B C A B C ..., after one warm-up each:

A. ``--otlp http://127.0.0.1:<port where nothing listens>`` (a dead collector);
B. ``--spans-in-memory``: the same spans go through the same batch processor, redaction and drop counting
   to an ``InMemorySpanExporter`` (the baseline issue 15.4 names);
C. ``--otlp`` to a live OTLP/HTTP endpoint in this process that answers every export with 200;
A0 (with ``--baseline DIR``, another checkout of looplet): A run from DIR, in the same rounds, so the
   change is measured against the same B.

The warm-ups check that each arm did what it says: B kept N spans, A reports the same N not delivered,
C reports none lost and the endpoint received them. Prints the median and range of each arm's wall time
and CPU time (user + system of the child, from ``getrusage``) and of the ratios A/B and A/C taken round
by round (so a drift in the machine's speed cancels), with the load average before and after.
Also times ``TelemetrySession.shutdown()`` in-process against a refused port and against an endpoint
that accepts connections and never answers.

Target (issue 15.4): A/B <= 1.2 (wall); ``shutdown()`` <= 0.5 s with a dead or hung collector.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def timed(cmd: list[str], tree: str | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of one run of ``cmd``, importing looplet from ``tree`` when given."""
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=tree)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def spans_line(cmd: list[str], tree: str | None = None) -> str:
    """The ``spans`` line of the demo's closing block (a warm-up run)."""
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=tree).stdout
    return next(line.strip() for line in out.splitlines() if line.strip().startswith("spans"))


def count(pattern: str, line: str) -> int:
    found = re.search(pattern, line)
    if found is None:
        raise SystemExit(f"unexpected: {line!r} (wanted {pattern!r})")
    return int(found.group(1))


SHUTDOWN = """
import sys, time
from looplet import composable_loop, demo
from looplet.telemetry.setup import configure
s = configure(service_name="bench", otlp_endpoint=sys.argv[1], json_logs=False, handle_sigterm=False)
llm, tools, config = demo.build(latency_s=0.0)
for _ in composable_loop(llm=llm, tools=tools, task=demo.TASK, config=config, hooks=s.hooks):
    pass
t0 = time.perf_counter(); s.shutdown(); print(time.perf_counter() - t0)
"""


def hung_endpoint() -> tuple[str, socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock


class _Collector(http.server.BaseHTTPRequestHandler):
    """Takes every OTLP/HTTP export: reads the body, answers 200 with an empty export response."""

    received = 0  # export requests taken

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Collector.received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def live_endpoint() -> tuple[str, http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def shutdown_time(url: str) -> float:
    out = subprocess.run([sys.executable, "-c", SHUTDOWN, url], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f}  range {min(xs):.3f}-{max(xs):.3f}"


def check_arms(dead: list[str], memory: list[str], live: list[str]) -> None:
    """One warm-up run of each, checking that each arm handles the same spans as it says."""
    kept = count(r"(\d+) kept in memory", spans_line(memory))
    lost = count(r"(\d+) spans NOT delivered", spans_line(dead))
    before = _Collector.received
    sent = spans_line(live)
    if "NOT delivered" in sent or _Collector.received == before:
        raise SystemExit(f"the live endpoint did not get the spans: {sent!r}")
    if kept != lost or kept == 0:
        raise SystemExit(f"the arms differ: {kept} spans kept in memory, {lost} not delivered")
    print(
        f"warm-up: B kept {kept} spans in memory; A dropped {lost}; C sent {_Collector.received - before} request(s)"
    )


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--baseline", help="another checkout of looplet: its A runs in the same rounds (A0)")
    a = ap.parse_args()
    tree = os.path.abspath(a.baseline) if a.baseline else None
    base = [sys.executable, "-m", "looplet", "demo", "--quiet", "--steps", str(a.steps)]
    dead = [*base, "--otlp", f"http://127.0.0.1:{dead_port()}"]
    memory = [*base, "--spans-in-memory"]
    live_url, server = live_endpoint()
    live = [*base, "--otlp", live_url]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{now}, {a.runs} rounds A B C, load average (1/5/15 min) before: {load()}")
    check_arms(dead, memory, live)
    arms: dict[str, tuple[list[str], str | None]] = {
        "A": (dead, None),
        "B": (memory, None),
        "C": (live, None),
    }
    if tree:
        arms["A0"] = (dead, tree)
        print(f"warm-up of A0 from {tree}: {spans_line(dead, tree)!r}")
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(a.runs):
        for name, (cmd, where) in arms.items():
            w, c = timed(cmd, where)
            wall[name].append(w)
            cpu[name].append(c)
    server.shutdown()
    print(f"load average after: {load()}")
    labels = {
        "A": "A dead endpoint ",
        "B": "B in memory     ",
        "C": "C live endpoint ",
        "A0": "A0 baseline, dead",
    }
    for name in arms:
        print(f"{labels[name]} wall s {summary(wall[name])}   CPU s {summary(cpu[name])}")
    for top, other in [("A", "B"), ("A", "C"), ("A0", "B")]:
        if top in arms:
            walls = [x / y for x, y in zip(wall[top], wall[other], strict=True)]
            cpus = [x / y for x, y in zip(cpu[top], cpu[other], strict=True)]
            print(f"ratio {top}/{other} (round by round)  wall {summary(walls)}   CPU {summary(cpus)}")
    refused = [shutdown_time(f"http://127.0.0.1:{dead_port()}") for _ in range(5)]
    url, sock = hung_endpoint()
    try:
        hung = [shutdown_time(url) for _ in range(5)]
    finally:
        sock.close()
    print(f"shutdown(), refused  s {summary(refused)}")
    print(f"shutdown(), hung     s {summary(hung)}")


if __name__ == "__main__":
    main()
