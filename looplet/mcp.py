"""MCP tools for looplet agents, on the official ``mcp`` Python SDK (``pip install 'looplet[mcp]'``).

::

    from looplet.mcp import MCPClient

    with MCPClient.stdio("python", ["my_server.py"]) as server:          # or MCPClient.http(url)
        tools = tools_from([*server.tools(), my_local_tool])
        result = run_loop(llm, task={"goal": "..."}, tools=tools, hooks=hooks)

* **Schemas from the server.** ``tools()`` lists the server's tools (every page) as ``ToolSpec``s whose
  ``parameters`` are the server's input schemas, so the registry validates the model's arguments before a
  request is sent. A tool whose schema the registry cannot use is kept, logged once, and answers every
  call with a tool error (``error_kind="mcp_schema"``) that says what is wrong with it.
* **Sync and async.** The session lives on one background thread with its own event loop; the tools are
  ``async def`` and work in ``composable_loop`` and ``async_composable_loop`` alike; any number of runs
  may share one client.
* **Errors are tool errors** with an ``error_kind``: ``mcp_tool_error`` (the tool answered ``isError``),
  ``mcp_error`` (a JSON-RPC error), ``timeout`` (no answer within ``call_timeout_s``; the request is
  cancelled), ``mcp_disconnected`` (the server exited or the connection broke; later calls fail at once).
  The model sees them and the run goes on. Only connecting and listing raise (:class:`MCPConnectionError`).
* **One trace.** Each call carries the caller's trace context in the request's ``_meta``
  (``traceparent``/``tracestate``), read in the caller's thread, where the tool's ``execute_tool`` span is
  current. A server instrumented with OpenTelemetry (the SDK's server does it by itself once a tracer
  provider is set) starts its ``tools/call`` span under it. The request itself runs in a copy of the
  caller's context, so the SDK's own client span (when the application set a global tracer provider)
  nests under ``execute_tool`` too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from looplet.errors import LoopletError, require
from looplet.tools import ToolSpec
from looplet.types import ToolResult

__all__ = ["MCPClient", "MCPConnectionError"]

log = logging.getLogger("looplet")
_T = TypeVar("_T")

_TIMEOUT_CODE = -32001  # mcp_types.REQUEST_TIMEOUT
_CLOSED_CODE = -32000  # mcp_types.CONNECTION_CLOSED
_MAX_PAGES = 100
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


class MCPConnectionError(LoopletError):
    """Connecting to an MCP server, or listing its tools, failed. The message says which server and why."""


class MCPClient:
    """A connection to one MCP server, usable from sync and async code (and from several runs at once).

    Build it with :meth:`stdio` or :meth:`http`; use it as a context manager (``with`` or ``async with``)
    or call :meth:`connect`/:meth:`close`. ``call_timeout_s`` bounds each tool call (and the listing);
    ``connect_timeout_s`` the start-up and handshake.
    """

    def __init__(
        self,
        target: Any,
        *,
        name: str,
        call_timeout_s: float = 60.0,
        connect_timeout_s: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if call_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("call_timeout_s and connect_timeout_s must be > 0")
        self._target = target
        self.name = name
        self.call_timeout_s = float(call_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._headers = dict(headers or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task[Any] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._lost: str | None = None
        self._lock = threading.Lock()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> MCPClient:
        """A server started as a subprocess and spoken to over its stdin/stdout. ``env`` is added to the
        SDK's minimal default environment (PATH, HOME, ...), not to this process's whole environment."""
        if not isinstance(command, str) or not command:
            raise ValueError("MCPClient.stdio(command): command must be a non-empty string, e.g. 'python'")
        if isinstance(args, str):
            raise TypeError("MCPClient.stdio(args=...): pass a list of arguments, e.g. ['server.py']")
        target = ("stdio", command, [str(a) for a in args], dict(env or {}), cwd)
        return cls(target, name=name or _stdio_name(command, args), **options)

    @classmethod
    def http(
        cls, url: str, *, headers: dict[str, str] | None = None, name: str | None = None, **options: Any
    ) -> MCPClient:
        """A server reached over streamable HTTP at ``url`` (e.g. ``http://127.0.0.1:8000/mcp``)."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"MCPClient.http(url): expected an http(s) URL, got {url!r}")
        return cls(("http", url), name=name or url, headers=headers, **options)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._lost is None

    def connect(self) -> MCPClient:
        """Start the server (stdio) or open the session (HTTP) and complete the MCP handshake."""
        with self._lock:
            if self._thread is not None:
                if self._lost is not None:
                    raise MCPConnectionError(
                        f"MCP server {self.name!r} is disconnected ({self._lost}); "
                        "create a new MCPClient to connect again"
                    )
                return self
            require("mcp", "mcp")
            self._loop = asyncio.new_event_loop()
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._main, args=(ready,), daemon=True, name=f"looplet-mcp-{self.name}"[:60]
            )
            self._thread.start()
        try:
            ready.result(timeout=self.connect_timeout_s)
        except concurrent.futures.TimeoutError:
            self.close()
            raise MCPConnectionError(
                f"MCP server {self.name!r} did not complete the handshake within "
                f"{self.connect_timeout_s:g}s (connect_timeout_s)"
            ) from None
        except Exception as exc:
            self.close()
            raise MCPConnectionError(
                f"could not connect to MCP server {self.name!r}: {_describe(exc)}"
            ) from exc
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """End the session (a stdio server is terminated) and stop the background thread, within
        ``timeout_s``. Calls still running end as ``mcp_disconnected`` tool errors. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._lost is None:
            self._lost = "the client was closed"
        if not loop.is_closed():
            try:  # connected: leave the session gently; still connecting: cancel the handshake
                loop.call_soon_threadsafe(self._end)
            except RuntimeError:  # the loop already finished
                pass
        if thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning(
                    "MCP server %r did not shut down within %.1fs; leaving its thread behind",
                    self.name,
                    timeout_s,
                )

    def __enter__(self) -> MCPClient:
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> MCPClient:
        await asyncio.to_thread(self.connect)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("disconnected" if self._lost else "not connected")
        return f"MCPClient({self.name!r}, {state})"

    # -- the background thread ------------------------------------------------------------------

    def _end(self) -> None:
        if self._client is not None and self._stop is not None:
            self._stop.set()
        elif self._holder is not None:
            self._holder.cancel()

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._hold(ready))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _hold(self, ready: concurrent.futures.Future[None]) -> None:
        """Own the session for its whole life: enter it, wait for close(), leave it in this same task."""
        self._stop = asyncio.Event()
        self._holder = asyncio.current_task()
        if self._lost is not None:  # closed before the thread got here
            ready.set_exception(MCPConnectionError("closed before connecting"))
            return
        try:
            async with AsyncExitStack() as stack:
                client = await stack.enter_async_context(self._make_client(stack))
                self._client = client
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if self._lost is None:
                self._lost = _describe(exc)
                log.warning("MCP server %r disconnected: %s", self.name, self._lost)
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else MCPConnectionError(_describe(exc)))
        finally:
            self._client = None
            if self._lost is None:
                self._lost = "the session ended"
            for task in list(self._pending):
                task.cancel()
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)

    def _make_client(self, stack: AsyncExitStack) -> Any:
        from mcp import Client

        kind = self._target[0]
        if kind == "stdio":
            from mcp.client.stdio import StdioServerParameters

            _, command, args, env, cwd = self._target
            server: Any = StdioServerParameters(command=command, args=args, env=env or None, cwd=cwd)
        else:
            url = self._target[1]
            server = url
            if self._headers:
                from mcp.client.streamable_http import streamable_http_client
                from mcp.shared._httpx_utils import create_mcp_http_client

                http = create_mcp_http_client(headers=self._headers)
                stack.push_async_callback(http.aclose)
                server = streamable_http_client(url, http_client=http)
        return Client(server, read_timeout_seconds=self.call_timeout_s)

    def _submit(
        self, coro: Coroutine[Any, Any, _T], ctx: contextvars.Context | None = None
    ) -> tuple[concurrent.futures.Future[_T], list[asyncio.Task[_T]]]:
        """Run ``coro`` on the session's loop as a task in ``ctx`` (a copy of the caller's context, so spans
        started there nest under the caller's current span)."""
        loop = self._loop
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()
        handle: list[asyncio.Task[_T]] = []
        if loop is None or loop.is_closed():
            coro.close()
            fut.set_exception(_Gone())
            return fut, handle

        def start() -> None:
            if not fut.set_running_or_notify_cancel():
                coro.close()
                return
            task = loop.create_task(coro, context=ctx) if ctx is not None else loop.create_task(coro)
            handle.append(task)
            self._pending.add(task)

            def done(t: asyncio.Task[_T]) -> None:
                self._pending.discard(t)
                if t.cancelled():
                    fut.set_exception(_Gone())
                elif (exc := t.exception()) is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(t.result())

            task.add_done_callback(done)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed between the check and now
            coro.close()
            fut.set_exception(_Gone())
        return fut, handle

    def _cancel(self, handle: list[asyncio.Task[Any]]) -> None:
        loop = self._loop
        if handle and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(handle[0].cancel)
            except RuntimeError:
                pass

    def _wait(self, coro: Coroutine[Any, Any, _T], deadline_s: float) -> _T:
        """Run ``coro`` on the session's loop and wait for it from this (non-loop) thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("MCPClient: a blocking call was made from its own event loop thread")
        fut, handle = self._submit(coro, contextvars.copy_context())
        try:
            return fut.result(timeout=deadline_s)
        except concurrent.futures.TimeoutError:
            self._cancel(handle)
            raise

    async def _await(self, coro: Coroutine[Any, Any, _T]) -> _T:
        fut, handle = self._submit(coro, contextvars.copy_context())
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self._cancel(handle)  # the caller gave up (a tool timeout): cancel the request too
            raise

    # -- tools ----------------------------------------------------------------------------------

    def tools(
        self, *, prefix: str = "", include: Sequence[str] | None = None, exclude: Sequence[str] = ()
    ) -> list[ToolSpec]:
        """The server's tools as ``ToolSpec``s (connecting first if needed). ``prefix`` is put before each
        name (to keep two servers' tools apart); ``include``/``exclude`` filter by the server's names."""
        self.connect()
        try:
            listed = self._wait(self._list(), self.call_timeout_s * 2 + 5)
        except concurrent.futures.TimeoutError:
            raise MCPConnectionError(
                f"MCP server {self.name!r} did not list its tools within {self.call_timeout_s:g}s"
            ) from None
        return self._specs(listed, prefix, include, exclude)

    async def atools(
        self, *, prefix: str = "", include: Sequence[str] | None = None, exclude: Sequence[str] = ()
    ) -> list[ToolSpec]:
        """:meth:`tools` for async code."""
        if self._thread is None:
            await asyncio.to_thread(self.connect)
        listed = await asyncio.wait_for(self._await(self._list()), self.call_timeout_s * 2 + 5)
        return self._specs(listed, prefix, include, exclude)

    async def _list(self) -> list[Any]:
        client = self._client
        if client is None:
            raise MCPConnectionError(f"MCP server {self.name!r} is disconnected ({self._lost})")
        tools: list[Any] = []
        cursor: str | None = None
        try:
            for _ in range(_MAX_PAGES):
                page = await asyncio.wait_for(client.list_tools(cursor=cursor), self.call_timeout_s)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        except MCPConnectionError:
            raise
        except TimeoutError:
            raise MCPConnectionError(
                f"MCP server {self.name!r} did not list its tools within {self.call_timeout_s:g}s"
            ) from None
        except Exception as exc:
            raise MCPConnectionError(
                f"MCP server {self.name!r} failed to list its tools: {_describe(exc)}"
            ) from exc
        return tools

    def _specs(
        self, listed: list[Any], prefix: str, include: Sequence[str] | None, exclude: Sequence[str]
    ) -> list[ToolSpec]:
        specs = []
        for t in listed:
            if include is not None and t.name not in include:
                continue
            if t.name in exclude:
                continue
            specs.append(self._spec(t, prefix))
        return specs

    def _spec(self, t: Any, prefix: str) -> ToolSpec:
        remote = t.name
        local = _NAME_OK.sub("_", f"{prefix}{remote}")[:64] or "mcp_tool"
        desc = (
            t.description or getattr(t, "title", None) or f"The {remote} tool of the {self.name} MCP server."
        )
        schema = t.input_schema
        problem = _schema_problem(schema)
        spec: ToolSpec | None = None
        if problem is None:

            async def execute(**args: Any) -> ToolResult:
                return await self.acall(remote, args)

            # a server's read-only hint lets LoopConfig(parallel_tools=True) run such calls together
            read_only = bool(getattr(getattr(t, "annotations", None), "read_only_hint", False))
            try:
                spec = ToolSpec(local, desc, dict(schema), execute, concurrent_safe=read_only)
            except (TypeError, ValueError) as exc:
                problem = str(exc)
        if spec is None:
            message = (
                f"The MCP tool {remote!r} of server {self.name!r} cannot be used: its input schema "
                f"{problem}. Use another tool."
            )
            log.warning("%s (the tool is listed but every call fails)", message)

            async def broken(**args: Any) -> ToolResult:
                return _error(message, "mcp_schema")

            spec = ToolSpec(local, desc, {"type": "object", "properties": {}}, broken)
        spec.execute.__name__ = local
        return spec

    # -- calls ----------------------------------------------------------------------------------

    def call(self, tool: str, args: dict[str, Any] | None = None) -> ToolResult:
        """Call the server's tool ``tool`` and wait; never raises (failures are ``ToolResult.error``)."""
        started = time.perf_counter()
        if self._thread is None:
            return _error(
                f"MCP server {self.name!r} is not connected; call connect() or use `with`", "mcp_disconnected"
            )
        meta = _trace_meta()
        try:
            return self._wait(self._call(tool, dict(args or {}), meta, started), self.call_timeout_s + 5)
        except concurrent.futures.TimeoutError:
            return self._timeout(tool, started)
        except _Gone:
            return self._gone(tool, started)

    async def acall(self, tool: str, args: dict[str, Any] | None = None) -> ToolResult:
        """:meth:`call` for async code; a cancelled caller cancels the request."""
        started = time.perf_counter()
        if self._thread is None:
            return _error(
                f"MCP server {self.name!r} is not connected; call connect() or use `async with`",
                "mcp_disconnected",
            )
        meta = _trace_meta()
        try:
            return await asyncio.wait_for(
                self._await(self._call(tool, dict(args or {}), meta, started)), self.call_timeout_s + 5
            )
        except TimeoutError:
            return self._timeout(tool, started)
        except _Gone:
            return self._gone(tool, started)

    async def _call(
        self, tool: str, args: dict[str, Any], meta: dict[str, str] | None, started: float
    ) -> ToolResult:
        client = self._client
        if client is None:
            return self._gone(tool, started)
        from mcp.shared.exceptions import MCPError

        try:
            result = await client.call_tool(tool, args, read_timeout_seconds=self.call_timeout_s, meta=meta)
        except MCPError as exc:
            if exc.code == _TIMEOUT_CODE:
                return self._timeout(tool, started)
            if exc.code == _CLOSED_CODE or self._client is None:
                self._disconnected(
                    "the server closed the connection"
                    + (" (its process exited)" if self._target[0] == "stdio" else "")
                )
                return self._gone(tool, started)
            return _error(
                f"MCP server {self.name!r} answered {tool} with error {exc.code}: {exc.message}",
                "mcp_error",
                started,
            )
        except asyncio.CancelledError:
            if self._client is None or self._lost is not None:  # cancelled by the session ending
                return self._gone(tool, started)
            raise
        except Exception as exc:
            if self._client is None or self._lost is not None:
                return self._gone(tool, started, _describe(exc))
            return _error(
                f"MCP call {tool} to server {self.name!r} failed: {_describe(exc)}", "mcp_error", started
            )
        return _result(tool, result, started)

    def _disconnected(self, why: str) -> None:
        """The transport is gone: remember why, and end the session so the process is reaped."""
        if self._lost is None:
            self._lost = why
            log.warning("MCP server %r disconnected: %s", self.name, why)
        if self._stop is not None:
            self._stop.set()

    def _timeout(self, tool: str, started: float) -> ToolResult:
        return _error(
            f"MCP tool {tool} of server {self.name!r} did not answer within {self.call_timeout_s:g}s "
            "and was cancelled. Try smaller input or another approach.",
            "timeout",
            started,
        )

    def _gone(self, tool: str, started: float, detail: str | None = None) -> ToolResult:
        why = self._lost or detail or "the connection closed"
        return _error(
            f"MCP server {self.name!r} is disconnected ({why}); its tool {tool} cannot be called. "
            "Continue without it.",
            "mcp_disconnected",
            started,
        )


class _Gone(Exception):
    """The session's loop is gone: the call could not be run."""


def _trace_meta() -> dict[str, str] | None:
    """``_meta`` for a request: the caller's current trace context, or None without a current span."""
    from looplet.telemetry.propagation import current_traceparent, inject_headers

    if current_traceparent() is None:
        return None
    carrier = inject_headers({})
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


def _result(tool: str, result: Any, started: float) -> ToolResult:
    texts = [_block_text(b) for b in (getattr(result, "content", None) or ())]
    text = "\n".join(t for t in texts if t)
    structured = getattr(result, "structured_content", None)
    if getattr(result, "is_error", False):
        return _error(
            text or f"the MCP tool {tool} reported an error without a message", "mcp_tool_error", started
        )
    if structured is not None:
        data: Any = structured
        if not text:
            text = json.dumps(structured, ensure_ascii=False, default=repr)
    else:
        data = text
    return ToolResult(data=data, text=text, duration_ms=(time.perf_counter() - started) * 1000.0)


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {getattr(block, 'mime_type', '?')}, {len(getattr(block, 'data', '') or '')} base64 chars]"
    if kind == "resource":
        res = block.resource
        return getattr(res, "text", None) or f"[resource {getattr(res, 'uri', '?')}]"
    if kind == "resource_link":
        return f"[resource {getattr(block, 'uri', '?')}]"
    return f"[{kind} content]"


