"""W3C trace context across process boundaries: parse ``traceparent``, hand the current one on.

A run continues a trace started elsewhere with ``composable_loop(..., parent="00-<trace>-<span>-01")`` or
the ``TRACEPARENT`` environment variable; a tool that calls an HTTP service or starts a process hands the
*current* context on, so the other side's spans join the trace under the tool's ``execute_tool`` span::

    from looplet.telemetry.propagation import inject_headers, subprocess_env

    @tool(description="Fetch a page.")
    def fetch(url: str) -> str:
        return httpx.get(url, headers=inject_headers()).text

    @tool(description="Run the indexer.")
    def index(path: str) -> str:
        return subprocess.run(["indexer", path], env=subprocess_env(), capture_output=True, text=True).stdout

Malformed input: the functions here that take a traceparent (:func:`parse_traceparent`,
:func:`context_from_traceparent`) raise ``ValueError`` saying which part is wrong, so a tool that receives a
bad one fails with a clear tool error. A run's own parent (``parent=`` or ``TRACEPARENT``) is read by
``TracingHook``, which never stops an agent for telemetry: it logs one warning and starts a new trace.

Parsing is standard library only; OpenTelemetry is imported when a context is read or built (``otel``
extra). Without it, :func:`current_traceparent` is None and the helpers pass headers and environments on
unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple

__all__ = [
    "TraceParent",
    "parse_traceparent",
    "format_traceparent",
    "current_traceparent",
    "inject_headers",
    "subprocess_env",
    "context_from_traceparent",
    "ENV_TRACEPARENT",
    "ENV_TRACESTATE",
    "ENV_BAGGAGE",
]

log = logging.getLogger("looplet")

#: Environment variables that carry the context to a child process (the OpenTelemetry convention for
#: environment carriers: the header names upper-cased).
ENV_TRACEPARENT = "TRACEPARENT"
ENV_TRACESTATE = "TRACESTATE"
ENV_BAGGAGE = "BAGGAGE"

_HEX = frozenset("0123456789abcdef")


class TraceParent(NamedTuple):
    """The four fields of a ``traceparent``: ``version-trace_id-span_id-flags`` (lower-case hex)."""

    version: str
    trace_id: str
    span_id: str
    flags: str

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def __str__(self) -> str:
        return f"{self.version}-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: Any) -> TraceParent:
    """Parse and validate a W3C ``traceparent``; raise ``ValueError`` naming the part that is wrong.

    Follows the W3C Trace Context rules: lower-case hex; version ``00`` is exactly 55 characters, a
    later version may append ``-``-separated fields (kept out of the result); version ``ff``, an
    all-zero trace id and an all-zero span id are invalid.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"traceparent must be a str like '00-<32 hex>-<16 hex>-01', got {type(value).__name__}"
        )
    text = value.strip()
    parts = text.split("-")
    if len(parts) < 4:
        raise ValueError(
            f"traceparent {value!r} is malformed: expected 'version-trace_id-span_id-flags' "
            f"(4 fields separated by '-'), got {len(parts)} field(s)"
        )
    version, trace_id, span_id, flags = parts[:4]
    _hex_field(value, "version", version, 2)
    if version == "ff":
        raise ValueError(f"traceparent {value!r} is malformed: version 'ff' is forbidden")
    if version == "00" and len(parts) != 4:
        raise ValueError(f"traceparent {value!r} is malformed: version 00 has exactly 4 fields")
    _hex_field(value, "trace id", trace_id, 32)
    _hex_field(value, "span id", span_id, 16)
    _hex_field(value, "flags", flags, 2)
    if trace_id == "0" * 32:
        raise ValueError(f"traceparent {value!r} is malformed: the trace id is all zeros")
    if span_id == "0" * 16:
        raise ValueError(f"traceparent {value!r} is malformed: the span (parent) id is all zeros")
    return TraceParent(version, trace_id, span_id, flags)


