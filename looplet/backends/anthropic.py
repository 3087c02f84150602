"""AnthropicBackend: the Messages API with native tool use on the official ``anthropic`` client.

The loop's transcript is OpenAI chat format; it is converted here on every call: system messages go to
``system``, assistant tool calls become ``tool_use`` blocks, and tool results become ``tool_result``
blocks of one user message. The client makes no retries (the loop does) and no OpenTelemetry spans of its
own (``open_telemetry=False``), so each call has exactly one ``chat`` span: looplet's.
"""

from __future__ import annotations

import os
from typing import Any

from looplet.backends._base import ProviderBackend
from looplet.backends._common import (
    Assembly,
    not_an_answer,
    parse_arguments,
    settings_from_env,
    stream_cut,
)
from looplet.errors import require
from looplet.types import LLMResponse, ToolCall, Usage

__all__ = ["AnthropicBackend"]

PROVIDER = "anthropic"  # gen_ai.provider.name


class AnthropicBackend(ProviderBackend):
    """A looplet backend on ``anthropic.Anthropic`` / ``anthropic.AsyncAnthropic`` (the async one made on
    first use). Pass a client or ``api_key``/``base_url``/``timeout`` and other client options.
    ``timeout`` (seconds) bounds each whole call, a streamed answer included (a retryable
    ``LLMError(kind="timeout")`` at its end). ``open_telemetry``: False (default), True, None or the
    client's options dict; a missing key fails here, naming ``ANTHROPIC_API_KEY``.
    ``max_tokens`` is required by the Messages API; ``LoopConfig(max_tokens=...)`` overrides it per call.
    """

    provider = PROVIDER
    _key_env = "ANTHROPIC_API_KEY"
    _async_given = (
        "this AnthropicBackend was given an AsyncAnthropic client: use async_composable_loop, "
        "or pass an anthropic.Anthropic client for the sync loop"
    )
    # looplet 0.4.1's way, recognised in __new__: a duck-typed client, or one of these keywords
    _call_path = ("messages", "create")
    _old_keywords = frozenset({"default_max_tokens"})

    def __init__(
        self,
        client: Any = None,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 1024,
        timeout: float = 60.0,
        **client_kwargs: Any,
    ) -> None:
        sdk = require("anthropic", "anthropic")
        httpx2 = require("httpx2", "anthropic")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(
                "AnthropicBackend(model=...) must name the model, e.g. model='claude-sonnet-4-5'"
            )
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"AnthropicBackend(max_tokens={max_tokens!r}): must be an int >= 1")
        # the SDK leaves transport errors in streams unwrapped
        self._setup(sdk, (sdk.APIError, httpx2.HTTPError), model)
        self.max_tokens = max_tokens
        quiet = {"max_retries": 0, "open_telemetry": _otel_option(client_kwargs.pop("open_telemetry", False))}
        if client is not None:
            if api_key is not None or base_url is not None or client_kwargs:
                raise ValueError(
                    "AnthropicBackend: pass either a client or api_key/base_url/client options, not both"
                )
            self._take_client(
                client,
                sdk.Anthropic,
                sdk.AsyncAnthropic,
                quiet,
                "AnthropicBackend(client=...) must be an anthropic.Anthropic or AsyncAnthropic",
            )
        else:
            self.timeout = timeout
            self._settings = dict(
                api_key=api_key, base_url=base_url, timeout=timeout, **quiet, **client_kwargs
            )
            try:
                self._client = sdk.Anthropic(**self._settings)
            except sdk.AnthropicError as exc:
                raise ValueError(
                    f"AnthropicBackend: {exc} (pass api_key=... or set ANTHROPIC_API_KEY)"
                ) from exc
            _check_credentials(self._client)
        self._endpoint()

    @classmethod
    def from_env(cls, **kwargs: Any) -> AnthropicBackend:
        """Build from ``ANTHROPIC_MODEL``, ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` (optional)."""
        return cls(
            **settings_from_env(
                "ANTHROPIC", kwargs, model_example="claude-sonnet-4-5", key_example="sk-ant-..."
            )
        )

    def __repr__(self) -> str:
        return f"AnthropicBackend(model={self.model!r}, base_url={self.base_url!r})"

    # -- calls ------------------------------------------------------------------------------------------

    def _api(self, client: Any) -> Any:
        return client.messages

    # -- request ----------------------------------------------------------------------------------------

    def _request(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        system, converted = to_anthropic(messages)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.pop("max_tokens", None) or self.max_tokens,
            "messages": converted,
        }
        if system:
            params["system"] = system
        if tools:
            params["tools"] = self._tool_schemas(tools)
        if options.pop("stream", False):
            params["stream"] = True
        params.update(options)
        return params

    @staticmethod
    def _tool_schema(t: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": t["name"],
            "description": t.get("description") or "",
            "input_schema": t.get("parameters") or {"type": "object", "properties": {}},
        }

    def _async_settings(self, client: Any) -> dict[str, Any]:
        return dict(
            api_key=client.api_key,
            auth_token=client.auth_token,
            base_url=client.base_url,
            timeout=client.timeout,
            max_retries=0,
            open_telemetry=False,
        )

    def _new_async_client(self, settings: dict[str, Any]) -> Any:
        return self._sdk.AsyncAnthropic(**settings)

    # -- response ---------------------------------------------------------------------------------------

    def _parse(self, msg: Any) -> LLMResponse:
        if not hasattr(msg, "content"):
            raise not_an_answer(PROVIDER, self.base_url, type(msg).__name__)
        texts, calls = [], []
        for block in msg.content or ():
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append(ToolCall(block.name, parse_arguments(block.input), block.id))
        counts = _counts(getattr(msg, "usage", None))
        return LLMResponse(
            "".join(texts) or None,
            calls,
            _usage(counts),
            msg.model,
            msg.id,
            msg.stop_reason,
            PROVIDER,
            self.server_address,
            self.server_port,
        )

    def _reader(self, started: float) -> _StreamReader:
        return _StreamReader(started)


