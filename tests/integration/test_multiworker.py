"""The multi-worker service recipe of docs/scaling.md, run as written under a real gunicorn with two worker
processes: every scrape of ``/metrics``, whichever worker answers it, counts every request's run exactly
once, and each run's ``invoke_agent`` span is a child of the request's ``traceparent``."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_docs import parse
from tests.integration._otlp_receiver import HttpReceiver

pytest.importorskip("gunicorn")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 24


def recipe_files(folder: Path) -> set[str]:
    """Write the files docs/scaling.md defines (``<!-- file: NAME -->`` blocks and ``# NAME.py`` blocks)."""
    written = set()
    for block in parse(ROOT / "docs" / "scaling.md"):
        if block["lang"] != "python":
            continue
        name = block["arg"] if block.get("marker") == "file" else None
        first = block["code"].splitlines()[0]
        if name is None and first.startswith("# ") and first[2:].split(":")[0].endswith(".py"):
            name = first[2:].split(":")[0].strip()
        if name:
            (folder / name).write_text(block["code"])
            written.add(name)
    return written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def post(url: str, task: dict[str, Any], traceparent: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(task).encode(), method="POST", headers={"traceparent": traceparent}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def start_gunicorn(folder: Path, port: int, otlp_url: str) -> subprocess.Popen[bytes]:
    """gunicorn with the recipe's config, multiprocess mode on, spans to ``otlp_url``; returns once it answers."""
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    env = dict(os.environ)
    env.pop("TRACEPARENT", None)
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url,
        OTEL_BSP_SCHEDULE_DELAY="200",
        LOOPLET_AGENT="my_agent:build",
        PYTHONPATH=str(folder),
    )
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*cmd, "agent_service:app"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            get(f"http://127.0.0.1:{port}/metrics")
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                output = server.stdout.read().decode() if server.stdout else ""
                raise AssertionError(f"gunicorn did not come up within 60 s:\n{output[-3000:]}") from None
            time.sleep(0.1)


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def test_two_gunicorn_workers_add_up_on_metrics_and_runs_continue_the_request_trace(tmp_path: Path) -> None:
    assert {"my_agent.py", "agent_service.py", "gunicorn_conf.py"} <= recipe_files(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = HttpReceiver()
    server = start_gunicorn(tmp_path, port, receiver.url)
    try:
        parents = [f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01" for _ in range(REQUESTS)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda tp: post(base + "/run", {"goal": "Explain spans"}, tp), parents))
        assert all(a["stop_reason"] == "done" for a in answers)
        assert len({a["worker"] for a in answers}) == 2, "both workers should have served runs"
        # the run continues the caller's trace
        assert [a["trace_id"] for a in answers] == [tp.split("-")[1] for tp in parents]

        input_tokens = sum(a["usage"]["input_tokens"] for a in answers)
        for _ in range(8):  # whichever worker answers the scrape, the totals are the service's
            text = get(base + "/metrics")
            assert sample(text, "looplet_runs_total", {"outcome": "done"}) == REQUESTS
            assert sample(text, "looplet_tokens_total", {"type": "input"}) == input_tokens
            assert sample(text, "looplet_active_runs", {}) == 0

        spans = receiver.wait_for(
            lambda s: sum(x["name"].startswith("invoke_agent") for x in s) >= REQUESTS, timeout=30
        )
        agents = {s["trace_id"]: s for s in spans if s["name"].startswith("invoke_agent")}
        assert len(agents) == REQUESTS
        assert {t: agents[t]["parent_span_id"] for t in agents} == {
            tp.split("-")[1]: tp.split("-")[2] for tp in parents
        }
    finally:
        stop(server)
        receiver.close()
