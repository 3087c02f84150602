"""How long a whole demo process takes with a dead OTLP endpoint, beside the same process without one.

    python bench/exit_dead_collector.py [--runs 11] [--steps 9]

Runs ``python -m looplet demo --quiet`` with ``--otlp http://127.0.0.1:<port where nothing listens>`` (A),
without ``--otlp`` (B) and with ``--otlp`` to a live OTLP/HTTP endpoint in this process that answers every
export with 200 (C), in turn, A B C A B C ..., after one warm-up each, and prints the median and range of
each one's wall time and of the ratios A/B and A/C taken round by round (so a drift in the machine's speed
cancels). A/C is what a dead collector costs beside a working one (both load the OTLP exporter).
Also times ``TelemetrySession.shutdown()`` in-process against a refused port and against an endpoint that
accepts connections and never answers.

Target (issue 15.4): A/B <= 1.2; ``shutdown()`` <= 0.5 s with a dead or hung collector.
"""

from __future__ import annotations

import argparse
import http.server
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


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


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

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--steps", type=int, default=9)
    a = ap.parse_args()
    base = [sys.executable, "-m", "looplet", "demo", "--quiet", "--steps", str(a.steps)]
    dead = [*base, "--otlp", f"http://127.0.0.1:{dead_port()}"]
    live_url, server = live_endpoint()
    live = [*base, "--otlp", live_url]
    wall(dead), wall(base), wall(live)  # warm-up
    xa, xb, xc, ratio, vs_live = [], [], [], [], []
    for _ in range(a.runs):
        ta, tb, tc = wall(dead), wall(base), wall(live)
        xa.append(ta)
        xb.append(tb)
        xc.append(tc)
        ratio.append(ta / tb)
        vs_live.append(ta / tc)
    server.shutdown()
    print(f"dead endpoint  wall s  {summary(xa)}")
    print(f"no exporter    wall s  {summary(xb)}")
    print(f"live endpoint  wall s  {summary(xc)}")
    print(f"ratio A/B (pairwise)   {summary(ratio)}")
    print(f"ratio A/C (pairwise)   {summary(vs_live)}")
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
