"""What the OpenAI and Anthropic backends share: error mapping, stream assembly, chunk delivery.

Stdlib only; the provider modules import their SDKs themselves.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from looplet.errors import LLMError
from looplet.telemetry.redact import redact_then_truncate
from looplet.tools import INVALID_JSON_KEY
from looplet.types import LLMResponse, ToolCall, Usage

log = logging.getLogger("looplet")


def old_style(
    client: Any, kwargs: dict[str, Any], sdk: str, path: tuple[str, ...], old: frozenset[str]
) -> bool:
    """Whether a backend is being made the looplet 0.4.1 way (``looplet._compat_backends``): around a
    client that is not the SDK's but has its call method (0.4.1 duck-typed it; a test double, say), or
    with one of 0.4.1's keywords ``old``. Checked once per construction; the SDK is not imported."""
    if kwargs and not old.isdisjoint(kwargs):
        return True
    if client is None or type(client).__module__.partition(".")[0] == sdk:
        return False
    for name in path:
        client = getattr(client, name, None)
    return callable(client)


class SettingMissing(ValueError, RuntimeError):
    """A setting ``from_env`` needs is missing. A ``ValueError``; also a ``RuntimeError``, which is what
    looplet 0.4.1's ``from_env`` raised, so code written for it still catches it."""


def settings_from_env(
    prefix: str, kwargs: dict[str, Any], *, model_example: str, key_example: str
) -> dict[str, Any]:
    """``model``, ``api_key`` and ``base_url`` from ``<PREFIX>_MODEL``, ``<PREFIX>_API_KEY`` and
    ``<PREFIX>_BASE_URL`` (optional), keyword arguments winning; the rest of ``kwargs`` passes through.
    A missing model or key raises ``ValueError`` saying what to export."""
    model = kwargs.pop("model", None) or os.environ.get(f"{prefix}_MODEL")
    api_key = kwargs.pop("api_key", None) or os.environ.get(f"{prefix}_API_KEY")
    missing = (
        []
        if model
        else [f"{prefix}_MODEL is not set: export {prefix}_MODEL={model_example} (or pass model=...)"]
    )
    if not api_key:
        missing.append(
            f"{prefix}_API_KEY is not set: export {prefix}_API_KEY={key_example}, or pass api_key=..."
        )
    if missing:  # both at once when both are missing
        raise SettingMissing("; ".join(missing))
    base_url = kwargs.pop("base_url", None) or os.environ.get(f"{prefix}_BASE_URL") or None
    return dict(kwargs, model=model, api_key=api_key, base_url=base_url)


def total_seconds(timeout: Any) -> float | None:
    """The bound of a whole call, from a backend's ``timeout``: a number of seconds, or an httpx
    ``Timeout``'s read phase (its longest phase when read is unset). None: unbounded."""
    if timeout is None or isinstance(timeout, bool):
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout) if timeout > 0 else None
    read = getattr(timeout, "read", None)
    if isinstance(read, (int, float)):
        return float(read)
    phases = [getattr(timeout, k, None) for k in ("connect", "write", "pool")]
    numbers = [float(v) for v in phases if isinstance(v, (int, float))]
    return max(numbers) if numbers else None


