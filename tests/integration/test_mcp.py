"""MCP tools: a real MCP server (``tests/mcp_server_fixture.py``, the official SDK) as a subprocess, reached over
stdio and streamable HTTP on 127.0.0.1, called by agents on both loops.

The server installs the OpenTelemetry SDK and writes its spans to a file; the tests check that its
``tools/call`` span is a child of the agent's ``execute_tool`` span, in the same trace.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import MockLLMBackend, tools_from
from looplet.errors import MissingExtra
from looplet.mcp import MCPClient, MCPConnectionError
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import MODES, run

pytest.importorskip("mcp")

FIXTURE = str(Path(__file__).resolve().parents[1] / "mcp_server_fixture.py")
DONE = json.dumps({"tool": "done", "args": {"answer": "ok"}})


def call(name: str, **args: object) -> str:
    return json.dumps({"tool": name, "args": args})


def server_spans(path: Path, trace_id: int) -> list[dict]:
    """The server's finished spans of one trace (ids as ints)."""
    out = []
    for line in path.read_text().splitlines():
        s = json.loads(line)
        if int(s["context"]["trace_id"], 16) == trace_id:
            s["span_id"] = int(s["context"]["span_id"], 16)
            s["parent"] = int(s["parent_id"], 16) if s["parent_id"] else None
            out.append(s)
    return out


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # If some other test set a global SDK provider, the MCP SDK's own client span ("MCP send tools/call")
    # is recorded there and sits between execute_tool and the server span: capture it too.
    global_provider = trace.get_tracer_provider()
    if isinstance(global_provider, TracerProvider):
        global_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def assert_child_of_tool(server_span: dict, exporter: InMemorySpanExporter, tool_span) -> None:
    parent = server_span["parent"]
    if parent != tool_span.context.span_id:  # only when a global SDK provider made a client span in between
        client = next(s for s in exporter.get_finished_spans() if s.context.span_id == parent)
        assert client.name.startswith("MCP send") and client.parent.span_id == tool_span.context.span_id
    assert parent is not None


