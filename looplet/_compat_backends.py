"""Deprecated (removal in 0.7): looplet 0.4.1's provider backends and prompt-cache breakpoints.

0.4.1's backends wrapped a client object (any object shaped like ``openai.OpenAI`` or
``anthropic.Anthropic``: the SDK was only needed to build one) and answered ``generate(prompt) -> str``
and ``generate_with_tools(prompt, tools=...) -> [content blocks]``, plus ``stream(prompt)`` on the
streaming classes. 0.5 has one backend per provider (sync, async and streaming) on the official SDK,
whose ``generate(messages, tools=...)`` returns an ``LLMResponse``.

Here each 0.4.1 class is a subclass of the 0.5 backend of its provider that keeps 0.4.1's methods over
the client it was given, by duck typing (no SDK needed for an injected client). ``OpenAIBackend(client)``
and ``AnthropicBackend(client)`` become one of them when ``client`` is not the SDK's client but looks
like one (see ``__new__`` of the 0.5 classes). Handed to the 0.5 loop, their ``generate(prompt)`` is
driven the way every 0.4.1-style backend is (:class:`looplet.compat.OldBackend`: the transcript as one
prompt, the tool call read from the answer's JSON text).

``CacheControl``, ``CachePolicy``, ``CacheBreakpoint`` and ``compute_breakpoints`` are 0.4.1's
prompt-cache values; only these backends read them (``cache_breakpoints=``). Nothing here is imported
by a 0.5 run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from looplet.backends._base import ProviderBackend
from looplet.backends.anthropic import AnthropicBackend
from looplet.backends.openai import OpenAIBackend
from looplet.compat import warn_renamed
from looplet.errors import require

__all__ = [
    "AnthropicStreamingBackend",
    "AsyncAnthropicBackend",
    "AsyncOpenAIBackend",
    "CacheBreakpoint",
    "CacheControl",
    "CachePolicy",
    "OldAnthropicBackend",
    "OldOpenAIBackend",
    "OpenAIStreamingBackend",
    "compute_breakpoints",
    "old_backend_class",
]

#: 0.4.1's constructor keywords that 0.5's backends do not have: given one, the 0.4.1 class is used.
OLD_KEYWORDS = frozenset({"default_max_tokens", "tool_choice", "use_prompt_cache_key"})

_NEW = {
    "openai": "OpenAIBackend(openai.OpenAI(...), model=...): generate(messages, tools=...) returns an "
    "LLMResponse; LoopConfig(stream=True) and on_llm_chunk stream; the async loop awaits agenerate",
    "anthropic": "AnthropicBackend(anthropic.Anthropic(...), model=...): generate(messages, tools=...) "
    "returns an LLMResponse; LoopConfig(stream=True) and on_llm_chunk stream; the async loop awaits "
    "agenerate",
}
_NO_CACHE = (
    "no cache policy: 0.5's backends take no cache breakpoints (OpenAI caches prompt prefixes by itself); "
    "only 0.4.1-style backends read them"
)


# ---------------------------------------------------------------- prompt-cache breakpoints


@dataclass(frozen=True)
class CacheControl:
    """0.4.1's caching declaration of one prompt section: ``ttl`` is ``"ephemeral"`` or ``"1h"``."""

    ttl: str = "ephemeral"


@dataclass(frozen=True)
class CacheBreakpoint:
    """One cached section of a request: its ``label``, the ``content`` and a fingerprint of it."""

    label: str
    hash: str
    content: str
    control: CacheControl = field(default_factory=CacheControl)


@dataclass
class CachePolicy:
    """Which of the three stable sections (system prompt, tool schemas, memory) to mark as cached."""

    system_prompt: CacheControl | None = None
    tool_schemas: CacheControl | None = None
    memory: CacheControl | None = None

    def __post_init__(self) -> None:
        warn_renamed("looplet.cache.CachePolicy", _NO_CACHE)

    def sections(self) -> list[tuple[str, CacheControl]]:
        """The sections that are set, always in the same order."""
        named = (("system_prompt", self.system_prompt), ("tool_schemas", self.tool_schemas))
        return [(label, ctl) for label, ctl in (*named, ("memory", self.memory)) if ctl is not None]


