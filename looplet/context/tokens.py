"""Token counts of a transcript: a cheap estimate, corrected by the real usage the backend reports.

``estimate_tokens`` needs no tokenizer: weights per kind of character (letters, digits, punctuation,
non-ASCII), plus a few tokens of framing per message. ``TokenMeter`` adds the gap between that estimate and
the ``input_tokens`` the backend reported for the last call (tool schemas, the system framing, the
tokenizer's own habits), so once a backend reports usage the count tracks it closely; with no usage the
plain estimate is used. The estimate's error against a real BPE tokenizer is measured in
``tests/unit/test_compaction.py``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_tokens", "message_tokens", "text_tokens", "TokenMeter", "meter_for"]

MESSAGE_OVERHEAD = 4  # role and separators of one chat message
CALL_OVERHEAD = 8  # id, type and name framing of one tool call


_ALL = bytes(range(128))
_NOT_LETTERS = bytes(c for c in _ALL if not chr(c).isalpha())
_NOT_DIGITS = bytes(c for c in _ALL if not chr(c).isdigit())
_NOT_SPACES = bytes(c for c in _ALL if not chr(c).isspace())
SAMPLE = 4000  # characters looked at; longer texts are scaled from their first SAMPLE characters


def text_tokens(text: str | None) -> int:
    """Estimated tokens of a piece of text: about 1/4 token per ASCII letter, 1/2 per digit, 2/3 per
    punctuation mark, 0.8 per other character (CJK, accents, emoji) and nothing for whitespace, which
    BPE tokenizers fold into the next word. Fitted on prose, code and JSON against o200k_base."""
    if not text:
        return 0
    head = text[:SAMPLE]
    ascii_ = head.encode("ascii", "ignore")
    other = len(head) - len(ascii_)
    letters = len(ascii_.translate(None, _NOT_LETTERS))
    digits = len(ascii_.translate(None, _NOT_DIGITS))
    spaces = len(ascii_.translate(None, _NOT_SPACES))
    punct = len(ascii_) - letters - digits - spaces
    tokens = 0.25 * letters + 0.5 * digits + 0.65 * punct + 0.8 * other
    return int(tokens * len(text) / len(head)) + 1


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated tokens of one chat message (content, tool calls and framing)."""
    content = message.get("content")
    if isinstance(content, list):  # content parts
        n = sum(text_tokens(p.get("text") if isinstance(p, dict) else str(p)) for p in content)
    else:
        n = text_tokens(content if isinstance(content, str) else None if content is None else str(content))
    for tc in message.get("tool_calls") or ():
        fn = tc.get("function") or {}
        n += CALL_OVERHEAD + text_tokens(fn.get("name")) + text_tokens(fn.get("arguments"))
    return n + MESSAGE_OVERHEAD


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Estimated input tokens of a list of chat messages."""
    return sum(message_tokens(m) for m in messages) + 3


class TokenMeter:
    """Counts a transcript's tokens: the estimate plus the gap last seen against real usage.

    ``observe(state, step)`` learns from a Step that carries usage: it re-estimates the messages that
    LLM call was sent (the transcript before the assistant turn holding ``step.tool_call``) and keeps
    ``input_tokens - estimate`` as the offset added to later estimates.
    """

    __slots__ = ("offset", "observed", "_last_step")

    def __init__(self) -> None:
        self.offset = 0
        self.observed = False
        self._last_step = -1

    def count(self, messages: list[dict[str, Any]]) -> int:
        return max(0, estimate_tokens(messages) + self.offset)

    def observe(self, state: Any, step: Any) -> None:
        usage = getattr(step, "usage", None)
        transcript = getattr(state, "transcript", None)
        if usage is None or not usage.input_tokens or not transcript or step.number == self._last_step:
            return
        self._last_step = step.number
        call_id = step.tool_call.id
        for i in range(len(transcript) - 1, -1, -1):
            m = transcript[i]
            if m.get("role") == "assistant" and any(
                tc.get("id") == call_id for tc in m.get("tool_calls") or ()
            ):
                self.offset = usage.input_tokens - estimate_tokens(transcript[:i])
                self.observed = True
                return


def meter_for(run: Any) -> TokenMeter:
    """The run's shared meter (every context hook of a run reads and teaches the same one)."""
    if run is None:
        return TokenMeter()
    meter = run.scratch.get(TokenMeter)
    if not isinstance(meter, TokenMeter):
        meter = run.scratch[TokenMeter] = TokenMeter()
    return meter
