"""What the real OTLP exporters deliver, gRPC and HTTP, through ``configure()``, to receivers on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from looplet import __version__, composable_loop, demo
from looplet.telemetry import names as N
from looplet.telemetry.setup import configure
from tests.integration._otlp_receiver import GrpcReceiver, HttpReceiver, reset_global_telemetry


@pytest.fixture(autouse=True)
def fresh():
    reset_global_telemetry()
    yield
    reset_global_telemetry()


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.close()


@pytest.fixture
def grpc_receiver():
    r = GrpcReceiver()
    yield r
    r.close()


def run_demo(session):
    llm, tools, config = demo.build(latency_s=0.0)
    gen = composable_loop(llm=llm, tools=tools, task=demo.TASK, config=config, hooks=session.hooks)
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def check_delivered(spans, steps, result):
    """The tree, kinds, typed attributes and events as they arrived on the wire."""
    assert {s["trace_id"] for s in spans} == {result.trace_id}
    by_id = {s["span_id"]: s for s in spans}
    (agent,) = [s for s in spans if s["name"].startswith("invoke_agent")]
    assert agent["name"] == "invoke_agent demo-agent" and agent["kind"] == Span.SPAN_KIND_INTERNAL
    assert agent["resource"]["service.name"] == "wire-test"
    assert agent["resource"]["service.version"] == __version__
    assert agent["scope"] == ("looplet", __version__)
    a = agent["attributes"]
    assert a["gen_ai.operation.name"] == "invoke_agent" and a["gen_ai.agent.name"] == "demo-agent"
    assert (
        a[N.STOP_REASON] == "done" and a[N.RUN_STEPS] == len(steps) and isinstance(a[N.RUN_INPUT_TOKENS], int)
    )
    assert a[N.RUN_INPUT_TOKENS] == result.usage.input_tokens and a[N.COST_USD] == pytest.approx(
        result.cost_usd
    )

    step_spans = {s["attributes"][N.STEP_NUMBER]: s for s in spans if s["name"] == N.STEP_SPAN}
    assert sorted(step_spans) == [s.number for s in steps]
    for step in steps:
        assert step_spans[step.number]["span_id"] == step.span_id
        assert step_spans[step.number]["parent_span_id"] == agent["span_id"]

    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert len(chats) == result.llm_calls
    for c in chats:
        assert c["kind"] == Span.SPAN_KIND_CLIENT and c["name"] == "chat gpt-4o-mini"
        assert by_id[c["parent_span_id"]]["name"] == N.STEP_SPAN
        ca = c["attributes"]
        assert ca["gen_ai.provider.name"] == "mock" and ca["gen_ai.request.model"] == "gpt-4o-mini"
        assert isinstance(ca["gen_ai.usage.input_tokens"], int) and ca["gen_ai.usage.input_tokens"] > 0
        assert ca["gen_ai.response.finish_reasons"] == ["tool_calls"]  # a string array on the wire

    tools = [s for s in spans if s["name"].startswith("execute_tool ")]
    assert len(tools) == len(steps)
    failed = sorted((t for t in tools if t["status"] == Status.STATUS_CODE_ERROR), key=lambda t: t["start"])
    errors = [s for s in steps if s.tool_result.error]
    assert errors and [t["attributes"]["gen_ai.tool.call.id"] for t in failed] == [
        s.tool_call.id for s in errors
    ]
    assert failed[0]["attributes"]["error.type"] == errors[0].tool_result.error_kind
    assert "404" in failed[0]["status_message"]
    for t in tools:
        assert t["attributes"]["gen_ai.tool.call.id"] and by_id[t["parent_span_id"]]["name"] == N.STEP_SPAN
        assert (
            by_id[t["parent_span_id"]]["start"] <= t["start"] <= t["end"] <= by_id[t["parent_span_id"]]["end"]
        )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_configure_exports_the_run_over_otlp(protocol, http_receiver, grpc_receiver, tmp_path):
    receiver = http_receiver if protocol == "http/protobuf" else grpc_receiver
    log_file = tmp_path / "run.log"
    session = configure(
        service_name="wire-test",
        otlp_endpoint=receiver.url,
        otlp_protocol=protocol,
        metrics_port=0,
        log_file=str(log_file),
    )
    assert session.otlp_protocol == protocol
    steps, result = run_demo(session)
    assert result.stop_reason == "done"

    # /metrics over HTTP, parsed by prometheus_client
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{session.metrics_port}/metrics", timeout=5).read().decode()
    )
    families = {f.name: f for f in text_string_to_metric_families(body)}
    runs = {
        tuple(sorted(s.labels.items())): s.value
        for s in families["looplet_runs"].samples
        if s.name == "looplet_runs_total"
    }
    assert runs[(("agent", "demo-agent"), ("outcome", "done"))] >= 1

    session.shutdown()
    spans = receiver.wait_for(lambda sp: any(s["name"].startswith("invoke_agent") for s in sp))
    check_delivered(spans, steps, result)
    assert session.dropped_spans == {}

    # log lines parse as JSON and carry the same ids
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines[0]["event"] == "run.start" and lines[-1]["event"] == "run.end"
    assert {line["trace_id"] for line in lines if "trace_id" in line} == {result.trace_id}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_standard_environment_variables_choose_the_endpoint(
    protocol, monkeypatch, http_receiver, grpc_receiver
):
    receiver = http_receiver if protocol == "http/protobuf" else grpc_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=looplet-tests")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
    session = configure(service_name="wire-test", json_logs=False)
    steps, result = run_demo(session)
    session.shutdown()
    spans = receiver.wait_for(lambda sp: any(s["name"].startswith("invoke_agent") for s in sp))
    check_delivered(spans, steps, result)
    assert spans[0]["resource"]["deployment.environment"] == "ci"
    assert receiver.headers[0]["x-tenant"] == "looplet-tests"


def test_configure_is_idempotent_and_never_replaces_an_application_provider(http_receiver, caplog):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    app_provider = TracerProvider()
    trace.set_tracer_provider(app_provider)
    first = configure(service_name="wire-test", otlp_endpoint=http_receiver.url, json_logs=False)
    assert configure(service_name="wire-test", otlp_endpoint=http_receiver.url, json_logs=False) is first
    assert configure(service_name="other") is first and "called again" in caplog.text
    assert trace.get_tracer_provider() is app_provider and first.tracer_provider is app_provider
    steps, result = run_demo(first)
    first.shutdown()
    spans = http_receiver.wait_for(lambda sp: any(s["name"].startswith("invoke_agent") for s in sp))
    assert {s["span_id"] for s in spans} >= {s.span_id for s in steps}
    assert configure(service_name="wire-test", json_logs=False) is not first  # a new session after shutdown


def test_the_port_4317_means_grpc_and_urls_get_their_signal_path():
    from looplet.telemetry.setup import _guess_protocol, _signal_url

    assert (
        _guess_protocol("http://collector:4317") == "grpc"
        and _guess_protocol("collector:4318") == "http/protobuf"
    )
    assert _signal_url("http://c:4318", "traces") == "http://c:4318/v1/traces"
    assert _signal_url("http://c:4318/v1/traces", "traces") == "http://c:4318/v1/traces"
    assert _signal_url("c:4318/", "traces") == "http://c:4318/v1/traces"
