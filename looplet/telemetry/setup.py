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
  The exporter (protobuf, an HTTP or gRPC client: 0.05-0.1 s of CPU to import) is imported only once
  the collector accepts a TCP connection, tried on a background thread at ``configure()`` and again
  before a batch goes out: a collector that is not there costs no import and no encoding (its spans are
  dropped and counted). With a proxy configured the exporter is built at once.
* ``span_exporter=``: any ``SpanExporter`` instead of OTLP, behind the same batching, redaction and counting.
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
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from looplet.errors import MissingExtra, require

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
        self.endpoint: str | None = None
        self.protocol: str | None = None
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


class _Counting:
    """Wraps an exporter: every span is redacted on its way out; failed exports count as dropped spans;
    nothing is raised.

    After a failed export (which already took up to the exporter's timeout, retries included) the next
    batches are dropped at once for a while — 1 s, doubling up to 30 s while failures go on — instead
    of being encoded and sent to a collector that is not there; the first batch after that window
    probes it again. So a dead collector costs neither CPU nor a slow shutdown. After ``close()``
    (a shutdown that gave up waiting) every batch is dropped at once.

    ``connect`` (the OTLP exporter's ``_Deferred.connect``) is asked before a batch is redacted and
    encoded: False (nothing listens at the collector's address) fails the batch at once, counted.
    """

    def __init__(self, inner: Any, drops: _DropCounter, redactor: Any, connect: Any = None) -> None:
        self.inner = inner
        self.connect = connect
        self.drops = drops
        self.redactor = redactor
        self.exported = 0
        self.pending = 0  # spans ended and not yet handed to export (still in the batch queue)
        self.in_flight = 0
        self.closed = False
        self._failures = 0
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def queued(self, n: int) -> None:
        with self._lock:
            self.pending += n

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        n = len(spans)
        with self._lock:
            self.pending = max(0, self.pending - n)
            closed = self.closed
            if not closed:
                self.in_flight += n
        if closed:
            return SpanExportResult.FAILURE  # counted when the shutdown gave up
        try:
            return self._export(spans, n)
        finally:
            with self._lock:
                self.in_flight -= n

    def _export(self, spans: Any, n: int) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if time.monotonic() < self._skip_until:
            self.drops.add("collector_down", n)
            return SpanExportResult.FAILURE
        try:
            if self.connect is not None and not self.connect():
                result = SpanExportResult.FAILURE  # refused: nothing redacted, encoded or sent
            else:
                result = self.inner.export(redacted_spans(spans, self.redactor))
        except Exception as exc:
            log.debug("span export raised %r", exc)
            result = SpanExportResult.FAILURE
        now = time.monotonic()
        if result is SpanExportResult.SUCCESS:
            self.exported += n
            self._failures = 0
            self._skip_until = 0.0
            self.drops.last_ok = now
        elif not self.closed:
            self._failures += 1
            self._skip_until = now + min(2.0 ** (self._failures - 1), 30.0)
            self.drops.last_failure = now
            self.drops.add("export_failed", n)
        return result

    def close(self) -> int:
        """Drop everything from now on; returns how many spans were queued or in flight (lost)."""
        with self._lock:
            if self.closed:
                return 0
            self.closed = True
            lost = self.pending + self.in_flight
        self.drops.add("shutdown", lost)
        return lost

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            log.debug("span exporter shutdown raised %r", exc)


def _counting_exporter(inner: Any, drops: _DropCounter) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter

    from looplet.telemetry.redact import Redactor

    class CountingExporter(_Counting, SpanExporter):
        pass

    connect = inner.connect if isinstance(inner, _Deferred) else None
    return CountingExporter(inner, drops, Redactor().cached, connect)


