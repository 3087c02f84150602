"""MetricsHook and serve_metrics: values read from Steps and RunResults, bounded labels, exemplars, the wire."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from looplet import DefaultState, Deny, LoopConfig, Usage, emit_event, tool, tools_from
from looplet.backends.mock import MockLLMBackend
from looplet.errors import LLMError
from looplet.telemetry import names as N
from looplet.telemetry.cost import cost_of
from looplet.telemetry.metrics import MetricsHook, declare_metrics, serve_metrics
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import MODES, run


@tool(description="Add two numbers.")
def add(a: int, b: int) -> int:
    return a + b


@tool(description="Always fails.")
def broken() -> None:
    raise RuntimeError("nope")


TOOLS = tools_from([add, broken])
CALL = '{"tool": "add", "args": {"a": 1, "b": 2}}'
DONE = '{"tool": "done", "args": {"answer": "3"}}'


USAGE = Usage(100, 20, cached_input_tokens=40, reasoning_tokens=4)


def mock(*script, model="gpt-4o-mini", usage=USAGE):
    return MockLLMBackend(list(script), model=model, usage=usage)


def go(mode, llm, hooks, tools=TOOLS, state=None, **config):
    config.setdefault("llm_backoff_s", 0.001)
    config.setdefault("agent_name", "calc")
    kw = {"state": state} if state is not None else {}
    return run(
        mode, llm=llm, task={"goal": "add"}, tools=tools, hooks=hooks, config=LoopConfig(**config), **kw
    )


@pytest.fixture
def reg():
    return CollectorRegistry()


def value(reg, name, **labels):
    return reg.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("mode", MODES)
def test_values_come_from_the_steps_and_the_result(mode, reg):
    two = '[{"tool": "add", "args": {"a": 1, "b": 2}}, {"tool": "broken"}]'
    steps, result = go(mode, mock(CALL, two, DONE), [MetricsHook(reg)])
    assert result.stop_reason == "done" and result.llm_calls == 3
    assert value(reg, "looplet_runs_total", agent="calc", outcome="done") == 1
    assert value(reg, "looplet_active_runs", agent="calc") == 0
    assert value(reg, "looplet_steps_total", agent="calc", tool="add", status="ok") == 2
    assert value(reg, "looplet_steps_total", agent="calc", tool="broken", status="error") == 1
    assert value(reg, "looplet_tool_errors_total", agent="calc", tool="broken", kind="tool_exception") == 1
    m = dict(agent="calc", model="gpt-4o-mini")
    assert value(reg, "looplet_llm_requests_total", provider="mock", status="ok", **m) == 3
    assert value(reg, "looplet_tokens_total", type="input", **m) == result.usage.input_tokens == 300
    assert value(reg, "looplet_tokens_total", type="output", **m) == result.usage.output_tokens == 60
    assert value(reg, "looplet_tokens_total", type="cached_input", **m) == 120
    assert value(reg, "looplet_tokens_total", type="reasoning", **m) == 12
    assert value(reg, "looplet_cost_usd_total", **m) == pytest.approx(result.cost_usd)
    assert value(reg, "looplet_llm_duration_seconds_count", **m) == 3
    assert value(reg, "looplet_llm_duration_seconds_sum", **m) == pytest.approx(
        sum(s.llm_ms for s in steps) / 1000
    )
    assert value(reg, "looplet_tool_duration_seconds_sum", agent="calc", tool="add") == pytest.approx(
        sum(s.tool_ms for s in steps if s.tool_call.tool == "add") / 1000
    )
    assert value(reg, "looplet_step_duration_seconds_count", agent="calc") == 4
    g = dict(
        gen_ai_operation_name="chat",
        gen_ai_provider_name="mock",
        gen_ai_request_model="gpt-4o-mini",
        gen_ai_response_model="gpt-4o-mini",
        error_type="",
    )
    assert value(reg, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **g) == 300
    assert value(reg, "gen_ai_client_token_usage_count", gen_ai_token_type="output", **g) == 3
    assert value(reg, "gen_ai_client_operation_duration_seconds_count", **g) == 3


def test_names_buckets_and_label_sets_follow_the_table(reg):
    go("sync", mock(CALL, DONE), [MetricsHook(reg)])
    families = {f.name: f for f in reg.collect()}
    for key, (kind, _help, labels) in N.METRICS.items():
        name = key.removesuffix("_total")
        fam = families[name]
        assert fam.type == kind, key
        for sample in fam.samples:
            assert set(sample.labels) - {"le"} == set(labels), (key, sample)

    def buckets(name, **lab):
        return [
            float(s.labels["le"])
            for s in families[name].samples
            if s.name.endswith("_bucket") and all(s.labels[k] == v for k, v in lab.items())
        ]

    assert buckets("gen_ai_client_token_usage", gen_ai_token_type="input") == [
        *N.GENAI_TOKEN_BUCKETS,
        float("inf"),
    ]
    assert buckets("gen_ai_client_operation_duration_seconds") == [*N.GENAI_DURATION_BUCKETS, float("inf")]
    assert (
        buckets("looplet_llm_duration_seconds")[0] == 0.1
        and buckets("looplet_llm_duration_seconds")[-2] == 120
    )
    assert buckets("looplet_tool_duration_seconds", tool="add")[0] == 0.001
    assert buckets("looplet_tool_duration_seconds", tool="add")[-2] == 60


def test_labels_stay_bounded(reg):
    hallucinated = '{"tool": "made_up_tool_%d", "args": {}}'
    llm = mock(*[hallucinated % i for i in range(3)], CALL, '{"tool": "broken"}', DONE, model=None)
    steps, result = go("sync", llm, [MetricsHook(reg, max_label_values=2)], max_steps=10)
    values = {v for f in reg.collect() for s in f.samples for v in s.labels.values()}
    assert not any(v.startswith("made_up_tool") for v in values)  # tools the registry does not know: "other"
    assert value(reg, "looplet_steps_total", agent="calc", tool="other", status="error") >= 3
    assert value(reg, "looplet_steps_total", agent="calc", tool="add", status="ok") == 1
    assert value(reg, "looplet_steps_total", agent="calc", tool="broken", status="error") == 1
    assert (
        value(reg, "looplet_steps_total", agent="calc", tool="other", status="ok") == 1
    )  # "done": over the cap
    assert result.run_id not in values and "None" not in values
    assert (
        value(reg, "looplet_llm_requests_total", agent="calc", provider="mock", model="unknown", status="ok")
        == result.llm_calls
    )  # the mock's None model becomes "unknown"


def test_declared_once_per_registry_and_the_default_registry_works():
    mine = CollectorRegistry()
    a, b = MetricsHook(mine), MetricsHook(mine)
    assert a._steps is b._steps
    MetricsHook()  # the default registry, twice: no "Duplicated timeseries"
    MetricsHook(REGISTRY)
    assert declare_metrics(REGISTRY) is declare_metrics()
    other = MetricsHook(mine, namespace="myapp")
    go("sync", mock(CALL, DONE), [other])
    assert value(mine, "myapp_runs_total", agent="calc", outcome="done") == 1
    assert value(mine, "looplet_runs_total", agent="calc", outcome="done") == 0
    assert (
        value(
            mine,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_provider_name="mock",
            gen_ai_request_model="gpt-4o-mini",
            gen_ai_response_model="gpt-4o-mini",
            error_type="",
        )
        == 2
    )  # shared by namespaces
    clash = CollectorRegistry()
    Counter("looplet_runs", "someone else's", ["x"], registry=clash)
    with pytest.raises(ValueError, match="looplet_runs.*already holds"):
        MetricsHook(clash)


@pytest.mark.parametrize("mode", MODES)
def test_failures_retries_and_calls_without_a_step(mode, reg):
    flaky = LLMError("busy", retryable=True, status=503)
    steps, result = go(
        mode,
        mock(flaky, "I think the answer is 3.", CALL, LLMError("bad", status=400)),
        [MetricsHook(reg)],
        llm_retries=1,
        max_malformed=2,
    )
    assert result.stop_reason == "llm_error"
    m = dict(agent="calc", model="gpt-4o-mini")
    assert value(reg, "looplet_llm_requests_total", provider="mock", status="error", **m) == 2
    assert value(reg, "looplet_llm_retries_total", **m) == 1
    # the prose answer produced no step but used tokens: totals still match the RunResult exactly
    assert result.llm_calls == 2 and len(steps) == 1
    assert value(reg, "looplet_llm_requests_total", provider="mock", status="ok", **m) == 2
    assert value(reg, "looplet_tokens_total", type="input", **m) == result.usage.input_tokens == 200
    assert value(reg, "looplet_cost_usd_total", **m) == pytest.approx(result.cost_usd)
    assert value(reg, "looplet_runs_total", agent="calc", outcome="llm_error") == 1
    # the GenAI duration histogram records failed attempts too, with their error type
    g = dict(gen_ai_operation_name="chat", gen_ai_provider_name="mock", gen_ai_request_model="gpt-4o-mini")
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(reg, duration, gen_ai_response_model="", error_type="http_503", **g) == 1
    assert value(reg, duration, gen_ai_response_model="", error_type="http_400", **g) == 1
    assert value(reg, duration, gen_ai_response_model="gpt-4o-mini", error_type="", **g) == 2


def test_model_labels_come_from_a_bounded_set(reg):
    """The backend's model and priced models are label values; a name the server makes up is "other"."""
    from looplet.types import LLMResponse, ToolCall

    def answer(model, tool="add", args=None):
        call = ToolCall(tool, args if args is not None else {"a": 1, "b": 2}, f"id-{model}")
        return LLMResponse(tool_calls=[call], model=model, usage=Usage(10, 2))

    script = [
        answer("gpt-4o-mini-2024-07-18"),  # a dated id of a priced model
        answer("sk-proj-" + "Z" * 30),  # a secret where the model name should be
        answer("totally-made-up-9000", "done", {"answer": "3"}),
    ]
    go("sync", MockLLMBackend(script, model="my-local-model"), [MetricsHook(reg)])
    models = {s.labels["model"] for f in reg.collect() for s in f.samples if f.name == "looplet_llm_requests"}
    assert models == {"gpt-4o-mini-2024-07-18", "other"}
    values = {v for f in reg.collect() for s in f.samples for v in s.labels.values()}
    assert not any("made-up" in v or v.startswith("sk-") for v in values)
    request_models = {
        s.labels["gen_ai_request_model"]
        for f in reg.collect()
        for s in f.samples
        if f.name == "gen_ai_client_operation_duration_seconds"
    }
    assert "my-local-model" in request_models  # the model the code chose is kept


