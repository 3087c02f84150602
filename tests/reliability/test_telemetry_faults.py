"""Telemetry faults the wire tests (tests/integration/test_telemetry_faults.py: refused and hung collectors,
a full queue, exit with a hung collector) do not cover: a collector that answers with errors (HTTP 500, HTTP
503, gRPC UNAVAILABLE), a metrics port already taken, and a trace folder or log file that cannot be written
(unwritable, or on a full disk: a small tmpfs filled to the last byte).

In every case the run takes the same steps with the same results, raises nothing, takes about as long as
with a healthy collector, and what was lost is counted or logged where a person will see it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from looplet import composable_loop, demo
from looplet.telemetry.setup import configure, current_session
from tests.integration._otlp_receiver import (
    GrpcReceiver,
    HttpReceiver,
    LocalHttp,
    Reply,
    reset_global_telemetry,
)
from tests.reliability._wait import wait_until


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    reset_global_telemetry()
    yield
    reset_global_telemetry()


def run_demo(hooks: list[Any], steps: int = 12) -> tuple[list[Any], Any, float]:
    llm, tools, config = demo.build(latency_s=0.0, steps=steps)
    gen = composable_loop(llm=llm, tools=tools, task=demo.TASK, config=config, hooks=hooks)
    out = []
    t0 = time.perf_counter()
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value, time.perf_counter() - t0


def shape(steps: list[Any], result: Any) -> Any:
    return (
        [
            (s.number, s.tool_call.tool, s.tool_call.args, s.tool_result.data, s.tool_result.error_kind)
            for s in steps
        ],
        result.stop_reason,
        result.final_output,
        result.usage.to_dict(),
        result.error,
    )


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- collectors that answer with errors ------------------------------------------------------------------


class HttpErrors(LocalHttp):
    """``POST /v1/traces`` answered with ``status`` every time (503 with a Retry-After, as a proxy does)."""

    def __init__(self, status: int) -> None:
        self.calls = 0
        self.status = status
        super().__init__()

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        self.calls += 1
        extra = {"Retry-After": "1"} if self.status == 503 else {}
        reply = b'{"code": 14, "message": "collector overloaded"}'
        return self.status, {"Content-Type": "application/json", **extra}, reply


class GrpcUnavailable:
    """An OTLP gRPC TraceService whose every Export fails with UNAVAILABLE."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.calls = 0
        outer = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                outer.calls += 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "collector restarting")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.url = f"http://127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def healthy_loop_s(protocol: str) -> float:
    """Loop time of the same run with telemetry to a collector that accepts everything."""
    receiver = HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver()
    try:
        session = configure(
            service_name="healthy",
            otlp_endpoint=receiver.url,
            otlp_protocol=protocol,
            json_logs=False,
            export_timeout_s=0.5,
            schedule_delay_s=0.05,
        )
        run_demo(session.hooks)  # warm-up: first-use imports
        _, _, loop_s = run_demo(session.hooks)
        session.shutdown(timeout_s=1.0)
        return loop_s
    finally:
        receiver.close()
        reset_global_telemetry()


@pytest.mark.parametrize("fault", ["http_500", "http_503", "grpc_unavailable"])
def test_a_collector_answering_with_errors_costs_counted_drops_not_the_run(fault, caplog):
    protocol = "grpc" if fault.startswith("grpc") else "http/protobuf"
    bare_steps, bare_result, _ = run_demo([])
    baseline_s = healthy_loop_s(protocol)
    endpoint = GrpcUnavailable() if fault.startswith("grpc") else HttpErrors(int(fault[-3:]))
    reasons = ("export_failed", "collector_down", "queue_full")
    before = {r: sample("looplet_dropped_spans_total", {"reason": r}) for r in reasons}
    try:
        session = configure(
            service_name="faults",
            otlp_endpoint=endpoint.url,
            otlp_protocol=protocol,
            json_logs=False,
            export_timeout_s=0.5,
            schedule_delay_s=0.05,
        )
        results = [run_demo(session.hooks) for _ in range(3)]
        for steps, result, _ in results:  # the same run, step for step, with telemetry on
            assert shape(steps, result) == shape(bare_steps, bare_result)
            assert result.trace_id and all(s.trace_id == result.trace_id and s.span_id for s in steps)
        loop_s = min(r[2] for r in results)
        assert loop_s < max(3 * baseline_s, baseline_s + 0.25), (loop_s, baseline_s)

        spans_made = sum(len(steps) for steps, _, _ in results)  # at least one span per step
        assert wait_until(lambda: sum(session.dropped_spans.values()) >= spans_made, 10.0), (
            session.dropped_spans
        )
        assert session.dropped_spans["export_failed"] >= 1 and endpoint.calls >= 1  # tried, and turned away
        for r in reasons:  # the Prometheus counter says the same, reason by reason
            counted = sample("looplet_dropped_spans_total", {"reason": r}) - before[r]
            assert counted == session.dropped_spans.get(r, 0), r
        t0 = time.perf_counter()
        session.shutdown(timeout_s=1.0)
        assert time.perf_counter() - t0 < 1.5
    finally:
        endpoint.close()
    warned = [r for r in caplog.records if "could not be delivered" in r.getMessage()]
    assert len(warned) == 1, "one warning a minute, not one per failed batch"
    noisy = [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]
    assert len(noisy) <= 2 * 2, [r.getMessage() for r in noisy]  # each exporter logger: once a minute at most


