"""``looplet eval TRACE_DIR... [--evals FILE] [--tag T]``: run evals over saved trajectories.

Prints one row per (run, eval) and a summary. Without ``--evals`` the built-in evals run (the run ended
with ``done`` and gave an answer). Exit codes: 0 all passed, 1 an eval failed or raised, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from looplet.cli import ArgumentParser
from looplet.errors import LoopletError
from looplet.evals import EvalContext, discover, run_eval, select

__all__ = ["main"]


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = ArgumentParser("looplet eval", __doc__)
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="TRACE_DIR",
        help="a run folder, a folder of run folders, or an OTLP JSON file",
    )
    parser.add_argument(
        "--evals",
        metavar="FILE",
        default=None,
        help="a .py file (or module) with eval_* functions (default: the built-in evals)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="T",
        help="only evals with this tag (repeat for several)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per result instead of a table"
    )
    args = parser.parse_args(argv)

    from looplet.provenance.cli import load_any

    try:
        runs = load_any(args.paths)
        evals = select(discover(args.evals), args.tag)
    except (LoopletError, ImportError, FileNotFoundError) as exc:
        print(f"looplet eval: error: {exc}", file=err)
        return 2
    if not evals:
        what = f"with tag {', '.join(args.tag)}" if args.tag else "(no eval_* functions)"
        print(f"looplet eval: error: no evals {what} in {args.evals or 'the built-in evals'}", file=err)
        return 2

    results: list[Any] = []
    for t in runs:
        ctx = EvalContext.from_trajectory(t)
        results += [run_eval(fn, ctx) for fn in evals]

    if args.json:
        for r in results:
            print(json.dumps(r.to_dict(), ensure_ascii=False), file=out)
    else:
        w_run = max([len("run")] + [len(r.run) for r in results])
        w_eval = max([len("eval")] + [len(r.name) for r in results])
        print(f"{'run':<{w_run}}  {'eval':<{w_eval}}  {'result':<6}  detail", file=out)
        for r in results:
            mark = {"pass": "pass", "fail": "FAIL", "error": "ERROR"}[r.outcome]
            print(
                f"{r.run:<{w_run}}  {r.name:<{w_eval}}  {mark:<6}  {_short(r.detail, 100)}".rstrip(), file=out
            )
        passed = sum(r.outcome == "pass" for r in results)
        failed = sum(r.outcome == "fail" for r in results)
        errors = sum(r.outcome == "error" for r in results)
        print(
            f"\n{len(evals)} evals on {len(runs)} runs: {passed} passed, {failed} failed, {errors} errors",
            file=out,
        )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
