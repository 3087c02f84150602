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
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from looplet.errors import require
from looplet.hooks import current_run
from looplet.telemetry import names as N
from looplet.telemetry.cost import price_for
from looplet.telemetry.redact import Redactor

require("prometheus_client", "prometheus")

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402

__all__ = ["MetricsHook", "serve_metrics", "declare_metrics", "metrics_registry"]

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
_MAX_CHILDREN = 10_000  # cached label children per hook (the label values themselves are bounded)
_MAX_RUN_SERIES = 64  # cached series groups per run (keyed by raw names: a few per run)


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
            elif kind == "gauge":
                kwargs["multiprocess_mode"] = "livesum"  # several worker processes: the sum of the live ones
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


class _Labels:
    """Label values from a bounded set: the first ``limit`` distinct names that ``allow`` accepts keep
    their name; a name it refuses, and any new name once the set is full, is ``other``; no name is
    ``unknown``. The map never holds more than ``limit`` entries."""

    __slots__ = ("seen", "limit", "allow")

    def __init__(self, limit: int, allow: Callable[[str], bool] | None = None) -> None:
        self.seen: dict[str, str] = {}
        self.limit = limit
        self.allow = allow

    def __call__(self, name: Any) -> str:
        if not name:
            return _UNKNOWN
        label = self.seen.get(name)
        if label is not None:
            return label
        if len(self.seen) >= self.limit or not isinstance(name, str):
            return _OTHER
        label = name if self.allow is None or self.allow(name) else _OTHER
        self.seen[name] = label
        return label


class _RunMetrics:
    """One run's label values, and the label children its steps and LLM calls update, resolved once per
    combination of raw names (a few per run; at most ``_MAX_RUN_SERIES``, then resolved each time)."""

    __slots__ = ("agent", "provider", "request_model", "steps", "calls")

    def __init__(self, agent: str, provider: str, request_model: str) -> None:
        self.agent = agent
        self.provider = provider
        self.request_model = request_model
        self.steps: dict[tuple[Any, ...], _StepSeries] = {}
        self.calls: dict[tuple[Any, ...], _CallSeries] = {}


class _StepSeries:
    """The children one step updates: steps counter, tool and step duration, tool errors (or None)."""

    __slots__ = ("steps", "tool_duration", "step_duration", "errors")

    def __init__(self, steps: Any, tool_duration: Any, step_duration: Any, errors: Any) -> None:
        self.steps = steps
        self.tool_duration = tool_duration
        self.step_duration = step_duration
        self.errors = errors


class _CallSeries:
    """The children one LLM attempt updates, for one combination of its label values. The ones a call
    may not need (cached/reasoning tokens, cost or unpriced, time to first chunk) are resolved on first
    use, so no series shows up before it has a value."""

    __slots__ = (
        "hook", "agent", "model", "genai", "error_type", "requests", "llm_duration", "genai_duration",
        "tokens_in", "tokens_out", "genai_in", "genai_out", "optional",
    )  # fmt: skip

    def __init__(
        self, hook: MetricsHook, agent: str, model: str, genai: tuple[str, ...], error_type: str
    ) -> None:
        self.hook, self.agent, self.model, self.genai, self.error_type = hook, agent, model, genai, error_type
        child = hook._child
        self.requests = child(hook._llm_requests, agent, genai[1], model, "error" if error_type else "ok")
        self.llm_duration = child(hook._llm_duration, agent, model)
        self.genai_duration = child(hook._genai_duration, *genai, error_type)
        self.tokens_in = child(hook._tokens, agent, model, "input")
        self.tokens_out = child(hook._tokens, agent, model, "output")
        self.genai_in = child(hook._genai_tokens, *genai, "input", error_type)
        self.genai_out = child(hook._genai_tokens, *genai, "output", error_type)
        self.optional: dict[str, Any] = {}

    def get(self, which: str) -> Any:
        child = self.optional.get(which)
        if child is None:
            hook = self.hook
            if which in ("cached_input", "reasoning"):
                child = hook._child(hook._tokens, self.agent, self.model, which)
            elif which == "cost":
                child = hook._child(hook._cost, self.agent, self.model)
            elif which == "unpriced":
                child = hook._child(hook._unpriced, self.agent, self.model)
            else:  # time to first chunk
                child = hook._child(hook._genai_ttfc, *self.genai[:3])
            self.optional[which] = child
        return child


