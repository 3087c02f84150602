"""Deprecated (removal in 0.7): the scripted backends of looplet 0.4.1, for code written against it.

``looplet.testing.MockLLMBackend`` keeps 0.4.1's behaviour: ``responses`` is optional (a lone
``"mock response"``), ``cycle`` defaults to True, ``generate("a prompt")`` returns the scripted string
and ``reset()`` rewinds the script. Handed to the loop (which calls ``generate(messages, tools=...)``)
it answers like :class:`looplet.MockLLMBackend`. New code uses ``looplet.MockLLMBackend(responses,
cycle=False)``, whose ``generate`` always returns an ``LLMResponse``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from looplet.backends.mock import MockLLMBackend as _Mock
from looplet.compat import warn_renamed
from looplet.errors import LLMResponsesExhausted
from looplet.types import LLMResponse, Usage

__all__ = ["MockLLMBackend", "AsyncMockLLMBackend", "LLMResponsesExhausted"]

_DEFAULT = "mock response"


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content blocks
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


class MockLLMBackend(_Mock):
    """0.4.1's scripted backend. Deprecated: use ``looplet.MockLLMBackend(responses, cycle=...)``."""

    _new = "looplet.MockLLMBackend(responses, cycle=True)"

    def __init__(
        self,
        responses: Iterable[Any] | None = None,
        cycle: bool = True,
        *,
        model: str = "mock-model",
        usage: Usage | str | None = None,
        latency_s: float = 0.0,
    ) -> None:
        warn_renamed(f"looplet.testing.{type(self).__name__}", self._new)
        script = list(responses) if responses is not None else []
        super().__init__(script or [_DEFAULT], cycle, model=model, usage=usage, latency_s=latency_s)
        self.last_prompt = ""
        self.last_system_prompt = ""

    def _scripted_text(self, prompt: str, system_prompt: str) -> str:
        """0.4.1's ``generate(prompt)``: the next scripted response as a string."""
        self.last_prompt, self.last_system_prompt = prompt, system_prompt
        with self._lock:
            i = self.calls
            self.calls += 1
        if i >= len(self.responses):
            if not self.cycle:
                raise LLMResponsesExhausted(
                    f"MockLLMBackend(cycle=False) was called {i + 1} times but only {len(self.responses)} "
                    "responses were scripted; script more responses or let the loop stop sooner"
                )
            i %= len(self.responses)
        item = self.responses[i]
        return item if isinstance(item, str) else json.dumps(item, default=str)

    def _remember(self, messages: list[dict[str, Any]]) -> None:
        system = [_text_of(m) for m in messages if m.get("role") == "system"]
        self.last_system_prompt = system[-1] if system else ""
        self.last_prompt = "\n\n".join(_text_of(m) for m in messages if m.get("role") != "system")

    def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
        """``generate(prompt: str, system_prompt=...)`` returns a string (0.4.1); ``generate(messages,
        tools=...)`` (what the loop calls) returns an ``LLMResponse``."""
        if isinstance(messages, str):
            return self._scripted_text(messages, str(options.get("system_prompt") or ""))
        self._remember(messages)
        return super().generate(messages, tools=tools, **options)

    async def agenerate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
        if isinstance(messages, str):
            return self._scripted_text(messages, str(options.get("system_prompt") or ""))
        self._remember(messages)
        return await super().agenerate(messages, tools=tools, **options)

    def generate_with_tools(self, prompt: str, *, tools: Any = None, **options: Any) -> list[dict[str, Any]]:
        """0.4.1's native-tool call: the next response as content blocks (``tool_use`` or ``text``)."""
        text = self._scripted_text(prompt, str(options.get("system_prompt") or ""))
        parsed = self._parse(text, self.calls - 1)
        if not isinstance(parsed, LLMResponse) or not parsed.tool_calls:
            return [{"type": "text", "text": text}]
        return [
            {"type": "tool_use", "name": c.tool, "input": c.args, **({"id": c.id} if c.id else {})}
            for c in parsed.tool_calls
        ]

    def reset(self) -> None:
        """Rewind the script and clear the counters."""
        with self._lock:
            self.calls = 0
        self.last_prompt = ""
        self.last_system_prompt = ""


class AsyncMockLLMBackend(MockLLMBackend):
    """0.4.1's async scripted backend: ``await llm.generate(prompt)``. Deprecated: use
    ``looplet.MockLLMBackend``, which the async loop awaits through ``agenerate``."""

    _new = "looplet.MockLLMBackend(responses, cycle=True) (the async loop awaits its agenerate)"

    async def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:  # type: ignore[override]
        return await self.agenerate(messages, tools=tools, **options)

    async def generate_with_tools(  # type: ignore[override]
        self, prompt: str, *, tools: Any = None, **options: Any
    ) -> list[dict[str, Any]]:
        return MockLLMBackend.generate_with_tools(self, prompt, tools=tools, **options)
