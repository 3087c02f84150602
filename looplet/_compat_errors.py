"""Deprecated (removal in 0.7): what 0.4.1's ``result.error_detail`` said of a tool's failure.

0.5 keeps a failure as ``ToolResult.error`` (the text the model sees) and ``error_kind`` (``timeout``,
``missing_argument``, ``tool_exception``, ...). 0.4.1's ``error_detail`` was a ``ToolError`` with a
coarser family and, for argument mistakes, a ``recovery_hint``. This view derives both from the
result: an exception the tool raised is in the ``EXECUTION`` family, except ``TimeoutError`` (``TIMEOUT``,
its effect unknown) and ``ValueError``/``TypeError``/``KeyError`` (``VALIDATION``), as 0.4.1 sorted them;
the hint is the closest tool name for an unknown tool, and for an argument the tool does not have (alone,
or next to a missing one) that name, the accepted names, the closest of them and the missing one. (They are read from the text the registry writes, which names the exception's type
and the names involved.)
"""

from __future__ import annotations

import difflib
import re
from typing import Any

__all__ = ["old_error_detail"]

_RAISED = re.compile(r"^Tool .+? raised (\w+): ")
_CLOSE = re.compile(r"Did you mean '([^']+)'")
_ACCEPTED = re.compile(r"\(accepted: ([^)]*)\)")
_STRAY = re.compile(r"unexpected argument '([^']+)'|where you wrote '([^']+)'|; '([^']+)' is not an argument")
_MISSING = re.compile(r"missing required argument '([^']+)'")
_VALIDATION = frozenset({"ValueError", "TypeError", "KeyError"})


def old_error_detail(result: Any, families: dict[str, Any], kinds: Any, tool_error: Any) -> Any:
    """The ``ToolError`` 0.4.1 would have given for a failed ``result``."""
    text, kind = str(result.error), result.error_kind or ""
    family, context = families.get(kind, kinds.EXECUTION), {}
    raised = _RAISED.match(text) if kind == "tool_exception" else None
    if raised and raised.group(1) == "TimeoutError":
        family, context = kinds.TIMEOUT, {"effect_unknown": True}
    elif raised and raised.group(1) in _VALIDATION:
        family = kinds.VALIDATION
    return tool_error(family, text, context=context, recovery_hint=_hint(kind, text))


def _hint(kind: str, text: str) -> Any:
    if kind == "unknown_tool":
        close = _CLOSE.search(text)
        return close.group(1) if close else None
    if kind not in ("unexpected_argument", "missing_argument"):
        return None
    accepted = _ACCEPTED.search(text)
    stray = _STRAY.search(text)
    if accepted is None or stray is None:
        return None
    expected = [n.strip() for n in accepted.group(1).split(",") if n.strip() != "none"]
    name = next(g for g in stray.groups() if g is not None)
    nearest = difflib.get_close_matches(name, expected, n=1)
    hint: dict[str, Any] = {
        "unexpected": [name],
        "expected": expected,
        "did_you_mean": nearest[0] if nearest else None,
    }
    missing = _MISSING.search(text)
    if missing is not None:
        hint["missing"] = [missing.group(1)]
    return hint
