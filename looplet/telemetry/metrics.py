"""``MetricsHook``: Prometheus metrics of runs, steps, LLM calls, tokens, cost and latency.

Every metric, its labels and its buckets come from ``looplet.telemetry.names.METRICS`` (listed in
``docs/telemetry.md``). Everything is read from what the loop already carries — ``Step`` (usage, ``llm_ms``,
``tool_ms``, ``cost_usd``, ``model``, ``trace_id``), ``RunResult`` and the hook notifications; nothing is
timed here. Labels are bounded: no run, user or call ids; a tool the registry does not know (the model made
it up: ``error_kind == "unknown_tool"``) is counted as ``other``, as is any tool or model past the first
``max_label_values`` distinct names; a missing value is ``unknown``, never ``None``.

Histograms carry the step's ``trace_id``/``span_id`` as an exemplar (visible in the OpenMetrics exposition
that Prometheus asks for), so a latency spike links to its trace. When an OpenTelemetry ``MeterProvider``
is configured, the GenAI client metrics ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.duration`` (and time to first chunk when streaming) are recorded there too.

Needs ``prometheus-client``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from looplet.errors import require
from looplet.hooks import current_run
from looplet.telemetry import names as N
from looplet.telemetry.redact import Redactor

require("prometheus_client", "prometheus")

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402

__all__ = ["MetricsHook", "serve_metrics", "declare_metrics"]

log = logging.getLogger("looplet")

_BUCKETS = {
    "looplet_llm_duration_seconds": N.LLM_BUCKETS,
    "looplet_tool_duration_seconds": N.TOOL_BUCKETS,
    "looplet_step_duration_seconds": N.STEP_BUCKETS,
    "looplet_approval_wait_seconds": N.TOOL_BUCKETS[:-1] + (60, 300, 900, 3600),
    "gen_ai_client_token_usage": N.GENAI_TOKEN_BUCKETS,
    "gen_ai_client_operation_duration_seconds": N.GENAI_DURATION_BUCKETS,
    "gen_ai_client_operation_time_to_first_chunk_seconds": N.GENAI_DURATION_BUCKETS,
}
_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
_DECLARED: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()
_DECLARE_LOCK = threading.Lock()
_CHAT = "chat"
_OTHER = "other"
_UNKNOWN = "unknown"


def declare_metrics(registry: CollectorRegistry | None = None, namespace: str = "looplet") -> dict[str, Any]:
    """The metric objects of ``names.METRICS`` in ``registry`` (the default registry when None), keyed by
    their table name. Declared once per registry and namespace; later calls return the same objects."""
    registry = REGISTRY if registry is None else registry
    with _DECLARE_LOCK:
        per_registry = _DECLARED.setdefault(registry, {})
        found = per_registry.get(namespace)
        if found is not None:
            return found
        metrics: dict[str, Any] = {}
        for key, (kind, help_text, labels) in N.METRICS.items():
            name = key if not key.startswith("looplet_") else f"{namespace}_{key[len('looplet_') :]}"
            kwargs: dict[str, Any] = {"registry": registry}
            if kind == "histogram":
                kwargs["buckets"] = _BUCKETS.get(key, N.STEP_BUCKETS)
            try:
                metric = _KINDS[kind](name, help_text, labels, **kwargs)
            except ValueError as exc:  # declared in this registry by someone else: reuse it if it fits
                metric = _existing(registry, name, kind, labels, exc)
            metrics[key] = metric
        per_registry[namespace] = metrics
        return metrics


def _existing(registry: Any, name: str, kind: str, labels: tuple[str, ...], exc: Exception) -> Any:
    collectors = getattr(registry, "_names_to_collectors", {})
    metric = collectors.get(name) or collectors.get(name + "_total")
    if isinstance(metric, _KINDS[kind]) and tuple(getattr(metric, "_labelnames", ())) == labels:
        return metric
    raise ValueError(
        f"cannot declare looplet metric {name!r}: the registry already holds a different metric "
        f"with that name ({exc}); pass MetricsHook(registry=CollectorRegistry()) or another "
        "namespace"
    ) from None


class _RunMetrics:
    __slots__ = ("agent", "provider", "request_model", "usage0", "cost0", "tokens", "cost", "llm_calls")
    # tokens/cost: what this run's steps explained — its own LLM calls plus what tools reported having
    # spent (a sub-agent's usage, already counted by the child run's hooks).

    def __init__(
        self, agent: str, provider: str, request_model: str, usage0: tuple[int, int, int, int], cost0: float
    ) -> None:
        self.agent = agent
        self.provider = provider
        self.request_model = request_model
        self.usage0 = usage0
        self.cost0 = cost0
        self.tokens = [0, 0, 0, 0]  # input, output, cached input, reasoning recorded from steps
        self.cost = 0.0
        self.llm_calls = 0


class MetricsHook:
    """Prometheus metrics for every run it is passed to (``hooks=[MetricsHook()]``).

    registry: a ``prometheus_client.CollectorRegistry``; the default registry when None. Constructing
        several hooks on one registry is fine: the metrics are declared once and shared.
    namespace: prefix of looplet's own metrics (``looplet_runs_total``...); the ``gen_ai_*`` metrics keep
        their semantic-convention names.
    meter_provider: an OpenTelemetry ``MeterProvider`` for the GenAI client metrics; None uses the global
        one if an SDK provider has been set (``configure(otlp_metrics=True)`` does), else none are recorded.
    max_label_values: distinct tool names and model names kept as label values; later ones count as ``other``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "looplet",
        *,
        meter_provider: Any = None,
        max_label_values: int = 100,
    ) -> None:
        if not namespace or not namespace.replace("_", "").isalnum():
            raise ValueError(f"MetricsHook(namespace={namespace!r}): use letters, digits and underscores")
        self.registry = REGISTRY if registry is None else registry
        self.namespace = namespace
        self.max_label_values = max_label_values
        m = declare_metrics(self.registry, namespace)
        self._m = m
        self._runs = m["looplet_runs"]
        self._active = m["looplet_active_runs"]
        self._steps = m["looplet_steps"]
        self._llm_requests = m["looplet_llm_requests"]
        self._tokens = m["looplet_tokens"]
        self._cost = m["looplet_cost_usd"]
        self._unpriced = m["looplet_unpriced_llm_requests"]
        self._llm_duration = m["looplet_llm_duration_seconds"]
        self._tool_duration = m["looplet_tool_duration_seconds"]
        self._step_duration = m["looplet_step_duration_seconds"]
        self._tool_errors = m["looplet_tool_errors"]
        self._denials = m["looplet_hook_denials"]
        self._hook_errors = m["looplet_hook_errors"]
        self._retries = m["looplet_llm_retries"]
        self._compactions = m["looplet_compactions"]
        self._approvals = m["looplet_approvals_pending"]
        self._approval_wait = m["looplet_approval_wait_seconds"]
        self._evals = m["looplet_evals"]
        self._genai_tokens = m["gen_ai_client_token_usage"]
        self._genai_duration = m["gen_ai_client_operation_duration_seconds"]
        self._genai_ttfc = m["gen_ai_client_operation_time_to_first_chunk_seconds"]
        self._children: dict[tuple[Any, ...], Any] = {}
        self._tools: dict[str, str] = {}  # tool name -> its label (a name holding a secret is "other")
        self._redact = Redactor()
        self._models: set[str] = set()
        self._otel = _OtelInstruments.create(meter_provider)

    # -- label helpers --------------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _tool_label(self, name: str | None, error_kind: str | None = None) -> str:
        if not name or error_kind == "unknown_tool":
            return _OTHER
        label = self._tools.get(name)
        if label is not None:
            return label
        if len(self._tools) < self.max_label_values:
            label = self._tools[name] = name if self._redact(name) == name else _OTHER
            return label
        return _OTHER

    def _model_label(self, name: str | None) -> str:
        if not name:
            return _UNKNOWN
        if name in self._models:
            return name
        if len(self._models) < self.max_label_values:
            self._models.add(name)
            return name
        return _OTHER

    def _agent(self) -> tuple[Any, str]:
        run = current_run()
        if run is None:
            return None, _UNKNOWN
        rm = run.scratch.get(self)
        return rm, (rm.agent if rm is not None else (run.agent_name or _UNKNOWN))

    # -- run ----------------------------------------------------------------------------------------

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        run = current_run()
        if run is None:
            return
        usage = getattr(state, "usage", None)
        usage0 = (
            (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens)
            if usage is not None
            else (0, 0, 0, 0)
        )
        cost0 = getattr(state, "cost_usd", None) or 0.0
        agent = run.agent_name or _UNKNOWN
        run.scratch[self] = _RunMetrics(
            agent, run.provider or _UNKNOWN, self._model_label(run.model), usage0, cost0
        )
        self._child(self._active, agent).inc()

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        rm = run.scratch.pop(self, None) if run is not None else None
        if rm is None:
            return
        agent = rm.agent
        # LLM calls that produced no step (an answer without a tool call, the call before a stop) still
        # used tokens: add what RunResult counts beyond what the steps carried.
        extra_calls = result.llm_calls - rm.llm_calls
        model = self._model_label(run.model) if run is not None else rm.request_model
        if extra_calls > 0:
            self._child(self._llm_requests, agent, rm.provider, model, "ok").inc(extra_calls)
        u = result.usage
        totals = (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens)
        for i, token_type in enumerate(("input", "output", "cached_input", "reasoning")):
            missing = totals[i] - rm.usage0[i] - rm.tokens[i]
            if missing > 0:
                self._child(self._tokens, agent, model, token_type).inc(missing)
        if result.cost_usd is not None:
            missing_cost = result.cost_usd - rm.cost0 - rm.cost
            if missing_cost > 1e-12:
                self._child(self._cost, agent, model).inc(missing_cost)
        outcome = result.stop_reason.partition(":")[0] or _UNKNOWN
        self._child(self._runs, agent, outcome).inc()
        self._child(self._active, agent).dec()

    # -- steps --------------------------------------------------------------------------------------

    def on_step(self, state: Any, step: Any) -> None:
        rm, agent = self._agent()
        result = step.tool_result
        error_kind = result.error_kind if result.error is not None else None
        tool = self._tool_label(step.tool_call.tool, error_kind)
        exemplar = (
            {"trace_id": step.trace_id, "span_id": step.span_id} if step.trace_id and step.span_id else None
        )
        tool_s = step.tool_ms / 1000.0
        self._child(self._steps, agent, tool, "ok" if result.error is None else "error").inc()
        self._child(self._tool_duration, agent, tool).observe(tool_s, exemplar)
        if result.error is not None:
            self._child(self._tool_errors, agent, tool, error_kind or "error").inc()
        self._child(self._step_duration, agent).observe(tool_s + step.llm_ms / 1000.0, exemplar)
        spent = result.usage  # a tool that ran LLM calls of its own (a sub-agent): counted by its own hooks,
        if rm is not None and (spent is not None or result.cost_usd is not None):  # so not again at run end
            if spent is not None:
                t = rm.tokens
                t[0] += spent.input_tokens
                t[1] += spent.output_tokens
                t[2] += spent.cached_input_tokens
                t[3] += spent.reasoning_tokens
            rm.cost += result.cost_usd or 0.0

    # -- LLM calls: each answered call once, whether or not it proposed a tool call --------------------

    def on_llm_call(self, state: Any, call: Any) -> None:
        if call.replayed:
            return
        if call.outcome != "ok":
            self._llm_failed(call, None)
            return
        response, llm_ms, cost_usd = call.response, call.duration_ms, call.cost_usd
        rm, agent = self._agent()
        run = current_run()
        exemplar = (
            {"trace_id": run.trace_id, "span_id": run.span_id}
            if run is not None and run.trace_id and run.span_id
            else None
        )
        model = self._model_label(response.model or (run.model if run is not None else None))
        provider = rm.provider if rm is not None else (response.provider or _UNKNOWN)
        request_model = rm.request_model if rm is not None else model
        self._child(self._llm_requests, agent, provider, model, "ok").inc()
        llm_s = llm_ms / 1000.0
        self._child(self._llm_duration, agent, model).observe(llm_s, exemplar)
        self._child(self._genai_duration, _CHAT, provider, request_model).observe(llm_s, exemplar)
        ttfc = response.time_to_first_chunk_s
        if ttfc is not None:
            self._child(self._genai_ttfc, _CHAT, provider, request_model).observe(ttfc, exemplar)
        if rm is not None:
            rm.llm_calls += 1
        usage = response.usage
        if usage is not None:
            inp, out = usage.input_tokens, usage.output_tokens
            self._child(self._tokens, agent, model, "input").inc(inp)
            self._child(self._tokens, agent, model, "output").inc(out)
            if usage.cached_input_tokens:
                self._child(self._tokens, agent, model, "cached_input").inc(usage.cached_input_tokens)
            if usage.reasoning_tokens:
                self._child(self._tokens, agent, model, "reasoning").inc(usage.reasoning_tokens)
            self._child(self._genai_tokens, _CHAT, provider, request_model, "input").observe(inp, exemplar)
            self._child(self._genai_tokens, _CHAT, provider, request_model, "output").observe(out, exemplar)
            if rm is not None:
                t = rm.tokens
                t[0] += inp
                t[1] += out
                t[2] += usage.cached_input_tokens
                t[3] += usage.reasoning_tokens
            if cost_usd is not None:
                self._child(self._cost, agent, model).inc(cost_usd)
                if rm is not None:
                    rm.cost += cost_usd
            else:
                self._child(self._unpriced, agent, model).inc()
        if self._otel is not None:
            self._otel.record(
                provider,
                request_model,
                response.model,
                llm_s,
                usage,
                ttfc * 1000.0 if ttfc is not None else None,
            )

    # -- failures and events ------------------------------------------------------------------------

    def _llm_failed(self, call: Any, exc: Exception | None) -> None:
        rm, agent = self._agent()
        provider = rm.provider if rm is not None else (call.provider or _UNKNOWN)
        self._child(self._llm_requests, agent, provider, self._model_label(call.model), "error").inc()

    def on_llm_retry(self, state: Any, attempt: int, error: Any, delay_s: float) -> None:
        run = current_run()
        rm, agent = self._agent()
        self._child(self._retries, agent, self._model_label(run.model if run is not None else None)).inc()

    def on_hook_error(self, hook: Any, method: str, error: Any) -> None:
        _rm, agent = self._agent()
        self._child(self._hook_errors, agent, type(hook).__name__, str(method)).inc()

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "hook.decision":
            if attributes.get("decision") == "deny":
                _rm, agent = self._agent()
                self._child(
                    self._denials,
                    agent,
                    self._tool_label(attributes.get("tool")),
                    str(attributes.get("hook") or _UNKNOWN),
                ).inc()
        elif name == "compaction":
            _rm, agent = self._agent()
            self._child(self._compactions, agent, str(attributes.get("strategy") or _UNKNOWN)).inc()
        elif name == "approval":
            _rm, agent = self._agent()
            pending = attributes.get("pending")
            if isinstance(pending, (int, float)) and pending:
                self._child(self._approvals, agent).inc(pending)
            wait = attributes.get("wait_s")
            if isinstance(wait, (int, float)):
                self._child(self._approval_wait, agent, self._tool_label(attributes.get("tool"))).observe(
                    wait
                )
        elif name == "eval":
            _rm, agent = self._agent()
            self._child(
                self._evals,
                agent,
                str(attributes.get("eval") or attributes.get("name") or _UNKNOWN),
                str(attributes.get("outcome") or _UNKNOWN),
            ).inc()


