"""Hooks that keep the transcript inside the model's context window, and tell the model how full it is."""

from __future__ import annotations

import logging
from typing import Any

from looplet.context import _llm
from looplet.context.compaction import Prune, Truncate, as_chain
from looplet.context.tokens import meter_for
from looplet.hooks import current_run, emit_event

__all__ = ["ThresholdCompactHook", "ContextPressureHook"]

log = logging.getLogger("looplet")


def _window(explicit: int | None) -> int | None:
    if explicit:
        return explicit
    run = current_run()
    config = getattr(run, "config", None)
    return getattr(config, "context_window", None)


class ThresholdCompactHook:
    """Compact the transcript before a prompt once it passes ``max_tokens``.

    max_tokens: the threshold; None uses 80% of ``LoopConfig.context_window``.
    strategy: a ``compact_chain(...)`` (or one strategy, or a list); default ``Prune()`` then ``Truncate()``.
    target: compact down to this fraction of the threshold, so it does not run again at the next step.

    The transcript (``session_log``) is edited in place, so the model, ``state.transcript`` and any
    checkpoint see the compacted version. Tokens are counted with the run's ``TokenMeter``: the backend's
    reported usage when there is one, an estimate otherwise.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ThresholdCompactHook:
        first = args[0] if args else kwargs.get("budget")
        if cls is ThresholdCompactHook and (
            "fire_tier" in kwargs or "budget" in kwargs or type(first).__name__ in ("ContextBudget", "dict")
        ):  # looplet 0.4.1's ThresholdCompactHook(budget, fire_tier=...): looplet._compat_examples
            from looplet._compat_examples import OldThresholdCompactHook

            cls = OldThresholdCompactHook
        return object.__new__(cls)

    def __init__(self, max_tokens: int | None = None, strategy: Any = None, *, target: float = 0.7) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"ThresholdCompactHook(max_tokens={max_tokens!r}): must be >= 1 or None")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"ThresholdCompactHook(target={target!r}): must be in (0, 1]")
        self.max_tokens = max_tokens
        self.chain = as_chain(strategy if strategy is not None else (Prune(), Truncate()))
        self.target = target
        self._warned = False

    def pre_prompt(self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int) -> Any:
        window = _window(None)
        limit = self.max_tokens or (int(window * 0.8) if window else None)
        if limit is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "ThresholdCompactHook: no max_tokens and no LoopConfig(context_window); not compacting"
                )
            return None
        run = current_run()
        meter = meter_for(run)
        if meter.count(session_log) <= limit:
            return None
        plan = self.chain.plan(session_log, int(limit * self.target), meter)
        async_mode = bool(getattr(getattr(run, "hooks", None), "async_mode", False))
        out = _llm.start(plan, async_mode)
        if hasattr(out, "__await__"):
            return self._apply_later(out, session_log)
        session_log[:] = out
        return None

    async def _apply_later(self, pending: Any, session_log: list[dict[str, Any]]) -> None:
        session_log[:] = await pending

    def on_step(self, state: Any, step: Any) -> None:
        meter_for(current_run()).observe(state, step)


class ContextPressureHook:
    """Tell the model, before each prompt, how much of its context window is used and how much is left,
    once more than ``warn_at`` of it is used. ``window`` defaults to ``LoopConfig.context_window``."""

    def __init__(self, window: int | None = None, *, warn_at: float = 0.5) -> None:
        if window is not None and window < 1:
            raise ValueError(f"ContextPressureHook(window={window!r}): must be >= 1 or None")
        if not 0.0 <= warn_at <= 1.0:
            raise ValueError(f"ContextPressureHook(warn_at={warn_at!r}): must be in [0, 1]")
        self.window, self.warn_at = window, warn_at

    def pre_prompt(self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int) -> Any:
        window = _window(self.window)
        if not window:
            return None
        used = meter_for(current_run()).count(session_log)
        fraction = used / window
        if fraction < self.warn_at:
            return None
        left = max(0, window - used)
        emit_event("context.pressure", tokens=used, window=window, fraction=round(fraction, 4))
        log.info("context pressure: %d of %d tokens (%.0f%%)", used, window, fraction * 100)
        return (
            f"[context] About {used:,} of {window:,} tokens of your context window are used "
            f"({fraction:.0%}); about {left:,} are left. Older tool outputs may be shortened."
        )

    def on_step(self, state: Any, step: Any) -> None:
        meter_for(current_run()).observe(state, step)
