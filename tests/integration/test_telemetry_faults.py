"""Telemetry never hurts the agent: a refused or hung collector costs dropped (counted) spans, never an
exception, a different run or a blocked exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from prometheus_client import REGISTRY

from looplet.telemetry.setup import configure
from tests.integration._otlp_receiver import HangingEndpoint, refused_url, reset_global_telemetry
from tests.unit._harness import run_demo


@pytest.fixture(autouse=True)
def fresh():
    reset_global_telemetry()
    yield
    reset_global_telemetry()


@pytest.fixture
def hanging():
    h = HangingEndpoint()
    yield h
    h.close()


def shape(steps, result):
    return (
        [(s.number, s.tool_call.tool, s.tool_call.args, s.tool_result.error_kind) for s in steps],
        result.stop_reason,
        result.final_output,
        result.usage.to_dict(),
    )


def dropped(*reasons):
    return sum(
        REGISTRY.get_sample_value("looplet_dropped_spans_total", {"reason": r}) or 0.0 for r in reasons
    )


FAILED = ("export_failed", "collector_down")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("endpoint", ["refused", "hanging"])
def test_a_dead_collector_changes_nothing_in_the_run_and_drops_are_counted(
    protocol, endpoint, hanging, caplog
):
    bare_steps, bare_result = run_demo([])
    url = refused_url() if endpoint == "refused" else hanging.url
    before = dropped(*FAILED)
    session = configure(
        service_name="faults",
        otlp_endpoint=url,
        otlp_protocol=protocol,
        json_logs=False,
        export_timeout_s=0.5,
        schedule_delay_s=0.05,
    )
    t0 = time.perf_counter()
    steps, result = run_demo(session.hooks)
    loop_s = time.perf_counter() - t0
    assert shape(steps, result) == shape(bare_steps, bare_result)
    assert result.trace_id is not None and all(s.span_id for s in steps)
    assert loop_s < 0.5, "the loop must not wait for the collector"
    lost = lambda: sum(session.dropped_spans.get(r, 0) for r in FAILED)  # noqa: E731
    deadline = time.monotonic() + 10
    while lost() < 2 * len(steps) and time.monotonic() < deadline:  # at least the step and tool spans
        time.sleep(0.05)
    assert session.dropped_spans["export_failed"] > 0 and lost() >= 2 * len(steps)
    assert dropped(*FAILED) - before == lost()
    assert "could not be delivered" in caplog.text
    t0 = time.perf_counter()
    session.shutdown(timeout_s=1.0)
    assert time.perf_counter() - t0 < 1.5  # bounded, even with the collector hung


def test_after_a_failure_batches_are_dropped_at_once_then_the_collector_is_probed_again(hanging):
    from opentelemetry.sdk.trace.export import SpanExportResult

    from looplet.telemetry.setup import span_pipeline

    processor, drops, exporter = span_pipeline(hanging.url, "http/protobuf", export_timeout_s=0.3)
    calls = []
    real = exporter.inner.export
    exporter.inner.export = lambda spans: calls.append(len(spans)) or real(spans)
    assert exporter.export([object()] * 3) is SpanExportResult.FAILURE  # tried: waited for the timeout
    t0 = time.perf_counter()
    assert exporter.export([object()] * 5) is SpanExportResult.FAILURE  # skipped: no encoding, no wait
    assert time.perf_counter() - t0 < 0.05 and calls == [3]
    assert drops.counts == {"export_failed": 3, "collector_down": 5}
    exporter._skip_until = 0.0  # the window is over: the next batch probes the collector again
    exporter.inner.export = lambda spans: calls.append(len(spans)) or SpanExportResult.SUCCESS
    assert exporter.export([object()] * 2) is SpanExportResult.SUCCESS and calls == [3, 2]
    assert exporter._failures == 0 and not drops.collector_down
    processor.shutdown()


def test_a_full_queue_drops_and_counts_instead_of_blocking(hanging):
    before = dropped("queue_full")
    session = configure(
        service_name="faults",
        otlp_endpoint=hanging.url,
        json_logs=False,
        export_timeout_s=2.0,
        max_queue_size=16,
        schedule_delay_s=0.05,
    )
    steps, result = run_demo(session.hooks, steps=60)
    assert result.error is None and len(steps) >= 50
    assert session.dropped_spans.get("queue_full", 0) > 0
    assert dropped("queue_full") - before == session.dropped_spans["queue_full"]
    session.shutdown(timeout_s=0.5)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_process_exits_promptly_with_a_hung_collector(protocol, hanging):
    script = textwrap.dedent(f"""
        from looplet import composable_loop, demo
        from looplet.telemetry.setup import configure
        s = configure(service_name="exit", otlp_endpoint={hanging.url!r}, otlp_protocol={protocol!r},
                      json_logs=False, shutdown_timeout_s=1.0)
        llm, tools, config = demo.build(latency_s=0.0)
        for _ in composable_loop(llm=llm, tools=tools, task=demo.TASK, config=config, hooks=s.hooks):
            pass
        print("done", flush=True)
    """)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    # interpreter start + imports, plus at most the 1 s exit flush (never the exporter's own 5 s timeout)
    assert elapsed < 12, elapsed
