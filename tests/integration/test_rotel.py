"""The wire format against software nobody here wrote: looplet -> rotel (a real OpenTelemetry collector, from
PyPI) -> the in-test OTLP receiver. rotel's agent binary is run in the foreground on loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from looplet.telemetry import names as N
from looplet.telemetry.setup import configure
from tests.integration._otlp_receiver import GrpcReceiver, HttpReceiver, reset_global_telemetry
from tests.unit._harness import run_demo

rotel = pytest.importorskip("rotel", reason="rotel is not installed (pip install rotel)")
AGENT = Path(rotel.__file__).parent / "rotel-agent"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"rotel-agent exited with {proc.returncode}: {out[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"rotel-agent did not listen on 127.0.0.1:{port} within {timeout}s")


@pytest.fixture
def collector(tmp_path, request):
    """Start rotel forwarding to a receiver speaking ``request.param`` ("grpc" or "http")."""
    out_protocol = request.param
    receiver = GrpcReceiver() if out_protocol == "grpc" else HttpReceiver()
    grpc_port, http_port = _free_port(), _free_port()
    if not os.access(AGENT, os.X_OK):
        pytest.skip(f"rotel's agent binary {AGENT} is not executable here")
    cmd = [
        str(AGENT),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        receiver.url,
        "--otlp-exporter-protocol",
        out_protocol,
        "--otlp-exporter-compression",
        "none",
        "--batch-timeout",
        "50ms",
        "--pid-file",
        str(tmp_path / "rotel.pid"),
        "--log-file",
        str(tmp_path / "rotel.log"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(grpc_port, proc)
        _wait_listening(http_port, proc)
        yield {
            "grpc": f"http://127.0.0.1:{grpc_port}",
            "http/protobuf": f"http://127.0.0.1:{http_port}",
            "receiver": receiver,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        receiver.close()


@pytest.fixture(autouse=True)
def fresh():
    reset_global_telemetry()
    yield
    reset_global_telemetry()


@pytest.mark.parametrize(
    "collector,in_protocol", [("http", "grpc"), ("grpc", "http/protobuf")], indirect=["collector"]
)
def test_spans_pass_through_rotel_intact(collector, in_protocol):
    receiver = collector["receiver"]
    session = configure(
        service_name="via-rotel",
        otlp_endpoint=collector[in_protocol],
        otlp_protocol=in_protocol,
        json_logs=False,
    )
    steps, result = run_demo(session.hooks)
    session.shutdown()
    assert session.dropped_spans == {}
    expected = 1 + len(steps) + result.llm_calls + len(steps)  # agent, steps, chats, tools
    spans = receiver.wait_for(lambda sp: len(sp) >= expected, timeout=15)
    assert len(spans) == expected
    assert {s["trace_id"] for s in spans} == {result.trace_id}
    assert {s["resource"]["service.name"] for s in spans} == {"via-rotel"}
    by_id = {s["span_id"]: s for s in spans}
    (agent,) = [s for s in spans if s["name"] == "invoke_agent demo-agent"]
    assert agent["attributes"][N.RUN_INPUT_TOKENS] == result.usage.input_tokens
    for step in steps:
        (span,) = [s for s in spans if s["span_id"] == step.span_id]
        assert span["name"] == N.STEP_SPAN and span["parent_span_id"] == agent["span_id"]
    for s in spans:
        if s is not agent:
            assert s["parent_span_id"] in by_id
    chat = next(s for s in spans if s["name"].startswith("chat "))
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert isinstance(chat["attributes"]["gen_ai.usage.output_tokens"], int)
