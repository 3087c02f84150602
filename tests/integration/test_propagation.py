"""One trace across process boundaries: W3C ``traceparent`` in, and out to HTTP services and child processes.

Real pieces: the OpenTelemetry SDK with an in-memory exporter, an HTTP server on 127.0.0.1, a child Python
process that runs a looplet agent of its own and reports its spans.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import LoopConfig, MockLLMBackend, tool, tools_from
from looplet.telemetry.propagation import (
    context_from_traceparent,
    current_traceparent,
    format_traceparent,
    inject_headers,
    parse_traceparent,
    subprocess_env,
)
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import MODES, run

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
DONE = json.dumps({"tool": "done", "args": {"answer": "ok"}})


def call(name: str, **args: object) -> str:
    return json.dumps({"tool": name, "args": args})


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


# --- parsing ----------------------------------------------------------------------------------------


def test_parse_a_valid_traceparent() -> None:
    tp = parse_traceparent(TP)
    assert (tp.version, tp.trace_id, tp.span_id, tp.flags, tp.sampled) == (
        "00",
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "01",
        True,
    )
    assert str(tp) == TP
    assert not parse_traceparent(TP[:-2] + "00").sampled
    # a later version may carry more fields; they are not ours to read
    assert parse_traceparent("01-" + TP[3:] + "-extra").trace_id == tp.trace_id
    assert format_traceparent(TRACE_ID, SPAN_ID) == TP


@pytest.mark.parametrize(
    "value, words",
    [
        ("", "4 fields"),
        ("garbage", "4 fields"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "4 fields"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", "exactly 4 fields"),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "'ff' is forbidden"),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "trace id must be 32 lower-case hex"),
        ("00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01", "trace id must be 32"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01", "span id must be 16"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1", "flags must be 2"),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", "trace id is all zeros"),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "span (parent) id is all zeros"),
    ],
)
def test_malformed_traceparent_is_a_clear_value_error(value: str, words: str) -> None:
    with pytest.raises(ValueError, match="malformed") as err:
        parse_traceparent(value)
    assert words in str(err.value)
    with pytest.raises(ValueError):
        context_from_traceparent(value)


def test_non_string_traceparent() -> None:
    with pytest.raises(ValueError, match="must be a str"):
        parse_traceparent(None)  # type: ignore[arg-type]


def test_context_from_traceparent_makes_children_in_that_trace(spans) -> None:
    provider, exporter = spans
    ctx = context_from_traceparent(TP, tracestate="vendor=abc")
    with provider.get_tracer("t").start_as_current_span("child", context=ctx):
        headers = inject_headers()
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == TRACE_ID and span.parent.span_id == SPAN_ID and span.parent.is_remote
    assert headers["tracestate"] == "vendor=abc"


def test_outside_any_span_nothing_is_injected(monkeypatch) -> None:
    monkeypatch.setenv("TRACEPARENT", TP)
    assert current_traceparent() is None
    assert inject_headers({"a": "1"}) == {"a": "1"}
    env = subprocess_env({"PATH": "/bin", "TRACEPARENT": TP})
    assert env == {"PATH": "/bin", "TRACEPARENT": TP}  # an inherited context is handed on as it is
    assert subprocess_env()["TRACEPARENT"] == TP


# --- into a run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_parent_argument_continues_the_trace(mode: str, spans) -> None:
    provider, exporter = spans
    _, result = run(
        mode,
        llm=MockLLMBackend([DONE]),
        tools=tools_from([]),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
        parent=TP,
    )
    (agent,) = spans_named(exporter, "invoke_agent")
    assert agent.context.trace_id == TRACE_ID and agent.parent.span_id == SPAN_ID
    assert result.trace_id == f"{TRACE_ID:032x}"


@pytest.mark.parametrize("mode", MODES)
def test_traceparent_environment_variable_continues_the_trace(mode: str, spans, monkeypatch) -> None:
    provider, exporter = spans
    monkeypatch.setenv("TRACEPARENT", TP)
    run(
        mode,
        llm=MockLLMBackend([DONE]),
        tools=tools_from([]),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
    )
    (agent,) = spans_named(exporter, "invoke_agent")
    assert agent.context.trace_id == TRACE_ID and agent.parent.span_id == SPAN_ID


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["argument", "environment"])
def test_malformed_parent_warns_and_the_run_starts_a_new_trace(
    mode: str, where: str, spans, monkeypatch, caplog
) -> None:
    provider, exporter = spans
    bad = "00-not-a-trace-01"
    kwargs = {"parent": bad} if where == "argument" else {}
    if where == "environment":
        monkeypatch.setenv("TRACEPARENT", bad)
    with caplog.at_level(logging.WARNING, logger="looplet"):
        _, result = run(
            mode,
            llm=MockLLMBackend([DONE]),
            tools=tools_from([]),
            task={"goal": "x"},
            hooks=[TracingHook(tracer_provider=provider)],
            **kwargs,
        )
    assert result.stop_reason == "done"  # telemetry input never stops the agent
    (agent,) = spans_named(exporter, "invoke_agent")
    assert agent.parent is None and agent.context.trace_id != TRACE_ID
    assert any(bad in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_given_a_malformed_traceparent_fails_clearly_and_the_run_goes_on(mode: str) -> None:
    @tool(description="Continue a trace given by the user.")
    def resume_trace(traceparent: str) -> str:
        context_from_traceparent(traceparent)
        return "ok"

    _, result = run(
        mode,
        llm=MockLLMBackend([call("resume_trace", traceparent="zz"), DONE]),
        tools=tools_from([resume_trace]),
        task={"goal": "x"},
    )
    first = result.steps[0].tool_result
    assert first.error_kind == "tool_exception" and "traceparent 'zz' is malformed" in first.error
    assert result.stop_reason == "done"


# --- out of a tool: HTTP ----------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_service():
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _Recorder.seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", MODES)
def test_http_calls_from_tools_carry_the_execute_tool_span(mode: str, spans, http_service) -> None:
    provider, exporter = spans
    url, seen = http_service

    @tool(description="Fetch the service.", concurrent_safe=True)
    def fetch(path: str) -> str:
        req = urllib.request.Request(url + path, headers=inject_headers({"X-Caller": "looplet"}))
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()

    two = json.dumps([{"tool": "fetch", "args": {"path": "a"}}, {"tool": "fetch", "args": {"path": "b"}}])
    run(
        mode,
        llm=MockLLMBackend([two, DONE]),
        tools=tools_from([fetch]),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
        config=LoopConfig(parallel_tools=True),
        parent=TP,
    )
    tool_spans = {s.context.span_id for s in spans_named(exporter, "execute_tool fetch")}
    assert len(seen) == 2 and len(tool_spans) == 2
    got = {parse_traceparent(h["traceparent"]) for h in seen}
    # each request (run in parallel: threads or tasks) carries its own tool span, in the caller's trace
    assert {int(t.span_id, 16) for t in got} == tool_spans
    assert {int(t.trace_id, 16) for t in got} == {TRACE_ID}
    assert all(h["x-caller"] == "looplet" for h in seen)


# --- out of a tool: a child process running its own agent ----------------------------------------

CHILD = r"""
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from looplet import MockLLMBackend, run_loop, tools_from, LoopConfig
from looplet.telemetry.tracing import TracingHook

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
result = run_loop(MockLLMBackend(['{"tool": "done", "args": {"answer": "child ok"}}']), tools=tools_from([]),
                  task={"goal": "child"}, hooks=[TracingHook(tracer_provider=provider)],
                  config=LoopConfig(agent_name="worker"))
