"""A dead or hung collector costs nothing at exit: ``TelemetrySession.shutdown()`` gives up on a collector
that refuses or never answers long before its own budget (and before the exporter's timeout), drops what
is left and counts it; a collector that is merely slow still gets everything within the budget.

Budgets and export timeouts are set to 20 s here, so a shutdown that waited for either would be obvious;
the bound under test is ``STALLED_S`` (0.4 s). Timing figures are in docs/benchmarks.md, not here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from looplet import composable_loop, demo
from looplet.telemetry.setup import STALLED_S, _address, _reachable, configure
from tests.integration._otlp_receiver import (
    HangingEndpoint,
    LocalHttp,
    Reply,
    otlp_ok,
    refused_url,
    reset_global_telemetry,
)

BUDGET_S = 20.0


@pytest.fixture(autouse=True)
def fresh():
    reset_global_telemetry()
    yield
    reset_global_telemetry()


def run_demo(session: Any) -> int:
    llm, tools, config = demo.build(latency_s=0.0)
    return sum(
        1 for _ in composable_loop(llm=llm, tools=tools, task=demo.TASK, config=config, hooks=session.hooks)
    )


def session_for(url: str, protocol: str, **kw: Any) -> Any:
    return configure(
        service_name="bound",
        otlp_endpoint=url,
        otlp_protocol=protocol,
        json_logs=False,
        export_timeout_s=BUDGET_S,
        shutdown_timeout_s=BUDGET_S,
        schedule_delay_s=30.0,  # nothing leaves before the shutdown: it has every span to deal with
        handle_sigterm=False,
        **kw,
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("collector", ["refused", "hung"])
def test_shutdown_gives_up_on_a_dead_or_hung_collector_and_counts_the_spans(protocol, collector, capfd):
    hanging = HangingEndpoint() if collector == "hung" else None
    url = hanging.url if hanging else refused_url()
    try:
        session = session_for(url, protocol)
        steps = run_demo(session)
        t0 = time.monotonic()
        session.shutdown()
        took = time.monotonic() - t0
    finally:
        if hanging:
            hanging.close()
    assert steps >= 5
    # far below the 20 s budget and the 20 s export timeout: the bound is STALLED_S, plus scheduling slack
    assert took < STALLED_S + 2.0, took
    dropped = session.dropped_spans
    assert sum(dropped.values()) >= steps + 1, dropped  # every span accounted for (a step span per step, ...)
    assert dropped.get("shutdown", 0) > 0 or dropped.get("export_failed", 0) > 0
    err = capfd.readouterr().err
    assert (
        "Transient error" not in err and "retrying" not in err
    )  # the exporter's own retries are not printed


class SlowCollector(LocalHttp):
    """OTLP/HTTP that takes ``delay_s`` to answer each request (alive, just slow), on ``port`` (0: any)."""

    def __init__(self, delay_s: float, port: int = 0) -> None:
        self.spans = 0
        self.requests = 0
        self.delay_s = delay_s
        super().__init__(port)

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        time.sleep(self.delay_s)  # the collector's own pace, not synchronisation
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.requests += 1
        self.spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        return otlp_ok(trace_service_pb2.ExportTraceServiceResponse())


def test_a_slow_but_live_collector_gets_every_span_within_the_budget(monkeypatch):
    """Batches of 16 spans, each answered after 0.15 s: together far longer than STALLED_S, but batches
    keep going out, so the shutdown waits for them instead of dropping."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    collector = SlowCollector(delay_s=0.15)
    try:
        session = session_for(collector.url, "http/protobuf")
        made = run_demo(session) + run_demo(session) + run_demo(session)
        session.shutdown()
    finally:
        collector.close()
    assert session.dropped_spans == {}, session.dropped_spans
    assert collector.requests >= 4  # several batches, each slower than nothing at all
    assert collector.spans >= made + 3  # every step span, plus the run spans


# --- a dead collector is found with one refused connection: no exporter is imported, nothing is encoded ---

HEAVY = (
    "requests",
    "google.protobuf",
    "grpc",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)