class _OtelInstruments:
    """The GenAI client metrics on an OpenTelemetry meter (semantic-convention names and buckets)."""

    __slots__ = ("tokens", "duration", "ttfc", "attrs")

    def __init__(self, meter: Any) -> None:
        self.tokens = meter.create_histogram(
            N.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(N.GENAI_TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            N.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(N.GENAI_DURATION_BUCKETS),
        )
        self.ttfc = meter.create_histogram(
            N.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(N.GENAI_DURATION_BUCKETS),
        )
        self.attrs: dict[
            tuple[str, str, str | None], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
        ] = {}

    @classmethod
    def create(cls, meter_provider: Any) -> _OtelInstruments | None:
        try:
            from opentelemetry import metrics
        except ImportError:
            return None
        if meter_provider is None:
            provider = metrics.get_meter_provider()
            try:
                from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
            except ImportError:
                return None
            if not isinstance(provider, SdkMeterProvider):
                return None  # no SDK provider configured: nothing would be recorded
            meter_provider = provider
        from looplet import __version__

        return cls(meter_provider.get_meter(N.TRACER_SCOPE, __version__))

    def record(
        self,
        provider: str,
        request_model: str,
        response_model: str | None,
        seconds: float,
        usage: Any,
        ttfc_ms: float | None,
    ) -> None:
        key = (provider, request_model, response_model)
        attrs = self.attrs.get(key)
        if attrs is None:
            base = {
                N.GEN_AI_OPERATION_NAME: _CHAT,
                N.GEN_AI_PROVIDER_NAME: provider,
                N.GEN_AI_REQUEST_MODEL: request_model,
            }
            if response_model:
                base[N.GEN_AI_RESPONSE_MODEL] = response_model
            attrs = self.attrs[key] = (
                base,
                {**base, N.GEN_AI_TOKEN_TYPE: "input"},
                {**base, N.GEN_AI_TOKEN_TYPE: "output"},
            )
        self.duration.record(seconds, attrs[0])
        if ttfc_ms is not None:
            self.ttfc.record(ttfc_ms / 1000.0, attrs[0])
        if usage is not None:
            self.tokens.record(usage.input_tokens, attrs[1])
            self.tokens.record(usage.output_tokens, attrs[2])


def serve_metrics(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``/metrics`` (Prometheus text, or OpenMetrics with exemplars when asked) on ``addr:port``
    from a daemon thread. Returns the server; ``server.shutdown()`` stops it. ``port=0`` picks a free port
    (``server.server_port`` tells which)."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(
            port, addr=addr, registry=REGISTRY if registry is None else registry
        )
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc} "
            f"(is another process using port {port}? pick another with metrics_port=...)",
        ) from None
    return server
