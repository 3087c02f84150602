"""Telemetry: tracing, metrics, logs, cost and one-call set-up. Each integration imports its library lazily."""

from __future__ import annotations

from looplet._lazy import lazy_getattr

_LAZY = {
    "TracingHook": "looplet.telemetry.tracing",
    "MetricsHook": "looplet.telemetry.metrics",
    "serve_metrics": "looplet.telemetry.metrics",
    "LoggingHook": "looplet.telemetry.logging",
    "configure_logging": "looplet.telemetry.logging",
    "configure": "looplet.telemetry.setup",
    "shutdown": "looplet.telemetry.setup",
    "set_prices": "looplet.telemetry.cost",
    "load_prices": "looplet.telemetry.cost",
    "cost_of": "looplet.telemetry.cost",
    "price_for": "looplet.telemetry.cost",
    "inject_headers": "looplet.telemetry.propagation",
    "subprocess_env": "looplet.telemetry.propagation",
    "current_traceparent": "looplet.telemetry.propagation",
    "add_secret": "looplet.telemetry.redact",
    "install_sigterm_handler": "looplet.shutdown",
    "shutdown_requested": "looplet.shutdown",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr("looplet.telemetry", globals(), _LAZY)
