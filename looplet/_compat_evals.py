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


# ---------------------------------------------------------------- eval_cli: grading folders 0.4.1 saved


def eval_cli(argv: list[str] | None = None) -> int:
    """0.4.1's ``eval_cli([dir, "--evals", path, ...])``: grade the runs 0.4.1 saved under ``dir`` (a
    folder with ``trajectory.json``, or folders of them) and return the exit code: 0 when the
    assessment is valid and passed. 0.5: ``python -m looplet eval DIR`` over provenance folders."""
    import sys

    warn_renamed(
        "eval_cli([dir, '--evals', path])", "python -m looplet eval DIR (folders ProvenanceSink wrote)"
    )
    args = _cli_args(argv)
    if isinstance(args, int):
        return args
    with _stdout_to_stderr():  # what evals print is theirs, not the report's
        cases, failures = _load_cases(Path(args.traces))
        evals = _quiet_call(_discover, args.evals)
        chosen, dropped = _select(evals, args.include, args.exclude)
        runs = [_grade(chosen, ctx) for _, ctx in cases]
    failures += [f"required grader {name} was filtered out" for name in dropped]
    if not chosen:
        failures.append("no evals selected")
    required = {getattr(fn, "__name__", ""): _is_required(fn) for fn in evals}
    report = _cli_report(cases, runs, failures, required, args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"{len(cases)} trajectories, {len(chosen)} evals: {'PASSED' if report['passed'] else 'FAILED'}")
        for line in [*report["integrity_failures"], *report["failed"]]:
            print(f"  {line}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 0 if report["passed"] else 1


def _cli_args(argv: list[str] | None) -> Any:
    import argparse
    import sys

    if argv and argv[0] in ("init", "check"):
        print(
            f"eval {argv[0]} was removed in looplet 0.5: write eval_*.py files by hand and grade saved runs "
            "with `python -m looplet eval DIR` (see docs/migration.md)",
            file=sys.stderr,
        )
        return 2
    p = argparse.ArgumentParser(prog="looplet eval (0.4.1)")
    p.add_argument("traces")
    p.add_argument("--evals", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--include", action="append")
    p.add_argument("--exclude", action="append")
    p.add_argument(
        "--assessment-version", "--summary-version", dest="version", type=int, choices=(1, 2), default=2
    )
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 2)
    if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        print(f"--threshold must be a number between 0 and 1, got {args.threshold}", file=sys.stderr)
        return 1
    return args


def _stdout_to_stderr() -> Any:
    import contextlib
    import sys

    return contextlib.redirect_stdout(sys.stderr)


def _quiet_call(fn: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args)


def _discover(path: str) -> list[Any]:
    from looplet.compat import eval_discover

    return list(eval_discover(path))


def _load_cases(root: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    import sys

    folders = (
        [root]
        if (root / "trajectory.json").exists()
        else sorted(d for d in root.iterdir() if (d / "trajectory.json").exists())
        if root.is_dir()
        else []
    )
    cases, failures = [], []
    for folder in folders:
        try:
            cases.append((folder.name, _quiet_call(from_trajectory_dir, folder)))
        except (OSError, ValueError) as exc:
            failures.append(f"trajectory load failed: {folder.name}: {exc}")
            print(f"Invalid trajectory.json in {folder}: {exc}", file=sys.stderr)
    if not folders:
        failures.append(f"no trajectory.json under {root}")
    return cases, failures


def _is_required(fn: Any) -> bool:
    from looplet.evals import tags_of

    return "required" in tags_of(fn)


def _select(evals: list[Any], include: Any, exclude: Any) -> tuple[list[Any], list[str]]:
    from looplet.evals import tags_of

    chosen, dropped = [], []
    for fn in evals:
        tags = set(tags_of(fn))
        if (include and not tags & set(include)) or (exclude and tags & set(exclude)):
            if "required" in tags:
                dropped.append(getattr(fn, "__name__", type(fn).__name__))
            continue
        chosen.append(fn)
    return chosen, dropped


def _verdict(r: Any, required: bool, threshold: float, version: int) -> str:
    """``pass``, ``fail``, ``skipped`` (a failure when required) or ``error`` for one result."""
    label = (r.label or "").lower()
    if label in ("error", "skipped"):
        return label
    if label:
        return "pass" if r.passed and (r.score is None or r.score >= threshold) else "fail"
    if r.score is not None:
        return "pass" if r.score >= threshold else "fail"
    return "pass" if version == 1 and not required else "fail"  # metrics only: no verdict


def _cli_report(
    cases: list[Any], runs: list[list[Any]], failures: list[str], required: dict[str, bool], args: Any
) -> dict[str, Any]:
    """The assessment: per case its results with a state, integrity failures (no verdict could be
    given: a load failure, an eval error, a required eval filtered out) and failed checks."""
    out_cases, failed = [], []
    integrity = list(failures)
    for (name, _), results in zip(cases, runs, strict=True):
        rows = []
        for r in results:
            state = _verdict(r, required.get(r.name, False), args.threshold, args.version)
            if state == "error":
                integrity.append(f"{name}/{r.name}: {r.explanation or 'error'}")
            elif state == "fail" or (state == "skipped" and required.get(r.name, False)):
                failed.append(f"{name}/{r.name}: {state}")
            rows.append({**r.to_dict(), "state": state, "required": required.get(r.name, False)})
        out_cases.append({"id": name, "results": rows})
    passed = not integrity and not failed
    return {
        "version": args.version,
        "passed": passed,
        "valid": not integrity,
        "threshold": args.threshold,
        "cases": out_cases,
        "integrity_failures": integrity,
        "failed": failed,
    }
