"""A dead or hung collector costs nothing at exit: ``TelemetrySession.shutdown()`` gives up on a collector
that refuses or never answers long before its own budget (and before the exporter's timeout), drops what
is left and counts it; a collector that is merely slow still gets everything within the budget.

Budgets and export timeouts are set to 20 s here, so a shutdown that waited for either would be obvious;
the bound under test is ``STALLED_S`` (0.4 s). Timing figures are in docs/benchmarks.md, not here.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from looplet import composable_loop, demo
from looplet.telemetry.setup import STALLED_S, configure
from tests.integration._otlp_receiver import HangingEndpoint, refused_url, reset_global_telemetry

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


class SlowCollector:
    """OTLP/HTTP that takes ``delay_s`` to answer each request (alive, just slow)."""

    def __init__(self, delay_s: float) -> None:
        self.spans = 0
        self.requests = 0
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay_s)  # the collector's own pace, not synchronisation
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                store.requests += 1
                store.spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
