"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.async_loop.async_llm_call``.

0.4.1 exposed the one-model-call helper of its async loop: call a 0.4.1-style backend
(``generate(prompt, ...) -> str``, or ``generate_with_tools(prompt, tools=...)`` for native tool calls),
await it when it is a coroutine, retry failures with backoff, and return an ``LLMResult`` (``ok``,
``text``, ``error``) instead of raising. In 0.5 a backend is called with the chat transcript
(``await llm.agenerate(messages, tools=...)``) and the loop itself retries (``LoopConfig(llm_retries=,
llm_backoff_s=)``), so every attempt is visible to hooks and telemetry.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from looplet.compat import warn_renamed

__all__ = ["LLMResult", "NativeToolPolicy", "NativeToolUnsupportedError", "async_llm_call"]

log = logging.getLogger("looplet")

BACKOFF_S = 0.1  # the first wait between attempts; doubled for each further one


@dataclass
class LLMResult:
    """What one model call gave: ``text`` (a string, or content blocks from ``generate_with_tools``),
    or the ``error`` it failed with."""

    text: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class NativeToolUnsupportedError(RuntimeError):
    """0.4.1's error for a native tool call the backend cannot make (no ``generate_with_tools``)."""


@dataclass
class NativeToolPolicy:
    """0.4.1's switch between native tool calls (``enabled=True``) and JSON text (``enabled=False``)
    for :func:`async_llm_call`. The 0.5 loop uses the native calls a backend returns, and reads JSON text
    when it returns none."""

    enabled: bool = True

    def __post_init__(self) -> None:
        warn_renamed(
            "looplet.native_tools.NativeToolPolicy",
            "nothing: the 0.5 loop reads native tool calls, or JSON text when a backend returns none",
        )


def _takes(method: Any, name: str) -> bool:
    """Whether ``method`` accepts the keyword ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _call(llm: Any, prompt: str, tools: Any, native: bool, options: dict[str, Any]) -> Any:
    """Start one call: ``generate_with_tools`` when ``native``, else ``generate``; of ``options``, the
    three 0.4.1 always passed, and the others the method takes."""
    method = llm.generate_with_tools if native else llm.generate
    always = ("max_tokens", "system_prompt", "temperature")
    kwargs = {k: v for k, v in options.items() if k in always or (v is not None and _takes(method, k))}
    return method(prompt, tools=tools, **kwargs) if native else method(prompt, **kwargs)


def async_llm_call(
    llm: Any,
    prompt: str,
    *,
    max_tokens: int | None = None,
    system_prompt: str = "",
    temperature: float = 0.2,
    max_retries: int = 2,
    tools: list[dict[str, Any]] | None = None,
    native_policy: Any = None,
    cancel_token: Any = None,
    cache_breakpoints: Any = None,
    generate_kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> Coroutine[Any, Any, LLMResult]:
    """0.4.1's ``await async_llm_call(llm, prompt, ...)``: call ``llm`` once (``max_retries`` more times
    on failure), never raising: a failure is the result's ``error``. (It warns when called, so that the
    warning points at the caller's line, not at the event loop.)"""
    warn_renamed(
        "looplet.async_loop.async_llm_call(llm, prompt)",
        "await llm.agenerate(messages, tools=...) (the loop retries: LoopConfig(llm_retries=...))",
    )
    return _attempts(
        llm,
        prompt,
        tools,
        native_policy,
        max_retries,
        cancel_token,
        {
            "max_tokens": max_tokens,
            "system_prompt": system_prompt,
            "temperature": temperature,
            **(generate_kwargs or {}),
            "cache_breakpoints": cache_breakpoints,
            "cancel_token": cancel_token,
        },
    )


async def _attempts(
    llm: Any,
    prompt: str,
    tools: Any,
    native_policy: Any,
    max_retries: int,
    cancel_token: Any,
    options: dict[str, Any],
) -> LLMResult:
    native = tools is not None and getattr(native_policy, "enabled", True) is not False
    if native and not callable(getattr(llm, "generate_with_tools", None)):
        return LLMResult(
            None,
            NativeToolUnsupportedError(
                f"{type(llm).__name__} has no generate_with_tools for native tool calls; pass a "
                "native_policy with enabled=False to ask for JSON text"
            ),
        )
    error: BaseException | None = None
    for attempt in range(max(0, max_retries) + 1):
        if getattr(cancel_token, "is_cancelled", False):
            return LLMResult(None, RuntimeError("cancelled before the LLM call"))
        if attempt:
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            text = _call(llm, prompt, tools, native, options)
            if inspect.isawaitable(text):
                text = await text
            return LLMResult(text)
        except Exception as exc:
            error = exc
        log.warning("LLM call attempt %d of %d failed: %s", attempt + 1, max_retries + 1, error)
    return LLMResult(None, error)