def _otel_option(value: Any) -> Any:
    """The client's ``open_telemetry`` option from the backend's: False (the default: no client spans, so
    looplet's ``chat`` span is the only one), True (the client's spans with their defaults), None (the
    client reads its ``ANTHROPIC_OPEN_TELEMETRY*`` variables) or the client's own options dict."""
    if value is True:
        return {"traces": True}
    if value is False or value is None or isinstance(value, dict):
        return value
    raise TypeError(
        f"AnthropicBackend(open_telemetry={value!r}): pass True, False, None or a dict of the anthropic "
        "client's OpenTelemetry options"
    )


def _check_credentials(client: Any) -> None:
    """Fail at construction, not at the first call, when the client found no credentials."""
    if any(getattr(client, k, None) is not None for k in ("api_key", "auth_token", "credentials")):
        return
    raise ValueError(
        "AnthropicBackend: no API key: pass api_key=... or set ANTHROPIC_API_KEY "
        f"(ANTHROPIC_API_KEY is {'empty' if 'ANTHROPIC_API_KEY' in os.environ else 'not set'})"
    )


class _StreamReader:
    """Folds Messages API stream events into an :class:`Assembly`; usage comes from ``message_start``
    (input and cache counts) and ``message_delta`` (cumulative output, sometimes updated input)."""

    __slots__ = ("asm", "blocks", "counts", "stopped")

    def __init__(self, started: float) -> None:
        self.asm = Assembly(started)
        self.blocks: dict[int, int] = {}  # content block index -> tool call index
        self.counts: dict[str, int] | None = None
        self.stopped = False

    def absorb(self, event: Any) -> list[dict[str, Any]]:
        kind, asm = event.type, self.asm
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                return [asm.add_text(delta.text)]
            if delta.type == "input_json_delta" and event.index in self.blocks:
                return [asm.add_call(self.blocks[event.index], None, None, delta.partial_json)]
        elif kind == "content_block_start":
            block = event.content_block
            asm.seen = True
            if block.type == "tool_use":
                self.blocks[event.index] = len(self.blocks)
                return [asm.add_call(self.blocks[event.index], block.id, block.name, None)]
            if block.type == "text" and block.text:
                return [asm.add_text(block.text)]
        elif kind == "message_start":
            asm.model, asm.response_id = event.message.model, event.message.id
            self.counts = _counts(getattr(event.message, "usage", None))
        elif kind == "message_delta":
            asm.finish_reason = event.delta.stop_reason or asm.finish_reason
            update = _counts(getattr(event, "usage", None))
            if update is not None and (self.counts is not None or "input" in update):
                self.counts = {**(self.counts or {}), **update}
        elif kind == "message_stop":
            self.stopped = True
        return []

    def finish(self, server: tuple[str | None, int | None]) -> LLMResponse:
        if not self.stopped:
            raise stream_cut(PROVIDER)
        self.asm.usage = _usage(self.counts)
        return self.asm.response(PROVIDER, server)


def _counts(u: Any) -> dict[str, int] | None:
    """The token counts present on a usage object (fields left null by a ``message_delta`` are skipped)."""
    if u is None:
        return None
    out = {}
    for key, attr in (
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("read", "cache_read_input_tokens"),
        ("write", "cache_creation_input_tokens"),
    ):
        value = getattr(u, attr, None)
        if value is not None:
            out[key] = value
    details = getattr(u, "output_tokens_details", None)
    if details is not None and getattr(details, "thinking_tokens", None) is not None:
        out["thinking"] = details.thinking_tokens
    return out


def _usage(c: dict[str, int] | None) -> Usage | None:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; looplet's includes them (as OpenAI's)."""
    if c is None or "input" not in c:
        return None
    read = c.get("read", 0)
    return Usage(c["input"] + read + c.get("write", 0), c.get("output", 0), read, c.get("thinking", 0))


# -- transcript conversion ---------------------------------------------------------------------------------


def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI chat messages -> ``(system, messages)`` for the Messages API. Turns of one role in a row are
    merged (the API wants user and assistant to alternate), so consecutive tool results form one user turn."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def put(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            system.append(_plain(content))
        elif role == "tool":
            result = _plain(content)
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id"),
                "content": result or "(empty)",
            }
            if result.startswith("ERROR:"):
                block["is_error"] = True
            put("user", [block])
        elif role == "assistant":
            blocks = _blocks(content)
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tc.get("id"),
                        "name": fn.get("name"),
                        "input": parse_arguments(fn.get("arguments")),
                    }
                )
            put("assistant", blocks or [{"type": "text", "text": "(no answer)"}])
        else:
            put("user", _blocks(content) or [{"type": "text", "text": "(empty)"}])
    return "\n\n".join(s for s in system if s), out


def _plain(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Text blocks of a message, without empty ones (the API rejects blank text blocks)."""
    if isinstance(content, list):
        return [
            {"type": "text", "text": p["text"]} if p.get("type") == "text" else p
            for p in content
            if isinstance(p, dict) and (p.get("type") != "text" or str(p.get("text")).strip())
        ]
    text = _plain(content)
    return [{"type": "text", "text": text}] if text.strip() else []
