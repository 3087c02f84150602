"""looplet 0.4.1's text forms of tool calls that the 0.5 loop does not read, for the deprecated
``looplet.parse`` functions only (removed in looplet 0.7; see :mod:`looplet.compat`): the envelope
``{"theory": ..., "tools": [{"tool": ..., "args": {...}}, ...]}`` (the theory goes into each call's
arguments as ``__theory__``) and a call's ``"reasoning"`` key. The loop itself is unchanged: it reads a
call, or a list of calls, written as JSON.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

__all__ = ["old_text_calls"]


def _decode(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def old_text_calls(text: str, calls: list[Any]) -> list[Any]:
    """``calls`` (what the 0.5 loop reads in ``text``) completed with what 0.4.1 also read there."""
    from looplet._engine import parse_text_tool_calls

    obj = _decode(text) if text else None
    if not isinstance(obj, dict):
        return calls
    if isinstance(obj.get("tools"), list):
        calls = parse_text_tool_calls(json.dumps(obj["tools"]))
        theory = obj.get("theory")
        if isinstance(theory, str) and theory:
            calls = [replace(c, args={**c.args, "__theory__": theory}) for c in calls]
        items = [i for i in obj["tools"] if isinstance(i, dict)]
    else:
        items = [obj]
    if len(items) == len(calls):
        calls = [
            replace(c, reasoning=i["reasoning"]) if isinstance(i.get("reasoning"), str) else c
            for c, i in zip(calls, items, strict=True)
        ]
    return calls