def redacted_spans(spans: Any, redact: Any) -> Any:
    """``spans`` with every string a span carries (name, attributes, events, links, status, resource)
    through ``redact``; a span with nothing to redact is passed on as it is."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    types = (Resource, Event, ReadableSpan, Link, Status)
    resources: dict[int, Any] = {}  # a batch shares one resource: redacted once
    out = []
    for span in spans:
        try:
            out.append(_redacted_span(span, redact, types, resources))
        except Exception as exc:  # never export a span redaction could not read: drop it
            log.debug("span redaction failed: %r", exc)
    return out


def _redacted_attrs(attrs: Any, redact: Any) -> Any:
    """The attributes with keys and strings redacted, or the same object when nothing changed."""
    if not attrs:
        return attrs
    out: dict[str, Any] = {}
    changed = False
    for key, value in attrs.items():
        if isinstance(value, str):
            new: Any = redact(value)
            changed = changed or new != value
        elif isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value):
            new = tuple(redact(v) if isinstance(v, str) else v for v in value)
            changed = changed or new != tuple(value)
        else:
            new = value
        rkey = redact(key)
        changed = changed or rkey != key
        out[rkey] = new
    return out if changed else attrs


def _redacted_span(span: Any, redact: Any, types: tuple[Any, ...], resources: dict[int, Any]) -> Any:
    if not hasattr(span, "events"):
        return span  # not a ReadableSpan (a test double): nothing to read
    Resource, Event, ReadableSpan, Link, Status = types

    # each read of .attributes may give a new view: read once, compare with that
    name, attributes = redact(span.name), span.attributes
    attrs = _redacted_attrs(attributes, redact)
    same = name == span.name and attrs is attributes
    events = []
    for e in span.events:
        ename, before = redact(e.name), e.attributes
        eattrs = _redacted_attrs(before, redact)
        same_event = ename == e.name and eattrs is before
        events.append(e if same_event else Event(ename, eattrs, e.timestamp))
        same = same and same_event
    links = []
    for ln in span.links:
        before = ln.attributes
        lattrs = _redacted_attrs(before, redact)
        links.append(ln if lattrs is before else Link(ln.context, lattrs))
        same = same and lattrs is before
    status = span.status
    if status.description and redact(status.description) != status.description:
        status, same = Status(status.status_code, redact(status.description)), False
    resource = span.resource
    if resource is not None:
        key = id(resource)
        if key not in resources:
            before = resource.attributes
            rattrs = _redacted_attrs(before, redact)
            resources[key] = resource if rattrs is before else Resource(rattrs, resource.schema_url)
        same = same and resources[key] is resource
        resource = resources[key]
    if same:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=attrs,
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _counting_processor(exporter: Any, drops: _DropCounter, **kwargs: Any) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CountingBatchSpanProcessor(BatchSpanProcessor):
        """A BatchSpanProcessor that counts the spans it drops because its queue is full. It keeps its own
        count of the spans waiting (ended, not yet handed to the exporter) instead of reading the SDK's
        queue: at ``max_queue_size`` waiting, the SDK drops the oldest."""

        def __init__(self) -> None:
            super().__init__(exporter, **kwargs)
            self._limit = int(
                kwargs.get("max_queue_size") or os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048
            )

        def on_end(self, span: Any) -> None:
            if span.context is not None and span.context.trace_flags.sampled:
                if exporter.pending >= self._limit:  # the SDK drops the oldest: as many wait as before
                    drops.add("queue_full", 1)
                else:
                    exporter.queued(1)
            super().on_end(span)

    return CountingBatchSpanProcessor()


def span_pipeline(
    endpoint: str | None = None,
    protocol: str | None = None,
    *,
    export_timeout_s: float = 5.0,
    max_queue_size: int = 2048,
    schedule_delay_s: float = 1.0,
    exporter: Any = None,
) -> tuple[Any, Any, Any] | None:
    """The span processor ``configure()`` uses: a batch processor with a bounded queue in front of an OTLP
    exporter that counts what it drops. Returns ``(processor, drop_counter, exporter)``, or None when no
    endpoint is given or set in the environment. Add the processor to any ``TracerProvider``.

    ``exporter``: any ``SpanExporter`` (an ``InMemorySpanExporter``, say) instead of OTLP, behind the same
    batching, redaction and drop counting; the endpoint arguments and variables are then not read."""
    drops: _DropCounter
    if exporter is not None:
        if endpoint is not None:
            raise ValueError("give an OTLP endpoint or a span exporter, not both")
        drops = _DropCounter(f"the span exporter {type(exporter).__name__}")
    else:
        exporter, target, proto = _span_exporter(endpoint, protocol, export_timeout_s)
        if exporter is None:
            return None
        drops = _DropCounter(f"{target} ({proto})")
        drops.endpoint, drops.protocol = target, proto
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


class _Quiet(logging.Filter):
    """Keeps the OTLP exporters' own messages (a retry, a refused connection, for every batch) off stderr:
    looplet counts the spans they cost and says so itself. The first message is passed on once, at debug
    level, through the ``looplet`` logger (so through its redaction); the rest are counted."""

    def __init__(self, drops: _DropCounter) -> None:
        super().__init__()
        self.count = 0
        self.drops = drops

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        if record.levelno >= logging.WARNING:  # a failed attempt (the exporter retries after it)
            self.drops.last_failure = time.monotonic()
        if self.count == 1:
            try:
                log.debug("telemetry: the OTLP exporter said: %s", record.getMessage())
            except Exception:
                pass
        return False


_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)

#: At shutdown, a collector that has taken no batch for this long is down or hung: what is left is dropped
#: (and counted) instead of waiting for the exporter's own timeout and retries.
STALLED_S = 0.4


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
        self._provenance_processor: Any = None  # its own batch processor: flushed first at shutdown
        self.shutdown_timeout_s = 3.0
        self.args: dict[str, Any] = {}
        self._drops: _DropCounter | None = None
        self._closed = False
        self._shut = threading.Event()  # set once shutdown() is over
        self._filters: list[tuple[logging.Logger, logging.Filter]] = []
        self.sigterm_handler = False

    @property
    def dropped_spans(self) -> dict[str, int]:
        """Spans that never reached the collector, by reason (``export_failed``, ``collector_down``,
        ``queue_full``, ``shutdown``: queued when a shutdown stopped waiting for a dead or hung collector)."""
        return dict(self._drops.counts) if self._drops is not None else {}

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export what is queued; gives up after ``timeout_s`` (default ``shutdown_timeout_s``), or after
        ``STALLED_S`` when the collector takes nothing (down or hung). Returns True when all was sent."""
        provider = self.tracer_provider
        if provider is None or self._closed:
            return True
        budget = timeout_s if timeout_s is not None else self.shutdown_timeout_s
        ok = self._wait_for_export(lambda: provider.force_flush(int(budget * 1000)), budget, "flush")
        if self.provenance is not None:
            try:
                self.provenance.flush(timeout_s=budget)
            except Exception as exc:
                log.warning("telemetry: writing trajectories failed: %r", exc)
        return ok

    def _wait_for_export(self, fn: Any, budget: float, what: str, give_up: bool = False) -> bool:
        """Run ``fn`` (a flush or a shutdown) on a daemon thread; wait for it while the collector takes
        batches, up to ``budget``. A collector that fails an export attempt, or takes nothing for
        ``STALLED_S``, is down or hung: then, with ``give_up``, the exporter is closed (what is left is
        dropped and counted) and this returns."""
        exporter, drops = self.span_exporter, self._drops
        started = time.monotonic()
        thread = _start(fn, what)
        if thread is None:
            return True
        if exporter is None or drops is None:
            thread.join(budget)
        else:
            seen, mark = exporter.exported, started
            while thread.is_alive() and not drops.collector_down:
                now = time.monotonic()
                if now - started >= budget:
                    break
                if now - mark >= STALLED_S:
                    if exporter.exported == seen:
                        break  # nothing went out: the collector hangs
                    seen, mark = exporter.exported, now
                thread.join(0.01)
        if not thread.is_alive():
            return bool(getattr(thread, "ok", False))
        if give_up and exporter is not None:
            exporter.close()  # the rest is dropped, counted and logged (once) by the drop counter
            try:
                exporter.shutdown()  # stops the exporter's retries
            except Exception:
                pass
            thread.join(0.05)
        return False

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Flush and stop: spans, metrics endpoint, log file, trajectories. Bounded by ``timeout_s``
        (default ``shutdown_timeout_s``) with a collector that takes the spans, and by ``STALLED_S`` (0.4 s)
        with one that is down or hung; safe to call twice."""
        global _session
        budget = timeout_s if timeout_s is not None else self.shutdown_timeout_s
        with _lock:
            closing = self._closed
            self._closed = True
            if _session is self:
                _session = None
        if closing:  # another thread is shutting down (the exit and a SIGTERM): wait for it, bounded
            self._shut.wait(budget)
            return
        try:
            self._shutdown(budget)
        finally:
            self._shut.set()

    def _shutdown(self, budget: float) -> None:
        started = time.monotonic()
        if self._provenance_processor is not None:
            # trajectories first: they go to a local disk, and a dead collector must not hold them back
            try:
                self._provenance_processor.force_flush(int(budget * 1000))
            except Exception as exc:
                log.warning("telemetry: handing spans to the trajectory writer failed: %r", exc)
        self._stop_traces(budget)
        if self.provenance is not None:
            try:
                self.provenance.flush(timeout_s=max(0.1, budget - (time.monotonic() - started)))
            except Exception as exc:
                log.warning("telemetry: writing trajectories at shutdown failed: %r", exc)
        server = self.metrics_server
        if server is not None:  # its loop notices a shutdown within 0.5 s: not worth waiting for
            _start(lambda: (server.shutdown(), server.server_close()), "metrics-server")
        self._detach()

    def _stop_traces(self, budget: float) -> None:
        provider, processor, meter = self.tracer_provider, self.span_processor, self.meter_provider
        owned = self.owns_tracer_provider

        def stop() -> bool:
            if owned and provider is not None:
                provider.force_flush(int(budget * 1000))
                provider.shutdown()
            elif processor is not None:  # our processor on the application's provider
                processor.force_flush(int(budget * 1000))
                processor.shutdown()
            if meter is not None:
                meter.shutdown(timeout_millis=budget * 1000)
            return True

        self._wait_for_export(stop, budget, "shutdown", give_up=True)

    def _detach(self) -> None:
        """Take back what the session put on the process: log filters, the log set-up, the SIGTERM flush."""
        for logger, flt in self._filters:
            logger.removeFilter(flt)
        self._filters.clear()
        from looplet import shutdown as process_shutdown

        process_shutdown.remove_flush(self._flush_on_signal)
        if self.sigterm_handler:
            process_shutdown.uninstall_sigterm_handler()
            self.sigterm_handler = False
        if self.log_file is not None or self.args.get("json_logs"):
            from looplet.telemetry.logging import reset_logging

            reset_logging()

    def _handle_sigterm(self, grace_s: float) -> None:
        from looplet import shutdown as process_shutdown

        self.sigterm_handler = process_shutdown.install_sigterm_handler(grace_s)
        process_shutdown.add_flush(self._flush_on_signal)

    def _flush_on_signal(self, timeout_s: float) -> None:
        """Called once no run is in progress after a SIGTERM: everything out, within ``timeout_s``."""
        self.shutdown(timeout_s=min(timeout_s, self.shutdown_timeout_s))

    def __repr__(self) -> str:
        parts = [f"hooks={[type(h).__name__ for h in self.hooks]}"]
        if self.otlp_endpoint:
            parts.append(f"otlp={self.otlp_protocol}:{self.otlp_endpoint}")
        if self.metrics_port is not None:
            parts.append(f"metrics=:{self.metrics_port}")
        if self._closed:
            parts.append("closed")
        return f"TelemetrySession({', '.join(parts)})"


def _start(fn: Any, what: str) -> Any:
    """``fn`` on a daemon thread (never blocks the exit); the thread's ``ok`` is fn's truth once it ends.
    Without threads (interpreter shutdown) ``fn`` runs inline and None is returned."""

    def target() -> None:
        try:
            thread.ok = bool(fn())  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("telemetry %s failed: %r", what, exc)

    thread = threading.Thread(target=target, name=f"looplet-telemetry-{what}", daemon=True)
    thread.ok = False  # type: ignore[attr-defined]
    try:
        thread.start()
    except RuntimeError:  # no new threads at interpreter shutdown: run inline
        target()
        return None
    return thread


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
    span_exporter: Any = None,
    export_timeout_s: float = 5.0,
    max_queue_size: int = 2048,
    schedule_delay_s: float = 1.0,
    shutdown_timeout_s: float = 3.0,
    handle_sigterm: bool = True,
    sigterm_grace_s: float = 10.0,
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
    span_exporter: spans go to this ``SpanExporter`` (an ``InMemorySpanExporter`` in a test, say) instead
        of OTLP, through the same batching, redaction and drop counting; not with ``otlp_endpoint``.
    export_timeout_s, max_queue_size, schedule_delay_s: the batch exporter (the ``OTEL_BSP_*`` variables win).
    shutdown_timeout_s: the longest ``shutdown()`` (and the exit flush) may take with a collector that
        takes the spans; with one that is down or hung, ``STALLED_S`` (0.4 s).
    handle_sigterm / sigterm_grace_s: when called in the main thread, SIGTERM ends the runs in progress as
        ``cancelled``, flushes this session and exits (``looplet.shutdown.install_sigterm_handler``).
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
        "span_exporter": span_exporter,
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
        if span_exporter is not None and otlp_endpoint is not None:
            raise ValueError("give otlp_endpoint or span_exporter, not both")
        session = _new_session(args, shutdown_timeout_s, (export_timeout_s, max_queue_size, schedule_delay_s))
        _session = session
        _register_atexit()
        if handle_sigterm:
            session._handle_sigterm(sigterm_grace_s)
        return session


def _new_session(
    args: dict[str, Any], shutdown_timeout_s: float, batch: tuple[float, int, float]
) -> TelemetrySession:
    """A session set up from ``args``; whatever was started is shut down again if the set-up fails."""
    session = TelemetrySession()
    session.args = args
    session.shutdown_timeout_s = shutdown_timeout_s
    try:
        _setup(session, args, *batch)
    except BaseException:
        session.shutdown(timeout_s=0.5)
        raise
    return session


def _setup(
    session: TelemetrySession,
    a: dict[str, Any],
    export_timeout_s: float,
    max_queue_size: int,
    schedule_delay_s: float,
) -> None:
    require("opentelemetry.sdk.trace", "otel")
    from opentelemetry.sdk.resources import Resource
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
    provider = _tracer_provider(session, resource)

    pipeline = span_pipeline(
        a["otlp_endpoint"],
        a["otlp_protocol"],
        export_timeout_s=export_timeout_s,
        max_queue_size=max_queue_size,
        schedule_delay_s=schedule_delay_s,
        exporter=a["span_exporter"],
    )
    exporter = endpoint = protocol = None
    if pipeline is not None:
        session.span_processor, session._drops, session.span_exporter = pipeline
        exporter = session.span_exporter
        endpoint, protocol = session._drops.endpoint, session._drops.protocol
        provider.add_span_processor(session.span_processor)
        session.otlp_endpoint, session.otlp_protocol = endpoint, protocol
        # A dead collector makes the exporters log every retry; looplet reports drops itself (above), so
        # their messages are counted instead of printed.
        for name in _EXPORTER_LOGGERS:
            logger, flt = logging.getLogger(name), _Quiet(session._drops)
            logger.addFilter(flt)
            session._filters.append((logger, flt))

    metrics_hook = _metrics(session, a, resource, exporter, endpoint, protocol, export_timeout_s)

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
            # an exporter on the session's provider: folders are written on the batch processor's thread.
            # A run's folder needs every span of the run, and a run is written when it ends, in one go: a
            # loop whose model answers at once can end spans faster than that for a while (the SDK's 2,048
            # would drop spans, and the run with them), so the queue holds ~5,000 steps (bounded memory).
            session._provenance_processor = BatchSpanProcessor(session.provenance, max_queue_size=1 << 14)
            provider.add_span_processor(session._provenance_processor)


def _metrics(
    session: TelemetrySession,
    a: dict[str, Any],
    resource: Any,
    exporter: Any,
    endpoint: str | None,
    protocol: str | None,
    export_timeout_s: float,
) -> Any:
    """The MetricsHook on the default registry (and ``/metrics``, OTLP metrics when asked); None without
    prometheus-client."""
    metrics_hook = None
    try:
        from looplet.telemetry.metrics import MetricsHook, declare_metrics, serve_metrics
    except ImportError:
        MetricsHook = None  # type: ignore[assignment,misc]
        if a["metrics_port"] is not None:
            raise
    if a["otlp_metrics"] and endpoint is not None:
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
    return metrics_hook


def _tracer_provider(session: TelemetrySession, resource: Any) -> Any:
    """The application's SDK provider if it set one (looplet adds its exporter to it), else a new one made
    global when nothing else is."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

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

    return provider


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
        _installed("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        if endpoint:
            kwargs["endpoint"] = endpoint
            kwargs["insecure"] = not endpoint.startswith("https://")

        def build_grpc() -> Any:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kwargs)

        return _Deferred(build_grpc, _address(target), timeout_s), target, "grpc"
    if proto in ("http/protobuf", "http", "http/json"):
        if proto == "http/json":
            log.warning(
                "telemetry: OTLP http/json is not supported by the Python exporter; using http/protobuf"
            )
        _installed("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        if endpoint:
            kwargs["endpoint"] = _signal_url(endpoint, "traces")
            target = kwargs["endpoint"]

        def build_http() -> Any:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kwargs)

        return _Deferred(build_http, _address(target), timeout_s), target, "http/protobuf"
    raise ValueError(f"otlp_protocol={proto!r}: use 'grpc' or 'http/protobuf'")


