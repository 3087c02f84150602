"""A scriptable fake LLM server on 127.0.0.1 for tests with the real ``openai`` and ``anthropic`` clients.

It speaks ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), with and without
SSE streaming. A test scripts the answers in order; each answer is rendered in the protocol of the path
that asks for it, so one script drives either client::

    server.script(tool_call("search", {"query": "x"}), error(429, retry_after=0), text("hi"),
                  tool_call("done", {"answer": "ok"}, usage=usage(12, 4, cached=3)))

Every request is recorded (``server.requests``, ``server.bodies()``) so tests can check what went on the
wire. Like real servers it rejects malformed transcripts with a 400 (a tool result without its call, a
null content, Anthropic turns that do not alternate), so a backend's conversion bugs fail loudly.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeLLMServer",
    "LLMRecorder",
    "Reply",
    "text",
    "tool_call",
    "tool_calls",
    "error",
    "hang",
    "empty",
    "reset",
    "truncated",
    "usage",
]

_ids = itertools.count(1)


def usage(input: int = 20, output: int = 10, *, cached: int = 0, reasoning: int = 0) -> dict[str, int]:
    """Token counts of a reply. ``input`` includes ``cached`` (OpenAI's convention); the Anthropic
    rendering reports ``input - cached`` as fresh input and ``cached`` as cache reads."""
    return {"input": input, "output": output, "cached": cached, "reasoning": reasoning}


@dataclass
class Reply:
    """One scripted answer.

    tool_calls: ``(name, args, id)``; ``args`` a dict, or a str sent verbatim (e.g. malformed JSON).
    usage: ``usage(...)`` or None (the answer carries no token counts).
    status/error_type/message/headers: a non-200 reply. delay_s: wait before answering (a hang).
    chunk_delay_s: pause between stream events. trickle_s: send a 200 answer's body (or each stream event)
        one byte at a time, this long apart (a server that is slow but never silent). pieces: how many deltas each text or argument string is
        split into when streaming. cut_after: streaming only, stop after this many events, either dropping
        the connection mid-body (``cut_mode="drop"``) or ending the body cleanly (``"end"``, as some proxies do).
    empty: OpenAI: an empty ``choices`` list; Anthropic: an empty ``content`` list.
    reset: close the connection with a TCP reset instead of answering.
    truncate: non-streaming only, send the first ``truncate`` bytes of the answer's JSON body, either with a
        content-length that promises the whole body and then a closed connection (``truncate_mode="short"``)
        or as a complete, well-framed body that is not valid JSON (``"framed"``, as a broken proxy does).
    """

    text: str | None = None
    tool_calls: list[tuple[str, Any, str]] = field(default_factory=list)
    usage: dict[str, int] | None = field(default_factory=usage)
    finish_reason: str | None = None
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    trickle_s: float = 0.0
    pieces: int = 3
    cut_after: int | None = None
    cut_mode: str = "drop"
    empty: bool = False
    raw: str | None = None  # sent verbatim as text/html instead of an answer (a wrong base_url)
    reset: bool = False
    truncate: int | None = None
    truncate_mode: str = "framed"


def text(content: str, **kw: Any) -> Reply:
    return Reply(text=content, **kw)


def tool_call(name: str, args: Any = None, id: str | None = None, **kw: Any) -> Reply:
    return tool_calls([(name, args or {}, id)], **kw)


def tool_calls(calls: list[tuple[Any, ...]], **kw: Any) -> Reply:
    """Several calls in one answer: ``[(name, args), (name, args, id), ...]``."""
    full = [(c[0], c[1], c[2] if len(c) > 2 and c[2] else f"call_{next(_ids)}") for c in calls]
    return Reply(tool_calls=full, **kw)


def error(status: int, message: str | None = None, *, retry_after: float | None = None, **kw: Any) -> Reply:
    headers = dict(kw.pop("headers", {}))
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return Reply(status=status, message=message or f"fake error {status}", headers=headers, **kw)


def hang(seconds: float = 5.0) -> Reply:
    """Answer nothing for ``seconds`` (a client with a shorter timeout gives up)."""
    return Reply(text="too late", delay_s=seconds)


def empty(**kw: Any) -> Reply:
    return Reply(empty=True, **kw)


def reset(**kw: Any) -> Reply:
    """Drop the connection with a TCP reset (RST) after reading the request: no status line at all."""
    return Reply(reset=True, **kw)


def truncated(nbytes: int = 40, mode: str = "framed", **kw: Any) -> Reply:
    """A 200 answer whose JSON body stops after ``nbytes`` bytes (see ``Reply.truncate``)."""
    return tool_call("done", {"answer": "cut"}, truncate=nbytes, truncate_mode=mode, **kw)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    response_id: str | None = None  # the id of the answer sent back (when one was)
    at: float = field(default_factory=time.monotonic)  # when the request arrived


class FakeLLMServer:
    """``with FakeLLMServer() as server: ...`` (or ``start()``/``stop()``). ``openai_url`` and
    ``anthropic_url`` are the base URLs to give the clients."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.aborted = 0  # streams the client closed before their end
        self.exhausted = 0  # requests that found the script empty
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._aborted = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-llm-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    openai_url = property(lambda self: self.url + "/v1")
    anthropic_url = property(lambda self: self.url)

    # -- script and records -------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> FakeLLMServer:
        """Append answers, served in order to whichever endpoint asks next."""
        with self._lock:
            self._script.extend(replies)
        return self

    @property
    def pending(self) -> int:
        return len(self._script)

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if path is None or r.path == path]

    def wait_aborted(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` streams were closed by the client before their end."""
        with self._aborted:
            return self._aborted.wait_for(lambda: self.aborted >= count, timeout)

    def _next(self, record: Recorded) -> Reply | None:
        with self._lock:
            self.requests.append(record)
            if not self._script:
                self.exhausted += 1
                return None
            return self._script.popleft()

    def _mark_aborted(self) -> None:
        with self._aborted:
            self.aborted += 1
            self._aborted.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(
            sys.exc_info()[1], OSError
        ):  # a client that hung up (timeouts, aborted streams): expected
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes go out at once (else delayed ACKs add ~40 ms)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, _err_body(self.path, 400, "invalid_request_error", "body is not JSON"))
        route = self.path.split("?", 1)[0].rstrip("/")  # exact, as a real server: a wrong base_url is a 404
        anthropic = route == "/v1/messages"
        if not anthropic and route != "/v1/chat/completions":
            return self._json(404, _err_body(self.path, 404, "not_found_error", f"no route {self.path}"))
        record = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = self.fake._next(record)
        problem = (_check_anthropic if anthropic else _check_openai)(body)
        if reply is None:
            problem = problem or "fakeserver: the test's script is exhausted (script more replies)"
        if problem:
            return self._json(400, _err_body(self.path, 400, "invalid_request_error", problem))
        if reply.delay_s and self.fake._closing.wait(reply.delay_s):
            return
        if reply.reset:
            return self._reset()
        if reply.raw is not None:
            return self._json(reply.status, None, {"content-type": "text/html"}, reply.raw.encode())
        if reply.status != 200:
            kind = reply.error_type or {
                429: "rate_limit_error",
                401: "authentication_error",
                404: "not_found_error",
            }.get(reply.status, "api_error")
            return self._json(
                reply.status, _err_body(self.path, reply.status, kind, reply.message or ""), reply.headers
            )
        model = reply.model or body.get("model") or "fake-model"
        rid = next(_ids)
        record.response_id = f"msg_{rid}" if anthropic else f"chatcmpl-{rid}"
        if not body.get("stream"):
            payload = (_anthropic_message if anthropic else _openai_completion)(reply, model, rid)
            if reply.truncate is not None:
                return self._truncated(json.dumps(payload).encode(), reply)
            return self._json(200, payload, reply.headers, trickle_s=reply.trickle_s)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = (
            _anthropic_events(reply, model, rid)
            if anthropic
            else _openai_events(reply, model, rid, include_usage)
        )
        self._stream(events, reply)

    # -- writing ------------------------------------------------------------------------------------------

    def _json(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        trickle_s: float = 0.0,
    ) -> None:
        data = json.dumps(payload).encode() if data is None else data
        headers = {"content-type": "application/json", **(headers or {})}
        try:
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if trickle_s:
                self._trickle(data, trickle_s)
            else:
                self.wfile.write(data)
        except OSError:
            self.close_connection = True
            if trickle_s:
                self.fake._mark_aborted()

    def _trickle(self, data: bytes, pause_s: float, chunked: bool = False) -> None:
        """Write ``data`` one byte at a time, ``pause_s`` apart; stops when the client hangs up."""
        for n in range(len(data)):
            if n and self.fake._closing.wait(pause_s):
                raise OSError("server closing")
            piece = data[n : n + 1]
            self.wfile.write(b"1\r\n%s\r\n" % piece if chunked else piece)
            self.wfile.flush()

    def _reset(self) -> None:
        import socket
        import struct

        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # linger 0: the kernel answers with RST, not FIN
        except OSError:
            pass

    def _truncated(self, data: bytes, reply: Reply) -> None:
        cut = data[: max(0, min(int(reply.truncate or 0), len(data) - 1))]
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data) if reply.truncate_mode == "short" else len(cut)))
            self.end_headers()
            self.wfile.write(cut)
            self.wfile.flush()
        except OSError:
            pass

    def _stream(self, events: list[str], reply: Reply) -> None:
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for n, event in enumerate(events):
                if reply.cut_after is not None and n >= reply.cut_after:
                    if reply.cut_mode == "end":
                        break  # a well-formed body that stops mid-answer
                    self.close_connection = True  # no terminating chunk: the client sees a broken body
                    self.wfile.flush()
                    return
                if n and reply.chunk_delay_s and self.fake._closing.wait(reply.chunk_delay_s):
                    return
                data = event.encode()
                if reply.trickle_s:
                    self._trickle(data, reply.trickle_s, chunked=True)
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # BrokenPipe / ConnectionReset: the client closed the stream early
            self.close_connection = True
            self.fake._mark_aborted()


# -- OpenAI rendering ----------------------------------------------------------------------------------------


def _finish(reply: Reply, anthropic: bool) -> str:
    if reply.finish_reason:
        return reply.finish_reason
    if anthropic:
        return "tool_use" if reply.tool_calls else "end_turn"
    return "tool_calls" if reply.tool_calls else "stop"


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args)


def _openai_usage(u: dict[str, int]) -> dict[str, Any]:
    return {
        "prompt_tokens": u["input"],
        "completion_tokens": u["output"],
        "total_tokens": u["input"] + u["output"],
        "prompt_tokens_details": {"cached_tokens": u["cached"]},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning"]},
    }


def _openai_completion(reply: Reply, model: str, rid: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": _args_text(a)}}
            for name, a, cid in reply.tool_calls
        ]
    choices = (
        []
        if reply.empty
        else [{"index": 0, "message": message, "finish_reason": _finish(reply, False), "logprobs": None}]
    )
    out: dict[str, Any] = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if reply.usage is not None:
        out["usage"] = _openai_usage(reply.usage)
    return out


def _split(s: str, n: int) -> list[str]:
    if not s:
        return []
    size = max(1, -(-len(s) // max(1, n)))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _openai_events(reply: Reply, model: str, rid: int, include_usage: bool) -> list[str]:
    base = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return (
            "data: "
            + json.dumps(
                {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            )
            + "\n\n"
        )

    events = []
    if not reply.empty:
        events.append(chunk({"role": "assistant", "content": ""}))
        events += [chunk({"content": p}) for p in _split(reply.text or "", reply.pieces)]
        for i, (name, a, cid) in enumerate(reply.tool_calls):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": cid,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                for p in _split(_args_text(a), reply.pieces)
            ]
        events.append(chunk({}, _finish(reply, False)))
    if include_usage and reply.usage is not None:
        events.append(
            "data: " + json.dumps({**base, "choices": [], "usage": _openai_usage(reply.usage)}) + "\n\n"
        )
    events.append("data: [DONE]\n\n")
    return events


def _check_openai(body: dict[str, Any]) -> str | None:
    open_calls: set[str] = set()
    for i, m in enumerate(body.get("messages") or ()):
        role = m.get("role")
        if "content" in m and m["content"] is None:
            return f"messages[{i}].content is null (send a string)"
        if role == "assistant":
            open_calls = {tc["id"] for tc in m.get("tool_calls") or ()}
            for tc in m.get("tool_calls") or ():
                if tc.get("type") != "function" or not isinstance(
                    tc.get("function", {}).get("arguments"), str
                ):
                    return f"messages[{i}].tool_calls: each needs type 'function' and string arguments"
        elif role == "tool":
            if m.get("tool_call_id") not in open_calls:
                return f"messages[{i}]: tool message with unknown tool_call_id {m.get('tool_call_id')!r}"
        elif role not in ("system", "user", "developer"):
            return f"messages[{i}].role {role!r} is not valid"
    return None


# -- Anthropic rendering -------------------------------------------------------------------------------------


def _anthropic_usage(u: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": u["input"] - u["cached"],
        "output_tokens": u["output"],
        "cache_read_input_tokens": u["cached"],
        "cache_creation_input_tokens": 0,
    }


def _anthropic_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for name, a, cid in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": cid, "name": name, "input": a})
    return blocks


def _anthropic_message(reply: Reply, model: str, rid: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if reply.empty else _anthropic_blocks(reply),
        "stop_reason": _finish(reply, True),
        "stop_sequence": None,
    }
    if reply.usage is not None:
        out["usage"] = _anthropic_usage(reply.usage)
    return out


def _anthropic_events(reply: Reply, model: str, rid: int) -> list[str]:
    def ev(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    start: dict[str, Any] = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if reply.usage is not None:
        start["usage"] = {**_anthropic_usage(reply.usage), "output_tokens": 1}
    events = [ev("message_start", {"message": start}), ev("ping", {})]
    blocks = [] if reply.empty else _anthropic_blocks(reply)
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                ev("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
            )
            events += [
                ev("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": p}})
                for p in _split(block["text"], reply.pieces)
            ]
        else:
            events.append(
                ev(
                    "content_block_start",
                    {
                        "index": i,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
            )
            events += [
                ev(
                    "content_block_delta",
                    {"index": i, "delta": {"type": "input_json_delta", "partial_json": p}},
                )
                for p in _split(_args_text(block["input"]), reply.pieces)
            ]
        events.append(ev("content_block_stop", {"index": i}))
    delta: dict[str, Any] = {"delta": {"stop_reason": _finish(reply, True), "stop_sequence": None}}
    if reply.usage is not None:
        delta["usage"] = {"output_tokens": reply.usage["output"]}
    events += [ev("message_delta", delta), ev("message_stop", {})]
    return events


def _check_anthropic(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    previous_role = None
    pending: set[str] = set()  # tool_use ids the next user turn must answer
    for i, m in enumerate(body.get("messages") or ()):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: {role!r} is not valid (system goes in the top-level 'system')"
        if role == previous_role:
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        if i == 0 and role != "user":
            return "messages.0: the first message must use the 'user' role"
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: must be a non-empty string or list of blocks"
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if (pending or answered) and answered != pending:
            return f"messages.{i}: tool_use ids {sorted(pending)} need tool_result blocks in this message"
        if role == "assistant" and answered:
            return f"messages.{i}: tool_result blocks belong in a user message"
        for b in blocks:
            if b.get("type") == "text" and not str(b.get("text", "")).strip():
                return f"messages.{i}: text content blocks must contain non-whitespace text"
        pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        previous_role = role
    return None


def _err_body(path: str, status: int, kind: str, message: str) -> dict[str, Any]:
    if path.rstrip("/").endswith("/v1/messages"):
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": str(status)}}


class LLMRecorder:
    """A hook keeping what the loop got from its backend: every ``LLMResponse`` (through ``wrap_llm_call``,
    sync or async), every retry ``(attempt, error, delay_s)`` and every streamed chunk ``(step, chunk)``."""

    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.retries: list[tuple[int, Any, float]] = []
        self.chunks: list[tuple[int, dict[str, Any]]] = []

    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        response = call_next(call)
        self.responses.append(response)
        return response

    async def awrap_llm_call(self, call: Any, call_next: Any) -> Any:
        response = await call_next(call)
        self.responses.append(response)
        return response

    def on_llm_retry(self, state: Any, attempt: int, error: Any, delay_s: float) -> None:
        self.retries.append((attempt, error, delay_s))

    def on_llm_chunk(self, state: Any, chunk: dict[str, Any], step_num: int) -> None:
        self.chunks.append((step_num, chunk))
