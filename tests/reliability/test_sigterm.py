"""SIGTERM is a clean stop: a real child process running an agent with ``configure()`` (OTLP traces and
metrics to an in-test receiver, JSON log file, trajectory folders, a checkpoint) gets a real SIGTERM.

- one SIGTERM: the run in progress ends ``cancelled`` at its next phase boundary; its spans, its metrics, the
  ``run.end`` log line, the checkpoint and the trajectory are all out before the process exits with 143;
- a second SIGTERM while the first is being handled ends the process at once (killed by the signal);
- a run stuck in one tool past the grace period: the process still exits (143) at the end of it, and the run
  ends ``cancelled`` with its telemetry flushed at exit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.integration._otlp_receiver import NOT_FOUND, LocalHttp, Reply, otlp_ok
from tests.reliability._wait import wait_until

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX")

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from looplet import LoopConfig, tool, tools_from
    from looplet.backends.mock import MockLLMBackend
    from looplet.control.checkpoint import CheckpointHook
    from looplet.loop import run_loop
    from looplet.telemetry.setup import configure

    endpoint, out, grace_s, tool_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    session = configure(service_name="sigterm", otlp_endpoint=endpoint, otlp_protocol="http/protobuf",
                        otlp_metrics=True, log_file=out + "/run.jsonl", provenance_dir=out + "/traces",
                        sigterm_grace_s=grace_s)

    @tool(description="Work on item n.")
    def work(n: int) -> str:
        print(f"working {n}", flush=True)
        time.sleep(tool_s)
        return f"item {n} done"

    llm = MockLLMBackend([json.dumps({"tool": "work", "args": {"n": i}}) for i in range(1, 500)])
    result = run_loop(llm=llm, tools=tools_from([work]), config=LoopConfig(max_steps=500),
                      hooks=[CheckpointHook(out + "/checkpoint"), *session.hooks])
    print("result", result.stop_reason, len(result.steps), flush=True)
    time.sleep(120)  # the SIGTERM handling must end the process, not this script
    print("not stopped", flush=True)
    """
)


class Receiver(LocalHttp):
    """OTLP/HTTP on 127.0.0.1: ``/v1/traces`` and ``/v1/metrics`` requests, decoded."""

    def __init__(self) -> None:
        self.traces: list[Any] = []
        self.metrics: list[Any] = []
        super().__init__()

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        if path == "/v1/traces":
            req: Any = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            self.traces.append(req)
            return otlp_ok(trace_service_pb2.ExportTraceServiceResponse())
        if path == "/v1/metrics":
            req = metrics_service_pb2.ExportMetricsServiceRequest()
            req.ParseFromString(body)
            self.metrics.append(req)
            return otlp_ok(metrics_service_pb2.ExportMetricsServiceResponse())
        return NOT_FOUND

    def spans(self) -> list[Any]:
        return [s for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def metric_names(self) -> set[str]:
        return {
            m.name
            for r in self.metrics
            for rm in r.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def start(receiver: Receiver, out: Path, grace_s: float, tool_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, receiver.url, str(out), str(grace_s), str(tool_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> list[str]:
    """Read the child's stdout until a line starts with ``prefix`` (a generous deadline for a loaded box)."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith(prefix):
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), f"the child never printed {prefix!r}: {lines}; {proc.poll()}"
    return lines


def log_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "run.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_sigterm_ends_the_run_cancelled_with_everything_flushed_then_exits(receiver, tmp_path):
    proc = start(receiver, tmp_path, grace_s=20.0, tool_s=0.3)
    try:
        wait_for_line(proc, "working 3")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "not stopped" not in rest
    stop = [line for line in rest.splitlines() if line.startswith("result")]
    assert stop and stop[0].split()[1] == "cancelled", rest  # ended at a phase boundary, by the loop
    steps = int(stop[0].split()[2])
    assert 3 <= steps <= 4  # the step in progress finished; no new LLM call was made
    # bounded: the tool in progress (0.3 s) plus the flush, far below the 20 s grace period
    assert elapsed < 15, elapsed

    # spans: the run span says cancelled, and every step's span arrived
    spans = receiver.spans()
    runs = [s for s in spans if s.name.startswith("invoke_agent")]
    assert len(runs) == 1, [s.name for s in spans]
    attrs = {a.key: a.value.string_value for a in runs[0].attributes}
    assert attrs.get("looplet.stop_reason") == "cancelled"
    assert sum(s.name.startswith("execute_tool") for s in spans) == steps
    # metrics: pushed over OTLP at shutdown
    assert "gen_ai.client.operation.duration" in receiver.metric_names()
    # logs: the run.end line, and the SIGTERM note from the stdlib logger, in the same JSON file
    lines = log_lines(tmp_path)
    ends = [x for x in lines if x.get("event") == "run.end"]
    assert len(ends) == 1 and ends[0]["stop_reason"] == "cancelled" and ends[0]["steps"] == steps
    assert any("SIGTERM" in str(x.get("event")) for x in lines)
    # checkpoint and trajectory
    checkpoint = json.loads(next((tmp_path / "checkpoint").glob("*.json")).read_text())
    assert len(checkpoint["steps"]) == steps
    trajectory = json.loads(next((tmp_path / "traces").rglob("trajectory.json")).read_text())
    assert trajectory["stop_reason"] == "cancelled" and len(trajectory["steps"]) == steps


def test_a_second_sigterm_exits_at_once(receiver, tmp_path):
    proc = start(receiver, tmp_path, grace_s=60.0, tool_s=60.0)  # the tool holds the run: no boundary
    try:
        wait_for_line(proc, "working 1")
        proc.send_signal(signal.SIGTERM)
        # the first one was taken: the handler said so in the log
        assert wait_until(lambda: any("SIGTERM" in str(x.get("event")) for x in log_lines(tmp_path)), 30.0)
        assert proc.poll() is None  # still waiting for the run (grace 60 s)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # the default action: killed by the signal, no clean-up
    assert elapsed < 5, elapsed


def test_a_run_stuck_past_the_grace_period_still_ends_cancelled_and_flushed(receiver, tmp_path):
    proc = start(receiver, tmp_path, grace_s=1.0, tool_s=60.0)  # the tool would block for a minute
    try:
        wait_for_line(proc, "working 1")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert elapsed < 20, elapsed  # the grace period (1 s) and the exit flush, not the tool's minute
    ends = [x for x in log_lines(tmp_path) if x.get("event") == "run.end"]
    assert len(ends) == 1 and ends[0]["stop_reason"] == "cancelled"
    runs = [s for s in receiver.spans() if s.name.startswith("invoke_agent")]
    assert len(runs) == 1
