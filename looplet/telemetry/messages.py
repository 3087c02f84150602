"""Chat messages in the GenAI semantic conventions' shape (``gen_ai.input.messages``,
``gen_ai.output.messages``, ``gen_ai.system_instructions``): what ``TracingHook`` puts on ``chat`` spans
and what ``ProvenanceSink``'s hook routes record. Standard library only (no OpenTelemetry).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["text", "message", "messages", "output"]


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