class Deadline:
    """The end of one backend call: ``timeout`` bounds the whole call, a stream included, not each read.

    The SDK request gets ``left()`` as its per-phase timeout (so the wait for the answer's headers ends by
    the deadline); once the headers are in, ``watching(response)`` arms a timer that shuts the response's
    socket down at the deadline, so a server trickling bytes cannot keep a sync call open (the read
    blocked on it fails at once). Async calls use ``asyncio.timeout`` instead. ``expired()`` tells the
    error mapping that the failure was the deadline.
    """

    __slots__ = ("seconds", "at")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        """Seconds left (at least 1 ms), or None when unbounded."""
        return None if self.at is None else max(self.at - time.monotonic(), 0.001)

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at - 0.001

    @contextmanager
    def watching(self, response: Any) -> Iterator[None]:
        """Shut ``response``'s socket down if the deadline passes inside the block. The timer is
        disarmed before the block ends, so a connection given back to the pool is never touched."""
        sock = _socket_of(response)
        if self.at is None or sock is None:
            yield
            return
        lock = threading.Lock()
        armed = [True]

        def fire() -> None:
            with lock:
                if armed[0]:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        timer = threading.Timer(max(self.at - time.monotonic(), 0.0), fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with lock:
                armed[0] = False
            timer.cancel()

    def error(self, provider: str, base_url: Any) -> LLMError:
        return LLMError(
            f"the {provider} answer from {base_url} stalled or was too slow: not complete within "
            f"{self.seconds:g}s (timeout= bounds the whole call, a stream included); the loop retries "
            "(raise timeout= if the model is slow)",
            retryable=True,
            kind="timeout",
        )


def _socket_of(response: Any) -> Any:
    """The socket under an httpx response (its public ``network_stream`` extension), or None."""
    extensions = getattr(response, "extensions", None)
    stream = extensions.get("network_stream") if isinstance(extensions, dict) else None
    get = getattr(stream, "get_extra_info", None)
    sock = get("socket") if callable(get) else None
    return sock if hasattr(sock, "shutdown") else None


def server_of(base_url: Any) -> tuple[str | None, int | None]:
    """``(host, port)`` of a base URL, the port defaulted from the scheme (semconv ``server.*``)."""
    parts = urlsplit(str(base_url))
    if not parts.hostname:
        return None, None
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port or {"https": 443, "http": 80}.get(parts.scheme)


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict; text that is not a JSON object is kept under ``INVALID_JSON_KEY``
    so the registry answers the model with an ``invalid_argument`` error it can act on."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return {INVALID_JSON_KEY: raw}
        if isinstance(value, dict):
            return value
    return {INVALID_JSON_KEY: raw if isinstance(raw, str) else json.dumps(raw, default=repr)}


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _is(exc: BaseException, *names: str) -> bool:
    """Class-name test, so httpx, httpx2 and both SDKs' exceptions are recognised without importing them."""
    return any(k.__name__ in names for k in type(exc).__mro__)


def call_error(
    exc: BaseException, deadline: Deadline, *, provider: str, base_url: Any, **details: Any
) -> LLMError:
    """The error of a call that raised ``exc``: the deadline's timeout when it ran out first (an HTTP status,
    even a late one, is reported as such), else :func:`map_error`."""
    if deadline.expired() and not isinstance(getattr(exc, "status_code", None), int):
        return deadline.error(provider, base_url)
    return map_error(exc, provider=provider, base_url=base_url, **details)


def map_error(
    exc: BaseException,
    *,
    provider: str,
    key_env: str,
    base_url: Any,
    model: str,
    timeout: Any,
    mid_stream: bool = False,
) -> LLMError:
    """Translate an SDK or transport exception into an :class:`LLMError` saying what to do.

    Retryable: 429, 408, 5xx, timeouts, connection failures, a stream cut off or failing mid-way.
    Not retryable: other 4xx (bad request, credentials, permissions, unknown model or URL).
    ``mid_stream``: the exception ended a stream that had already started.
    """
    status = getattr(exc, "status_code", None)
    if mid_stream and not isinstance(status, int):
        cut = _stream_error(exc, provider, timeout)
        if cut is not None:
            return cut
    detail = _detail(exc)
    if isinstance(status, int) and status >= 400:
        return _http_error(
            exc, status, detail, provider=provider, key_env=key_env, base_url=base_url, model=model
        )
    if _is(exc, "APITimeoutError", "TimeoutException"):
        return LLMError(
            f"no answer from {provider} at {base_url} within {timeout}s; the loop retries "
            "(raise timeout= if the model is slow)",
            retryable=True,
            kind="timeout",
        )
    if _is(exc, "APIConnectionError", "TransportError", "RequestError"):
        reason = exc.__cause__ or exc.__context__
        why = f" ({type(reason).__name__}: {reason})" if reason is not None else f" ({exc})"
        return LLMError(
            f"connection to {provider} at {base_url} failed{why}; the loop retries (check base_url "
            "and that the server is up)",
            retryable=True,
            kind="connection",
        )
    if _is(exc, "APIResponseValidationError"):
        return not_an_answer(provider, base_url, "a body that does not match the API schema")
    if _is(exc, "APIError"):  # an error event inside a stream: the server failed mid-answer
        return LLMError(
            f"{provider} reported an error mid-answer{detail}", retryable=True, kind="stream_error"
        )
    return LLMError(
        f"{provider} call failed: {type(exc).__name__}: {exc}", retryable=False, kind=type(exc).__name__
    )


def _stream_error(exc: BaseException, provider: str, timeout: Any) -> LLMError | None:
    """A stream that had started and then stalled or was cut off (None: some other failure)."""
    cause = exc.__cause__ or exc
    if _is(exc, "APITimeoutError", "TimeoutException"):
        return LLMError(
            f"the {provider} stream stalled: no data for {timeout}s; the loop retries",
            retryable=True,
            kind="timeout",
        )
    if _is(exc, "APIConnectionError", "TransportError", "RequestError"):
        return LLMError(
            f"the {provider} stream was cut off mid-answer ({type(cause).__name__}: {cause}); the loop retries",
            retryable=True,
            kind="stream_cut",
        )
    return None


def _http_error(
    exc: BaseException, status: int, detail: str, *, provider: str, key_env: str, base_url: Any, model: str
) -> LLMError:
    """An HTTP error status: 429, 408 and 5xx are retried; other 4xx say what to check."""
    wait = retry_after(getattr(getattr(exc, "response", None), "headers", None))
    if status == 429:
        return LLMError(
            f"{provider} rate limit (HTTP 429){detail}; the loop retries after a pause",
            retryable=True,
            status=429,
            retry_after=wait,
        )
    if status == 408 or status >= 500:
        return LLMError(
            f"{provider} server error (HTTP {status}){detail}; transient, the loop retries",
            retryable=True,
            status=status,
            retry_after=wait,
        )
    hint = {
        400: "the server rejected the request; check the model's parameters and the tool schemas",
        401: f"authentication failed; check {key_env} (or the api_key argument)",
        403: f"permission denied; check that the key may use model {model!r}",
        404: f"not found; check base_url ({base_url}) and model {model!r}",
        413: "the request is too large; shorten the transcript (see compaction hooks)",
        422: "the server could not process the request; check the model's parameters",
    }.get(status, "the request was refused; it is not retried")
    return LLMError(f"{provider} HTTP {status}: {hint}{detail}", retryable=False, status=status)


def _detail(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, dict) else None
    message = message or getattr(exc, "message", None) or str(exc)
    message = " ".join(str(message).split())
    # redacted before it is cut: a key cut in half no longer matches its pattern
    return f": {redact_then_truncate(message, 300, suffix='')}" if message else ""


def stream_cut(provider: str) -> LLMError:
    return LLMError(
        f"the {provider} stream ended before the answer was complete; the loop retries",
        retryable=True,
        kind="stream_cut",
    )


def empty_answer(provider: str, what: str) -> LLMError:
    return LLMError(
        f"{provider} returned {what}; the answer is unusable (check the model and the "
        "request, e.g. a content filter or an exhausted max_tokens)",
        retryable=False,
        kind="empty_response",
    )


def not_an_answer(provider: str, base_url: Any, got: str) -> LLMError:
    return LLMError(
        f"the server at {base_url} did not answer in the {provider} format (got {got}); check that "
        f"base_url points at the {provider} API or a compatible server",
        retryable=False,
        kind="bad_response",
    )


def bad_json(provider: str, base_url: Any, exc: BaseException) -> LLMError:
    """A 200 answer whose body is not valid JSON (cut off by a proxy or a dropped connection): retried."""
    return LLMError(
        f"the {provider} answer from {base_url} was not valid JSON (cut off? {exc}); the loop retries",
        retryable=True,
        kind="bad_json",
    )


def check_stream(events: Any, provider: str, base_url: Any) -> None:
    """Raise when a requested stream came back as something other than server-sent events."""
    headers = getattr(getattr(events, "response", None), "headers", None)
    kind = headers.get("content-type", "") if headers is not None else "text/event-stream"
    if "event-stream" not in kind:
        raise not_an_answer(provider, base_url, kind or "no content type")


def deliver(on_chunk: Callable[[dict[str, Any]], Any] | None, chunk: dict[str, Any]) -> None:
    """Hand ``chunk`` to ``on_chunk`` from sync code; an awaitable result is run to completion."""
    if on_chunk is None:
        return
    out = on_chunk(chunk)
    if out is not None and inspect.isawaitable(out):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(_wait(out))
            return
        if hasattr(out, "close"):
            out.close()
        log.warning(
            "an async on_llm_chunk hook cannot run inside a sync call in a running event loop; "
            "use async_composable_loop"
        )


async def adeliver(on_chunk: Callable[[dict[str, Any]], Any] | None, chunk: dict[str, Any]) -> None:
    if on_chunk is None:
        return
    out = on_chunk(chunk)
    if out is not None and inspect.isawaitable(out):
        await out


async def _wait(awaitable: Any) -> None:
    await awaitable


class Assembly:
    """Builds one :class:`LLMResponse` out of streamed deltas and makes the chunk dicts for ``on_chunk``."""

    __slots__ = ("started", "ttfc", "text", "calls", "usage", "model", "response_id", "finish_reason", "seen")

    def __init__(self, started: float) -> None:
        self.started = started
        self.ttfc: float | None = None
        self.text: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.seen = False  # any choice / content block arrived

    def _first(self) -> None:
        if self.ttfc is None:
            self.ttfc = time.perf_counter() - self.started

    def add_text(self, piece: str) -> dict[str, Any]:
        self._first()
        self.text.append(piece)
        return {"type": "text", "text": piece}

    def add_call(
        self, index: int, call_id: str | None, name: str | None, arguments: str | None
    ) -> dict[str, Any]:
        self._first()
        slot = self.calls.setdefault(index, [None, None, []])
        if call_id:
            slot[0] = call_id
        if name and name != slot[1]:  # sent once by most servers; some repeat it, a few send it in pieces
            slot[1] = (slot[1] or "") + name
        if arguments:
            slot[2].append(arguments)
        return {
            "type": "tool_call",
            "index": index,
            "id": slot[0],
            "name": slot[1],
            "arguments": arguments or "",
        }

    def response(self, provider: str, server: tuple[str | None, int | None]) -> LLMResponse:
        calls = [
            ToolCall(name or "", parse_arguments("".join(pieces)), call_id or f"call_{index}")
            for index, (call_id, name, pieces) in sorted(self.calls.items())
        ]
        return LLMResponse(
            "".join(self.text) or None,
            calls,
            self.usage,
            self.model,
            self.response_id,
            self.finish_reason,
            provider,
            server[0],
            server[1],
            self.ttfc,
        )