def _schema_problem(schema: Any) -> str | None:
    """Why the registry cannot use ``schema`` as a tool's parameters, or None when it can."""
    if not isinstance(schema, dict):
        return f"is a {type(schema).__name__}, not a JSON object"
    kind = schema.get("type", "object")
    if kind != "object":
        return f"has type {kind!r}; tool arguments need type 'object'"
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return f"has 'properties' of type {type(props).__name__}, not an object"
    for key, sub in props.items():
        if not isinstance(sub, dict):
            return f"describes property {key!r} with {sub!r}, not a schema object"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return f"has 'required' = {required!r}, not a list of names"
    return None


def _error(message: str, kind: str, started: float | None = None) -> ToolResult:
    ms = (time.perf_counter() - started) * 1000.0 if started is not None else 0.0
    return ToolResult(error=message, error_kind=kind, duration_ms=ms, text=f"ERROR: {message}")


def _describe(exc: BaseException) -> str:
    """A one-line reason, looking inside exception groups (anyio task groups wrap transport errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = getattr(exc, "message", None)  # the SDK's MCPError keeps (code, message, data) in args
    text = message if isinstance(message, str) and message else (str(exc) or type(exc).__name__)
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _stdio_name(command: str, args: Sequence[str]) -> str:
    import os

    script = next((a for a in args if a and not a.startswith("-")), "")
    return os.path.basename(script) or os.path.basename(command)