def test_a_resumed_state_is_not_counted_twice(reg):
    state = DefaultState()
    state.usage = Usage(5000, 700)
    state.cost_usd = 1.5
    steps, result = go("sync", mock(CALL, DONE), [MetricsHook(reg)], state=state)
    assert result.usage.input_tokens == 5200  # RunResult carries the resumed totals...
    assert (
        value(reg, "looplet_tokens_total", agent="calc", model="gpt-4o-mini", type="input") == 200
    )  # ...metrics not
    assert value(reg, "looplet_cost_usd_total", agent="calc", model="gpt-4o-mini") == pytest.approx(
        2 * cost_of("gpt-4o-mini", Usage(100, 20, cached_input_tokens=40))
    )


def test_unpriced_models_are_counted_and_cost_nothing(reg):
    go("sync", mock(CALL, DONE, model="private-model-x"), [MetricsHook(reg)])
    assert value(reg, "looplet_unpriced_llm_requests_total", agent="calc", model="private-model-x") == 2
    assert value(reg, "looplet_cost_usd_total", agent="calc", model="private-model-x") == 0


@pytest.mark.parametrize("mode", MODES)
def test_denials_hook_errors_and_events(mode, reg):
    class NoBroken:
        def pre_dispatch(self, state, session_log, tool_call, step_num):
            return Deny("not that one") if tool_call.tool == "broken" else None

    class Faulty:
        def on_step(self, state, step):
            raise ValueError("bug")

    @tool(description="Compacts and asks.")
    def busy() -> str:
        emit_event("compaction", strategy="summarize", tokens_before=10, tokens_after=5)
        emit_event("approval", tool="busy", decision="requested", pending=1)
        emit_event("approval", tool="busy", decision="approved", pending=-1, wait_s=2.5)
        emit_event("eval", eval="answer_is_number", outcome="pass")
        return "ok"

    go(
        mode,
        mock('{"tool": "broken"}', '{"tool": "busy"}', DONE),
        [MetricsHook(reg), NoBroken(), Faulty()],
        tools=tools_from([add, broken, busy]),
    )
    assert value(reg, "looplet_hook_denials_total", agent="calc", tool="broken", hook="NoBroken") == 1
    assert value(reg, "looplet_hook_errors_total", agent="calc", hook="Faulty", method="on_step") == 3
    assert value(reg, "looplet_compactions_total", agent="calc", strategy="summarize") == 1
    assert value(reg, "looplet_approvals_pending", agent="calc") == 0
    assert value(reg, "looplet_approval_wait_seconds_sum", agent="calc", tool="busy") == 2.5
    assert value(reg, "looplet_evals_total", agent="calc", eval="answer_is_number", outcome="pass") == 1