DEMO_THEN_MODULES = f"""
import sys
from looplet import demo
demo.main(sys.argv[1:])
print("IMPORTED", [m for m in {HEAVY!r} if m in sys.modules])
"""


def demo_process(url: str, tmp_path: Any) -> str:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    argv = ["--quiet", "--otlp", url, "--json-logs", str(tmp_path / "log"), "--trace-dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-c", DEMO_THEN_MODULES, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_dead_collector_costs_no_exporter_import_and_its_spans_are_counted(scheme, tmp_path):
    url = refused_url().replace("http://", f"{scheme}://")
    out = demo_process(url, tmp_path)
    assert "IMPORTED []" in out, out
    lost = [line for line in out.splitlines() if "spans NOT delivered" in line]
    assert lost and int(lost[0].split(": ")[-1].split()[0]) > 0, out


def test_a_live_collector_gets_the_exporter(tmp_path):
    """The same process against a collector that answers: the exporter is imported and the spans arrive
    (so the test above can tell the two apart)."""
    collector = SlowCollector(delay_s=0.0)
    try:
        out = demo_process(collector.url, tmp_path)
    finally:
        collector.close()
    assert "IMPORTED []" not in out and "NOT delivered" not in out, out
    assert collector.spans > 0


def test_the_exporter_is_built_once_the_collector_comes_up():
    """Refused at first (nothing is built), a collector on that port later gets every span."""
    holder = socket.socket()  # bound, not listening: connections to the port are refused
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    session = session_for(f"http://127.0.0.1:{port}", "http/protobuf")
    assert session.span_exporter.connect() is False
    holder.close()
    collector = SlowCollector(delay_s=0.0, port=port)
    try:
        made = run_demo(session)
        assert session.force_flush(timeout_s=10.0)
        session.shutdown()
    finally:
        collector.close()
    assert session.dropped_spans == {}, session.dropped_spans
    assert collector.spans >= made + 1


def test_with_a_proxy_the_collector_is_not_tried_directly(monkeypatch):
    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    port = int(refused_url().rsplit(":", 1)[1])
    assert _reachable(("127.0.0.1", port), 1.0) is False
    assert _reachable(None, 1.0) is True
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert _reachable(("127.0.0.1", port), 1.0) is True  # the exporter goes through the proxy: built


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("http://collector:4318/v1/traces", ("collector", 4318)),
        ("https://collector/v1/traces", ("collector", 443)),
        ("http://collector", ("collector", 80)),
        ("localhost:4317", ("localhost", 4317)),
        ("unix:///var/run/otel.sock", None),
    ],
)
def test_the_address_tried_is_the_one_the_exporter_connects_to(endpoint, address):
    assert _address(endpoint) == address


# --- configure(span_exporter=): the in-memory baseline of bench/exit_dead_collector.py ---


def test_span_exporter_gets_the_spans_otlp_would():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    session = configure(service_name="memory", span_exporter=memory, json_logs=False, handle_sigterm=False)
    made = run_demo(session)
    session.shutdown()
    spans = memory.get_finished_spans()
    assert session.otlp_endpoint is None and session.dropped_spans == {}
    assert len([s for s in spans if s.name.startswith("looplet.step")]) == made
    assert {s.resource.attributes["service.name"] for s in spans} == {"memory"}


def test_span_exporter_and_an_endpoint_together_are_refused():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    with pytest.raises(ValueError, match="not both"):
        configure(otlp_endpoint=refused_url(), span_exporter=InMemorySpanExporter(), handle_sigterm=False)


def test_demo_spans_in_memory_counts_what_it_kept(tmp_path, capsys):
    from looplet.cli import UsageError

    argv = ["--quiet", "--json-logs", str(tmp_path / "log"), "--trace-dir", str(tmp_path)]
    assert demo.main([*argv, "--spans-in-memory"]) == 0
    kept = [line for line in capsys.readouterr().out.splitlines() if "kept in memory" in line]
    assert kept and int(kept[0].split()[1]) > 0, kept
    with pytest.raises(UsageError, match="give one of them"):
        demo.main([*argv, "--spans-in-memory", "--otlp", refused_url()])