def _hex_field(value: str, what: str, field: str, size: int) -> None:
    if len(field) != size or not _HEX.issuperset(field):
        raise ValueError(
            f"traceparent {value!r} is malformed: the {what} must be {size} lower-case hex "
            f"characters, got {field!r}"
        )


def format_traceparent(trace_id: int | str, span_id: int | str, sampled: bool = True) -> str:
    """``00-<trace_id>-<span_id>-<01|00>`` from ids as ints or hex strings."""
    t = f"{trace_id:032x}" if isinstance(trace_id, int) else trace_id
    s = f"{span_id:016x}" if isinstance(span_id, int) else span_id
    return str(parse_traceparent(f"00-{t}-{s}-{'01' if sampled else '00'}"))


# --- the current context --------------------------------------------------------------------------


def _otel_trace() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this thread or task (inside a tool: its
    ``execute_tool`` span), or None when no valid span is current or OpenTelemetry is not installed."""
    trace = _otel_trace()
    if trace is None:
        return None
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def _current_tracestate() -> str | None:
    trace = _otel_trace()
    if trace is None:
        return None
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid or not sc.trace_state:
        return None
    return sc.trace_state.to_header() or None


def inject_headers(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add the current trace context to HTTP headers and return them (a new dict when None is given).

    ``traceparent`` and ``tracestate`` come from the current span; when OpenTelemetry is installed, the
    application's configured propagators add theirs too (by default W3C baggage). Headers are updated
    in place, like OpenTelemetry's ``inject``. Without a current span they are returned unchanged.
    """
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    tp = current_traceparent()
    if tp is None:
        return carrier
    try:
        from opentelemetry import propagate

        propagate.inject(carrier)
    except Exception:
        log.debug(
            "the configured OpenTelemetry propagator failed; sending W3C trace context only", exc_info=True
        )
    carrier["traceparent"] = tp
    ts = _current_tracestate()
    if ts:
        carrier["tracestate"] = ts
    return carrier


def subprocess_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that carries the current trace context.

    A copy of ``env`` (default: ``os.environ``) with ``TRACEPARENT``/``TRACESTATE`` (and ``BAGGAGE``
    when set) of the current span. Without a current span the copy keeps what it had, so a context this
    process inherited still reaches its children. A child running looplet picks it up on its own: its
    runs' ``invoke_agent`` spans start under it.
    """
    out = dict(os.environ if env is None else env)
    tp = current_traceparent()
    if tp is None:
        return out
    carrier = inject_headers({})
    out[ENV_TRACEPARENT] = tp
    if "tracestate" in carrier:
        out[ENV_TRACESTATE] = carrier["tracestate"]
    else:
        out.pop(ENV_TRACESTATE, None)  # an inherited tracestate belongs to the inherited parent
    if carrier.get("baggage"):
        out[ENV_BAGGAGE] = carrier["baggage"]
    return out


# --- building a parent context --------------------------------------------------------------------


def context_from_traceparent(traceparent: str, tracestate: str | None = None) -> Any:
    """An OpenTelemetry ``Context`` whose current span is the remote parent ``traceparent`` names.

    Spans started with it as ``context=`` are its children in the same trace. Raises ``ValueError``
    for a malformed ``traceparent`` (see :func:`parse_traceparent`).
    """
    tp = parse_traceparent(traceparent)
    from looplet.errors import require

    trace = require("opentelemetry.trace", "otel")
    state = trace.TraceState()
    if tracestate:
        try:
            state = trace.TraceState.from_header([tracestate])
        except Exception:
            log.warning("looplet: ignoring malformed tracestate %r", tracestate[:200])
    sc = trace.SpanContext(
        int(tp.trace_id, 16),
        int(tp.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(tp.flags, 16) & 0xFF),
        trace_state=state,
    )
    from opentelemetry.context import Context

    return trace.set_span_in_context(trace.NonRecordingSpan(sc), Context())