@pytest.mark.parametrize("mode", MODES)
def test_histograms_carry_trace_exemplars_only_when_a_span_is_recording(mode, reg):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # the metrics hook first: exemplars do not depend on the order of the hooks
    steps, result = go(mode, mock(CALL, DONE), [MetricsHook(reg), TracingHook(provider)])
    text = openmetrics_latest(reg).decode()
    exemplars = [(f.name, s.exemplar) for f in parse_openmetrics(text) for s in f.samples if s.exemplar]
    assert exemplars and all(e.labels["trace_id"] == result.trace_id for _n, e in exemplars)
    span_names = {format(s.context.span_id, "016x"): s.name for s in exporter.get_finished_spans()}
    for name, e in exemplars:  # each points at the operation it measured
        kind = "chat" if "llm" in name or name.startswith("gen_ai") else "execute_tool"
        assert span_names[e.labels["span_id"]].startswith(kind), (name, span_names.get(e.labels["span_id"]))
    names = {f.name for f in parse_openmetrics(text) for s in f.samples if s.exemplar}
    assert {
        "looplet_llm_duration_seconds",
        "looplet_tool_duration_seconds",
        "looplet_step_duration_seconds",
        "gen_ai_client_operation_duration_seconds",
    } <= names

    bare = CollectorRegistry()
    go(mode, mock(CALL, DONE), [TracingHook(), MetricsHook(bare)])  # no SDK: no trace, no exemplar
    assert not [
        s for f in parse_openmetrics(openmetrics_latest(bare).decode()) for s in f.samples if s.exemplar
    ]