# -- a metrics port already taken ------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_a_metrics_port_in_use_is_a_clear_error_at_set_up_and_leaves_nothing_half_done(busy_port):
    std = logging.getLogger("looplet")
    handlers = list(std.handlers)
    with pytest.raises(OSError) as info:
        configure(service_name="busy", metrics_port=busy_port, json_logs=True)
    assert f"127.0.0.1:{busy_port}" in str(info.value) and "metrics_port=" in str(info.value)
    assert current_session() is None and std.handlers == handlers  # nothing left configured

    bare_steps, bare_result, _ = run_demo([])
    session = configure(service_name="busy", metrics_port=0, json_logs=False)  # another port: all works
    try:
        steps, result, _ = run_demo(session.hooks)
        assert shape(steps, result) == shape(bare_steps, bare_result)
        assert session.metrics_port not in (None, busy_port)
    finally:
        session.shutdown(timeout_s=1.0)


def test_the_demo_with_a_busy_metrics_port_says_so_without_a_traceback(busy_port):
    """Found by this suite (the demo caught only ImportError); fixed in 23bb0fa."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "looplet",
            "demo",
            "--quiet",
            "--latency",
            "0",
            "--metrics-port",
            str(busy_port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and str(busy_port) in proc.stderr
    assert "Traceback" not in proc.stderr


# -- a trace folder or log file that cannot be written ---------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs filled to the last byte (root only; skipped elsewhere)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a small tmpfs; a full disk cannot be made otherwise")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs failed ({done.stderr.strip()}); a full disk cannot be made otherwise")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def unwritable(tmp_path: Path) -> Path:
    """A folder that can never be made, for any user (root ignores permission bits): its parent is a file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    return blocker / "traces"


@pytest.mark.parametrize("where", ["unwritable", "full"])
def test_a_trace_folder_that_cannot_be_written_costs_the_files_not_the_run(where, tmp_path, request, caplog):
    folder = (
        unwritable(tmp_path) if where == "unwritable" else request.getfixturevalue("full_disk") / "traces"
    )
    bare_steps, bare_result, _ = run_demo([])
    session = configure(service_name="faults", json_logs=False, provenance_dir=str(folder))
    try:
        for _ in range(2):
            steps, result, _ = run_demo(session.hooks)
            assert shape(steps, result) == shape(bare_steps, bare_result)
    finally:
        session.shutdown(timeout_s=1.0)
    failed = [r for r in caplog.records if "could not write the trajectory" in r.getMessage()]
    assert len(failed) == 2 and all(r.levelno >= logging.ERROR for r in failed)  # visible, once per run
    if where == "full":  # no partial run folder (temporary ones: see the next test)
        runs = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []
        assert runs == []
        (folder.parent / "filler").unlink()  # space again: the next run is written whole
        reset_global_telemetry()
        session = configure(service_name="faults", json_logs=False, provenance_dir=str(folder))
        run_demo(session.hooks)
        session.shutdown(timeout_s=1.0)
        run_dir = folder  # one run: its files in the folder itself
        assert (run_dir / "trajectory.json").is_file() and (run_dir / "manifest.jsonl").is_file()


@pytest.mark.parametrize("where", ["dev_full", "full_tmpfs"])
def test_a_log_file_on_a_full_disk_costs_log_lines_not_the_run(where, tmp_path, request, capfd):
    log_file = "/dev/full" if where == "dev_full" else str(request.getfixturevalue("full_disk") / "run.jsonl")
    if where == "dev_full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    bare_steps, bare_result, _ = run_demo([])
    before = sample(
        "looplet_hook_errors_total", {"agent": "demo-agent", "hook": "LoggingHook", "method": "on_step"}
    )
    session = configure(service_name="faults", json_logs=True, log_file=log_file)
    try:
        steps, result, _ = run_demo(session.hooks)
    finally:
        session.shutdown(timeout_s=1.0)
    assert shape(steps, result) == shape(bare_steps, bare_result)
    lost = (
        sample(
            "looplet_hook_errors_total", {"agent": "demo-agent", "hook": "LoggingHook", "method": "on_step"}
        )
        - before
    )
    assert lost == len(steps)  # every log line that could not be written is counted
    err = capfd.readouterr().err
    assert (
        "--- Logging error ---" not in err and err.count("cannot write log lines") <= 1
    )  # one note, no flood