@pytest.fixture(scope="module")
def stdio(tmp_path_factory):
    path = tmp_path_factory.mktemp("mcp") / "spans.jsonl"
    path.touch()
    with MCPClient.stdio(sys.executable, [FIXTURE, "--spans", str(path)], call_timeout_s=10) as client:
        yield client, path


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    path = tmp_path_factory.mktemp("mcp-http") / "spans.jsonl"
    path.touch()
    proc = subprocess.Popen(
        [sys.executable, FIXTURE, "--http", "--spans", str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"the HTTP fixture did not start: {line!r}"
        url = f"http://127.0.0.1:{int(line.split()[1])}/mcp"
        with MCPClient.http(url, headers={"X-Test": "looplet"}, call_timeout_s=10) as client:
            yield client, path
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["stdio", "http"])
def server(request):
    return request.getfixturevalue(request.param)


# --- listing ------------------------------------------------------------------------------------------


def test_tools_are_listed_with_the_servers_schemas(stdio) -> None:
    client, _ = stdio
    specs = {s.name: s for s in client.tools()}
    assert {"add", "echo", "fail", "hang", "crash", "whoami"} <= set(specs)
    assert specs["add"].parameters == {
        "type": "object",
        "required": ["a", "b"],
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    }
    assert specs["add"].description == "Add two integers."
    assert specs["add"].is_async
    assert specs["echo"].concurrent_safe and not specs["add"].concurrent_safe  # from readOnlyHint
    # prefix and filters, for two servers side by side
    named = client.tools(prefix="calc.", include=["add", "echo"])
    assert [s.name for s in named] == ["calc_add", "calc_echo"]  # '.' is not allowed in a tool name
    assert "fail" not in {s.name for s in client.tools(exclude=["fail"])}


# --- one trace ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_agent_calls_an_mcp_tool_and_the_server_span_joins_the_trace(mode: str, server, spans) -> None:
    client, path = server
    provider, exporter = spans
    _, result = run(
        mode,
        llm=MockLLMBackend([call("add", a=2, b=3), DONE]),
        tools=tools_from(client.tools()),
        task={"goal": "add"},
        hooks=[TracingHook(tracer_provider=provider)],
    )
    assert result.stop_reason == "done"
    step = result.steps[0].tool_result
    assert step.error is None and step.data == {"sum": 5} and step.text == "5"

    (tool_span,) = [s for s in exporter.get_finished_spans() if s.name == "execute_tool add"]
    remote = server_spans(path, tool_span.context.trace_id)
    (handler,) = [s for s in remote if s["name"] == "tools/call add"]
    (inner,) = [s for s in remote if s["name"] == "fixture.add"]
    assert handler["kind"] == "SpanKind.SERVER"
    assert_child_of_tool(handler, exporter, tool_span)
    assert inner["parent"] == handler["span_id"]


def test_the_request_meta_carries_the_traceparent(stdio, spans) -> None:
    client, _ = stdio
    provider, exporter = spans
    _, result = run(
        "sync",
        llm=MockLLMBackend([call("whoami"), DONE]),
        tools=tools_from(client.tools()),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
    )
    meta = json.loads(result.steps[0].tool_result.text)
    (tool_span,) = [s for s in exporter.get_finished_spans() if s.name == "execute_tool whoami"]
    sc = tool_span.context
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        assert meta["traceparent"].split("-")[1:3] == [f"{sc.trace_id:032x}", f"{sc.span_id:016x}"]
    assert meta["traceparent"].split("-")[1] == f"{sc.trace_id:032x}"
    # outside any span, no trace context is sent
    assert "traceparent" not in json.loads(client.call("whoami").text)


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_mcp_errors_are_tool_errors_and_the_run_goes_on(mode: str, server, spans) -> None:
    client, _ = server
    provider, exporter = spans
    script = [
        call("fail", message="no such user"),
        call("protocol_error"),
        call("add", a="two", b=3),
        call("echo", text="still here"),
        DONE,
    ]
    _, result = run(
        mode,
        llm=MockLLMBackend(script),
        tools=tools_from(client.tools()),
        task={"goal": "x"},
        hooks=[TracingHook(tracer_provider=provider)],
    )
    assert result.stop_reason == "done"
    kinds = [s.tool_result.error_kind for s in result.steps]
    assert kinds == ["mcp_tool_error", "mcp_error", "invalid_argument", None, None]
    fail, proto, bad = (s.tool_result for s in result.steps[:3])
    assert fail.text == "ERROR: failed: no such user"
    assert "-32010" in proto.error and "refuses this request" in proto.error
    assert "'a' must be integer" in bad.error  # validated against the server's schema, never sent
    assert result.steps[3].tool_result.data == "still here"
    tool_spans = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool")}
    assert tool_spans["execute_tool fail"].attributes["looplet.tool.error_kind"] == "mcp_tool_error"


@pytest.mark.parametrize("mode", MODES)
def test_a_hanging_tool_times_out_and_the_server_keeps_working(mode: str, stdio) -> None:
    client, _ = stdio
    client.call_timeout_s = 0.5
    try:
        started = time.perf_counter()
        _, result = run(
            mode,
            llm=MockLLMBackend([call("hang", seconds=30), call("add", a=1, b=1), DONE]),
            tools=tools_from(client.tools()),
            task={"goal": "x"},
        )
        elapsed = time.perf_counter() - started
    finally:
        client.call_timeout_s = 10
    hang, add = result.steps[0].tool_result, result.steps[1].tool_result
    assert hang.error_kind == "timeout" and "0.5s" in hang.error
    assert 0.4 < hang.duration_ms / 1000 < 3 and elapsed < 5
    assert add.data == {"sum": 2} and result.stop_reason == "done"


@pytest.mark.parametrize("mode", MODES)
def test_a_bad_schema_and_a_dying_server_are_tool_errors(mode: str) -> None:
    with MCPClient.stdio(sys.executable, [FIXTURE, "--bad-schema"], call_timeout_s=10) as client:
        tools = tools_from(client.tools())
        script = [
            call("broken", anything=1),
            call("add", a=1, b=2),
            call("crash"),
            call("add", a=1, b=2),
            DONE,
        ]
        started = time.perf_counter()
        _, result = run(mode, llm=MockLLMBackend(script), tools=tools, task={"goal": "x"})
        elapsed = time.perf_counter() - started
        assert not client.connected
    broken, ok, crash, after = (s.tool_result for s in result.steps[:4])
    assert broken.error_kind == "mcp_schema" and "'properties' of type list" in broken.error
    assert ok.data == {"sum": 3}
    assert crash.error_kind == "mcp_disconnected" and "mcp_server_fixture.py" in crash.error
    assert after.error_kind == "mcp_disconnected" and after.duration_ms < 500  # fails at once
    assert result.stop_reason == "done" and elapsed < 8


# --- connecting -------------------------------------------------------------------------------------------


def test_a_server_that_exits_at_start_is_a_connection_error() -> None:
    client = MCPClient.stdio(
        sys.executable, ["-c", "import sys; sys.exit(2)"], name="exits", connect_timeout_s=20
    )
    with pytest.raises(MCPConnectionError, match="could not connect to MCP server 'exits'"):
        client.connect()
    assert client.call("add", {}).error_kind == "mcp_disconnected"


def test_a_server_that_never_answers_the_handshake() -> None:
    client = MCPClient.stdio(
        sys.executable, ["-c", "import time; time.sleep(60)"], name="mute", connect_timeout_s=1.0
    )
    started = time.perf_counter()
    with pytest.raises(MCPConnectionError, match="'mute' did not complete the handshake within 1s"):
        client.connect()
    assert time.perf_counter() - started < 8  # the handshake is cancelled and the process stopped
    assert not client._thread.is_alive()


def test_a_server_that_hangs_while_listing(stdio) -> None:
    client, _ = stdio
    assert client.call("slow_listing", {"seconds": 30}).error is None
    client.call_timeout_s = 0.5
    try:
        started = time.perf_counter()
        with pytest.raises(MCPConnectionError, match="did not list its tools within 0.5s"):
            client.tools()
        assert time.perf_counter() - started < 4
    finally:
        client.call_timeout_s = 10
        client.call("slow_listing", {"seconds": 0})
    assert "add" in {s.name for s in client.tools()}  # the session survived the slow listing


def test_bad_arguments_fail_fast() -> None:
    with pytest.raises(ValueError, match="http"):
        MCPClient.http("127.0.0.1:8000/mcp")
    with pytest.raises(TypeError, match="list of arguments"):
        MCPClient.stdio("python", "server.py")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        MCPClient.stdio("")


def test_missing_sdk_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(MissingExtra, match=r"looplet\[mcp\]"):
        MCPClient.stdio(sys.executable, [FIXTURE]).connect()


async def test_async_context_manager_and_atools() -> None:
    async with MCPClient.stdio(sys.executable, [FIXTURE]) as client:
        specs = {s.name: s for s in await client.atools()}
        result = await specs["echo"].execute(text="hi")
        assert result.data == "hi"
        assert (await client.acall("add", {"a": 4, "b": 5})).data == {"sum": 9}
    assert not client.connected


DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"


def test_docs_examples_run(tmp_path, monkeypatch) -> None:
    """Every python block of docs/distributed.md runs as written; blocks marked as files are written first."""
    text = DOC.read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, re.S)
    for name, body in files:
        (tmp_path / name).write_text(body)
    file_bodies = {body for _, body in files}
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b not in file_bodies]
    assert len(blocks) >= 3 and files
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC}#{i}", "exec"), {"__name__": "__doc_example__"})
