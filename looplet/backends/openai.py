"""OpenAIBackend: chat completions with native tool calls on the official ``openai`` client.

Works with OpenAI and with OpenAI-compatible servers (Ollama, vLLM, Groq, Together, ...). The client makes
no retries of its own (``max_retries=0``): the loop retries retryable :class:`~looplet.errors.LLMError`\\ s
with backoff, so every attempt is visible to hooks and telemetry.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from looplet.backends._common import (
    Assembly,
    Deadline,
    adeliver,
    bad_json,
    call_error,
    check_stream,
    deliver,
    empty_answer,
    not_an_answer,
    old_style,
    parse_arguments,
    server_of,
    settings_from_env,
    stream_cut,
    total_seconds,
)
from looplet.errors import LLMError, require
from looplet.telemetry.redact import add_secret
from looplet.types import LLMResponse, ToolCall, Usage

__all__ = ["OpenAIBackend"]

PROVIDER = "openai"  # gen_ai.provider.name
_OLD_KEYWORDS = frozenset(
    {"default_max_tokens", "tool_choice", "use_prompt_cache_key"}
)  # looplet 0.4.1's (see __new__)


class OpenAIBackend:
    """A looplet backend on ``openai.OpenAI`` (sync) and ``openai.AsyncOpenAI`` (async, made on first use).

    Pass a client (``OpenAIBackend(OpenAI(...), model=...)``, sync or async) or let the backend build one
    from ``base_url``, ``api_key``, ``timeout`` and any other ``openai.OpenAI`` argument. ``timeout`` (seconds)
    bounds each whole call, a streamed answer included: a call still unanswered at its end raises a
    retryable ``LLMError(kind="timeout")``. With a client of your own, its timeout (the read phase of an
    ``httpx.Timeout``) is that bound.
    Options the loop passes: ``temperature``, ``max_tokens``, ``stream`` and ``on_chunk``; any other
    option goes to ``chat.completions.create`` as is.
    """

    provider = PROVIDER

    def __new__(cls, client: Any = None, *args: Any, **kwargs: Any) -> OpenAIBackend:
        if cls is OpenAIBackend and old_style(
            client, kwargs, PROVIDER, ("chat", "completions", "create"), _OLD_KEYWORDS
        ):
            from looplet._compat_backends import old_backend_class  # looplet 0.4.1's way, deprecated

            cls = old_backend_class(PROVIDER)
        return object.__new__(cls)

    def __init__(
        self,
        client: Any = None,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        **client_kwargs: Any,
    ) -> None:
        sdk = require("openai", "openai")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("OpenAIBackend(model=...) must name the model, e.g. model='gpt-4o-mini'")
        self._sdk = sdk
        # transport errors inside a stream or a body read reach us unwrapped
        self._errors = (sdk.APIError, require("httpx2", "openai").HTTPError)
        self.model = model
        self._client: Any = None
        self._aclient: Any = None
        self._aloop: Any = None  # the event loop self._aclient belongs to (None: the user's own client)
        self._settings: dict[str, Any] | None = None
        self._tools_in: Any = None
        self._tools_out: list[dict[str, Any]] = []
        if client is not None:
            if base_url is not None or api_key is not None or client_kwargs:
                raise ValueError(
                    "OpenAIBackend: pass either a client or base_url/api_key/client options, not both "
                    "(configure the client itself, e.g. OpenAI(base_url=..., api_key=...))"
                )
            if isinstance(client, sdk.AsyncOpenAI):
                self._aclient = client.with_options(max_retries=0)
            elif isinstance(client, sdk.OpenAI):
                self._client = client.with_options(max_retries=0)
            else:
                raise TypeError(
                    f"OpenAIBackend(client=...) must be an openai.OpenAI or openai.AsyncOpenAI, "
                    f"got {type(client).__name__}"
                )
            self.timeout = (self._client or self._aclient).timeout
        else:
            self.timeout = timeout
            self._settings = dict(
                base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0, **client_kwargs
            )
            try:
                self._client = sdk.OpenAI(**self._settings)
            except sdk.OpenAIError as exc:
                raise ValueError(
                    f"OpenAIBackend: {exc} (pass api_key=... or set OPENAI_API_KEY; local servers "
                    "such as Ollama accept any non-empty key)"
                ) from exc
        self._total = total_seconds(self.timeout)
        self.base_url = str((self._client or self._aclient).base_url)
        self.server_address, self.server_port = server_of(self.base_url)
        add_secret(getattr(self._client or self._aclient, "api_key", None), "api_key")  # redacted everywhere

    @classmethod
    def from_env(cls, **kwargs: Any) -> OpenAIBackend:
        """Build from ``OPENAI_MODEL``, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` (optional: OpenAI's own
        endpoint when unset). Keyword arguments override the environment."""
        return cls(
            **settings_from_env(
                "OPENAI",
                kwargs,
                model_example="gpt-4o-mini",
                key_example="sk-... (local servers such as Ollama accept any non-empty value)",
            )
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # -- calls ------------------------------------------------------------------------------------------

    def generate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse:
        if self._client is None:
            raise TypeError(
                "this OpenAIBackend was given an AsyncOpenAI client: use async_composable_loop, or "
                "pass an openai.OpenAI client for the sync loop"
            )
        on_chunk = options.pop("on_chunk", None)
        params = self._request(messages, tools, options)
        asm = Assembly(time.perf_counter())
        deadline = Deadline(self._total)
        if deadline.at is not None:
            params.setdefault("timeout", deadline.left())
        completions = self._client.chat.completions
        try:
            if not params.get("stream"):
                with completions.with_streaming_response.create(**params) as raw:
                    with deadline.watching(raw.http_response):
                        return self._parse(raw.parse())
            with completions.create(**params) as events, deadline.watching(events.response):
                check_stream(events, PROVIDER, self.base_url)
                for event in events:
                    for chunk in self._absorb(asm, event):
                        deliver(on_chunk, chunk)
            return self._finish(asm)
        except self._errors as exc:
            raise self._error(exc, asm, deadline) from exc
        except json.JSONDecodeError as exc:
            raise bad_json(PROVIDER, self.base_url, exc) from exc

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse:
        client = self._async_client()
        on_chunk = options.pop("on_chunk", None)
        params = self._request(messages, tools, options)
        asm = Assembly(time.perf_counter())
        deadline = Deadline(self._total)
        if deadline.at is not None:
            params.setdefault("timeout", deadline.left())
        try:
            async with asyncio.timeout(deadline.left()):
                if not params.get("stream"):
                    return self._parse(await client.chat.completions.create(**params))
                async with await client.chat.completions.create(**params) as events:
                    check_stream(events, PROVIDER, self.base_url)
                    async for event in events:
                        for chunk in self._absorb(asm, event):
                            await adeliver(on_chunk, chunk)
            return self._finish(asm)
        except TimeoutError as exc:
            raise deadline.error(PROVIDER, self.base_url) from exc
        except self._errors as exc:
            raise self._error(exc, asm, deadline) from exc
        except json.JSONDecodeError as exc:
            raise bad_json(PROVIDER, self.base_url, exc) from exc

    def close(self) -> None:
        """Close the HTTP connections of the clients this backend built."""
        if self._settings is not None and self._client is not None:
            self._client.close()

    # -- request ----------------------------------------------------------------------------------------

    def _request(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {**m, "content": ""} if m.get("content") is None and m.get("role") == "assistant" else m
                for m in messages
            ],
        }  # some compatible servers reject a null assistant content
        if tools:
            if tools is not self._tools_in:  # the loop passes the same list every call: convert it once
                self._tools_in = tools
                self._tools_out = [
                    {
                        "type": "function",
                        "function": {
                            "name": t["name"],
                            "description": t.get("description") or "",
                            "parameters": t.get("parameters") or {"type": "object", "properties": {}},
                        },
                    }
                    for t in tools
                ]
            params["tools"] = self._tools_out
        stream = bool(options.pop("stream", False))
        params.update(options)
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}  # else a stream carries no token counts
        return params

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is not None and (self._aloop is None or self._aloop is loop):
            return self._aclient
        settings = self._settings
        if settings is None:  # the user's sync client: the same endpoint and credentials
            c = self._client
            settings = dict(
                base_url=c.base_url,
                api_key=c.api_key,
                organization=c.organization,
                project=c.project,
                timeout=c.timeout,
                max_retries=0,
                default_headers=getattr(c, "_custom_headers", None),
            )
        # an async client's connections belong to one event loop: make one per loop
        self._aclient, self._aloop = self._sdk.AsyncOpenAI(**settings), loop
        return self._aclient

    # -- response ---------------------------------------------------------------------------------------

    def _parse(self, resp: Any) -> LLMResponse:
        if not hasattr(resp, "choices"):
            raise not_an_answer(PROVIDER, self.base_url, type(resp).__name__)
        if not resp.choices:
            raise empty_answer(PROVIDER, "an empty choices list")
        choice = resp.choices[0]
        msg = choice.message
        calls = [
            ToolCall(tc.function.name, parse_arguments(tc.function.arguments), tc.id)
            for tc in msg.tool_calls or ()
            if getattr(tc, "function", None) is not None
        ]
        return LLMResponse(
            msg.content or getattr(msg, "refusal", None),
            calls,
            _usage(resp.usage),
            resp.model,
            resp.id,
            choice.finish_reason,
            PROVIDER,
            self.server_address,
            self.server_port,
        )

    @staticmethod
    def _absorb(asm: Assembly, event: Any) -> list[dict[str, Any]]:
        """Fold one stream event into ``asm``; return the chunks it carries for ``on_chunk``."""
        asm.model = event.model or asm.model
        asm.response_id = event.id or asm.response_id
        if event.usage is not None:
            asm.usage = _usage(event.usage)
        chunks: list[dict[str, Any]] = []
        for choice in event.choices or ():
            if choice.index != 0:
                continue
            asm.seen = True
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    chunks.append(asm.add_text(delta.content))
                for tc in delta.tool_calls or ():
                    fn = tc.function
                    chunks.append(asm.add_call(tc.index, tc.id, fn and fn.name, fn and fn.arguments))
            if choice.finish_reason:
                asm.finish_reason = choice.finish_reason
        return chunks

    def _finish(self, asm: Assembly) -> LLMResponse:
        if (
            asm.finish_reason is None
        ):  # no final chunk: cut off, unless the server sent a complete empty answer
            if asm.seen or asm.usage is None:
                raise stream_cut(PROVIDER)
            raise empty_answer(PROVIDER, "a stream without choices")
        return asm.response(PROVIDER, (self.server_address, self.server_port))

    def _error(self, exc: BaseException, asm: Assembly, deadline: Deadline) -> LLMError:
        return call_error(
            exc,
            deadline,
            provider=PROVIDER,
            key_env="OPENAI_API_KEY",
            base_url=self.base_url,
            model=self.model,
            timeout=_seconds(self.timeout),
            mid_stream=asm.model is not None,
        )


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    prompt = getattr(u, "prompt_tokens_details", None)
    completion = getattr(u, "completion_tokens_details", None)
    return Usage(
        u.prompt_tokens or 0,
        u.completion_tokens or 0,
        (prompt and prompt.cached_tokens) or 0,
        (completion and completion.reasoning_tokens) or 0,
    )


def _seconds(timeout: Any) -> Any:
    return getattr(timeout, "read", None) or timeout