def test_a_failed_trajectory_write_stops_all_its_writers_before_cleaning_up(tmp_path, monkeypatch):
    """After write_folder has failed (and removed its temporary folder), none of its writers may still be
    writing: otherwise a hidden .<run>.tmp folder is left on an already full disk (found by the tmpfs test
    above; fixed in e609ef5)."""
    from looplet.provenance import format as fmt

    real = fmt._write_file
    writes_after: list[str] = []
    failed = threading.Event()

    def write(path: str, data: bytes, fsync: bool) -> None:
        if path.endswith("step_01.json"):  # the disk fills up at the first file...
            raise OSError(28, "No space left on device")
        time.sleep(0.05)  # ...while the other writers are still busy
        if failed.is_set():
            writes_after.append(os.path.basename(path))
        real(path, data, fsync)

    monkeypatch.setattr(fmt, "_write_file", write)
    files = {f"steps/step_{i:02d}.json": "{}" for i in range(1, 25)}
    files["trajectory.json"] = "{}"
    with pytest.raises(OSError):
        try:
            fmt.write_folder(tmp_path, "run", files, fsync=True)
        finally:
            failed.set()
    time.sleep(0.5)  # let any writer still running finish
    assert writes_after == [], "writers still running after write_folder failed and cleaned up"
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == []


# -- a raise in each telemetry component in turn (issue 13.4) ---------------------------------------------


class _Boom(Exception):
    pass


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise _Boom("telemetry bug")


class _RaisingProcessor:
    """A span processor whose on_end raises (the SDK calls processors without catching)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        raise _Boom("processor bug")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _RaisingExporter:
    def export(self, spans: Any) -> Any:
        raise _Boom("exporter bug")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FaultyObserver:
    def on_llm_call(self, state: Any, call: Any) -> None:
        raise _Boom("observer bug")

    def on_step(self, state: Any, step: Any) -> None:
        raise _Boom("observer bug")


class FaultyWrap:
    """Raises after the wrapped call came back: the (paid) answer and the tool's result must be kept."""

    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        call_next(call)
        raise _Boom("after the call")

    def wrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        call_next(tool_call)
        raise _Boom("after the tool")

    async def awrap_llm_call(self, call: Any, call_next: Any) -> Any:
        await call_next(call)
        raise _Boom("after the call")

    async def awrap_tool(self, tool_call: Any, call_next: Any) -> Any:
        await call_next(tool_call)
        raise _Boom("after the tool")


def _inject(component: str, sinks: Any) -> tuple[list[Any], str]:
    """Break ``component`` in ``sinks``; return (extra hooks, the component name the fault is counted as)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracing, metrics, logging_hook, _trajectory = sinks.hooks
    if component == "TracingHook":
        tracing._chat_done = _boom  # code after call_next
        tracing.on_step = _boom
        return [], "TracingHook"
    if component == "tracing redactor":
        tracing._redact = _boom
        tracing.capture_content = True
        return [], "TracingHook"
    if component == "span processor":
        sinks.provider.add_span_processor(_RaisingProcessor())
        return [], "TracingHook"
    if component == "exporter":  # the SDK's processor catches it (and logs it): nothing reaches the run
        sinks.provider.add_span_processor(SimpleSpanProcessor(_RaisingExporter()))
        return [], ""
    if component == "MetricsHook":
        metrics.on_llm_call = _boom
        metrics.on_step = _boom
        return [], "MetricsHook"
    if component == "LoggingHook":
        logging_hook.on_step = _boom
        return [], "LoggingHook"
    if component == "logging redactor":
        logging_hook._redact = _boom
        return [], "LoggingHook"
    if component == "trajectory hook":
        _trajectory.on_step = _boom
        return [], type(_trajectory).__name__
    if component == "observer hook":
        return [FaultyObserver()], "FaultyObserver"
    if component == "wrap hook":
        return [FaultyWrap()], "FaultyWrap"
    raise AssertionError(component)


COMPONENTS = [
    "TracingHook",
    "tracing redactor",
    "span processor",
    "exporter",
    "MetricsHook",
    "LoggingHook",
    "logging redactor",
    "trajectory hook",
    "observer hook",
    "wrap hook",
]


def _story(steps: list[Any], result: Any) -> Any:
    return (
        [
            (s.number, s.tool_call.tool, s.tool_call.args, s.tool_result.data, s.tool_result.error_kind)
            for s in steps
        ],
        result.stop_reason,
        result.final_output,
        result.usage.to_dict(),
        result.llm_calls,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("component", COMPONENTS)
def test_a_raise_in_any_telemetry_component_changes_nothing_in_the_run(component, mode, tmp_path, caplog):
    from tests.integration._sinks import Sinks, run_scenario

    bare = Sinks(tmp_path / "bare", order=())
    try:
        expected = _story(*run_scenario(mode, bare))
    finally:
        bare.close()
    sinks = Sinks(tmp_path / "faulty")
    try:
        extra, counted_as = _inject(component, sinks)
        with caplog.at_level(logging.ERROR, logger="opentelemetry"):
            steps, result = run_scenario(mode, sinks, extra)
        assert _story(steps, result) == expected, component
        if counted_as:
            assert sinks.sample("looplet_telemetry_errors_total", component=counted_as) >= 2, component
            if counted_as != "LoggingHook" and component != "logging redactor":
                logged = [
                    line
                    for line in sinks.lines()
                    if line["event"] == "hook.error" and line["hook"] == counted_as
                ]
                assert len(logged) == 1, (component, logged)  # logged once, counted every time
        else:
            assert "exporter bug" in caplog.text  # the SDK's processor logged it; the run never saw it
    finally:
        sinks.close()
