"""``looplet doctor``: what is installed, what is reachable, where telemetry goes, and what to install.

It reads only the environment and makes quick TCP connections (``--timeout``, default 0.5 s) to the
endpoints the environment names; ``--offline`` skips them. Secrets are never printed.
Exit status: 0, or 1 when an endpoint the environment names cannot be reached.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main", "extras", "endpoints", "reachable"]

#: extra -> (import name, distribution name) pairs it provides
EXTRAS: dict[str, list[tuple[str, str]]] = {
    "otel": [
        ("opentelemetry.trace", "opentelemetry-api"),
        ("opentelemetry.sdk", "opentelemetry-sdk"),
        ("opentelemetry.semconv", "opentelemetry-semantic-conventions"),
        ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
        ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
    ],
    "prometheus": [("prometheus_client", "prometheus-client")],
    "logs": [("structlog", "structlog")],
    "openai": [("openai", "openai")],
    "anthropic": [("anthropic", "anthropic")],
    "mcp": [("mcp", "mcp")],
}
WHAT_FOR = {
    "otel": "OpenTelemetry spans and OTLP export (TracingHook, configure)",
    "prometheus": "Prometheus metrics (MetricsHook, serve_metrics)",
    "logs": "JSON logs (LoggingHook)",
    "openai": "OpenAIBackend (OpenAI, Ollama, vLLM, any OpenAI-compatible server)",
    "anthropic": "AnthropicBackend",
    "mcp": "tools from MCP servers",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def extras() -> dict[str, dict[str, Any]]:
    """Per extra: ``ok`` (every piece importable), and each distribution's version (None when missing)."""
    out: dict[str, dict[str, Any]] = {}
    for extra, parts in EXTRAS.items():
        pieces = {dist: (_version(dist) if _installed(mod) else None) for mod, dist in parts}
        out[extra] = {
            "ok": all(v is not None for v in pieces.values()),
            "packages": pieces,
            "for": WHAT_FOR[extra],
            "install": f"pip install 'looplet[{extra}]'",
        }
    return out


