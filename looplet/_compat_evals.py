"""looplet 0.4.1's eval entry points, as adapters over 0.5's evals. Deprecated; removed in 0.7.

- ``EvalContext.from_trajectory_dir(dir)`` reads a folder 0.4.1 saved (``trajectory.json`` with its
  ``steps``/``termination_reason``/``task``, optional ``expected.json``, ``artifacts.json``,
  ``metrics.json``). 0.5: ``EvalContext.from_trajectory(looplet.provenance.load_trajectory(dir))``.
- ``eval_assess(evals, ctx)`` and ``EvalHook(evaluators=...).assessment()`` give a :class:`OldReport`
  (``passed``, ``valid``, ``assert_passed()``). 0.5: ``looplet.evals.run_evals(evals, [ctx])``.
- ``eval_run_batch(evals, contexts)``: one row per eval over several runs.
- A context whose ``metadata["eval_collector_errors"]`` records collector failures (0.4.1 saved them
  with a run) gets them back as ``error`` results from ``eval_run``, whatever the graders do.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from looplet.compat import warn_renamed

__all__ = ["from_trajectory_dir", "eval_assess", "eval_run_batch", "OldReport", "recorded_errors"]

_RECORDED = "eval_collector_errors"


def _json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.name} in {path.parent} cannot be read as JSON: {exc}") from None


def _steps(raw: list[Any]) -> list[Any]:
    from looplet.types import Step, ToolCall, ToolResult

    steps = []
    for i, s in enumerate(raw, 1):
        call, result = s.get("tool_call") or {}, s.get("tool_result") or {}
        steps.append(
            Step(
                int(s.get("step_num") or s.get("number") or i),
                ToolCall(str(call.get("tool", "")), dict(call.get("args") or {})),
                ToolResult(data=result.get("data"), error=result.get("error")),
            )
        )
    return steps


def from_trajectory_dir(path: str | Path) -> Any:
    """0.4.1's ``EvalContext.from_trajectory_dir(dir)``: an ``EvalContext`` (with 0.4.1's ``metadata``
    and ``artifacts``) from a folder 0.4.1 saved; ValueError naming the file that is malformed."""
    folder = Path(path)
    t = _json(folder / "trajectory.json")
    if not isinstance(t, dict) or not isinstance(t.get("steps", []), list):
        raise ValueError(f"{folder / 'trajectory.json'}: expected an object with a list of steps")
    if not all(isinstance(s, dict) for s in t.get("steps", [])):
        raise ValueError(f"{folder / 'trajectory.json'}: every step must be an object")
    steps = _steps(t.get("steps", []))
    task = t.get("task")
    expected = _expected(folder, t, task)
    if expected is not None:
        task = {**(task if isinstance(task, dict) else {}), "expected": expected}
    artifacts = _json(folder / "artifacts.json", {})
    _json(folder / "metrics.json")  # 0.4.1 refused a folder whose metrics it could not read
    last = steps[-1].tool_call if steps else None
    reason = t.get("termination_reason") or ("done" if last is not None and last.tool == "done" else None)
    final = t.get("final_output")
    if final is None and last is not None and reason == "done":
        final = dict(last.args)
    meta = {**(t.get("metadata") or {}), **{k: v for k, v in t.items() if k not in ("steps", "metadata")}}
    with warnings.catch_warnings():  # from_trajectory_dir warned once already
        warnings.simplefilter("ignore", DeprecationWarning)
        return _context(steps, final, reason, task, t, artifacts, meta)


def _context(steps: Any, final: Any, reason: Any, task: Any, t: Any, artifacts: Any, meta: Any) -> Any:
    from looplet.compat import old_eval_context_class

    return old_eval_context_class()(
        steps=steps,
        final_output=final,
        stop_reason=reason,
        task=task,
        run_id=str(t.get("run_id") or ""),
        artifacts=dict(artifacts) if isinstance(artifacts, dict) else {},
        metadata=meta,
    )


def _expected(folder: Path, t: dict[str, Any], task: Any) -> Any:
    found = [e for e in (t.get("expected"), _json(folder / "expected.json")) if e is not None]
    if isinstance(task, dict) and "expected" in task:
        found.append(task["expected"])
    if any(e != found[0] for e in found):
        raise ValueError(
            f"Conflicting grader expectations in {folder} (task, trajectory.json, expected.json)"
        )
    return found[0] if found else None


def recorded_errors(ctx: Any) -> list[Any]:
    """The collector failures a 0.4.1 run recorded in ``ctx.metadata``, as ``error`` results (read
    before the graders run, so a grader cannot erase them); a malformed record is one error itself."""
    from looplet.compat import _result

    has = "metadata" in getattr(type(ctx), "__dataclass_fields__", {})  # (a plain 0.5 context would warn)
    metadata = getattr(ctx, "metadata", None) if has else None
    if not isinstance(metadata, dict) or _RECORDED not in metadata:
        return []
    raw = metadata[_RECORDED]
    if isinstance(raw, list) and all(_is_failure(r) for r in raw):
        return [
            _result(**{k: r[k] for k in ("name", "label", "score", "explanation") if k in r}) for r in raw
        ]
    return [
        _result(
            "collector:recorded_errors", label="error", explanation=f"malformed {_RECORDED}: {raw!r:.200}"
        )
    ]


def _is_failure(r: Any) -> bool:
    score = r.get("score") if isinstance(r, dict) else None
    return (
        isinstance(r, dict)
        and str(r.get("name", "")).startswith("collector:")
        and r.get("label") == "error"
        and (score is None or (isinstance(score, (int, float)) and math.isfinite(score)))
    )


class OldReport:
    """0.4.1's assessment of graded runs. ``valid``: every eval gave a verdict (no ``error`` result);
    ``passed``: valid, and every result passed or was skipped."""

    def __init__(self, runs: list[list[Any]]) -> None:
        self.runs = runs
        self.integrity_failures = [
            f"run {i}/{r.name}: {r.explanation or 'error'}"
            for i, results in enumerate(runs)
            for r in results
            if r.label == "error"
        ]

    @property
    def valid(self) -> bool:
        return not self.integrity_failures

    @property
    def passed(self) -> bool:
        return self.valid and all(r.passed or r.label == "skipped" for rs in self.runs for r in rs)

    def to_dict(self) -> dict[str, Any]:
        cases = [
            {"id": f"run_{i}" if len(self.runs) > 1 else "run", "results": [r.to_dict() for r in rs]}
            for i, rs in enumerate(self.runs)
        ]
        return {"passed": self.passed, "cases": cases, "integrity_failures": list(self.integrity_failures)}

    def assert_passed(self) -> None:
        failed = [
            f"{r.name}: {r.explanation or r.label or 'failed'}"
            for rs in self.runs
            for r in rs
            if not r.passed
        ]
        assert self.passed, "\n".join([*self.integrity_failures, *failed]) or "Evaluation did not pass"


def _grade(evaluators: list[Any], ctx: Any, **options: Any) -> list[Any]:
    import warnings

    from looplet.compat import eval_run

    with warnings.catch_warnings():  # the caller's entry point warned once
        warnings.simplefilter("ignore", DeprecationWarning)
        return eval_run(evaluators, ctx, **options)


def eval_assess(
    evaluators: list[Any],
    ctx: Any,
    *,
    judge_llm: Any = None,
    include: Any = None,
    exclude: Any = None,
    **_: Any,
) -> OldReport:
    """0.4.1's ``eval_assess(evals, ctx)``: grade one observed run and assess it."""
    warn_renamed("eval_assess(evals, ctx)", "looplet.evals.run_evals(evals, [ctx])")
    return OldReport([_grade(evaluators, ctx, judge_llm=judge_llm, include=include, exclude=exclude)])


