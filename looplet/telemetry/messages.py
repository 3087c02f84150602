"""Chat messages in the GenAI semantic conventions' shape (``gen_ai.input.messages``,
``gen_ai.output.messages``, ``gen_ai.system_instructions``): what ``TracingHook`` puts on ``chat`` spans
and what ``ProvenanceSink``'s hook routes record. Standard library only (no OpenTelemetry).

:class:`Transcript` converts a run's prompts incrementally (each message once), for both.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["text", "message", "messages", "output", "Transcript"]


def text(content: Any) -> str:
    """A message's content as text (of multimodal parts, the text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def message(m: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI chat-format message (not a system one) as a semantic-convention message."""
    role, content = m.get("role"), m.get("content")
    if role == "tool":
        part = {"type": "tool_call_response", "id": m.get("tool_call_id"), "response": text(content)}
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = [{"type": "text", "content": text(content)}] if content else []
    for tc in m.get("tool_calls") or ():
        fn = tc.get("function") or {}
        args: Any = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": args})
    return {"role": role or "user", "parts": parts}


def messages(transcript: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A chat-format transcript -> (its system messages as system-instruction parts, the other messages)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in transcript or ():
        if m.get("role") != "system":
            out.append(message(m))
        elif content := m.get("content"):
            system.append({"type": "text", "content": text(content)})
    return system, out


def output(response: Any) -> dict[str, Any]:
    """An ``LLMResponse`` as the assistant's output message."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": response.text}] if response.text else []
    for c in response.tool_calls or ():
        parts.append({"type": "tool_call", "id": c.id, "name": c.tool, "arguments": c.args})
    return {"role": "assistant", "parts": parts, "finish_reason": response.finish_reason or "stop"}


_NONE, _SYSTEM, _MESSAGE = 0, 1, 2  # what a source message became: nothing, a system part, a message


class Transcript:
    """A run's prompts converted as :func:`messages` converts them, each message once.

    A call's messages are mostly the previous call's plus new ones: :meth:`update` keeps the conversion of
    the longest prefix that is still the same (the same objects, or equal ones) and converts the rest, so a
    call costs its new messages plus one C-level comparison of the prefix. A compaction or any hook that
    replaces messages (``session_log[:] = ...``, ``session_log[i] = {...}``) is noticed and the conversion
    starts over from the first replaced message. A message dict changed in place is not noticed: replace it.

    ``system`` and ``messages`` are what :func:`messages` returns for the latest call. ``messages`` is
    extended in place while the transcript only grows (an earlier call's first ``n`` stay valid); after a
    replacement, and whenever ``system`` changes, they are new lists, so an earlier call's stay as they were.
    """

    __slots__ = ("src", "kinds", "system", "messages")

    def __init__(self) -> None:
        self.src: list[Any] = []  # the source messages converted so far (the latest call's)
        self.kinds: list[int] = []  # what each became
        self.system: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    def update(self, transcript: Any) -> tuple[int, int]:
        """Convert the call's ``transcript``; returns how many of the previous ``system`` parts and
        ``messages`` are kept (the rest were dropped; the new ones follow them)."""
        m = transcript if isinstance(transcript, list) else list(transcript or ())
        src, k = self.src, len(self.src)
        if len(m) >= k and m[:k] == src:  # only grew (the common case)
            keep = k
        elif k and len(m) >= k - 1 and m[: k - 1] == src[: k - 1]:  # the last call's one-off extra went
            keep = k - 1
        else:
            keep = _common_prefix(src, m)
        kept_system, kept_messages = len(self.system), len(self.messages)
        if keep < k:
            kinds = self.kinds[:keep]
            kept_system, kept_messages = kinds.count(_SYSTEM), kinds.count(_MESSAGE)
            del src[keep:]
            self.kinds = kinds
            self.system = self.system[:kept_system]
            self.messages = self.messages[:kept_messages]
        if len(m) > keep:
            self._add(m[keep:])
        return kept_system, kept_messages

    def _add(self, new: list[Any]) -> None:
        out: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        kinds: list[int] = []
        for m in new:  # all converted before any is kept: a message that fails leaves nothing half done
            if m.get("role") != "system":
                out.append(message(m))
                kinds.append(_MESSAGE)
            elif content := m.get("content"):
                parts.append({"type": "text", "content": text(content)})
                kinds.append(_SYSTEM)
            else:
                kinds.append(_NONE)
        self.src.extend(new)
        self.kinds.extend(kinds)
        self.messages.extend(out)
        if parts:  # a new list: an earlier call's system parts stay as they were
            self.system = self.system + parts


def _common_prefix(a: list[Any], b: list[Any]) -> int:
    """How many leading items of ``a`` and ``b`` are the same (or equal)."""
    n = min(len(a), len(b))
    for i in range(n):
        x, y = a[i], b[i]
        if x is not y and x != y:
            return i
    return n
