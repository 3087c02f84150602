"""Limits that end a run early: a token and cost budget, and a stop for a run going round in circles."""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from typing import Any

from looplet.context.tokens import meter_for
from looplet.hooks import HookDecision, current_run, emit_event
from looplet.telemetry.cost import cost_of
from looplet.types import Usage

__all__ = ["BudgetHook", "StagnationHook"]

log = logging.getLogger("looplet")


class BudgetHook:
    """Stop before the next LLM call would take the run past ``max_tokens`` (input + output, over the
    whole run) or ``max_cost_usd``.

    The next call is estimated before it is made: its input from the transcript (the run's TokenMeter:
    real usage when the backend reports it, an estimate otherwise) and its output as
    ``LoopConfig.max_tokens`` when set, else the largest output seen so far in the run. The stop reason is
    ``hook_stop:budget_tokens`` or ``hook_stop:budget_cost``; the figures go to the event and the log.
    When the model has no known price the cost budget cannot be checked; that is logged once.
    """

    def __init__(self, max_cost_usd: float | None = None, max_tokens: int | None = None) -> None:
        if max_cost_usd is None and max_tokens is None:
            raise ValueError("BudgetHook needs max_cost_usd=..., max_tokens=... or both")
        if max_cost_usd is not None and max_cost_usd <= 0:
            raise ValueError(f"BudgetHook(max_cost_usd={max_cost_usd!r}): must be > 0")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"BudgetHook(max_tokens={max_tokens!r}): must be >= 1")
        self.max_cost_usd, self.max_tokens = max_cost_usd, max_tokens
        self._unpriced_warned = False

    def pre_prompt(self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int) -> Any:
        run = current_run()
        spent = getattr(state, "usage", None) or Usage()
        next_in = meter_for(run).count(session_log)
        next_out = self._next_output(run, state)
        if self.max_tokens is not None:
            would = spent.total_tokens + next_in + next_out
            if would > self.max_tokens:
                return self._stop(
                    "budget_tokens",
                    spent=spent.total_tokens,
                    next_call=next_in + next_out,
                    limit=self.max_tokens,
                )
        if self.max_cost_usd is not None:
            model = getattr(run, "model", None)
            next_cost = cost_of(model, Usage(next_in, next_out)) if model else None
            if next_cost is None:
                if not self._unpriced_warned:
                    self._unpriced_warned = True
                    log.warning(
                        "BudgetHook: model %r has no known price; the cost budget is checked only "
                        "against the cost already counted",
                        model,
                    )
                next_cost = 0.0
            spent_cost = getattr(state, "cost_usd", None) or 0.0
            if spent_cost + next_cost > self.max_cost_usd:
                return self._stop(
                    "budget_cost",
                    spent=round(spent_cost, 6),
                    next_call=round(next_cost, 6),
                    limit=self.max_cost_usd,
                )
        return None

    def on_step(self, state: Any, step: Any) -> None:
        meter_for(current_run()).observe(state, step)

    @staticmethod
    def _next_output(run: Any, state: Any) -> int:
        max_tokens = getattr(getattr(run, "config", None), "max_tokens", None)
        if max_tokens:
            return int(max_tokens)
        return max((s.usage.output_tokens for s in getattr(state, "steps", ())[-50:] if s.usage), default=0)

    @staticmethod
    def _stop(reason: str, **figures: Any) -> HookDecision:
        emit_event("budget", reason=reason, **figures)
        log.info(
            "budget: stopping the run (%s): %s", reason, ", ".join(f"{k}={v}" for k, v in figures.items())
        )
        return HookDecision(stop=reason)


class StagnationHook:
    """Stop a run that makes the same tool call with the same arguments ``n`` times.

    window: count only the last ``window`` steps (None: the whole run). The done tool is not counted.
    The stop reason is ``hook_stop:stagnation``; the repeated call goes to the event and the log.
    """

    def __init__(self, n: int = 3, *, window: int | None = None, done_tool: str = "done") -> None:
        if n < 2:
            raise ValueError(f"StagnationHook(n={n!r}): must be >= 2")
        if window is not None and window < n:
            raise ValueError(f"StagnationHook(window={window!r}): must be >= n ({n})")
        self.n, self.window, self.done_tool = n, window, done_tool

    def should_stop(self, state: Any, step_num: int, new_entities: Any) -> Any:
        run = current_run()
        seen = self._seen(run, state, new_entities)
        for step in new_entities or ():
            key = _key(step.tool_call)
            if key is None or step.tool_call.tool == self.done_tool:
                continue
            seen["counts"][key] += 1
            seen["recent"].append(key)
            if self.window is not None and len(seen["recent"]) > self.window:
                seen["counts"][seen["recent"].popleft()] -= 1
            if seen["counts"][key] >= self.n:
                emit_event("stagnation", tool=step.tool_call.tool, repeats=seen["counts"][key])
                log.info(
                    "stagnation: %s called %d times with the same arguments %s; stopping the run",
                    step.tool_call.tool,
                    seen["counts"][key],
                    key[1][:200],
                )
                return HookDecision(stop="stagnation")
        return None

    def _seen(self, run: Any, state: Any, new: Any) -> dict[str, Any]:
        scratch = run.scratch if run is not None else {}
        seen = scratch.get(self)
        if seen is None:  # first call of this run: count the steps it resumed with
            seen = scratch[self] = {"counts": Counter(), "recent": deque()}
            new_ids = {id(s) for s in new or ()}
            earlier = [s for s in getattr(state, "steps", ()) if id(s) not in new_ids]
            if self.window is not None:
                earlier = earlier[-self.window :]
            for s in earlier:
                key = _key(s.tool_call)
                if key is not None and s.tool_call.tool != self.done_tool:
                    seen["counts"][key] += 1
                    seen["recent"].append(key)
        return seen


def _key(tc: Any) -> tuple[str, str] | None:
    try:
        return tc.tool, json.dumps(tc.args, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