class MetricsHook:
    """Prometheus metrics for every run it is passed to (``hooks=[MetricsHook()]``).

    registry: a ``prometheus_client.CollectorRegistry``; the default registry when None. Constructing
        several hooks on one registry is fine: the metrics are declared once and shared.
    namespace: prefix of looplet's own metrics (``looplet_runs_total``...); the ``gen_ai_*`` metrics keep
        their semantic-convention names.
    meter_provider: an OpenTelemetry ``MeterProvider`` for the GenAI client metrics; None uses the global
        one if an SDK provider has been set (``configure(otlp_metrics=True)`` does), else none are recorded.
    max_label_values: distinct values kept per label (tools, models, agents, hooks, error types...);
        later ones count as ``other``.
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
        self._telemetry_errors = m["looplet_telemetry_errors"]
        self._retries = m["looplet_llm_retries"]
        self._compactions = m["looplet_compactions"]
        self._approvals = m["looplet_approvals_pending"]
        self._approval_wait = m["looplet_approval_wait_seconds"]
        self._evals = m["looplet_evals"]
        self._genai_tokens = m["gen_ai_client_token_usage"]
        self._genai_duration = m["gen_ai_client_operation_duration_seconds"]
        self._genai_ttfc = m["gen_ai_client_operation_time_to_first_chunk_seconds"]
        self._children: dict[tuple[Any, ...], Any] = {}
        self._redact = Redactor()
        n = max_label_values
        self._tools = _Labels(n, self._plain)  # a name holding a secret is "other"
        self._configured: set[str] = set()  # models the code configured (a backend's model)
        self._models = _Labels(n, self._known_model)  # a name the server made up is "other"
        self._names = _Labels(n, self._plain)  # agents, providers, hooks, methods, strategies, evals...
        self._errors = _Labels(n, self._plain)
        self._otel = _OtelInstruments.create(meter_provider)

    # -- label helpers --------------------------------------------------------------------------------

    def _plain(self, name: str) -> bool:
        return len(name) <= 128 and self._redact(name) == name

    def _known_model(self, name: str) -> bool:
        return self._plain(name) and (name in self._configured or price_for(name) is not None)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = child
        return child

    def _tool_label(self, name: str | None, error_kind: str | None = None) -> str:
        if not name or error_kind == "unknown_tool":  # a tool the model made up
            return _OTHER
        return self._tools(name)

    def _run(self) -> tuple[Any, _RunMetrics | None, str]:
        run = current_run()
        rm = run.scratch.get(self) if run is not None else None
        if rm is not None:
            return run, rm, rm.agent
        return run, None, self._names(run.agent_name if run is not None else None)

    # -- run ----------------------------------------------------------------------------------------

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        run = current_run()
        if run is None:
            return
        if run.model and len(self._configured) < self.max_label_values:
            self._configured.add(run.model)
        agent = self._names(run.agent_name)
        run.scratch[self] = _RunMetrics(agent, self._names(run.provider), self._models(run.model))
        self._child(self._active, agent).inc()

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        rm = run.scratch.pop(self, None) if run is not None else None
        if rm is None:
            return
        outcome = self._names(result.stop_reason.partition(":")[0])
        self._child(self._runs, rm.agent, outcome).inc()
        self._child(self._active, rm.agent).dec()

    # -- steps --------------------------------------------------------------------------------------

    def on_step(self, state: Any, step: Any) -> None:
        run, rm, agent = self._run()
        result = step.tool_result
        error_kind = (result.error_kind or "error") if result.error is not None else None
        key = (step.tool_call.tool, error_kind)
        series = rm.steps.get(key) if rm is not None else None
        if series is None:
            series = self._step_series(rm, agent, key)
        exemplar = _exemplar(run, "tool", step)
        tool_s = step.tool_ms / 1000.0
        series.steps.inc()
        series.tool_duration.observe(tool_s, exemplar)
        if series.errors is not None:
            series.errors.inc()
        series.step_duration.observe(tool_s + step.llm_ms / 1000.0, exemplar)

    def _step_series(self, rm: _RunMetrics | None, agent: str, key: tuple[Any, ...]) -> _StepSeries:
        name, error_kind = key
        tool = self._tool_label(name, error_kind)
        series = _StepSeries(
            self._child(self._steps, agent, tool, "ok" if error_kind is None else "error"),
            self._child(self._tool_duration, agent, tool),
            self._child(self._step_duration, agent),
            self._child(self._tool_errors, agent, tool, self._errors(error_kind)) if error_kind else None,
        )
        if rm is not None and len(rm.steps) < _MAX_RUN_SERIES:
            rm.steps[key] = series
        return series

    # -- LLM calls: every attempt once, answered or failed, read from the call's facts -----------------

    def on_llm_call(self, state: Any, call: Any) -> None:
        if call.replayed:  # given back from a checkpoint: no model was called
            return
        run, rm, agent = self._run()
        ok = call.outcome == "ok"
        key = (call.provider, call.model, call.response_model, None if ok else (call.error_type or "error"))
        series = rm.calls.get(key) if rm is not None else None
        if series is None:
            series = self._call_series(rm, agent, key)
        exemplar = _exemplar(run, "chat")
        seconds = call.duration_ms / 1000.0
        series.requests.inc()
        series.llm_duration.observe(seconds, exemplar)
        series.genai_duration.observe(seconds, exemplar)
        if call.ttfc_ms is not None:
            series.get("ttfc").observe(call.ttfc_ms / 1000.0, exemplar)
        usage = call.usage
        if usage is not None:
            series.tokens_in.inc(usage.input_tokens)
            series.tokens_out.inc(usage.output_tokens)
            if usage.cached_input_tokens:
                series.get("cached_input").inc(usage.cached_input_tokens)
            if usage.reasoning_tokens:
                series.get("reasoning").inc(usage.reasoning_tokens)
            series.genai_in.observe(usage.input_tokens, exemplar)
            series.genai_out.observe(usage.output_tokens, exemplar)
            if call.cost_usd is not None:
                series.get("cost").inc(call.cost_usd)
            else:
                series.get("unpriced").inc()
        if self._otel is not None:
            self._otel.record(series.genai, series.error_type, call, seconds)

    def _call_series(self, rm: _RunMetrics | None, agent: str, key: tuple[Any, ...]) -> _CallSeries:
        """The label values of an attempt (bounded: a name past the limit, or one the server made up, is
        ``other``) and the children they select."""
        provider_name, request, response, error = key
        provider = rm.provider if rm is not None else self._names(provider_name)
        request_model = self._models(request) if request else (rm.request_model if rm else _UNKNOWN)
        model = self._models(response or request)
        response_model = self._models(response) if response else ""
        error_type = "" if error is None else self._errors(error)
        series = _CallSeries(self, agent, model, (_CHAT, provider, request_model, response_model), error_type)
        if rm is not None and len(rm.calls) < _MAX_RUN_SERIES:
            rm.calls[key] = series
        return series

    # -- failures and events ------------------------------------------------------------------------

    def on_llm_retry(self, state: Any, attempt: int, error: Any, delay_s: float) -> None:
        run, _rm, agent = self._run()
        self._child(self._retries, agent, self._models(run.model if run is not None else None)).inc()

    def on_hook_error(self, hook: Any, method: str, error: Any) -> None:
        _run, _rm, agent = self._run()
        name = self._names(type(hook).__name__)
        self._child(self._hook_errors, agent, name, self._names(str(method))).inc()
        self._child(self._telemetry_errors, name).inc()

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "hook.decision":
            if attributes.get("decision") == "deny":
                _run, _rm, agent = self._run()
                tool = self._tool_label(attributes.get("tool"))
                self._child(self._denials, agent, tool, self._names(attributes.get("hook"))).inc()
        elif name == "compaction":
            _run, _rm, agent = self._run()
            self._child(self._compactions, agent, self._names(attributes.get("strategy"))).inc()
        elif name == "approval":
            self._approval(attributes)
        elif name == "eval":
            _run, _rm, agent = self._run()
            which = self._names(attributes.get("eval") or attributes.get("name"))
            self._child(self._evals, agent, which, self._names(attributes.get("outcome"))).inc()

    def _approval(self, attributes: dict[str, Any]) -> None:
        _run, _rm, agent = self._run()
        pending = attributes.get("pending")
        if isinstance(pending, (int, float)) and pending:
            self._child(self._approvals, agent).inc(pending)
        wait = attributes.get("wait_s")
        if isinstance(wait, (int, float)):
            tool = self._tool_label(attributes.get("tool"))
            self._child(self._approval_wait, agent, tool).observe(wait)


def _exemplar(run: Any, kind: str, step: Any = None) -> dict[str, str] | None:
    """The trace context of the chat or execute_tool span the observation is about (when a TracingHook
    runs in the same run; the tracing module is not imported otherwise)."""
    tracing = sys.modules.get("looplet.telemetry.tracing")
    if tracing is None or run is None:
        return None
    fields: dict[str, str] | None = tracing.trace_fields(run, kind, step)  # shared: never changed
    return fields


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
        # (provider, request model, response model, error type) -> (base, input, output) attributes;
        # every part is a bounded label value, so this map is bounded too
        self.attrs: dict[tuple[str, str, str, str], tuple[dict[str, Any], ...]] = {}

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

    def record(self, genai: tuple[str, ...], error_type: str, call: Any, seconds: float) -> None:
        """``genai``: the bounded label values (operation, provider, request model, response model)."""
        _op, provider, request_model, response_model = genai
        key = (provider, request_model, response_model, error_type)
        attrs = self.attrs.get(key)
        if attrs is None:
            base: dict[str, Any] = {
                N.GEN_AI_OPERATION_NAME: _CHAT,
                N.GEN_AI_PROVIDER_NAME: provider,
                N.GEN_AI_REQUEST_MODEL: request_model,
            }
            if response_model:
                base[N.GEN_AI_RESPONSE_MODEL] = response_model
            if error_type:
                base[N.ERROR_TYPE] = error_type
            attrs = (
                base,
                {**base, N.GEN_AI_TOKEN_TYPE: "input"},
                {**base, N.GEN_AI_TOKEN_TYPE: "output"},
            )
            if len(self.attrs) < _MAX_CHILDREN:
                self.attrs[key] = attrs
        self.duration.record(seconds, attrs[0])
        if call.ttfc_ms is not None:
            self.ttfc.record(call.ttfc_ms / 1000.0, attrs[0])
        usage = call.usage
        if usage is not None:
            self.tokens.record(usage.input_tokens, attrs[1])
            self.tokens.record(usage.output_tokens, attrs[2])


def serve_metrics(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``/metrics`` (Prometheus text, or OpenMetrics with exemplars when asked) on ``addr:port``
    from a daemon thread, from :func:`metrics_registry` (all worker processes in multiprocess mode). Returns the server; ``server.shutdown()`` stops it. ``port=0`` picks a free port
    (``server.server_port`` tells which)."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=addr, registry=metrics_registry(registry))
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc} "
            f"(is another process using port {port}? pick another with metrics_port=...)",
        ) from None
    return server


def metrics_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose on ``/metrics``.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes behind one service, e.g. gunicorn or
    uvicorn ``--workers``), metrics of the default registry are written by every process to files in that
    folder; this returns a fresh registry whose ``MultiProcessCollector`` adds them up, so any worker's
    ``/metrics`` shows the service's totals. Otherwise: ``registry``, or the default registry when None.
    A registry of your own (not the default one) is returned as it is in both cases.
    """
    import os

    if registry is not None and registry is not REGISTRY:
        return registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return combined
    return REGISTRY