def compute_breakpoints(
    policy: CachePolicy, *, system_prompt: str, tool_schemas_text: str, memory_text: str
) -> list[CacheBreakpoint]:
    """A breakpoint per section the policy sets, fingerprinting that section's text."""
    warn_renamed("looplet.cache.compute_breakpoints(...)", _NO_CACHE)
    text = {"system_prompt": system_prompt, "tool_schemas": tool_schemas_text, "memory": memory_text}
    return [
        CacheBreakpoint(label, hashlib.sha256(text[label].encode()).hexdigest()[:16], text[label], ctl)
        for label, ctl in policy.sections()
    ]


def _by_label(breakpoints: Any) -> dict[str, Any]:
    return {str(getattr(bp, "label", "")): bp for bp in breakpoints or ()}


def _mark(bp: Any) -> dict[str, Any]:
    """Anthropic's ``cache_control`` for a breakpoint: 5 minutes, or one hour for ``ttl="1h"``."""
    ttl = getattr(getattr(bp, "control", None), "ttl", None)
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def _anthropic_cache(params: dict[str, Any], prompt: str, breakpoints: Any) -> None:
    """Mark the cached sections of an Anthropic request in place: the system text, the last tool (the
    tool list up to it), the memory text at the start of the prompt. A section not found is skipped."""
    marks = _by_label(breakpoints)
    if not marks:
        return
    system = params.get("system")
    if "system_prompt" in marks and isinstance(system, str) and system:
        params["system"] = [{"type": "text", "text": system, "cache_control": _mark(marks["system_prompt"])}]
    tools = params.get("tools")
    if "tool_schemas" in marks and tools:
        params["tools"] = [*tools[:-1], {**tools[-1], "cache_control": _mark(marks["tool_schemas"])}]
    memory = str(getattr(marks.get("memory"), "content", "") or "")
    at = prompt.find(memory) if memory else -1
    if at >= 0:
        end = at + len(memory)
        blocks = [{"type": "text", "text": prompt[:end], "cache_control": _mark(marks["memory"])}]
        if prompt[end:]:
            blocks.append({"type": "text", "text": prompt[end:]})
        params["messages"] = [{"role": "user", "content": blocks}]


# ---------------------------------------------------------------- answers


def _openai_text(message: Any) -> str:
    """The visible text of a chat message: its string content, or the text parts of a list of parts."""
    content = getattr(message, "content", None)
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return content if isinstance(content, str) else ""


def _arguments(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {"_raw_arguments": raw}
    return value if isinstance(value, dict) else {}


def _openai_blocks(message: Any) -> list[dict[str, Any]]:
    """0.4.1's content blocks of a chat message: a text block (if any text), then one per tool call."""
    text = _openai_text(message)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in getattr(message, "tool_calls", None) or ():
        fn = getattr(call, "function", None)
        blocks.append(
            {
                "type": "tool_use",
                "id": getattr(call, "id", "") or "",
                "name": getattr(fn, "name", "") or "",
                "input": _arguments(getattr(fn, "arguments", "")),
            }
        )
    return blocks


def _anthropic_text(response: Any) -> str:
    return "".join(str(b.text) for b in getattr(response, "content", None) or () if hasattr(b, "text"))


def _anthropic_blocks(response: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for b in getattr(response, "content", None) or ():
        kind = getattr(b, "type", None)
        if kind == "text":
            blocks.append({"type": "text", "text": getattr(b, "text", "")})
        elif kind == "tool_use":
            blocks.append(
                {
                    "type": "tool_use",
                    "id": getattr(b, "id", "") or "",
                    "name": getattr(b, "name", "") or "",
                    "input": dict(getattr(b, "input", None) or {}),
                }
            )
    return blocks


def _openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """0.4.1's tool schemas (``name``, ``description``, ``input_schema``) as OpenAI function tools."""
    empty = {"type": "object", "properties": {}}
    return [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema") or t.get("parameters") or empty,
            },
        }
        for t in tools
    ]


# ---------------------------------------------------------------- both providers