def test_serve_metrics_over_http_parsed_by_prometheus_client(reg):
    server = serve_metrics(0, registry=reg)
    try:
        assert server.server_address[0] == "127.0.0.1"
        go("sync", mock(CALL, DONE), [TracingHook(TracerProvider()), MetricsHook(reg)])
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        runs = [s for s in families["looplet_runs"].samples if s.name == "looplet_runs_total"]
        assert runs[0].labels == {"agent": "calc", "outcome": "done"} and runs[0].value == 1
        req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        om = urllib.request.urlopen(req, timeout=5).read().decode()
        assert any(s.exemplar for f in parse_openmetrics(om) for s in f.samples)
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}.*port {port}") as info:
            serve_metrics(port, registry=CollectorRegistry())
        assert info.value.errno is not None


def test_genai_metrics_go_to_an_otel_meter_provider_when_one_is_configured(reg):
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    go("sync", mock(CALL, DONE), [MetricsHook(reg, meter_provider=mp)])
    data = json.loads(reader.get_metrics_data().to_json())
    metrics = {
        m["name"]: m for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
    }
    usage = metrics["gen_ai.client.token.usage"]["data"]["data_points"]
    by_type = {p["attributes"]["gen_ai.token.type"]: p for p in usage}
    assert by_type["input"]["sum"] == 200 and by_type["output"]["count"] == 2
    assert by_type["input"]["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert by_type["input"]["explicit_bounds"] == list(map(float, N.GENAI_TOKEN_BUCKETS))
    duration = metrics["gen_ai.client.operation.duration"]["data"]["data_points"][0]
    assert duration["count"] == 2 and duration["attributes"]["gen_ai.operation.name"] == "chat"
    assert duration["attributes"]["gen_ai.response.model"] == "gpt-4o-mini"
    assert "error.type" not in duration["attributes"]  # answered calls
    assert duration["explicit_bounds"] == list(map(float, N.GENAI_DURATION_BUCKETS))
    mp.shutdown()
    assert MetricsHook(reg)._otel is None  # no SDK provider set globally: nothing recorded there


def test_docs_list_every_metric():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "telemetry.md").read_text(encoding="utf-8")
    for key, (kind, _help, labels) in N.METRICS.items():
        exposed = key + "_total" if kind == "counter" else key
        assert f"`{exposed}`" in doc, exposed
        for label in labels:
            assert f"`{label}`" in doc, (exposed, label)


@pytest.mark.parametrize("mode", MODES)
def test_what_a_tool_reports_having_spent_is_not_counted_again(mode, reg):
    """A sub-agent (or any tool that calls a model) reports its usage and cost on its ToolResult; its own
    hooks counted them, so the parent's metrics count only the parent's LLM calls."""
    from looplet.types import ToolResult

    @tool(description="Summarise with a model of its own.")
    def summarise() -> ToolResult:
        return ToolResult(data="short", usage=Usage(5000, 500), cost_usd=0.25)

    steps, result = go(
        mode, mock('{"tool": "summarise"}', DONE), [MetricsHook(reg)], tools=tools_from([summarise])
    )
    # rolled up into the run, not into the Step (its cost is the parent call's own: counted once)
    assert result.usage.input_tokens == 200 + 5000 and steps[0].cost_usd < 0.25 < result.cost_usd
    m = dict(agent="calc", model="gpt-4o-mini")
    assert value(reg, "looplet_tokens_total", type="input", **m) == 200
    own = 2 * cost_of("gpt-4o-mini", Usage(100, 20, cached_input_tokens=40))
    assert value(reg, "looplet_cost_usd_total", **m) == pytest.approx(own)
    assert value(reg, "looplet_llm_requests_total", provider="mock", status="ok", **m) == 2
