"""``configure()``: one call that turns on traces, metrics and logs, and returns the hooks to pass to the loop.

    from looplet.telemetry import configure
    telemetry = configure(service_name="my-agent", otlp_endpoint="http://localhost:4318", metrics_port=9464)
    for step in composable_loop(..., hooks=telemetry.hooks): ...
    telemetry.shutdown()          # also done at exit, bounded by a deadline

What it sets up:

* an OpenTelemetry SDK ``TracerProvider`` with resource ``service.name``/``service.version`` (plus
  ``OTEL_RESOURCE_ATTRIBUTES``; the arguments win), made the global provider — the only place looplet ever
  sets one. If the application already set an SDK provider, that one is used and looplet's exporter is
  added to it.
* OTLP export when an endpoint is given or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; protocol from ``otlp_protocol``, else
  ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``grpc`` for port 4317
  and ``http/protobuf`` otherwise. Headers, certificates, compression and timeouts given by the standard
  ``OTEL_EXPORTER_OTLP_*`` variables are read by the exporters themselves. Export is batched on a
  background thread with a bounded queue; spans that cannot be delivered (collector down or hung, queue
  full) are counted in ``looplet_dropped_spans_total{reason}`` and ``session.dropped_spans``, and logged
  (once a minute at most) — never raised into the agent.
* ``/metrics`` on ``metrics_addr:metrics_port`` (127.0.0.1 by default) when ``metrics_port`` is given,
  from the default Prometheus registry (``metrics_port=0`` picks a free port: ``session.metrics_port``).
* JSON log lines on stderr or ``log_file`` (``configure_logging``).
* with ``provenance_dir``, a trajectory folder per run (``ProvenanceSink(dir, redact=True)`` as a span
  exporter behind a ``BatchSpanProcessor``; prompts and arguments only with content capture on).

Calling ``configure()`` again returns the same session (with a warning if the arguments differ) until
``shutdown()``. ``shutdown()`` flushes what is queued within ``shutdown_timeout_s`` and never blocks longer;
the same happens at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from looplet.errors import require

__all__ = ["configure", "shutdown", "TelemetrySession", "current_session", "span_pipeline"]

log = logging.getLogger("looplet")

_lock = threading.RLock()
_session: TelemetrySession | None = None
_warned_again = False
_atexit_registered = False


class _DropCounter:
    """Counts spans that never reached the collector; feeds a Prometheus counter and a rate-limited log."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_log = 0.0
        self._metric: Any = None
        self._children: dict[str, Any] = {}
        self.last_ok = 0.0  # monotonic time of the last successful export
        self.last_failure = 0.0

    @property
    def collector_down(self) -> bool:
        """The last export failed (so a flush would only wait for the exporter's timeout)."""
        return self.last_failure > self.last_ok

    def bind_metric(self, metric: Any) -> None:
        self._metric = metric

    def add(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + n
            say = now >= self._next_log
            if say:
                self._next_log = now + 60.0
                total = sum(self.counts.values())
        if self._metric is not None:
            child = self._children.get(reason)
            if child is None:
                child = self._children[reason] = self._metric.labels(reason)
            try:
                child.inc(n)
            except Exception:
                pass
        if say:
            log.warning(
                "telemetry: %d span(s) could not be delivered to %s (%s); %d dropped so far. The agent "
                "is not affected.",
                n,
                self.target,
                reason,
                total,
            )


def _counting_exporter(inner: Any, drops: _DropCounter) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        """Wraps an exporter: failed exports count as dropped spans; nothing is raised.

        After a failed export (which already took up to the exporter's timeout, retries included) the next
        batches are dropped at once for a while — 1 s, doubling up to 30 s while failures go on — instead
        of being encoded and sent to a collector that is not there; the first batch after that window
        probes it again. So a dead collector costs neither CPU nor a slow shutdown.
        """

        def __init__(self) -> None:
            self.inner = inner
            self.exported = 0
            self._failures = 0
            self._skip_until = 0.0

        def export(self, spans: Any) -> Any:
            if time.monotonic() < self._skip_until:
                drops.add("collector_down", len(spans))
                return SpanExportResult.FAILURE
            try:
                result = inner.export(spans)
            except Exception as exc:
                log.debug("span export raised %r", exc)
                result = SpanExportResult.FAILURE
            now = time.monotonic()
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                self._failures = 0
                self._skip_until = 0.0
                drops.last_ok = now
            else:
                self._failures += 1
                self._skip_until = now + min(2.0 ** (self._failures - 1), 30.0)
                drops.last_failure = now
                drops.add("export_failed", len(spans))
            return result

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            try:
                return bool(inner.force_flush(timeout_millis))
            except Exception:
                return False

        def shutdown(self) -> None:
            try:
                inner.shutdown()
            except Exception as exc:
                log.debug("span exporter shutdown raised %r", exc)

    return CountingExporter()


def _counting_processor(exporter: Any, drops: _DropCounter, **kwargs: Any) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CountingBatchSpanProcessor(BatchSpanProcessor):
        """A BatchSpanProcessor that counts the spans it drops because its queue is full."""

        def __init__(self) -> None:
            super().__init__(exporter, **kwargs)
            bp = getattr(self, "_batch_processor", None)
            self._queue = getattr(bp, "_queue", None)  # a deque; None if the SDK's internals change
            self._limit = getattr(bp, "_max_queue_size", None)

        def on_end(self, span: Any) -> None:
            queue = self._queue
            if queue is not None and len(queue) >= self._limit and span.context.trace_flags.sampled:
                drops.add("queue_full", 1)
            super().on_end(span)

    return CountingBatchSpanProcessor()


def span_pipeline(
    endpoint: str | None = None,
    protocol: str | None = None,
    *,
    export_timeout_s: float = 5.0,
    max_queue_size: int = 2048,
    schedule_delay_s: float = 1.0,
) -> tuple[Any, Any, Any] | None:
    """The span processor ``configure()`` uses: a batch processor with a bounded queue in front of an OTLP
    exporter that counts what it drops. Returns ``(processor, drop_counter, exporter)``, or None when no
    endpoint is given or set in the environment. Add the processor to any ``TracerProvider``."""
    exporter, target, proto = _span_exporter(endpoint, protocol, export_timeout_s)
    if exporter is None:
        return None
    drops = _DropCounter(f"{target} ({proto})")
    drops.endpoint, drops.protocol = target, proto  # type: ignore[attr-defined]
    counting = _counting_exporter(exporter, drops)
    kwargs: dict[str, Any] = {}
    if "OTEL_BSP_MAX_QUEUE_SIZE" not in os.environ:
        kwargs["max_queue_size"] = max_queue_size
    if "OTEL_BSP_SCHEDULE_DELAY" not in os.environ:
        kwargs["schedule_delay_millis"] = schedule_delay_s * 1000
    if "OTEL_BSP_EXPORT_TIMEOUT" not in os.environ:
        kwargs["export_timeout_millis"] = export_timeout_s * 1000
    if "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" not in os.environ:
        kwargs["max_export_batch_size"] = min(512, max_queue_size)
    return _counting_processor(counting, drops, **kwargs), drops, counting


class _RateLimit(logging.Filter):
    """Lets one record per ``interval`` seconds through (the OTLP exporters log every failed retry)."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._last = -1e9

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False


_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)


class TelemetrySession:
    """What ``configure()`` set up. ``hooks`` go to the loop; ``shutdown()`` flushes and stops everything."""

    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.owns_tracer_provider = False
        self.span_processor: Any = None
        self.span_exporter: Any = None
        self.otlp_endpoint: str | None = None
        self.otlp_protocol: str | None = None
        self.metrics_server: Any = None
        self.metrics_port: int | None = None
        self.registry: Any = None
        self.log_file: str | None = None
        self.provenance: Any = None
        self.shutdown_timeout_s = 3.0
        self.args: dict[str, Any] = {}
        self._drops: _DropCounter | None = None
        self._closed = False
        self._filters: list[tuple[logging.Logger, logging.Filter]] = []

    @property
    def dropped_spans(self) -> dict[str, int]:
        """Spans that never reached the collector, by reason (``export_failed``, ``queue_full``)."""
        return dict(self._drops.counts) if self._drops is not None else {}

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export what is queued; gives up after ``timeout_s`` (default ``shutdown_timeout_s``)."""
        provider = self.tracer_provider
        if provider is None or self._closed:
            return True
        return _bounded(
            lambda: provider.force_flush(int((timeout_s or self.shutdown_timeout_s) * 1000)),
            timeout_s or self.shutdown_timeout_s,
            "flush",
        )

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Flush and stop: spans, metrics endpoint, log file. Bounded by ``timeout_s``; safe to call twice."""
        global _session
        with _lock:
            if self._closed:
                return
            self._closed = True
            if _session is self:
                _session = None
        deadline = timeout_s if timeout_s is not None else self.shutdown_timeout_s
        if self._drops is not None and self._drops.collector_down:
            deadline = min(deadline, 0.5)  # the collector is not answering: do not make the user wait for it
        provider = self.tracer_provider
        processor = self.span_processor

        def stop_traces() -> None:
            if self.owns_tracer_provider and provider is not None:
                provider.shutdown()
            elif processor is not None:  # our processor on the application's provider
                processor.force_flush(int(deadline * 1000))
                processor.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=deadline * 1000)

        _bounded(stop_traces, deadline, "shutdown")
        if self.provenance is not None:
            try:
                self.provenance.flush(timeout_s=deadline)
            except Exception as exc:
                log.warning("telemetry: writing trajectories at shutdown failed: %r", exc)
        if self.metrics_server is not None:
            try:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            except Exception:
                pass
        for logger, flt in self._filters:
            logger.removeFilter(flt)
        self._filters.clear()
        if self.log_file is not None or self.args.get("json_logs"):
            from looplet.telemetry.logging import reset_logging

            reset_logging()

    def __repr__(self) -> str:
        parts = [f"hooks={[type(h).__name__ for h in self.hooks]}"]
        if self.otlp_endpoint:
            parts.append(f"otlp={self.otlp_protocol}:{self.otlp_endpoint}")
        if self.metrics_port is not None:
            parts.append(f"metrics=:{self.metrics_port}")
        if self._closed:
            parts.append("closed")
        return f"TelemetrySession({', '.join(parts)})"


def _bounded(fn: Any, timeout_s: float, what: str) -> bool:
    """Run ``fn`` on a daemon thread and wait at most ``timeout_s`` (never blocks exit longer)."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except Exception as exc:
            log.warning("telemetry %s failed: %r", what, exc)
            box.append(False)

    try:
        t = threading.Thread(target=target, name=f"looplet-telemetry-{what}", daemon=True)
        t.start()
    except RuntimeError:  # no new threads at interpreter shutdown: run inline
        target()
        return bool(box and box[0] is not False)
    t.join(max(timeout_s, 0.0))
    if t.is_alive():
        log.warning("telemetry %s did not finish within %.1fs; the rest is dropped", what, timeout_s)
        return False
    return bool(box and box[0] is not False)


def current_session() -> TelemetrySession | None:
    """The session ``configure()`` made, or None."""
    return _session


def shutdown(timeout_s: float | None = None) -> None:
    """Shut down the session ``configure()`` made (no-op without one)."""
    session = _session
    if session is not None:
        session.shutdown(timeout_s)


def configure(
    service_name: str = "looplet",
    otlp_endpoint: str | None = None,
    metrics_port: int | None = None,
    json_logs: bool = True,
    provenance_dir: str | None = None,
    *,
    service_version: str | None = None,
    otlp_protocol: str | None = None,
    otlp_metrics: bool = False,
    metrics_addr: str = "127.0.0.1",
    log_file: str | None = None,
    log_level: str = "INFO",
    capture_content: bool | None = None,
    export_timeout_s: float = 5.0,
    max_queue_size: int = 2048,
    schedule_delay_s: float = 1.0,
    shutdown_timeout_s: float = 3.0,
) -> TelemetrySession:
    """Set up traces (OTLP), metrics (``/metrics``) and JSON logs; return a session whose ``hooks`` go to
    the loop. See the module docstring for what each argument does and which environment variables count.

    service_name / service_version: the resource's ``service.name`` / ``service.version`` (version:
        looplet's when None).
    otlp_endpoint: collector URL (``http://host:4318`` for HTTP, ``http://host:4317`` for gRPC); None reads
        the ``OTEL_EXPORTER_OTLP_*`` variables; with neither, spans are made (for ids in logs and metric
        exemplars) but not exported.
    otlp_protocol: ``grpc`` or ``http/protobuf``.
    otlp_metrics: also push the GenAI client metrics over OTLP (an SDK ``MeterProvider``).
    metrics_port / metrics_addr: serve ``/metrics`` there.
    json_logs / log_file / log_level: JSON log lines (``configure_logging``).
    provenance_dir: write a trajectory folder per run there.
    capture_content: message content on spans (see ``TracingHook``); by default on with
        ``provenance_dir`` (unless the environment variable says otherwise), redacted.
    export_timeout_s, max_queue_size, schedule_delay_s: the batch exporter (the ``OTEL_BSP_*`` variables win).
    shutdown_timeout_s: the longest ``shutdown()`` (and the exit flush) may take.
    """
    global _session, _warned_again
    args = {
        "service_name": service_name,
        "otlp_endpoint": otlp_endpoint,
        "metrics_port": metrics_port,
        "json_logs": json_logs,
        "provenance_dir": provenance_dir,
        "service_version": service_version,
        "otlp_protocol": otlp_protocol,
        "otlp_metrics": otlp_metrics,
        "metrics_addr": metrics_addr,
        "log_file": log_file,
        "log_level": log_level,
        "capture_content": capture_content,
    }
    with _lock:
        if _session is not None:
            if args != _session.args and not _warned_again:
                _warned_again = True
                log.warning(
                    "looplet.telemetry.configure() was called again with other arguments; the first "
                    "set-up stays in force (call shutdown() first to change it)"
                )
            return _session
        if export_timeout_s <= 0 or shutdown_timeout_s <= 0:
            raise ValueError("export_timeout_s and shutdown_timeout_s must be > 0")
        session = TelemetrySession()
        session.args = args
        session.shutdown_timeout_s = shutdown_timeout_s
        try:
            _setup(session, args, export_timeout_s, max_queue_size, schedule_delay_s)
        except BaseException:
            session.shutdown(timeout_s=0.5)
            raise
        _session = session
        _register_atexit()
        return session


def _setup(
    session: TelemetrySession,
    a: dict[str, Any],
    export_timeout_s: float,
    max_queue_size: int,
    schedule_delay_s: float,
) -> None:
    require("opentelemetry.sdk.trace", "otel")
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from looplet import __version__
    from looplet.telemetry.tracing import TracingHook

    resource = Resource.create(
        {
            "service.name": a["service_name"] or "looplet",
            "service.version": a["service_version"] or __version__,
        }
    )

    # Traces ---------------------------------------------------------------------------------------
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider) and not getattr(existing, "_looplet_closed", False):
        provider = existing  # the application's own SDK provider: add to it, do not replace it
        session.owns_tracer_provider = getattr(existing, "_looplet_owned", False)
        if not session.owns_tracer_provider:
            log.info("telemetry: using the application's TracerProvider; looplet adds its exporter to it")
    else:
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # exit flush is ours (bounded)
        provider._looplet_owned = True  # type: ignore[attr-defined]
        session.owns_tracer_provider = True
        if existing is not None and type(existing).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
            trace.set_tracer_provider(provider)
        else:  # a shut-down provider from an earlier session cannot be replaced globally: use ours directly
            log.info("telemetry: the global TracerProvider is already set; looplet's spans use their own")
    session.tracer_provider = provider
    orig_shutdown = provider.shutdown

    def marked_shutdown() -> None:
        provider._looplet_closed = True  # type: ignore[attr-defined]
        orig_shutdown()

    if session.owns_tracer_provider:
        provider.shutdown = marked_shutdown  # type: ignore[method-assign]

    pipeline = span_pipeline(
        a["otlp_endpoint"],
        a["otlp_protocol"],
        export_timeout_s=export_timeout_s,
        max_queue_size=max_queue_size,
        schedule_delay_s=schedule_delay_s,
    )
    exporter = endpoint = protocol = None
    if pipeline is not None:
        session.span_processor, session._drops, session.span_exporter = pipeline
        exporter = session.span_exporter
        endpoint, protocol = session._drops.endpoint, session._drops.protocol  # type: ignore[attr-defined]
        provider.add_span_processor(session.span_processor)
        session.otlp_endpoint, session.otlp_protocol = endpoint, protocol
        # A dead collector makes the exporters log every retry; looplet reports drops itself (above), so
        # their messages are let through once a minute.
        for name in _EXPORTER_LOGGERS:
            logger, flt = logging.getLogger(name), _RateLimit()
            logger.addFilter(flt)
            session._filters.append((logger, flt))

    # Metrics --------------------------------------------------------------------------------------
    metrics_hook = None
    try:
        from looplet.telemetry.metrics import MetricsHook, declare_metrics, serve_metrics
    except ImportError:
        MetricsHook = None  # type: ignore[assignment,misc]
        if a["metrics_port"] is not None:
            raise
    if a["otlp_metrics"] and exporter is not None:
        session.meter_provider = _meter_provider(resource, endpoint, protocol, export_timeout_s)
    if MetricsHook is not None:
        from prometheus_client import REGISTRY

        session.registry = REGISTRY
        if session._drops is not None:
            session._drops.bind_metric(declare_metrics(REGISTRY)["looplet_dropped_spans"])
        metrics_hook = MetricsHook(REGISTRY, meter_provider=session.meter_provider)
        if a["metrics_port"] is not None:
            session.metrics_server = serve_metrics(a["metrics_port"], a["metrics_addr"], REGISTRY)
            session.metrics_port = session.metrics_server.server_port

    # Hooks: tracing first, so its chat/execute_tool span is current around the others' wraps -----------
    capture = a["capture_content"]
    if (
        capture is None
        and a["provenance_dir"]
        and "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" not in os.environ
    ):
        capture = True  # trajectories are built from the spans: without content they cannot be replayed
    session.hooks.append(TracingHook(provider, capture_content=capture))
    if metrics_hook is not None:
        session.hooks.append(metrics_hook)
    if a["json_logs"]:
        from looplet.telemetry.logging import LoggingHook, configure_logging

        configure_logging(json=True, file=a["log_file"], level=a["log_level"])
        session.log_file = a["log_file"]
        session.hooks.append(LoggingHook())
    if a["provenance_dir"]:
        session.provenance = _provenance(a["provenance_dir"])
        if session.provenance is not None:
            # an exporter on the session's provider: folders are written on the batch processor's thread
            provider.add_span_processor(BatchSpanProcessor(session.provenance))