def eval_run_batch(
    evaluators: list[Any],
    contexts: list[Any],
    *,
    judge_llm: Any = None,
    include: Any = None,
    exclude: Any = None,
) -> list[dict[str, Any]]:
    """0.4.1's ``eval_run_batch(evals, contexts)``: per eval (and per recorded collector failure) its
    scores over the runs (``avg_score``/``min_score``/``max_score`` when it scored) and each run's result."""
    from looplet.compat import _result

    warn_renamed("eval_run_batch(evals, contexts)", "looplet.evals.run_evals(evals, contexts)")
    runs = [_grade(evaluators, c, judge_llm=judge_llm, include=include, exclude=exclude) for c in contexts]
    names = list(dict.fromkeys(r.name for rs in runs for r in rs))
    table = []
    for name in names:
        per_run = [
            next((r for r in rs if r.name == name), None) or _result(name, label="skipped") for rs in runs
        ]
        scores = [r.score for r in per_run if r.score is not None]
        row: dict[str, Any] = {"name": name, "scores": scores, "runs": len(runs)}
        if scores:
            row.update(
                avg_score=round(sum(scores) / len(scores), 3),
                min_score=round(min(scores), 3),
                max_score=round(max(scores), 3),
            )
        row["per_run"] = [r.to_dict() for r in per_run]
        table.append(row)
    return table