(agent,) = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
print(json.dumps({"trace_id": agent.context.trace_id, "parent": agent.parent.span_id if agent.parent else None,
                  "answer": result.final_output}))
"""


def test_a_child_process_agent_joins_the_trace_through_its_environment(spans) -> None:
    provider, exporter = spans

    @tool(description="Run the worker agent in another process.")
    def worker() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    _, result = run(
        "sync",
        llm=MockLLMBackend([call("worker"), DONE]),
        tools=tools_from([worker]),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
    )
    reported = result.steps[0].tool_result.data
    (tool_span,) = spans_named(exporter, "execute_tool worker")
    assert reported["answer"] == "child ok"
    assert reported["trace_id"] == tool_span.context.trace_id
    assert reported["parent"] == tool_span.context.span_id


def test_subprocess_env_replaces_an_inherited_context(spans) -> None:
    provider, _ = spans
    with provider.get_tracer("t").start_as_current_span("here") as span:
        env = subprocess_env({"TRACEPARENT": TP, "TRACESTATE": "old=1", "KEEP": "x"})
    sc = span.get_span_context()
    got = parse_traceparent(env["TRACEPARENT"])
    assert (got.trace_id, got.span_id, got.sampled) == (f"{sc.trace_id:032x}", f"{sc.span_id:016x}", True)
    assert "TRACESTATE" not in env and env["KEEP"] == "x"


def test_works_without_a_tracer_provider_set() -> None:
    """With only the API (no-op provider), helpers return nothing to inject and never fail."""
    with trace.get_tracer("noop").start_as_current_span("x"):
        assert current_traceparent() is None or parse_traceparent(current_traceparent())
        assert isinstance(inject_headers(), dict)