def _provenance(directory: str) -> Any:
    try:
        from looplet.provenance import ProvenanceSink
    except ImportError:
        log.warning("telemetry: provenance_dir=%r ignored: looplet.provenance is not available", directory)
        return None
    return ProvenanceSink(directory, redact=True)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value.strip()
    return None


def _span_exporter(
    endpoint: str | None, protocol: str | None, timeout_s: float
) -> tuple[Any, str | None, str | None]:
    env_endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    target = endpoint or env_endpoint
    if not target:
        return None, None, None
    proto = (
        protocol
        or _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or _guess_protocol(target)
    ).lower()
    timeout = None if _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") else timeout_s
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if proto == "grpc":
        require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "otel")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if endpoint:
            kwargs["endpoint"] = endpoint
            kwargs["insecure"] = not endpoint.startswith("https://")
        return OTLPSpanExporter(**kwargs), target, "grpc"
    if proto in ("http/protobuf", "http", "http/json"):
        if proto == "http/json":
            log.warning(
                "telemetry: OTLP http/json is not supported by the Python exporter; using http/protobuf"
            )
        require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if endpoint:
            kwargs["endpoint"] = _signal_url(endpoint, "traces")
            target = kwargs["endpoint"]
        return HttpExporter(**kwargs), target, "http/protobuf"
    raise ValueError(f"otlp_protocol={proto!r}: use 'grpc' or 'http/protobuf'")


def _guess_protocol(endpoint: str) -> str:
    try:
        port = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}").port
    except ValueError:
        port = None
    return "grpc" if port == 4317 else "http/protobuf"


def _signal_url(endpoint: str, signal: str) -> str:
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if urlsplit(url).path.rstrip("/").endswith(f"/v1/{signal}"):
        return url
    return url.rstrip("/") + f"/v1/{signal}"


def _meter_provider(resource: Any, endpoint: str | None, protocol: str | None, timeout_s: float) -> Any:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=endpoint, insecure=not (endpoint or "").startswith("https://"), timeout=timeout_s
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        base = endpoint.rsplit("/v1/traces", 1)[0] if endpoint else None
        exporter = HttpMetricExporter(
            endpoint=_signal_url(base, "metrics") if base else None, timeout=timeout_s
        )
    provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)], shutdown_on_exit=False
    )
    if type(metrics.get_meter_provider()).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        metrics.set_meter_provider(provider)
    return provider


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    session = _session
    if session is not None:
        session.shutdown()
