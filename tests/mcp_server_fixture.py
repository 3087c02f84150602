"""A real MCP server for the tests, written with the official ``mcp`` SDK's low-level ``Server``.

Run as a subprocess::

    python tests/mcp_server_fixture.py [--http] [--spans FILE] [--bad-schema]

Over stdio by default; with ``--http`` it serves streamable HTTP on 127.0.0.1 at a port the OS picks and
prints ``PORT <n>`` on its first stdout line. With ``--spans FILE`` it installs the OpenTelemetry SDK as
its global tracer provider and writes every finished span to FILE as one JSON object per line (the SDK's
own ``Span.to_json``), so a test can check that the server's spans joined the caller's trace: the SDK's
server middleware opens a ``tools/call <name>`` span under the ``traceparent`` found in the request's
``_meta``, and each tool opens a ``fixture.<name>`` span inside it.

Tools: ``add(a, b)``, ``echo(text)``, ``fail(message)`` (an ``isError`` result), ``protocol_error()`` (a
JSON-RPC error), ``crash()`` (the process exits mid-call), ``hang(seconds)`` (sleeps), ``whoami()`` (the
``_meta`` the request carried), ``slow_listing(seconds)`` (later ``tools/list`` requests take that long).
``--bad-schema`` adds ``broken``, whose input schema is not an object schema.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

TOOLS = [
    types.Tool(
        name="add",
        description="Add two integers.",
        input_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    ),
    types.Tool(
        name="echo",
        description="Echo the text back.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="fail",
        description="Always fails with the given message.",
        input_schema={
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    ),
    types.Tool(
        name="protocol_error",
        description="Answers with a JSON-RPC error.",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="crash",
        description="The server process exits while handling this call.",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="hang",
        description="Sleeps for the given number of seconds.",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    ),
    types.Tool(
        name="whoami",
        description="Returns the _meta of the request.",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="slow_listing",
        description="Make tools/list take this many seconds from now on.",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    ),
]
BROKEN = types.Tool(
    name="broken",
    description="A tool whose schema no registry can use.",
    input_schema={"type": "object", "properties": ["not", "a", "mapping"]},
)


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("mcp-fixture")


_LIST_DELAY = [0.0]


def build(bad_schema: bool = False) -> Server[Any]:
    tools = TOOLS + ([BROKEN] if bad_schema else [])

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        if _LIST_DELAY[0]:
            await anyio.sleep(_LIST_DELAY[0])
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, args = params.name, dict(params.arguments or {})
        with _tracer().start_as_current_span(f"fixture.{name}"):
            return await _call(ctx, name, args)

    return Server("looplet-test-fixture", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _text(text: str, error: bool = False, structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=error, structured_content=structured
    )


async def _call(ctx: Any, name: str, args: dict[str, Any]) -> types.CallToolResult:
    if name == "add":
        total = int(args["a"]) + int(args["b"])
        return _text(str(total), structured={"sum": total})
    if name == "echo":
        return _text(str(args.get("text", "")))
    if name == "fail":
        return _text(f"failed: {args.get('message', '')}", error=True)
    if name == "protocol_error":
        raise MCPError(code=-32010, message="the fixture refuses this request")
    if name == "crash":
        sys.stderr.flush()
        os._exit(3)
    if name == "hang":
        await anyio.sleep(float(args.get("seconds", 3600)))
        return _text("woke up")
    if name == "whoami":
        meta = dict(ctx.meta or {})
        return _text(json.dumps(meta, sort_keys=True))
    if name == "slow_listing":
        _LIST_DELAY[0] = float(args["seconds"])
        return _text("ok")
    if name == "broken":
        return _text("broken was called")
    raise MCPError(code=-32602, message=f"unknown tool {name!r}")


def _install_tracing(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(path, "a", buffering=1, encoding="utf-8")
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider = TracerProvider(resource=Resource.create({"service.name": "mcp-fixture"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


async def _serve_http(server: Server[Any]) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


async def _serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--http", action="store_true")
    p.add_argument("--spans")
    p.add_argument("--bad-schema", action="store_true")
    a = p.parse_args(argv)
    if a.spans:
        _install_tracing(a.spans)
    server = build(a.bad_schema)
    anyio.run(_serve_http if a.http else _serve_stdio, server)


if __name__ == "__main__":
    main()