class _OldMethods(ProviderBackend):
    """0.4.1's methods over the client, the same for both providers: a provider class says how a request
    is made (``_params``) and sent (``_create``), and how its answer reads as text or content blocks."""

    _old: str
    # what a provider class defines: the request (with ``tools``, one offering them), how it is sent,
    # and how the answer reads as text or as 0.4.1's content blocks
    _params: Callable[..., dict[str, Any]]
    _create: Callable[[dict[str, Any]], Any]
    _text: Callable[[Any], str]
    _blocks: Callable[[Any], list[dict[str, Any]]]

    def _adopt(self, client: Any, model: str, default_max_tokens: int | None) -> None:
        self._client = client
        self._aclient = None
        self._settings = None
        self.model = model
        self.default_max_tokens = default_max_tokens
        self.base_url = str(getattr(client, "base_url", "") or "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    def generate(  # type: ignore[override]
        self,
        prompt: str,
        *,
        max_tokens: int | None = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        cache_breakpoints: Any = None,
    ) -> str:
        params = self._params(
            prompt,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
        )
        return self._text(self._create(params))

    def generate_with_tools(
        self, prompt: str, *, tools: list[dict[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """Native tool calls, as 0.4.1's content blocks (``text`` and ``tool_use``)."""
        return self._blocks(self._create(self._params(prompt, tools, **options)))


class _AsyncOldMethods(_OldMethods):
    """The same methods, awaited, over a client whose call is a coroutine function."""

    async def generate(  # type: ignore[override]
        self,
        prompt: str,
        *,
        max_tokens: int | None = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        cache_breakpoints: Any = None,
    ) -> str:
        params = self._params(
            prompt,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            temperature=temperature,
            cache_breakpoints=cache_breakpoints,
        )
        return self._text(await self._create(params))

    async def generate_with_tools(  # type: ignore[override]
        self, prompt: str, *, tools: list[dict[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        return self._blocks(await self._create(self._params(prompt, tools, **options)))


# ---------------------------------------------------------------- OpenAI


class OldOpenAIBackend(_OldMethods, OpenAIBackend):
    """0.4.1's ``OpenAIBackend``: ``generate(prompt) -> str`` and ``generate_with_tools(prompt, tools=)``
    over any client with ``chat.completions.create``. Deprecated: see :data:`_NEW`."""

    _old = "OpenAIBackend(client) with generate(prompt) -> str"

    def __init__(
        self,
        client: Any = None,
        *,
        model: str = "gpt-4o",
        default_max_tokens: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        tool_choice: str = "auto",
        use_prompt_cache_key: bool = False,
    ) -> None:
        warn_renamed(self._old, _NEW["openai"])
        if client is None:
            options = {k: v for k, v in (("base_url", base_url), ("api_key", api_key)) if v is not None}
            client = self._make_client(**options)
        self._adopt(client, model, default_max_tokens)
        self.tool_choice = tool_choice
        self.use_prompt_cache_key = use_prompt_cache_key

    @staticmethod
    def _make_client(**options: Any) -> Any:
        return require("openai", "openai").OpenAI(**options)

    def _params(
        self,
        prompt: str,
        tools: list[dict[str, Any]] | None = None,
        *,
        max_tokens: int | None = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        cache_breakpoints: Any = None,
    ) -> dict[str, Any]:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [*messages, {"role": "user", "content": prompt}],
            "temperature": temperature,
        }
        limit = max_tokens if max_tokens is not None and max_tokens > 0 else self.default_max_tokens
        if limit is not None:
            params["max_tokens"] = limit
        if self.use_prompt_cache_key and cache_breakpoints:
            key = "-".join(h for h in (getattr(bp, "hash", "") for bp in cache_breakpoints) if h)
            params["extra_body"] = {"prompt_cache_key": f"looplet-{key}"}
        if tools is not None:
            params.update(tools=_openai_tools(tools), tool_choice=self.tool_choice)
        return params

    def _create(self, params: dict[str, Any]) -> Any:
        return self._client.chat.completions.create(**params)

    def _text(self, answer: Any) -> str:
        return _openai_text(answer.choices[0].message)

    def _blocks(self, answer: Any) -> list[dict[str, Any]]:
        return _openai_blocks(answer.choices[0].message)


def _delta(event: Any) -> str | None:
    """The text a chat-completion stream event adds, if any."""
    delta = event.choices[0].delta if event.choices else None
    return delta.content if delta is not None and delta.content else None


class OpenAIStreamingBackend(OldOpenAIBackend):
    """0.4.1's ``OpenAIStreamingBackend``: ``stream(prompt)`` yields the answer's text as it arrives."""

    _old = "looplet.backends.OpenAIStreamingBackend"

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        for event in self._create({**self._params(prompt, **options), "stream": True}):
            text = _delta(event)
            if text:
                yield text


class AsyncOpenAIBackend(_AsyncOldMethods, OldOpenAIBackend):
    """0.4.1's ``AsyncOpenAIBackend``: the same methods, awaited, over a client whose
    ``chat.completions.create`` is a coroutine function (``openai.AsyncOpenAI``)."""

    _old = "looplet.backends.AsyncOpenAIBackend"

    @staticmethod
    def _make_client(**options: Any) -> Any:
        return require("openai", "openai").AsyncOpenAI(**options)

    @classmethod
    def from_env(cls, **kwargs: Any) -> OpenAIBackend:
        """0.5's :meth:`OpenAIBackend.from_env` (its backend also has ``agenerate``)."""
        warn_renamed(
            "AsyncOpenAIBackend.from_env()", "OpenAIBackend.from_env() (the async loop awaits agenerate)"
        )
        return OpenAIBackend.from_env(**kwargs)

    async def stream(self, prompt: str, **options: Any) -> AsyncIterator[str]:
        async for event in await self._create({**self._params(prompt, **options), "stream": True}):
            text = _delta(event)
            if text:
                yield text


# ---------------------------------------------------------------- Anthropic


class OldAnthropicBackend(_OldMethods, AnthropicBackend):
    """0.4.1's ``AnthropicBackend``: ``generate(prompt) -> str`` and ``generate_with_tools(prompt,
    tools=)`` over any client with ``messages.create``. Deprecated: see :data:`_NEW`."""

    _old = "AnthropicBackend(client) with generate(prompt) -> str"

    def __init__(
        self,
        client: Any = None,
        *,
        model: str = "claude-sonnet-4-20250514",
        default_max_tokens: int | None = None,
        api_key: str | None = None,
    ) -> None:
        warn_renamed(self._old, _NEW["anthropic"])
        if client is None:
            if api_key is None:
                raise TypeError(
                    f"{type(self).__name__} needs a client or api_key=...; better, use {_NEW['anthropic']}"
                )
            client = self._make_client(api_key=api_key)
        self._adopt(client, model, default_max_tokens)
        self.max_tokens = default_max_tokens or 4096

    @staticmethod
    def _make_client(**options: Any) -> Any:
        return require("anthropic", "anthropic").Anthropic(**options)

    def _params(
        self,
        prompt: str,
        tools: list[dict[str, Any]] | None = None,
        *,
        max_tokens: int | None = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        cache_breakpoints: Any = None,
    ) -> dict[str, Any]:
        limit = max_tokens if max_tokens is not None and max_tokens > 0 else self.default_max_tokens
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": limit or 4096,
            "temperature": temperature,
        }
        if system_prompt:
            params["system"] = system_prompt
        if tools is not None:
            params["tools"] = list(tools)
        _anthropic_cache(params, prompt, cache_breakpoints)
        return params

    def _create(self, params: dict[str, Any]) -> Any:
        return self._client.messages.create(**params)

    def _text(self, answer: Any) -> str:
        return _anthropic_text(answer)

    def _blocks(self, answer: Any) -> list[dict[str, Any]]:
        return _anthropic_blocks(answer)


class AnthropicStreamingBackend(OldAnthropicBackend):
    """0.4.1's ``AnthropicStreamingBackend``: ``stream(prompt)`` yields the answer's text as it arrives."""

    _old = "looplet.backends.AnthropicStreamingBackend"

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        with self._client.messages.stream(**self._params(prompt, **options)) as events:
            yield from events.text_stream


class AsyncAnthropicBackend(_AsyncOldMethods, OldAnthropicBackend):
    """0.4.1's ``AsyncAnthropicBackend``: the same methods, awaited (``anthropic.AsyncAnthropic``)."""

    _old = "looplet.backends.AsyncAnthropicBackend"

    @staticmethod
    def _make_client(**options: Any) -> Any:
        return require("anthropic", "anthropic").AsyncAnthropic(**options)

    async def stream(self, prompt: str, **options: Any) -> AsyncIterator[str]:
        async with self._client.messages.stream(**self._params(prompt, **options)) as events:
            async for text in events.text_stream:
                yield text


def old_backend_class(provider: str) -> type:
    """The 0.4.1 class ``OpenAIBackend(...)`` / ``AnthropicBackend(...)`` makes for a 0.4.1 call."""
    return OldOpenAIBackend if provider == "openai" else OldAnthropicBackend
