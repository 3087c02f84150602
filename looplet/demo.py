"""The demo agent: a scripted research assistant on MockLLMBackend, no API key, no network.

It looks something up, fetches a page that does not exist (a failing call), recovers, is refused a
fetch of a cloud metadata address by a PermissionHook (a denied call), computes an answer and
finishes. Step lines and a summary go to stdout; JSON logs to a file (``--json-logs -`` for stderr); a
closing block says where spans, metrics, logs and the trajectory went. The model is scripted: its tokens,
latency and costs are simulated (priced as gpt-4o-mini).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from typing import Any, NamedTuple, TextIO

from looplet.backends.mock import MockLLMBackend
from looplet.cli import (
    EXIT_INTERRUPTED,
    ArgumentParser,
    UsageError,
    check_otlp,
    check_output_dir,
    check_output_file,
    port_arg,
    port_in_use,
)
from looplet.config import LoopConfig
from looplet.loop import composable_loop
from looplet.progress import StepPrinter
from looplet.state import DefaultState
from looplet.tools import BaseToolRegistry, tool, tools_from

_DOCS = {
    "looplet": "https://docs.example/looplet",
    "opentelemetry": "https://docs.example/otel",
    "prometheus": "https://docs.example/prometheus",
}
_PAGES = {
    "https://docs.example/looplet": "looplet runs tool-calling agents with 12 built-in hooks and 3 exporters.",
    "https://docs.example/otel": "OpenTelemetry GenAI spans: invoke_agent, chat, execute_tool.",
}
MAX_STEPS = 100_000


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
MODEL = "gpt-4o-mini"  # the price table the simulated usage is priced with


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


class DemoAgent(NamedTuple):
    """What :func:`build` returns: unpacks as ``llm, tools, config``; ``hooks`` holds the demo's policy, so
    ``looplet replay TRACE --tools looplet.demo:build`` and ``looplet run looplet.demo:build`` see the same
    agent as the demo."""

    llm: MockLLMBackend
    tools: BaseToolRegistry
    config: LoopConfig

    @property
    def hooks(self) -> list[Any]:
        return [guard()]


def script_for(steps: int | None) -> list[str]:
    """The scripted answers for a run of exactly ``steps`` tool calls (the demo's own script when None).
    The calls before ``done`` cycle through the script; an answer holding two calls is cut to one when
    only one step is left."""
    if steps is None:
        return list(SCRIPT)
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    body = SCRIPT[:-1]
    out: list[str] = []
    left = steps - 1
    i = 0
    while left > 0:
        answer = body[i % len(body)]
        calls = json.loads(answer)
        if isinstance(calls, list):
            if len(calls) > left:
                answer = json.dumps(calls[0])
                calls = calls[:1]
            left -= len(calls)
        else:
            left -= 1
        out.append(answer)
        i += 1
    return out + [SCRIPT[-1]]


def build(latency_s: float = 0.05, steps: int | None = None, stream: bool = False) -> DemoAgent:
    """The demo's backend, tools and config: ``steps`` makes the run exactly that many tool calls long."""
    script = script_for(steps)
    llm = MockLLMBackend(script, model=MODEL, usage="estimate", latency_s=latency_s)
    n_calls = sum(len(c) if isinstance(c := json.loads(a), list) else 1 for a in script)
    config = LoopConfig(
        max_steps=max(n_calls + 2, 15),
        agent_name="demo-agent",
        parallel_tools=True,
        tool_timeout_s=5.0,
        stream=stream,
    )
    return DemoAgent(llm, tools_from([search_docs, fetch_page, calculator]), config)


def _steps_arg(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of steps (1-{MAX_STEPS})") from None
    if not 1 <= n <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{n} steps: give a number from 1 to {MAX_STEPS}")
    return n


def _parser() -> ArgumentParser:
    p = ArgumentParser("looplet demo", __doc__)
    p.add_argument(
        "--steps", type=_steps_arg, default=None, metavar="N", help="run exactly N tool calls (default: 9)"
    )
    p.add_argument("--runs", type=int, default=1, metavar="N", help="run the agent N times (0: forever)")
    p.add_argument(
        "--latency", type=float, default=0.05, metavar="SECONDS", help="simulated LLM latency (default 0.05)"
    )
    p.add_argument("--otlp", metavar="URL", default=None, help="send spans to this OTLP endpoint")
    p.add_argument(
        "--spans-in-memory",
        action="store_true",
        help="hand the spans to an in-memory exporter instead (the baseline of bench/exit_dead_collector.py)",
    )
    p.add_argument(
        "--metrics-port", type=port_arg, default=None, metavar="PORT", help="serve /metrics on this port"
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address for /metrics (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    p.add_argument(
        "--json-logs",
        "--log-file",
        dest="json_logs",
        metavar="FILE",
        default=None,
        help="write JSON logs to FILE, '-' for stderr (default: a file in the demo's temp folder)",
    )
    p.add_argument(
        "--trace-dir", metavar="DIR", default=None, help="save a trajectory folder per run under DIR"
    )
    p.add_argument("--stream", action="store_true", help="stream the answers; step lines show the ttft")
    p.add_argument("--no-telemetry", action="store_true", help="run the bare loop")
    p.add_argument("--quiet", action="store_true", help="no step lines")
    p.set_defaults(memory_exporter=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.runs < 0:
        raise UsageError(f"--runs {args.runs}: give 1 or more (0 runs forever)")
    out = sys.stdout
    session = None if args.no_telemetry else _telemetry(args)
    hooks = list(session.hooks) if session else []
    hooks.append(guard())
    print(
        f"looplet demo: a scripted agent (no API key, no network); the model is simulated, priced as {MODEL}:"
        "\nits tokens, latency and costs below are simulated, not measured.",
        file=out,
    )
    print(f"task: {TASK['goal']}\n", file=out, flush=True)
    n = 0
    results: list[tuple[Any, str | None]] = []
    code = 0
    try:
        while args.runs == 0 or n < args.runs:
            n += 1
            results.append(_one_run(args, hooks, out))
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): the run ended as 'cancelled'", file=out)
        code = EXIT_INTERRUPTED
    finally:
        if session is not None:
            session.shutdown()
    _where(args, session, results, out)
    if code == 0 and any(r.stop_reason != "done" for r, _saved in results):
        code = 1
    return code


def _one_run(args: Any, hooks: list[Any], out: TextIO) -> tuple[Any, str | None]:
    llm, tools, config = build(args.latency, args.steps, args.stream)
    state = DefaultState(max_steps=config.max_steps)
    started = time.perf_counter()
    printer = StepPrinter(out, quiet=args.quiet)
    for step in composable_loop(llm=llm, tools=tools, task=TASK, config=config, state=state, hooks=hooks):
        printer.step(step, state)
    result = state.result
    assert result is not None
    u = result.usage
    cost = f"${result.cost_usd:.5f}" if result.cost_usd is not None else "unknown"
    wall_ms = (time.perf_counter() - started) * 1000.0
    print(
        f"\n{result.stop_reason}: {len(result.steps)} steps, {result.llm_calls} LLM calls, "
        f"{u.input_tokens:,} input + {u.output_tokens:,} output tokens (simulated), cost {cost} "
        f"(simulated), {wall_ms:.0f} ms",
        file=out,
    )
    if result.final_output is not None:
        print(f"answer: {result.final_output}", file=out)
    _latencies(result, out)
    return result, state.metadata.get("trajectory_dir")  # filled in by the trajectory hook


def _latencies(result: Any, out: TextIO) -> None:
    llm_ms = sorted(s.llm_ms for s in result.steps if s.llm_ms)
    tool_ms = sorted(s.tool_ms for s in result.steps)
    print(
        f"LLM latency p50 {_pct(llm_ms, 50):.1f} ms p95 {_pct(llm_ms, 95):.1f} ms (simulated) · "
        f"tool latency p50 {_pct(tool_ms, 50):.2f} ms p95 {_pct(tool_ms, 95):.2f} ms",
        file=out,
        flush=True,
    )


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def _where(args: Any, session: Any, results: list[tuple[Any, str | None]], out: TextIO) -> None:
    """The closing block: where each signal went, or why it went nowhere."""
    rows: list[tuple[str, str]] = []
    if session is None:
        why = "--no-telemetry" if args.no_telemetry else "the otel/prometheus/logs extras are not installed"
        rows.append(("telemetry", f"off ({why})"))
    else:
        trace = next((r.trace_id for r, _s in reversed(results) if r.trace_id), None)
        if args.memory_exporter is not None:
            rows.append(("spans", f"{len(args.memory_exporter.get_finished_spans())} kept in memory"))
        elif session.otlp_endpoint:
            lost = sum(_dropped(session).values())
            sent = f"{session.otlp_endpoint} ({session.otlp_protocol})"
            if lost:  # the trace id would point nowhere
                rows.append(
                    ("spans", f"{sent}: {lost} spans NOT delivered (is a collector listening there?)")
                )
            else:
                rows.append(("spans", sent + (f", trace {trace}" if trace else "")))
        else:
            rows.append(("spans", "not exported (add --otlp http://127.0.0.1:4318)"))
        if session.metrics_port is not None:
            url = f"http://{args.metrics_addr}:{session.metrics_port}/metrics"
            rows.append(("metrics", f"{url} (served while the demo runs)"))
        else:
            rows.append(("metrics", "not served (add --metrics-port 9464)"))
        logs = session.log_file or "stderr"
        rows.append(("logs", f"{logs} (JSON lines)"))
        provenance = session.provenance  # its folders are written by now: the session has shut down
        saved = next(
            (p for r, _s in reversed(results) if provenance and (p := provenance.folder_of(r.run_id))), None
        )
        if saved:
            rows.append(("trajectory", f"{saved}"))
            rows.append(("", f"read it: looplet show {saved}"))
        else:
            rows.append(("trajectory", "not written (see the logs)"))
    print("\nwhere the telemetry went:", file=out)
    for name, text in rows:
        print(f"  {name:<12}{text}", file=out)
    out.flush()


def _dropped(session: Any) -> dict[str, int]:
    dropped = getattr(session, "dropped_spans", None)
    counts = dropped() if callable(dropped) else dropped
    return dict(counts) if isinstance(counts, dict) else {}


def _default_folder() -> str:
    return os.path.join(tempfile.gettempdir(), "looplet-demo")


def _telemetry(args: Any) -> Any:
    """Full telemetry when the extras are installed; the bare loop (with a note) when not. Every output is
    checked before the first step: a path that cannot be written, a bad endpoint or a busy port stops the
    demo with exit code 2."""
    otlp, protocol = check_otlp(args.otlp) if args.otlp else (None, None)
    if otlp and args.spans_in_memory:
        raise UsageError("--otlp and --spans-in-memory: give one of them")
    logs = args.json_logs or os.path.join(_default_folder(), "logs.jsonl")
    log_file = None if logs == "-" else check_output_file(logs, "--json-logs")
    trace_dir = check_output_dir(args.trace_dir or os.path.join(_default_folder(), "traces"), "--trace-dir")
    try:
        from looplet.telemetry.setup import configure
    except ImportError:
        return None
    try:
        if args.spans_in_memory:  # the closing block counts what it holds
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            args.memory_exporter = InMemorySpanExporter()
        return configure(
            service_name="looplet-demo",
            otlp_endpoint=otlp,
            span_exporter=args.memory_exporter,
            otlp_protocol=protocol,
            metrics_port=args.metrics_port,
            metrics_addr=args.metrics_addr,
            json_logs=True,
            log_file=log_file,
            provenance_dir=trace_dir,
        )
    except ImportError as exc:
        print(f"note: running without telemetry ({exc})", file=sys.stderr)
        return None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(port_in_use("--metrics-port", args.metrics_port)) from None
        raise UsageError(f"cannot set up telemetry: {exc.strerror or exc}") from None


if __name__ == "__main__":
    from looplet.cli import run_command

    raise SystemExit(run_command("looplet demo", lambda: main()))
