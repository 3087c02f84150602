"""Compaction strategies and the chain that runs them, in order, until the transcript fits.

A strategy is a callable ``(messages, target, meter)`` returning a new message list (the input is never
edited), or a generator that yields ``(llm, LLMCall)`` requests, receives each ``LLMResponse`` (or the
exception the call raised) and returns the new list; ``Summarize`` is one. Strategies see the transcript
as a *head* (system prompt and task, then any summary or removal note) followed by *units*: an assistant
turn together with its tool results, or a single other message. Units are dropped, summarized or
shortened whole, so a tool call is never separated from its result.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Generator, Iterable
from typing import Any

from looplet.context.tokens import TokenMeter, message_tokens
from looplet.hooks import emit_event
from looplet.types import LLMCall

__all__ = ["Prune", "Summarize", "Truncate", "CompactChain", "compact_chain", "split"]

log = logging.getLogger("looplet")

Messages = list[dict[str, Any]]
SUMMARY_MARK = "[Summary of earlier turns]"
REMOVED_MARK = "[Earlier turns were removed to fit the context window"


def split(messages: Messages) -> tuple[int, int, list[tuple[int, int]]]:
    """``(core, head, units)``: ``messages[:core]`` is the system prompt and task, ``messages[core:head]``
    the notes earlier compactions left, and ``units`` the ``(start, end)`` ranges of the turns after."""
    core = 0
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            core = i + 1
            break
        if m.get("role") != "system":
            break
        core = i + 1
    head = core
    while head < len(messages) and _is_note(messages[head]):
        head += 1
    units: list[tuple[int, int]] = []
    i, n = head, len(messages)
    while i < n:
        j = i + 1
        if messages[i].get("role") == "assistant" and messages[i].get("tool_calls"):
            while j < n and messages[j].get("role") == "tool":
                j += 1
        units.append((i, j))
        i = j
    return core, head, units


def _is_note(m: dict[str, Any]) -> bool:
    c = m.get("content")
    return (
        m.get("role") == "user"
        and isinstance(c, str)
        and (c.startswith(SUMMARY_MARK) or c.startswith(REMOVED_MARK))
    )


class Prune:
    """Replace old tool results by a short stub the model can still read: the first ``keep_chars``
    characters and how much was removed. The last ``keep_last`` turns are left whole."""

    name = "prune"

    def __init__(self, keep_last: int = 4, min_chars: int = 400, keep_chars: int = 120) -> None:
        self.keep_last, self.min_chars, self.keep_chars = keep_last, min_chars, keep_chars

    def __call__(self, messages: Messages, target: int, meter: TokenMeter) -> Messages:
        total = meter.count(messages)
        _core, _head, units = split(messages)
        out = list(messages)
        for start, end in units[: max(0, len(units) - self.keep_last)]:
            for k in range(start, end):
                m = out[k]
                content = m.get("content")
                if m.get("role") != "tool" or not isinstance(content, str) or len(content) < self.min_chars:
                    continue
                stub = (
                    f"{content[: self.keep_chars]}… [pruned: {len(content) - self.keep_chars} more "
                    "characters of this output were removed to save context]"
                )
                out[k] = {**m, "content": stub}
                total -= message_tokens(m) - message_tokens(out[k])
            if total <= target:
                break
        return out


class Truncate:
    """Drop the oldest turns (leaving ``keep_last``) and say so in a note; if that is not enough, cut
    long messages in the middle to ``max_chars``."""

    name = "truncate"

    def __init__(self, keep_last: int = 2, max_chars: int = 2000) -> None:
        self.keep_last, self.max_chars = max(1, keep_last), max_chars

    def __call__(self, messages: Messages, target: int, meter: TokenMeter) -> Messages:
        total = meter.count(messages)
        core, head, units = split(messages)
        dropped, cut = 0, 0
        while total > target and cut < len(units) - self.keep_last:
            start, end = units[cut]
            total -= sum(message_tokens(m) for m in messages[start:end])
            dropped += end - start
            cut += 1
        notes = list(messages[core:head])
        if dropped:
            old = next((n for n in notes if n["content"].startswith(REMOVED_MARK)), None)
            before = _removed_count(old["content"]) if old else 0
            note = {"role": "user", "content": f"{REMOVED_MARK}: {before + dropped} messages.]"}
            notes = [n for n in notes if n is not old] + [note]
        rest = messages[units[cut][0] :] if cut < len(units) else []
        out = messages[:core] + notes + rest
        if meter.count(out) > target:
            out = [self._shorten(m) if i >= core else m for i, m in enumerate(out)]
        return out

    def _shorten(self, m: dict[str, Any]) -> dict[str, Any]:
        c = m.get("content")
        if not isinstance(c, str) or len(c) <= self.max_chars:
            return m
        half = self.max_chars // 2
        return {**m, "content": f"{c[:half]}\n… [{len(c) - 2 * half} characters cut] …\n{c[-half:]}"}


def _removed_count(text: str) -> int:
    try:
        return int(text[len(REMOVED_MARK) + 2 :].split()[0])
    except (ValueError, IndexError):
        return 0


SUMMARY_INSTRUCTIONS = (
    "You compress the work log of a tool-using agent. Write a short summary of what was done and "
    "learned: facts found, results of tool calls (numbers, names, ids, paths), decisions, and what is "
    "still open. Plain sentences or bullets, no preamble."
)


class Summarize:
    """Ask a model to summarize the turns before the last ``keep_last`` and replace them (and any earlier
    summary) with that summary. The call goes through the run's ``wrap_llm_call`` hooks with
    ``purpose="summarize"``, so it is traced as a ``chat`` span and its tokens and cost count in the run.
    If the call fails the transcript is left as it was and the next strategy runs."""

    name = "summarize"

    def __init__(
        self,
        llm: Any,
        keep_last: int = 4,
        *,
        instructions: str = SUMMARY_INSTRUCTIONS,
        max_chars_per_message: int = 2000,
        max_tokens: int | None = 600,
    ) -> None:
        if not callable(getattr(llm, "generate", None)) and not callable(getattr(llm, "agenerate", None)):
            raise TypeError(
                f"Summarize(llm=...) needs a backend with generate()/agenerate(), got {type(llm).__name__}"
            )
        self.llm, self.keep_last, self.instructions = llm, keep_last, instructions
        self.max_chars, self.max_tokens = max_chars_per_message, max_tokens

    def __call__(
        self, messages: Messages, target: int, meter: TokenMeter
    ) -> Generator[tuple[Any, LLMCall], Any, Messages]:
        core, head, units = split(messages)
        if len(units) <= self.keep_last:
            return messages
        keep_from = units[len(units) - self.keep_last][0] if self.keep_last else len(messages)
        old = messages[core:keep_from]
        options = {"max_tokens": self.max_tokens} if self.max_tokens else {}
        call = LLMCall(
            [{"role": "system", "content": self.instructions}, {"role": "user", "content": self.render(old)}],
            [],
            0,
            getattr(self.llm, "model", None),
            getattr(self.llm, "provider", None),
            options,
            purpose="summarize",
        )
        response = yield self.llm, call
        text = getattr(response, "text", None)
        if isinstance(response, BaseException) or not text:
            log.warning(
                "compaction: the summarize call failed (%s); transcript left as it was",
                response if isinstance(response, BaseException) else "empty answer",
            )
            return messages
        return (
            messages[:core]
            + [{"role": "user", "content": f"{SUMMARY_MARK}\n{text.strip()}"}]
            + messages[keep_from:]
        )

    def render(self, messages: Messages) -> str:
        """The old turns as plain text for the summarizer."""
        lines = []
        for m in messages:
            role, content = m.get("role"), m.get("content")
            if isinstance(content, str) and content:
                lines.append(f"{role}: {self._cap(content)}")
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") or {}
                lines.append(f"{role} called {fn.get('name')}({self._cap(fn.get('arguments') or '')})")
        return "\n".join(lines)

    def _cap(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " …"


class CompactChain:
    """Strategies run in order, each only while the transcript is still over the target."""

    def __init__(self, *strategies: Any) -> None:
        if not strategies:
            raise ValueError(
                "compact_chain() needs at least one strategy, e.g. compact_chain(Prune(), Truncate())"
            )
        for s in strategies:
            if not callable(s):
                raise TypeError(f"a compaction strategy must be callable, got {type(s).__name__}")
        self.strategies = strategies

    @property
    def name(self) -> str:
        return "+".join(_name(s) for s in self.strategies)

    def plan(
        self, messages: Messages, target: int, meter: TokenMeter
    ) -> Generator[tuple[Any, LLMCall], Any, Messages]:
        """The chain as a generator of LLM requests (see the module docstring); returns the new list."""
        total = meter.count(messages)
        for s in self.strategies:
            if total <= target:
                break
            out = s(messages, target, meter)
            if inspect.isgenerator(out):
                out = yield from out
            after = meter.count(out)
            if out is not messages and out != messages:
                report(_name(s), total, after, len(messages), len(out))
            messages, total = out, after
        return messages

    def __call__(self, messages: Messages, target: int, meter: TokenMeter | None = None) -> Messages:
        """Compact synchronously (LLM calls through ``generate``); usable outside a run too."""
        from looplet.context._llm import drive

        compacted: Messages = drive(self.plan(messages, target, meter or TokenMeter()))
        return compacted

    async def acompact(self, messages: Messages, target: int, meter: TokenMeter | None = None) -> Messages:
        from looplet.context._llm import adrive

        compacted: Messages = await adrive(self.plan(messages, target, meter or TokenMeter()))
        return compacted


def compact_chain(*strategies: Any) -> CompactChain:
    """``compact_chain(Prune(), Summarize(llm), Truncate())``: try each in order until the transcript fits."""
    return CompactChain(*strategies)


def _name(s: Any) -> str:
    return getattr(s, "name", None) or type(s).__name__.lower()


def report(strategy: str, before: int, after: int, n_before: int, n_after: int) -> None:
    """One compaction: an event for tracing/metrics hooks and a log line."""
    emit_event(
        "compaction",
        strategy=strategy,
        tokens_before=before,
        tokens_after=after,
        messages_before=n_before,
        messages_after=n_after,
    )
    log.info("compaction %s: %d -> %d tokens (%d -> %d messages)", strategy, before, after, n_before, n_after)


def as_chain(strategy: Any) -> CompactChain:
    if isinstance(strategy, CompactChain):
        return strategy
    if isinstance(strategy, Iterable):
        return CompactChain(*strategy)
    return CompactChain(strategy)
