"""looplet 0.4.1's compaction services, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

0.4.1 compacted two surfaces in place: its step log (``SessionLog``) and a ``Conversation`` of ``Message``
records, through services with ``compact(state=, session_log=, llm=, conversation=, step_num=, reason=)``
that return a ``CompactOutcome``. In 0.5 a compaction strategy is a function over the run's chat
transcript (:mod:`looplet.context`). The adapters here:

- ``TruncateCompact``, ``SummarizeCompact`` and ``PruneToolResults`` *are* 0.5's ``Truncate``,
  ``Summarize`` and ``Prune`` (subclasses: usable in ``compact_chain`` and ``ThresholdCompactHook``), with
  0.4.1's ``compact(...)`` added. A ``Conversation`` is handed to the 0.5 strategy as chat messages and
  the result is mapped back onto its records (a summary or removal note becomes a compaction boundary);
  the summary is asked through 0.5's ``Summarize`` (so inside a run it is traced and counted).
  ``PruneToolResults`` clears old tool messages of the record itself: 0.4.1 counted tool results, not
  turns, and replaced them by a fixed marker.
- ``DefaultCompactService``, ``compact_chain`` of services, ``run_compact`` (``PRE_COMPACT`` /
  ``POST_COMPACT`` through hooks' ``on_event(payload)``), ``apply_thread_rewrite`` and ``RewriteThread``.

``LoopConfig(compact_service=...)`` of these services (0.5 strategies too) adds a ``ThresholdCompactHook``
with that strategy to the run (it compacts past 80% of ``LoopConfig(context_window=...)``); other
services are refused, naming it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from looplet._compat_session import SUMMARY_TOOL, LogEntry
from looplet.compat import old_backend, warn_renamed
from looplet.context.compaction import SUMMARY_MARK, Prune, Summarize, Truncate
from looplet.context.tokens import TokenMeter
from looplet.hooks import HookDecision
from looplet.types import LLMResponse

__all__ = [
    "CompactOutcome",
    "CompactService",
    "Conversation",
    "DefaultCompactService",
    "EventPayload",
    "LIFECYCLE_EVENTS",
    "LifecycleEvent",
    "Message",
    "MessageRole",
    "PruneToolResults",
    "RewriteThread",
    "SummarizeCompact",
    "TruncateCompact",
    "apply_thread_rewrite",
    "compact_chain",
    "default_compact_service",
    "run_compact",
]

log = logging.getLogger("looplet")

#: What ``PruneToolResults`` leaves in a cleared tool message (content and ``tool_result.data``).
CLEARED = "[tool result cleared by compact]"
#: The ``tool`` of the session-log entry holding a summarizer's text.
COMPACT_SUMMARY_TOOL = "__compact_summary__"
#: ``Message.metadata["kind"]`` of a message a compaction left in place of older ones.
BOUNDARY = "compaction_boundary"
Chat = list[dict[str, Any]]


# ---------------------------------------------------------------- 0.4.1's conversation records


class MessageRole(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass
class Message:
    """One message of a 0.4.1 ``Conversation``; in 0.5 a message is a dict (``{"role", "content", ...}``)."""

    role: MessageRole
    content: Any = ""
    tool_call: Any = None
    tool_result: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.role = MessageRole(self.role)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(getattr(b, "text", "") or "") for b in self.content or ())


class Conversation:
    """0.4.1's message thread, as a record. 0.5's loop keeps the transcript itself (a list of chat
    dicts, handed to hooks as ``session_log``); this one is only read and compacted by the services
    of this module."""

    def __init__(self, messages: list[Message] | None = None) -> None:
        warn_renamed(
            "Conversation()", "the run's transcript: a list of chat messages ({'role': ..., 'content': ...})"
        )
        self.messages: list[Message] = list(messages or [])

    def append(self, msg: Message) -> Conversation:
        self.messages.append(msg)
        return self

    def fork(self) -> Conversation:
        twin = Conversation.__new__(Conversation)
        twin.messages = copy.deepcopy(self.messages)
        return twin

    def find_compaction_boundaries(self) -> list[Message]:
        return [m for m in self.messages if m.metadata.get("kind") == BOUNDARY]

    def to_chat(self) -> Chat:
        """The messages as 0.5 chat dicts (a compaction boundary as the note 0.5 strategies recognize)."""
        return [_chat(m) for m in self.messages]

    def render(self) -> str:
        return "\n".join(f"[{d['role'].upper()}] {d['content']}" for d in self.to_chat() if d["content"])

    def __len__(self) -> int:
        return len(self.messages)


def _chat(m: Message) -> dict[str, Any]:
    if m.metadata.get("kind") == BOUNDARY:
        return {"role": "user", "content": m.text}
    out: dict[str, Any] = {"role": m.role.value, "content": m.text}
    call = m.tool_call
    if call is not None and m.role is MessageRole.ASSISTANT:
        arguments = json.dumps(getattr(call, "args", {}), default=str)
        name = getattr(call, "tool", "")
        out["tool_calls"] = [
            {
                "id": str(getattr(call, "id", "")),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        ]
    return out


def _rewrite(conversation: Any, strategy: Callable[[Chat], Chat]) -> int | None:
    """Run a 0.5 strategy over the conversation's messages and keep the result if it has fewer
    messages: the messages it kept are the same records, a note it added becomes a boundary."""
    if not isinstance(conversation, Conversation):
        return _count(conversation, "messages")
    chat = conversation.to_chat()
    records = {id(d): m for d, m in zip(chat, conversation.messages, strict=True)}
    out = strategy(chat)
    if len(out) >= len(chat):
        return len(chat)
    dropped = len(chat) - sum(id(d) in records for d in out)
    conversation.messages = [records.get(id(d)) or _boundary(d, dropped) for d in out]
    return len(conversation.messages)


def _boundary(note: dict[str, Any], dropped: int) -> Message:
    text = str(note.get("content") or "")
    summary = text[len(SUMMARY_MARK) :].strip() if text.startswith(SUMMARY_MARK) else text
    meta = {"kind": BOUNDARY, "summary": summary, "dropped_message_count": dropped}
    return Message(MessageRole.USER, text, metadata=meta)


def _count(surface: Any, attr: str) -> int | None:
    items = getattr(surface, attr, None)
    return len(items) if isinstance(items, list) else None


# ---------------------------------------------------------------- outcome and protocol


@dataclass
class CompactOutcome:
    """What one compaction did (0.4.1's record). In 0.5 a compaction is reported as the event
    ``compaction`` (strategy, tokens and messages before and after)."""

    reason: str = ""
    messages_before: int | None = None
    messages_after: int | None = None
    session_entries_before: int | None = None
    session_entries_after: int | None = None
    compacted_step_range: tuple[int, int] | None = None
    summary: str = ""
    llm_calls_spent: int = 0
    extra: dict[str, Any] | None = None
    cleanup: Callable[[], None] | None = None
    follow_up: dict[str, Any] | None = None

    @property
    def compacted(self) -> bool:
        """Whether either surface got smaller, a step range was folded, or tool results were cleared."""
        shrank = [
            b is not None and a is not None and a < b
            for b, a in (
                (self.messages_before, self.messages_after),
                (self.session_entries_before, self.session_entries_after),
            )
        ]
        cleared = bool(self.extra and self.extra.get("cleared", 0) > 0)
        return any(shrank) or self.compacted_step_range is not None or cleared

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cleanup"}
        out["extra"] = dict(self.extra or {})
        out["follow_up"] = dict(self.follow_up) if self.follow_up else None
        out["compacted"] = self.compacted
        return out


@runtime_checkable
class CompactService(Protocol):
    """0.4.1's service protocol; 0.5's is a strategy ``(messages, target, meter) -> messages``."""

    def compact(
        self, *, state: Any, session_log: Any, llm: Any, conversation: Any, step_num: int, reason: str
    ) -> CompactOutcome: ...


@dataclass
class _Before:
    messages: int | None
    entries: int | None
    steps: tuple[int, int] | None

    @classmethod
    def of(cls, session_log: Any, conversation: Any, keep: int) -> _Before:
        return cls(
            _count(conversation, "messages"), _count(session_log, "entries"), _foldable(session_log, keep)
        )

    def outcome(self, reason: str, session_log: Any, messages_after: int | None, **kw: Any) -> CompactOutcome:
        entries_after = _count(session_log, "entries")
        folded = self.entries is not None and entries_after is not None and entries_after < self.entries
        return CompactOutcome(
            reason,
            self.messages,
            messages_after,
            self.entries,
            entries_after,
            self.steps if folded else None,
            **kw,
        )

    def truncated(
        self, reason: str, session_log: Any, conversation: Any, keep: int, extra: dict[str, Any]
    ) -> CompactOutcome:
        """0.4.1's truncation: the log's old entries folded into a summary entry, the conversation's old
        turns dropped, both keeping the last ``keep``."""
        summary = _fold(session_log, keep)
        after = _rewrite(conversation, _truncate(keep))
        return self.outcome(reason, session_log, after, summary=summary, extra=extra)


def _foldable(session_log: Any, keep: int) -> tuple[int, int] | None:
    entries = getattr(session_log, "entries", None)
    if not isinstance(entries, list):
        return None
    old = entries[: max(0, len(entries) - keep)] if keep > 0 else list(entries)
    steps = [
        e.step
        for e in old
        if getattr(e, "tool", "") not in (SUMMARY_TOOL, COMPACT_SUMMARY_TOOL)
        and isinstance(e.step, int)
        and e.step > 0
    ]
    return (steps[0], steps[-1]) if steps else None


def _fold(session_log: Any, keep: int) -> str:
    """Fold the log's old entries (``SessionLog.compact``); the summary entry's text, or ""."""
    compact = getattr(session_log, "compact", None)
    if not callable(compact) or not compact(max_entries_to_keep=keep):
        return ""
    summary = next((e for e in session_log.entries if e.tool == SUMMARY_TOOL), None)
    return "\n\n".join(summary.findings) if summary is not None else ""


def _truncate(keep: int) -> Callable[[Chat], Chat]:
    strategy = Truncate(keep_last=keep, max_chars=2**62)  # drop whole turns only, as 0.4.1 did

    def run(chat: Chat) -> Chat:
        return strategy(chat, 0, TokenMeter())

    return run


# ---------------------------------------------------------------- the three services (0.5 strategies too)


class TruncateCompact(Truncate):
    """0.4.1's ``TruncateCompact``: 0.5's ``Truncate`` with ``compact(...)``. The log keeps its last
    ``keep_recent`` entries after a summary entry; the conversation keeps its last turns after a note."""

    def __init__(self, *, keep_recent: int = 2) -> None:
        warn_renamed("TruncateCompact(keep_recent=...)", "looplet.Truncate(keep_last=...)")
        self.setup(keep_recent=keep_recent)

    def setup(self, *, keep_recent: int = 2) -> None:
        Truncate.__init__(self, keep_last=keep_recent)
        self.keep_recent = keep_recent

    def compact(
        self,
        *,
        state: Any = None,
        session_log: Any = None,
        llm: Any = None,
        conversation: Any = None,
        step_num: int = 0,
        reason: str = "",
    ) -> CompactOutcome:
        keep = self.keep_recent
        before = _Before.of(session_log, conversation, keep)
        return before.truncated(
            reason, session_log, conversation, keep, {"mode": "truncate", "keep_recent": keep}
        )


class _NoLLM:
    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "SummarizeCompact() has no backend: give SummarizeCompact(llm, ...) or compact(llm=...)"
        )


class _Counted:
    """A backend that counts the calls that came back."""

    def __init__(self, llm: Any) -> None:
        self.llm, self.calls = llm, 0
        self.model, self.provider = getattr(llm, "model", None), getattr(llm, "provider", None)

    def generate(self, messages: Chat, **options: Any) -> Any:
        out = self.llm.generate(messages, **options)
        self.calls += 1
        return out


class SummarizeCompact(Summarize):
    """0.4.1's ``SummarizeCompact``: 0.5's ``Summarize`` with ``compact(...)``. One LLM call summarizes
    the log (or, without one, the conversation); the log is folded with the summary spliced before
    its recent entries, and the conversation's old turns are replaced by the same summary."""

    def __init__(
        self,
        llm: Any = None,
        *,
        keep_recent: int = 2,
        summary_max_chars: int = 4000,
        summary_max_tokens: int | None = 1200,
        **ignored: Any,  # summary_prompt= (0.4.1's template), summary_temperature=: no effect
    ) -> None:
        warn_renamed(
            "SummarizeCompact(keep_recent=...)", "looplet.Summarize(llm, keep_last=..., max_tokens=...)"
        )
        self.setup(
            llm,
            keep_recent=keep_recent,
            summary_max_chars=summary_max_chars,
            summary_max_tokens=summary_max_tokens,
        )

    def setup(
        self,
        llm: Any = None,
        *,
        keep_recent: int = 2,
        summary_max_chars: int = 4000,
        summary_max_tokens: int | None = 1200,
    ) -> None:
        backend = _NoLLM() if llm is None else old_backend(llm)  # a 0.4.1 backend works as a 0.5 strategy too
        Summarize.__init__(self, backend, keep_last=keep_recent, max_tokens=summary_max_tokens)
        self.keep_recent, self.summary_max_chars, self.own_llm = keep_recent, summary_max_chars, llm

    def compact(
        self,
        *,
        state: Any = None,
        session_log: Any = None,
        llm: Any = None,
        conversation: Any = None,
        step_num: int = 0,
        reason: str = "",
    ) -> CompactOutcome:
        keep = self.keep_recent
        before = _Before.of(session_log, conversation, keep)
        transcript = _transcript(session_log, conversation)
        if not transcript:
            return before.truncated(reason, session_log, conversation, keep, {"mode": "empty_fallback"})
        backend = llm if llm is not None else self.own_llm
        text, spent = self.ask(backend, transcript) if backend is not None else (None, 0)
        folded = _fold(session_log, keep)
        if text and folded:
            entry = LogEntry(
                step_num, "", COMPACT_SUMMARY_TOOL, f"[compaction summary @ step {step_num}]", [], [text]
            )
            session_log.entries.insert(max(0, len(session_log.entries) - keep), entry)
        strategy = (lambda chat: self.splice(chat, text)) if text else _truncate(keep)
        after = _rewrite(conversation, strategy)
        mode = "llm_summary" if text else "llm_fallback"
        extra = {"mode": mode, "summary_chars": len(text or "")}
        return before.outcome(
            reason, session_log, after, summary=text or folded, llm_calls_spent=spent, extra=extra
        )

    def ask(self, llm: Any, transcript: Chat) -> tuple[str | None, int]:
        """The summary of ``transcript`` from 0.5's ``Summarize`` (one call), and the calls answered."""
        from looplet.context._llm import drive

        counted = _Counted(old_backend(llm))
        asker = Summarize(counted, keep_last=0, instructions=self.instructions, max_tokens=self.max_tokens)
        out: Chat = drive(asker(transcript, 0, TokenMeter()))
        note = next((str(m.get("content")) for m in out if _is_summary(m) and m not in transcript), None)
        text = note[len(SUMMARY_MARK) :].strip()[: self.summary_max_chars] if note else None
        return text or None, counted.calls

    def splice(self, chat: Chat, text: str | None) -> Chat:
        """This strategy over ``chat``, answering its summary request with ``text`` (already asked)."""
        plan = Summarize.__call__(self, chat, 0, TokenMeter())
        try:
            next(plan)
            plan.send(LLMResponse(text=text or ""))
        except StopIteration as stop:
            result: Chat = stop.value
            return result
        raise RuntimeError("Summarize asked the model twice")  # pragma: no cover


def _is_summary(m: dict[str, Any]) -> bool:
    content = m.get("content")
    return isinstance(content, str) and content.startswith(SUMMARY_MARK)


def _transcript(session_log: Any, conversation: Any) -> Chat:
    entries = getattr(session_log, "entries", None)
    if entries and callable(getattr(session_log, "render", None)):
        return [{"role": "assistant", "content": session_log.render()}]
    if isinstance(conversation, Conversation):
        return conversation.to_chat()
    return []


class PruneToolResults(Prune):
    """0.4.1's ``PruneToolResults``: 0.5's ``Prune`` with ``compact(...)``, which clears all but the last
    ``keep_recent`` tool messages of a ``Conversation`` (optionally only those of ``compactable_tools``):
    their content and ``tool_result.data`` become ``cleared_marker``. The message count is unchanged."""

    def __init__(
        self,
        *,
        keep_recent: int = 5,
        compactable_tools: frozenset[str] | None = None,
        cleared_marker: str = CLEARED,
    ) -> None:
        warn_renamed("PruneToolResults(keep_recent=...)", "looplet.Prune(keep_last=...)")
        self.setup(
            keep_recent=keep_recent, compactable_tools=compactable_tools, cleared_marker=cleared_marker
        )

    def setup(
        self,
        *,
        keep_recent: int = 5,
        compactable_tools: frozenset[str] | None = None,
        cleared_marker: str = CLEARED,
    ) -> None:
        Prune.__init__(self, keep_last=keep_recent)
        self.keep_recent, self.compactable_tools, self.cleared_marker = (
            keep_recent,
            compactable_tools,
            cleared_marker,
        )

    def compact(
        self,
        *,
        state: Any = None,
        session_log: Any = None,
        llm: Any = None,
        conversation: Any = None,
        step_num: int = 0,
        reason: str = "",
    ) -> CompactOutcome:
        entries = _count(session_log, "entries")
        messages = getattr(conversation, "messages", None)
        if not isinstance(messages, list):
            return CompactOutcome(reason, None, None, entries, entries, extra={"mode": "no_conversation"})
        eligible = [m for m in messages if self._eligible(m)]
        cut = eligible if self.keep_recent <= 0 else eligible[: max(0, len(eligible) - self.keep_recent)]
        for m in cut:
            m.content = self.cleared_marker
            if m.tool_result is not None:
                m.tool_result.data = self.cleared_marker
        extra = {"mode": "prune", "cleared": len(cut)}
        return CompactOutcome(reason, len(messages), len(messages), entries, entries, extra=extra)

    def _eligible(self, m: Any) -> bool:
        if getattr(m, "role", None) != MessageRole.TOOL or m.content == self.cleared_marker:
            return False
        if not self.compactable_tools:
            return True
        return getattr(m.tool_result, "tool", "") in self.compactable_tools


# ---------------------------------------------------------------- default service and chain


class DefaultCompactService:
    """0.4.1's production default: prune old tool results, then summarize (or truncate without an LLM),
    then truncate if neither had an effect. In 0.5: ``compact_chain(Prune(), Summarize(llm), Truncate())``."""

    def __init__(
        self,
        *,
        keep_recent: int = 2,
        keep_recent_tool_results: int = 5,
        use_llm_summary: bool = True,
        summary_max_chars: int = 4000,
        summary_max_tokens: int = 1200,
        compactable_tools: frozenset[str] | None = None,
    ) -> None:
        warn_renamed(
            "DefaultCompactService()",
            "ThresholdCompactHook(strategy=compact_chain(Prune(), Summarize(llm), Truncate()))",
        )
        self.keep_recent, self.keep_recent_tool_results = keep_recent, keep_recent_tool_results
        self.use_llm_summary = use_llm_summary
        prune = _quiet(
            PruneToolResults, keep_recent=keep_recent_tool_results, compactable_tools=compactable_tools
        )
        second: tuple[str, Any] = (
            (
                "summarize_context",
                _quiet(
                    SummarizeCompact,
                    keep_recent=keep_recent,
                    summary_max_chars=summary_max_chars,
                    summary_max_tokens=summary_max_tokens,
                ),
            )
            if use_llm_summary
            else ("truncate_context", _quiet(TruncateCompact, keep_recent=keep_recent))
        )
        self.stages: list[tuple[str, Any]] = [("prune_tool_results", prune), second]
        self.fallback = _quiet(TruncateCompact, keep_recent=max(1, keep_recent))

    def compact(self, **kwargs: Any) -> CompactOutcome:
        done = [(name, stage.compact(**kwargs)) for name, stage in self.stages]
        if not any(out.compacted for _, out in done):
            done.append(("fallback_truncate", self.fallback.compact(**kwargs)))
        merged = _merged(kwargs.get("reason", ""), done)
        assert merged.extra is not None
        merged.extra.update(
            keep_recent=self.keep_recent,
            keep_recent_tool_results=self.keep_recent_tool_results,
            use_llm_summary=self.use_llm_summary,
        )
        return merged


def _quiet(cls: Any, **kwargs: Any) -> Any:
    """A stage made inside a deprecated service (the service's own use already warned)."""
    stage = cls.__new__(cls)
    stage.setup(**kwargs)
    return stage


def _merged(reason: str, done: list[tuple[str, CompactOutcome]]) -> CompactOutcome:
    first, last = done[0][1], done[-1][1]
    ranges = [out.compacted_step_range for _, out in done if out.compacted_step_range]
    stages = [
        {
            "name": name,
            "compacted": out.compacted,
            **{
                k: v for k, v in out.to_dict().items() if k not in ("extra", "follow_up", "summary", "reason")
            },
            "mode": (out.extra or {}).get("mode"),
            "cleared": (out.extra or {}).get("cleared", 0),
        }
        for name, out in done
    ]
    extra: dict[str, Any] = {"mode": "default", "stages": stages, "stage_count": len(done)}
    cleared = [out.extra["cleared"] for _, out in done if out.extra and "cleared" in out.extra]
    if cleared:
        extra["cleared"] = sum(cleared)
    return CompactOutcome(
        reason,
        first.messages_before,
        last.messages_after,
        first.session_entries_before,
        last.session_entries_after,
        (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None,
        next((out.summary for _, out in done if out.summary), ""),
        sum(out.llm_calls_spent for _, out in done),
        extra,
    )


def default_compact_service(**kwargs: Any) -> DefaultCompactService:
    return DefaultCompactService(**kwargs)


class ServiceChain:
    """0.4.1's ``compact_chain`` of services: each runs until one has an effect (the last always counts).
    When every stage is also a 0.5 strategy, the chain is one too (``looplet.compact_chain`` of them)."""

    def __init__(self, stages: tuple[Any, ...]) -> None:
        self.stages = stages

    def compact(self, **kwargs: Any) -> CompactOutcome:
        spent = 0
        for i, stage in enumerate(self.stages):
            out: CompactOutcome = stage.compact(**kwargs)
            spent += out.llm_calls_spent
            if out.compacted or i == len(self.stages) - 1:
                out.llm_calls_spent = spent
                out.extra = {**(out.extra or {}), "chain_stage": i, "chain_stage_count": len(self.stages)}
                return out
        raise AssertionError("unreachable")  # pragma: no cover

    def __call__(self, messages: Chat, target: int, meter: TokenMeter | None = None) -> Chat:
        from looplet.context import compact_chain as new_chain

        return new_chain(*self.stages)(messages, target, meter)


def as_strategy(service: Any) -> Any:
    """``LoopConfig(compact_service=...)``: the 0.5 strategy a 0.4.1 service is (the services of this
    module, and chains of them), for ``ThresholdCompactHook``; a TypeError for any other service."""
    if isinstance(
        service, DefaultCompactService
    ):  # its stages are 0.5 strategies: prune, summarize or truncate
        from looplet.context import compact_chain as new_chain

        return new_chain(*(stage for _, stage in service.stages), service.fallback)
    stages = service.stages if isinstance(service, ServiceChain) else (service,)
    if all(callable(s) for s in stages):
        return service
    raise TypeError(
        f"LoopConfig(compact_service={type(service).__name__}(...)) was removed in looplet 0.5: the loop compacts "
        "with a 0.5 strategy: add ThresholdCompactHook(strategy=compact_chain(Prune(), Summarize(llm), Truncate())) "
        "to hooks=[...] (TruncateCompact, SummarizeCompact(llm), PruneToolResults and compact_chain of them are "
        "still taken here) (see docs/migration.md)"
    )


def compact_chain(*stages: Any) -> Any:
    """``looplet.compact.compact_chain``: of 0.4.1 services (``.compact``), a :class:`ServiceChain`;
    of 0.5 strategies, ``looplet.compact_chain``."""
    from looplet.context import compact_chain as new_chain

    if stages and all(callable(getattr(s, "compact", None)) for s in stages):
        warn_renamed(
            "looplet.compact.compact_chain(service, ...)",
            "looplet.compact_chain(Prune(), Summarize(llm), Truncate())",
        )
        return ServiceChain(stages)
    return new_chain(*stages)


# ---------------------------------------------------------------- lifecycle events and run_compact


class LifecycleEvent(StrEnum):
    """0.4.1's lifecycle events; 0.5 hooks get ``on_event(name, attributes)`` (e.g. ``"compaction"``)."""

    SESSION_START = "session_start"
    PRE_LLM_CALL = "pre_llm_call"
    POST_LLM_RESPONSE = "post_llm_response"
    PRE_TOOL_USE = "pre_tool_use"
    TOOL_PROGRESS = "tool_progress"
    POST_TOOL_USE = "post_tool_use"
    POST_TOOL_FAILURE = "post_tool_failure"
    PRE_COMPACT = "pre_compact"
    POST_COMPACT = "post_compact"
    HOOK_DECISION = "hook_decision"
    DONE_ACCEPTED = "done_accepted"
    STOP = "stop"
    SUBAGENT_START = "subagent_start"
    SUBAGENT_STOP = "subagent_stop"


#: Every 0.4.1 lifecycle event, in its order.
LIFECYCLE_EVENTS: tuple[LifecycleEvent, ...] = tuple(LifecycleEvent)


@dataclass
class EventPayload:
    """What 0.4.1 passed to ``on_event(payload)`` (the fields compaction and looplet._compat_events fill)."""

    event: LifecycleEvent
    step_num: int = 0
    state: Any = None
    session_log: Any = None
    context: Any = None
    tool_call: Any = None
    tool_result: Any = None
    messages_before: int | None = None
    messages_after: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    termination_reason: str | None = None  # stop (looplet._compat_events)
    context_budget: dict[str, int] | None = None  # pre_llm_call (looplet._compat_events)


def run_compact(
    service: Any,
    *,
    hooks: list[Any],
    state: Any,
    session_log: Any,
    llm: Any,
    conversation: Any,
    step_num: int,
    reason: str,
) -> CompactOutcome:
    """0.4.1's ``run_compact``: ``PRE_COMPACT`` to the hooks' ``on_event(payload)`` (a decision with
    ``stop`` aborts), the service, ``POST_COMPACT``, then the outcome's ``follow_up`` and the hooks'
    ``rewrite_thread`` applied to ``state.metadata``, then the outcome's ``cleanup`` (errors logged)."""
    warn_renamed("run_compact(service, ...)", "ThresholdCompactHook(strategy=...) in hooks=[...]")
    messages = _count(conversation, "messages")
    base = {"step_num": step_num, "state": state, "session_log": session_log, "messages_before": messages}
    for decision in _emit(hooks, EventPayload(LifecycleEvent.PRE_COMPACT, **base, extra={"reason": reason})):
        if decision.stop is not None:
            return CompactOutcome(reason=f"aborted: {decision.stop}")
    outcome: CompactOutcome = service.compact(
        state=state,
        session_log=session_log,
        llm=llm,
        conversation=conversation,
        step_num=step_num,
        reason=reason,
    )
    post = EventPayload(
        LifecycleEvent.POST_COMPACT,
        **{**base, "messages_before": outcome.messages_before},
        messages_after=outcome.messages_after,
        extra={"reason": reason, "outcome": outcome.to_dict()},
    )
    decisions = _emit(hooks, post)
    apply_thread_rewrite(state, outcome.follow_up)
    for decision in decisions:
        apply_thread_rewrite(state, getattr(decision, "rewrite_thread", None))
    if outcome.cleanup is not None:
        try:
            outcome.cleanup()
        except Exception:
            log.exception("CompactOutcome.cleanup raised; continuing")
    return outcome


def _emit(hooks: list[Any], payload: EventPayload) -> list[Any]:
    decisions = []
    for hook in hooks:
        on_event = getattr(hook, "on_event", None)
        if on_event is None:
            continue
        try:
            answer = on_event(payload)
        except Exception:
            log.exception("on_event hook raised during %s; continuing", payload.event.value)
            continue
        if isinstance(answer, HookDecision):
            decisions.append(answer)
    return decisions


def apply_thread_rewrite(state: Any, spec: dict[str, Any] | None) -> None:
    """0.4.1's declarative post-compaction change of ``state.metadata``: ``reset_metadata_keys`` are
    removed, ``metadata_updates`` merged. A hook does this directly in 0.5."""
    meta = getattr(state, "metadata", None)
    if not isinstance(spec, dict) or not isinstance(meta, dict):
        return
    for key in spec.get("reset_metadata_keys") or ():
        meta.pop(key, None)
    updates = spec.get("metadata_updates")
    if isinstance(updates, dict):
        meta.update(updates)


# ---------------------------------------------------------------- RewriteThread and the wire form


@dataclass(slots=True)
class ThreadRewrite(HookDecision):
    """The decision ``RewriteThread(...)`` returns: a ``HookDecision`` carrying 0.4.1's
    ``rewrite_thread`` (read by :func:`run_compact`; the 0.5 loop ignores it)."""

    rewrite_thread: dict[str, Any] | None = None


def RewriteThread(
    *, reset_metadata_keys: list[str] | None = None, metadata_updates: dict[str, Any] | None = None
) -> ThreadRewrite:
    warn_renamed("RewriteThread(...)", "a hook that changes state.metadata itself")
    return _rewrite_decision(reset_metadata_keys, metadata_updates)


def _rewrite_decision(keys: Any, updates: Any) -> ThreadRewrite:
    spec: dict[str, Any] = {}
    if keys:
        spec["reset_metadata_keys"] = list(keys)
    if updates:
        spec["metadata_updates"] = dict(updates)
    return ThreadRewrite(rewrite_thread=spec)


def to_wire(decision: HookDecision) -> dict[str, Any]:
    """0.4.1's JSON form of a decision: ``{"kind": "HookDecision", <field>: <value>, ...}``."""
    out: dict[str, Any] = {"kind": "HookDecision"}
    for f in fields(decision):
        value = getattr(decision, f.name)
        out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


_KINDS: dict[str, Callable[[dict[str, Any]], HookDecision | None]] = {
    "Allow": lambda raw: HookDecision(allow=True, updated_args=raw.get("args") or raw.get("updated_args")),
    "Deny": lambda raw: HookDecision(block=raw.get("block") or raw.get("reason") or "permission denied"),
    "Block": lambda raw: HookDecision(block=raw.get("reason") or raw.get("block") or "blocked"),
    "Stop": lambda raw: HookDecision(stop=raw.get("reason") or raw.get("stop") or "hook_requested_stop"),
    "InjectContext": lambda raw: HookDecision(
        additional_context=raw.get("text") or raw.get("additional_context") or ""
    ),
    "UpdateArgs": lambda raw: HookDecision(updated_args=raw.get("args") or raw.get("updated_args")),
    "Continue": lambda raw: (
        HookDecision(additional_context=text)
        if (text := raw.get("additional_context") or raw.get("text"))
        else None
    ),
}


def from_wire(raw: Any) -> HookDecision | None:
    """A decision from 0.4.1's JSON form (``to_wire``'s, or ``{"kind": "Deny", "reason": ...}``-style)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TypeError(f"effect must be a dict, got {type(raw).__name__}")
    kind = raw.get("kind") or "Continue"
    spec = raw.get("rewrite_thread") or raw.get("spec")
    if kind == "RewriteThread" or (kind == "HookDecision" and isinstance(spec, dict)):
        made = _rewrite_decision(None, None)
        made.rewrite_thread = dict(spec) if isinstance(spec, dict) else {}
        if kind == "HookDecision":
            _set_fields(made, raw)
        return made
    if kind == "HookDecision":
        return _set_fields(HookDecision(), raw)
    make = _KINDS.get(kind)
    if make is None:
        raise ValueError(f"unrecognised effect kind {kind!r}")
    return make(raw)


def _set_fields(decision: HookDecision, raw: dict[str, Any]) -> HookDecision:
    for f in fields(HookDecision):
        if raw.get(f.name) is not None:
            setattr(decision, f.name, raw[f.name])
    if raw.get("permission") == "allow":
        decision.allow = True
    return decision
