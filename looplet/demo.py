"""The demo agent: a scripted research assistant on MockLLMBackend, no API key, no network.

It looks something up, fetches a page that does not exist (a failing call), recovers, is refused a
fetch of a cloud metadata address by a PermissionHook (a denied call), computes an answer and
finishes, with live step lines and a summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from looplet.backends.mock import MockLLMBackend
from looplet.config import LoopConfig
from looplet.loop import composable_loop
from looplet.progress import StepPrinter
from looplet.state import DefaultState
from looplet.tools import tool, tools_from

_DOCS = {
    "looplet": "https://docs.example/looplet",
    "opentelemetry": "https://docs.example/otel",
    "prometheus": "https://docs.example/prometheus",
}
_PAGES = {
    "https://docs.example/looplet": "looplet runs tool-calling agents with 12 built-in hooks and 3 exporters.",
    "https://docs.example/otel": "OpenTelemetry GenAI spans: invoke_agent, chat, execute_tool.",
}


@tool(description="Search the documentation index; returns matching page URLs.", concurrent_safe=True)
def search_docs(query: str) -> dict[str, Any]:
    hits = [url for key, url in _DOCS.items() if key in query.lower()]
    return {"results": hits}


@tool(description="Fetch a documentation page by URL.", concurrent_safe=True)
def fetch_page(url: str) -> str:
    if url not in _PAGES:
        raise LookupError(f"404 Not Found: {url}")
    return _PAGES[url]


@tool(description="Evaluate an arithmetic expression with + - * / and parentheses.")
def calculator(expression: str) -> float:
    if not set(expression) <= set("0123456789+-*/(). "):
        raise ValueError("only digits, + - * / ( ) and . are allowed")
    return float(eval(expression, {"__builtins__": {}}, {}))


SCRIPT = [
    '{"tool": "search_docs", "args": {"query": "looplet hooks"}}',
    '{"tool": "fetch_page", "args": {"url": "https://docs.example/looplet/hooks"}}',
    '{"tool": "fetch_page", "args": {"url": "https://docs.example/looplet"}}',
    '[{"tool": "search_docs", "args": {"query": "opentelemetry"}},'
    ' {"tool": "search_docs", "args": {"query": "prometheus"}}]',
    '{"tool": "fetch_page", "args": {"url": "http://169.254.169.254/latest/meta-data"}}',
    '{"tool": "fetch_page", "args": {"url": "https://docs.example/otel"}}',
    '{"tool": "calculator", "args": {"expression": "12 + 3"}}',
    '{"tool": "done", "args": {"answer": "looplet has 12 hooks and 3 exporters: 15 extension points."}}',
]
TASK = {"goal": "How many hooks and exporters does looplet ship, together?"}


def guard() -> Any:
    """The demo's policy: no fetches of link-local (cloud metadata) addresses."""
    from looplet.control.permission import PermissionHook, Rule

    return PermissionHook(
        [
            Rule(
                "deny",
                "fetch_page",
                {"url": "http://169.254.*"},
                reason="link-local addresses (cloud metadata) are off limits",
                name="no-metadata",
            )
        ]
    )


def build(
    latency_s: float = 0.05, steps: int | None = None, stream: bool = False
) -> tuple[MockLLMBackend, Any, LoopConfig]:
    """The demo's backend, tools and config (``steps`` repeats the script to make longer runs)."""
    script = list(SCRIPT)
    if steps and steps > len(script):
        body = SCRIPT[:-1]
        script = [body[i % len(body)] for i in range(steps - 1)] + [SCRIPT[-1]]
    llm = MockLLMBackend(script, model="gpt-4o-mini", usage="estimate", latency_s=latency_s)
    config = LoopConfig(
        max_steps=max(len(script) + 2, 15),
        agent_name="demo-agent",
        parallel_tools=True,
        tool_timeout_s=5.0,
        stream=stream,
    )
    return llm, tools_from([search_docs, fetch_page, calculator]), config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="looplet demo", description=__doc__)
    parser.add_argument("--steps", type=int, default=None, help="make the scripted run this many steps long")
    parser.add_argument("--runs", type=int, default=1, help="run the agent this many times (0: forever)")
    parser.add_argument("--latency", type=float, default=0.05, help="simulated LLM latency in seconds")
    parser.add_argument("--otlp", default=None, help="send spans to this OTLP endpoint")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on ADDR:PORT")
    parser.add_argument(
        "--metrics-addr", default="127.0.0.1", help="address for /metrics (0.0.0.0 in a container)"
    )
    parser.add_argument("--log-file", default=None, help="write JSON logs here (default: stderr)")
    parser.add_argument("--trace-dir", default=None, help="write a trajectory folder per run here")
    parser.add_argument(
        "--stream", action="store_true", help="stream the model's answers (time to first chunk)"
    )
    parser.add_argument("--no-telemetry", action="store_true", help="run the bare loop")
    parser.add_argument("--quiet", action="store_true", help="no step lines")
    args = parser.parse_args(argv)

    session = None if args.no_telemetry else _telemetry(args)
    hooks = list(session.hooks) if session else []
    hooks.append(guard())
    out = sys.stdout
    n = 0
    try:
        while args.runs == 0 or n < args.runs:
            n += 1
            llm, tools, config = build(args.latency, args.steps, args.stream)
            state = DefaultState(max_steps=config.max_steps)
            started = time.perf_counter()
            printer = StepPrinter(out, quiet=args.quiet)
            for step in composable_loop(
                llm=llm, tools=tools, task=TASK, config=config, state=state, hooks=hooks
            ):
                printer.step(step, state)
            result = state.result
            assert result is not None
            printer.summary(result, time.perf_counter() - started)
            _latencies(result, out)
    except KeyboardInterrupt:
        print("interrupted", file=out)
        return 130
    finally:
        if session is not None:
            session.shutdown()
    return 0


def _latencies(result: Any, out: Any) -> None:
    llm_ms = sorted(s.llm_ms for s in result.steps if s.llm_ms)
    tool_ms = sorted(s.tool_ms for s in result.steps)
    print(
        f"LLM latency p50 {_pct(llm_ms, 50):.1f} ms p95 {_pct(llm_ms, 95):.1f} ms · "
        f"tool latency p50 {_pct(tool_ms, 50):.2f} ms p95 {_pct(tool_ms, 95):.2f} ms",
        file=out,
        flush=True,
    )


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def _telemetry(args: argparse.Namespace) -> Any:
    """Full telemetry when the extras are installed; the bare loop (with a note) when not."""
    try:
        from looplet.telemetry.setup import configure
    except ImportError:
        return None
    try:
        return configure(
            service_name="looplet-demo",
            otlp_endpoint=args.otlp,
            metrics_port=args.metrics_port,
            metrics_addr=args.metrics_addr,
            json_logs=True,
            log_file=args.log_file,
            provenance_dir=args.trace_dir,
        )
    except ImportError as exc:
        print(f"note: running without telemetry ({exc})", file=sys.stderr)
        return None
    except OSError as exc:  # e.g. --metrics-port already in use
        raise SystemExit(f"looplet demo: cannot set up telemetry: {exc}") from None


if __name__ == "__main__":
    raise SystemExit(main())
