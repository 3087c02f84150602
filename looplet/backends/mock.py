"""MockLLMBackend: a scripted model for tests, demos and benchmarks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from looplet.errors import LLMResponsesExhausted
from looplet.types import LLMResponse, ToolCall, Usage

__all__ = ["MockLLMBackend"]


_FIRST_CHUNK_SHARE = 0.3


def _chunks(response: LLMResponse) -> list[dict[str, Any]]:
    """The pieces a streaming provider would send: text in two halves, each tool call's arguments in two."""
    out: list[dict[str, Any]] = []
    if response.text:
        half = len(response.text) // 2
        out += [
            {"type": "text", "text": response.text[:half]},
            {"type": "text", "text": response.text[half:]},
        ]
    for i, call in enumerate(response.tool_calls):
        args = json.dumps(call.args)
        half = len(args) // 2
        out.append(
            {"type": "tool_call", "index": i, "id": call.id, "name": call.tool, "arguments": args[:half]}
        )
        out.append({"type": "tool_call", "index": i, "id": None, "name": None, "arguments": args[half:]})
    return out


class MockLLMBackend:
    """Answers from a script. Each response is a JSON string ``{"tool": ..., "args": {...}}`` (or a list
    of them: several calls in one answer), plain text (no tool call), a :class:`ToolCall`, a list of
    ToolCalls, an :class:`LLMResponse`, or an exception instance to raise.

    usage: None (no usage), ``"estimate"`` (about 4 characters a token, counted incrementally so a long
        transcript costs no more per call; the part of the prompt already sent in the previous call is
        reported as cached input, as a provider's prompt cache would), or a :class:`Usage` every time.
    latency_s: simulated time per call (``time.sleep`` / ``asyncio.sleep``).

    With ``stream=True`` in the options (``LoopConfig(stream=True)``) it sends the answer as chunks to
    ``options["on_chunk"]`` and sets ``time_to_first_chunk_s`` (the first chunk arrives after 30% of the
    latency).
    """

    provider = "mock"

    def __init__(
        self,
        responses: Iterable[Any],
        cycle: bool = False,
        *,
        model: str = "mock-model",
        usage: Usage | str | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.responses = list(responses)
        if not self.responses:
            raise ValueError(
                "MockLLMBackend needs at least one scripted response, e.g. "
                'MockLLMBackend([\'{"tool": "done", "args": {"answer": "ok"}}\']) '
                "(looplet 0.4.1's default script, 'mock response' repeated: looplet.testing.MockLLMBackend())"
            )
        if usage is not None and usage != "estimate" and not isinstance(usage, Usage):
            raise ValueError("usage must be None, 'estimate' or a Usage")
        self.cycle = cycle
        self.model = model
        self.usage = usage
        self.latency_s = latency_s
        self.calls = 0
        self._parsed = [self._parse(r, i) for i, r in enumerate(self.responses)]
        self._lock = threading.Lock()
        self._seen = 0  # transcript chars already counted (for usage="estimate")
        self._seen_msgs = 0

    def _next(self, messages: list[dict[str, Any]]) -> LLMResponse:
        with self._lock:
            i = self.calls
            self.calls += 1
        if i >= len(self._parsed):
            if not self.cycle:
                raise LLMResponsesExhausted(
                    f"MockLLMBackend script exhausted after {len(self._parsed)} responses; add responses "
                    "or pass cycle=True"
                )
            i %= len(self._parsed)
        template = self._parsed[i]
        if isinstance(template, BaseException):
            raise template
        calls = [
            ToolCall(c.tool, dict(c.args), c.id or f"call_{self.calls}_{k}", c.reasoning)
            for k, c in enumerate(template.tool_calls)
        ]
        usage = template.usage
        if usage is None and self.usage is not None:
            usage = self._estimate(messages, template) if isinstance(self.usage, str) else self.usage
        return LLMResponse(
            template.text,
            calls,
            usage,
            template.model or self.model,
            template.response_id or f"mock-{self.calls}",
            template.finish_reason or ("tool_calls" if calls else "stop"),
            "mock",
        )

    def _estimate(self, messages: list[dict[str, Any]], template: LLMResponse) -> Usage:
        if len(messages) < self._seen_msgs:  # a new or compacted transcript: count afresh
            self._seen = self._seen_msgs = 0
        cached = self._seen // 4  # the prefix sent before is what a provider's prompt cache would hit
        for m in messages[self._seen_msgs :]:
            self._seen += (
                len(m.get("content") or "")
                + 16
                + sum(len(tc["function"]["arguments"]) + 24 for tc in m.get("tool_calls") or ())
            )
        self._seen_msgs = len(messages)
        out = len(template.text or "") + sum(len(json.dumps(c.args)) + 24 for c in template.tool_calls)
        return Usage(input_tokens=self._seen // 4 + 1, output_tokens=out // 4 + 1, cached_input_tokens=cached)

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> LLMResponse:
        if not options.get("stream"):
            if self.latency_s:
                time.sleep(self.latency_s)
            return self._next(messages)
        started = time.perf_counter()
        if self.latency_s:
            time.sleep(self.latency_s * _FIRST_CHUNK_SHARE)  # the first chunk comes early, the rest later
        response = self._next(messages)
        response.time_to_first_chunk_s = time.perf_counter() - started
        on_chunk = options.get("on_chunk")
        for chunk in _chunks(response):
            if on_chunk is not None:
                on_chunk(chunk)
        if self.latency_s:
            time.sleep(self.latency_s * (1 - _FIRST_CHUNK_SHARE))
        return response

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any
    ) -> LLMResponse:
        import asyncio  # not at module level: the sync loop should not pay for importing asyncio

        if not options.get("stream"):
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return self._next(messages)
        started = time.perf_counter()
        if self.latency_s:
            await asyncio.sleep(self.latency_s * _FIRST_CHUNK_SHARE)
        response = self._next(messages)
        response.time_to_first_chunk_s = time.perf_counter() - started
        on_chunk = options.get("on_chunk")
        for chunk in _chunks(response):
            if on_chunk is not None:
                pending = on_chunk(chunk)
                if pending is not None:
                    await pending
        if self.latency_s:
            await asyncio.sleep(self.latency_s * (1 - _FIRST_CHUNK_SHARE))
        return response

    @staticmethod
    def _parse(item: Any, index: int) -> LLMResponse | BaseException:
        if isinstance(item, BaseException):
            return item
        if isinstance(item, LLMResponse):
            return item
        if isinstance(item, ToolCall):
            return LLMResponse(tool_calls=[item])
        if isinstance(item, list) and all(isinstance(c, ToolCall) for c in item):
            return LLMResponse(tool_calls=list(item))
        if isinstance(item, dict):
            item = json.dumps(item)
        if not isinstance(item, str):
            raise TypeError(
                f"MockLLMBackend response {index}: expected a JSON string, ToolCall, LLMResponse "
                f"or exception, got {type(item).__name__}"
            )
        try:
            obj = json.loads(item)
        except (ValueError, RecursionError):  # prose, or JSON too deep to read: the loop parses the text
            return LLMResponse(text=item)
        objs = obj if isinstance(obj, list) else [obj]
        calls = []
        for o in objs:
            if not isinstance(o, dict) or "tool" not in o:
                return LLMResponse(text=item)
            calls.append(ToolCall(o["tool"], dict(o.get("args") or {}), o.get("id", ""), o.get("reasoning")))
        return LLMResponse(tool_calls=calls)
