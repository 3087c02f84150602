"""DefaultState: what a run remembers — steps, transcript, usage, cost, free-form metadata."""

from __future__ import annotations

from typing import Any

from looplet.compat import LegacyState
from looplet.types import RunResult, Step, Usage, summarize


class DefaultState(LegacyState):  # 0.4.1's run_status/run_phase/termination_reason (looplet.compat)
    """The state a run records into. Any object with ``steps`` (a list) and ``record(step)`` works too.

    A state that already holds steps and a transcript (from a checkpoint) makes the loop resume:
    numbering continues and the model sees the full transcript.
    """

    def __init__(self, max_steps: int = 15) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(
                f"DefaultState(max_steps={max_steps!r}): max_steps must be a positive integer (an int >= 1)"
            )
        self.max_steps = max_steps
        self.steps: list[Step] = []
        self.transcript: list[dict[str, Any]] = []
        self.metadata: dict[str, Any] = {}
        self.usage = Usage()
        self.cost_usd: float | None = None
        self.result: RunResult | None = None

    def record(self, step: Step) -> None:
        """Append a finished step. (Usage and cost totals are kept by the loop, which also counts LLM
        calls that produced no step.)"""
        self.steps.append(step)

    #: Steps charged before this state's own (set only by 0.4.1 code restoring a budget: looplet.compat).
    _charged = 0

    @property
    def budget_remaining(self) -> int:
        return max(0, self.max_steps - len(self.steps) - self._charged)

    @budget_remaining.setter
    def budget_remaining(self, value: int) -> None:
        from looplet._compat_loop import set_budget  # looplet 0.4.1's restored budget (deprecated)

        set_budget(self, value)

    def context_summary(self, last: int = 10) -> str:
        """A few lines on what happened so far, for prompts and hooks."""
        lines = [f"{len(self.steps)} steps so far, {self.budget_remaining} left."]
        for s in self.steps[-last:]:
            r = s.tool_result
            outcome = f"error: {r.error}" if r.error else summarize(r.data)[:80]
            lines.append(f"- #{s.number} {s.tool_call.tool}: {outcome}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"DefaultState(steps={len(self.steps)}, max_steps={self.max_steps}, usage={self.usage})"
