"""OpenAIBackend: chat completions with native tool calls on the official ``openai`` client.

Works with OpenAI and with OpenAI-compatible servers (Ollama, vLLM, Groq, Together, ...). The client makes
no retries of its own (``max_retries=0``): the loop retries retryable :class:`~looplet.errors.LLMError`\\ s
with backoff, so every attempt is visible to hooks and telemetry.
"""

from __future__ import annotations

from typing import Any

from looplet.backends._base import ProviderBackend
from looplet.backends._common import (
    Assembly,
    empty_answer,
    not_an_answer,
    parse_arguments,
    settings_from_env,
    stream_cut,
)
from looplet.errors import require
from looplet.types import LLMResponse, ToolCall, Usage

__all__ = ["OpenAIBackend"]

PROVIDER = "openai"  # gen_ai.provider.name


class OpenAIBackend(ProviderBackend):
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
    _key_env = "OPENAI_API_KEY"
    _async_given = (
        "this OpenAIBackend was given an AsyncOpenAI client: use async_composable_loop, or "
        "pass an openai.OpenAI client for the sync loop"
    )
    # looplet 0.4.1's way, recognised in __new__: a duck-typed client, or one of these keywords
    _call_path = ("chat", "completions", "create")
    _old_keywords = frozenset({"default_max_tokens", "tool_choice", "use_prompt_cache_key"})

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
        # transport errors inside a stream or a body read reach us unwrapped
        self._setup(sdk, (sdk.APIError, require("httpx2", "openai").HTTPError), model)
        if client is not None:
            if base_url is not None or api_key is not None or client_kwargs:
                raise ValueError(
                    "OpenAIBackend: pass either a client or base_url/api_key/client options, not both "
                    "(configure the client itself, e.g. OpenAI(base_url=..., api_key=...))"
                )
            self._take_client(
                client,
                sdk.OpenAI,
                sdk.AsyncOpenAI,
                {"max_retries": 0},
                "OpenAIBackend(client=...) must be an openai.OpenAI or openai.AsyncOpenAI",
            )
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
        self._endpoint()

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

    def _api(self, client: Any) -> Any:
        return client.chat.completions

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
            params["tools"] = self._tool_schemas(tools)
        stream = bool(options.pop("stream", False))
        params.update(options)
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}  # else a stream carries no token counts
        return params

    @staticmethod
    def _tool_schema(t: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description") or "",
                "parameters": t.get("parameters") or {"type": "object", "properties": {}},
            },
        }

    def _async_settings(self, client: Any) -> dict[str, Any]:
        return dict(
            base_url=client.base_url,
            api_key=client.api_key,
            organization=client.organization,
            project=client.project,
            timeout=client.timeout,
            max_retries=0,
            default_headers=getattr(client, "_custom_headers", None),
        )

    def _new_async_client(self, settings: dict[str, Any]) -> Any:
        return self._sdk.AsyncOpenAI(**settings)

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

    def _reader(self, started: float) -> _StreamReader:
        return _StreamReader(started)


class _StreamReader:
    """Folds chat-completion chunks into an :class:`Assembly`; the usage comes in the last chunk."""

    __slots__ = ("asm",)

    def __init__(self, started: float) -> None:
        self.asm = Assembly(started)

    def absorb(self, event: Any) -> list[dict[str, Any]]:
        """Fold one stream event in; return the chunks it carries for ``on_chunk``."""
        asm = self.asm
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

    def finish(self, server: tuple[str | None, int | None]) -> LLMResponse:
        asm = self.asm
        if (
            asm.finish_reason is None
        ):  # no final chunk: cut off, unless the server sent a complete empty answer
            if asm.seen or asm.usage is None:
                raise stream_cut(PROVIDER)
            raise empty_answer(PROVIDER, "a stream without choices")
        return asm.response(PROVIDER, server)


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