def _installed(module: str) -> None:
    """Raise ``MissingExtra`` now if ``module`` is not installed (without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtra(module.split(".")[0], "otel")


class _Deferred:
    """The OTLP exporter, imported and built only once its collector accepts a connection.

    Importing it (protobuf, an HTTP or gRPC client) costs 0.05-0.1 s of CPU. A thread started by
    ``configure()`` opens (and closes at once) a TCP connection to the collector's address; when that
    works it imports and builds the exporter, while the application starts. When nothing listens there,
    nothing is imported: each batch asks ``connect()``, which tries again and fails the batch at once
    (counted; ``_Counting`` backs off between tries) until the collector is up, and then builds the
    exporter. Without an address to try (a proxy is configured, or the endpoint is not a host and port)
    the exporter is built at once. If it cannot be built, exports fail (counted)."""

    def __init__(self, build: Any, address: tuple[str, int] | None = None, timeout_s: float = 5.0) -> None:
        self._build = build
        self._address = address
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # held while trying the collector and building the exporter
        self._ready = threading.Event()  # the first try is over
        self._given_up = False  # shut down, or the exporter could not be built
        self.exporter: Any = None
        threading.Thread(target=self._first_try, name="looplet-otlp-exporter", daemon=True).start()

    def _first_try(self) -> None:
        try:
            self._try()
        finally:
            self._ready.set()

    def _try(self) -> Any:
        with self._lock:
            if self.exporter is not None or self._given_up or not _reachable(self._address, self._timeout_s):
                return self.exporter
            try:
                self.exporter = self._build()
            except Exception as exc:
                self._given_up = True
                log.warning("telemetry: the OTLP exporter could not be set up: %r; spans are dropped", exc)
                return None
            if self._given_up:  # shut down while it was being built
                self.exporter.shutdown()
            return self.exporter

    def connect(self) -> bool:
        """True when the exporter is built, building it first if the collector now accepts a connection."""
        self._ready.wait()
        return (self.exporter or self._try()) is not None

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return self.exporter.export(spans) if self.connect() else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._ready.wait(timeout_millis / 1000)
        exporter = self.exporter
        return False if exporter is None else bool(exporter.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self._given_up = True  # never built from now on
        if self._lock.acquire(timeout=0.05):  # else a try is under way: it shuts down what it builds
            exporter = self.exporter
            self._lock.release()
            if exporter is not None:
                exporter.shutdown()


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")


def _proxy_configured() -> bool:
    """A proxy the HTTP or gRPC client would go through (``no_proxy`` is not read: with any proxy set, the
    collector is not tried directly)."""
    if any(os.environ.get(n) or os.environ.get(n.upper()) for n in _PROXY_VARIABLES):
        return True
    if sys.platform in ("win32", "darwin"):  # proxies from the system settings
        import urllib.request

        return bool(urllib.request.getproxies())
    return False


def _reachable(address: tuple[str, int] | None, timeout_s: float) -> bool:
    """Whether a TCP connection to ``address`` opens (it is closed at once). True without an address, or
    with a proxy configured: the exporter would connect to the proxy, not there."""
    if address is None or _proxy_configured():
        return True
    try:
        socket.create_connection(address, timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _address(endpoint: str) -> tuple[str, int] | None:
    """Host and port an ``http(s)://`` or ``host:port`` endpoint connects to; None for another form."""
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.hostname, port


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

    exporter: Any
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
