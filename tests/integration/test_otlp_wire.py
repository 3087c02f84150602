"""What the real OTLP exporters deliver, gRPC and HTTP, through ``configure()``, to receivers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from looplet import __version__, demo
from looplet.telemetry import names as N
from looplet.telemetry.setup import configure
from tests.integration._otlp_receiver import GrpcReceiver, HttpReceiver, reset_global_telemetry
from tests.unit._harness import run, run_demo


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
    steps, result = run_demo(session.hooks)
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
    steps, result = run_demo(session.hooks)
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
    steps, result = run_demo(first.hooks)
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


class _FlakyFirst:
    """The demo's backend, whose first call fails with a retryable 503 (the loop retries it)."""

    def __init__(self, llm):
        self._llm = llm
        self.model = llm.model
        self.provider = llm.provider
        self.failed = False

    def generate(self, messages, **kwargs):
        if not self.failed:
            self.failed = True
            from looplet.errors import LLMError

            raise LLMError("overloaded", retryable=True, status=503)
        return self._llm.generate(messages, **kwargs)


def test_what_trace_uis_read_arrives_on_the_wire(http_receiver, tmp_path):
    """Issue 15 items 1-3 on what a collector receives: step spans without gen_ai.* keys, the agent's
    input/output messages (content on, redacted), the conversation on chat spans, tool descriptions, the
    denied call's span; log lines and exemplars pointing at chat/execute_tool spans; GenAI metrics with
    error.type and gen_ai.response.model."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    log_file = tmp_path / "run.log"
    session = configure(
        service_name="wire-test",
        otlp_endpoint=http_receiver.url,
        otlp_protocol="http/protobuf",
        metrics_port=0,
        log_file=str(log_file),
        capture_content=True,
    )
    agent = demo.build(latency_s=0.0)
    llm = _FlakyFirst(agent.llm)
    task = {"goal": "What hooks does looplet have? My key is sk-proj-" + "Q" * 30}
    config = dataclasses.replace(agent.config, llm_retries=2, llm_backoff_s=0.001)
    hooks = [*agent.hooks, *session.hooks]
    request = urllib.request.Request(
        f"http://127.0.0.1:{session.metrics_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    before = _genai_counts(urllib.request.urlopen(request, timeout=5).read().decode())
    steps, result = run("sync", llm=llm, tools=agent.tools, task=task, config=config, hooks=hooks)
    assert result.stop_reason == "done"
    exposition = urllib.request.urlopen(request, timeout=5).read().decode()
    session.shutdown()
    spans = http_receiver.wait_for(lambda sp: any(s["name"].startswith("invoke_agent") for s in sp))
    by_id = {s["span_id"]: s for s in spans}

    # 1. spans trace UIs classify right
    for s in spans:
        if s["name"] == N.STEP_SPAN:
            assert not [k for k in s["attributes"] if k.startswith("gen_ai.")], s["attributes"]
    (agent_span,) = [s for s in spans if s["name"].startswith("invoke_agent")]
    a = agent_span["attributes"]
    assert agent_span["status"] == Status.STATUS_CODE_UNSET  # the run recovered from its failed calls
    (msg,) = json.loads(a["gen_ai.input.messages"])
    assert msg["role"] == "user" and "What hooks" in msg["parts"][0]["content"]
    assert "sk-proj-" not in a["gen_ai.input.messages"] and "[REDACTED" in a["gen_ai.input.messages"]
    (out,) = json.loads(a["gen_ai.output.messages"])
    assert out["role"] == "assistant" and out["parts"][0]["content"] == str(result.final_output)
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert {c["attributes"]["gen_ai.conversation.id"] for c in chats} == {a["gen_ai.conversation.id"]}
    tools = [s for s in spans if s["name"].startswith("execute_tool ")]
    assert all(t["attributes"]["gen_ai.tool.description"] for t in tools)
    (denied,) = [t for t in tools if t["attributes"].get("looplet.tool.executed") is False]
    assert denied["status"] == Status.STATUS_CODE_ERROR and denied["attributes"]["error.type"] == "denied"
    assert by_id[denied["parent_span_id"]]["name"] == N.STEP_SPAN
    assert denied["attributes"]["gen_ai.tool.call.id"] in {
        s.tool_call.id for s in steps if s.tool_result.error_kind == "denied"
    }

    # 2. log lines and exemplars point at the operation
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    for line in lines:
        assert line["trace_id"] == result.trace_id and line["run_id"] == result.run_id, line
        kind = {"llm.call": "chat ", "llm.retry": "chat ", "tool.call": "execute_tool "}.get(
            line["event"], "invoke_agent"
        )
        assert by_id[line["span_id"]]["name"].startswith(kind), line
    assert len([line for line in lines if line["event"] == "llm.call"]) == len(chats)
    exemplars = [  # the registry is the process's: keep this run's (a bucket holds its latest exemplar)
        (f.name, s.exemplar)
        for f in parse_openmetrics(exposition)
        for s in f.samples
        if s.exemplar and s.exemplar.labels["trace_id"] == result.trace_id
    ]
    assert {name for name, _e in exemplars} >= {
        "looplet_llm_duration_seconds",
        "looplet_tool_duration_seconds",
    }
    for name, e in exemplars:
        kind = "chat " if "llm" in name or name.startswith("gen_ai") else "execute_tool "
        assert by_id[e.labels["span_id"]]["name"].startswith(kind), name

    # 3. GenAI metrics per the semantic conventions, failed calls included
    after = _genai_counts(exposition)  # the process's registry: what this run added
    added = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert added == {
        ("duration", "http_503", ""): 1,
        ("duration", "", "gpt-4o-mini"): len(chats) - 1,
        ("tokens", "", "gpt-4o-mini"): 2 * (len(chats) - 1),  # input and output, answered calls only
    }


def _genai_counts(exposition):
    """Observation counts of the GenAI histograms by (metric, error_type, gen_ai_response_model)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    counts = {}
    names = {"gen_ai_client_operation_duration_seconds": "duration", "gen_ai_client_token_usage": "tokens"}
    for f in parse_openmetrics(exposition):
        for s in f.samples:
            if f.name in names and s.name.endswith("_count"):
                key = (names[f.name], s.labels["error_type"], s.labels["gen_ai_response_model"])
                counts[key] = counts.get(key, 0.0) + s.value
    return counts