def reachable(url: str, timeout: float = 0.5) -> tuple[bool, str]:
    """``(ok, detail)`` of a TCP connect to the host and port of ``url`` (``host:port`` works too)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = parts.hostname
    if not host:
        return False, f"cannot read a host in {url!r}"
    try:
        port = parts.port or {"https": 443, "http": 80, "grpc": 4317}.get(
            parts.scheme, 443 if not parts.scheme else 80
        )
    except ValueError:
        return False, f"bad port in {url!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except TimeoutError:
        return False, f"{host}:{port} did not answer within {timeout:g}s"
    except OSError as exc:
        return False, f"{host}:{port}: {exc.strerror or exc}"


def _otlp_target() -> tuple[str | None, str, str]:
    """``(endpoint, protocol, source)`` of span export as the OTel SDK would read it."""
    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    source = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        else "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if not protocol:  # as configure() decides: gRPC on 4317, HTTP otherwise
        try:
            port = urlsplit(endpoint if endpoint and "://" in endpoint else f"//{endpoint}").port
        except ValueError:
            port = None
        protocol = "grpc" if port == 4317 else "http/protobuf"
    return endpoint or None, protocol, source


def endpoints(timeout: float = 0.5, offline: bool = False) -> list[dict[str, Any]]:
    """The backends and exporters the environment points at, each with ``reachable`` (None when not checked)."""
    env = os.environ
    rows: list[dict[str, Any]] = []

    def row(name: str, url: str | None, source: str, note: str = "", check: bool = True) -> None:
        item: dict[str, Any] = {
            "name": name,
            "url": url,
            "source": source,
            "note": note,
            "reachable": None,
            "detail": "",
        }
        if url and check and not offline:
            item["reachable"], item["detail"] = reachable(url, timeout)
        rows.append(item)

    base = env.get("OPENAI_BASE_URL")
    key = (
        "set"
        if env.get("OPENAI_API_KEY")
        else "NOT SET (export OPENAI_API_KEY=...; any value for local servers)"
    )
    model = env.get("OPENAI_MODEL") or "NOT SET (export OPENAI_MODEL=gpt-4o-mini)"
    row(
        "OpenAI-compatible backend",
        base or "https://api.openai.com/v1",
        "OPENAI_BASE_URL" if base else "default",
        f"key {key}; model {model}",
    )
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL"):
        a_base = env.get("ANTHROPIC_BASE_URL")
        row(
            "Anthropic backend",
            a_base or "https://api.anthropic.com",
            "ANTHROPIC_BASE_URL" if a_base else "default",
            "key " + ("set" if env.get("ANTHROPIC_API_KEY") else "NOT SET (export ANTHROPIC_API_KEY=...)"),
        )
    otlp, protocol, source = _otlp_target()
    if otlp:
        row("OTLP span exporter", otlp, source, f"protocol {protocol}")
    metrics = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if metrics:
        row("OTLP metrics exporter", metrics, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    return rows


def destinations() -> list[tuple[str, str]]:
    """Where each kind of telemetry goes, given the environment, as ``(kind, where)`` lines."""
    env = os.environ
    otlp, protocol, source = _otlp_target()
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        spans = "nowhere: OTEL_SDK_DISABLED=true"
    elif otlp:
        spans = f"OTLP {protocol} to {otlp} (from {source})"
    else:
        spans = (
            "not exported: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318) or pass "
            "--otlp URL to `looplet run` / `looplet demo`"
        )
    capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() in (
        "true",
        "1",
        "yes",
    )
    service = env.get("OTEL_SERVICE_NAME") or "the agent's name (set OTEL_SERVICE_NAME to choose)"
    return [
        ("spans", spans),
        ("service.name", service),
        (
            "message content",
            "captured (redacted) on spans"
            if capture
            else "not captured (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true to capture, redacted)",
        ),
        (
            "metrics",
            "Prometheus /metrics on 127.0.0.1:PORT when you pass --metrics-port PORT "
            "(or configure(metrics_port=...)); nothing is served otherwise",
        ),
        ("logs", "JSON lines to stderr, or to --log-file FILE (configure(json_logs=True))"),
        (
            "trajectories",
            "a folder per run under --trace-dir DIR (configure(provenance_dir=...)); "
            "read them with `looplet show DIR`",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    from looplet.cli import ArgumentParser

    p = ArgumentParser("looplet doctor", __doc__)
    p.add_argument("--timeout", type=float, default=0.5, help="seconds per TCP connection check")
    p.add_argument("--offline", action="store_true", help="do not connect to anything")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args(argv)

    from looplet import __version__

    ex = extras()
    eps = endpoints(args.timeout, args.offline)
    dest = destinations()
    missing = [name for name, info in ex.items() if not info["ok"]]
    unreachable = [e for e in eps if e["reachable"] is False]
    if args.json:
        print(
            json.dumps(
                {
                    "looplet": __version__,
                    "python": sys.version.split()[0],
                    "extras": ex,
                    "endpoints": eps,
                    "telemetry": dict(dest),
                    "install": [ex[m]["install"] for m in missing],
                },
                indent=2,
            )
        )
        return 1 if unreachable else 0

    print("\n".join(_report_lines(__version__, ex, eps, dest, missing, args.offline)))
    return 1 if unreachable else 0


def _report_lines(
    version: str,
    ex: dict[str, Any],
    eps: list[dict[str, Any]],
    dest: list[tuple[str, str]],
    missing: list[str],
    offline: bool,
) -> list[str]:
    """The text report: extras, endpoints, where telemetry goes, what to install."""
    out: list[str] = [
        f"looplet {version} on Python {sys.version.split()[0]} ({sys.executable})",
        "",
        "extras:",
    ]
    for name, info in ex.items():
        mark = "✓" if info["ok"] else "✗"
        versions = ", ".join(f"{d} {v}" if v else f"{d} missing" for d, v in info["packages"].items())
        out.append(f"  {mark} {name:<10} {versions}")
        if not info["ok"]:
            out.append(f"      for {info['for']}: {info['install']}")
    out += ["", "backends and exporters:"]
    for e in eps:
        out += _endpoint_lines(e, offline)
    out += ["", "telemetry goes to:"]
    out += [f"  {kind:<16} {where}" for kind, where in dest]
    out.append("")
    if missing:
        out.append("to install everything missing: pip install 'looplet[" + ",".join(missing) + "]'")
    else:
        out.append("every extra is installed.")
    return out


def _endpoint_lines(e: dict[str, Any], offline: bool) -> list[str]:
    if e["reachable"] is None:
        state = "not checked" if offline else "-"
    else:
        state = ("✓ reachable" if e["reachable"] else "✗ UNREACHABLE") + f" ({e['detail']})"
    out = [f"  {e['name']}: {e['url']} [{e['source']}] {state}"]
    if e["note"]:
        out.append(f"      {e['note']}")
    if e["reachable"] is False:
        out.append(
            "      check the URL and that the server is running; a local collector listens on "
            "4317 (gRPC) / 4318 (HTTP)"
            if "OTLP" in e["name"]
            else "      check the URL and that the server is running (Ollama: http://127.0.0.1:11434/v1)"
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
