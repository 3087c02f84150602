"""Deprecated (removal in 0.7): a ``HookDecision`` made with 0.4.1's ``permission=`` or ``metadata=``.

0.5's ``HookDecision`` has no ``metadata`` and derives ``permission`` from ``block``/``allow``. Made with
either keyword, a decision is an :class:`OldHookDecision`, which also keeps them: ``decision.metadata``
(audit data of the hook; the loop does not read it) and ``decision.permission`` as given (0.4.1 did not
derive it). What the loop does with the decision is the same: ``block`` denies, ``allow`` approves.
"""

from __future__ import annotations

import copy
from typing import Any

from looplet.compat import warn_renamed
from looplet.hooks import HookDecision

__all__ = ["OldHookDecision", "as_denial"]


class OldHookDecision(HookDecision):
    """``HookDecision(..., permission=..., metadata=...)`` of 0.4.1 (see the module's text)."""

    __slots__ = ("metadata", "permission_given")

    def __init__(self, *args: Any, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if metadata is not None:
            warn_renamed(
                "HookDecision(metadata=...)", "keeping audit data in the hook (the loop never read it)"
            )
        self.metadata = dict(metadata or {})
        given = kwargs.get("permission")
        self.permission_given: tuple[Any, ...] = (
            (getattr(given, "value", given),) if "permission" in kwargs else ()
        )
        super().__init__(*args, **kwargs)  # permission= is translated (and warned about) by HookDecision


def as_denial(decision: Any) -> Any:
    """A blocking decision at a tool gate, as 0.4.1's ``normalize_hook_return`` gave it: ``permission``
    reads ``"deny"``, on a copy (the hook's own decision is not changed)."""
    if not getattr(decision, "permission_given", ()) or decision.permission_given == ("deny",):
        return decision
    denial = copy.copy(decision)
    denial.permission_given = ("deny",)
    return denial
