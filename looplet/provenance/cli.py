"""``looplet show TRACE_DIR...``: a saved run as step lines with tokens, cost and timings, and a summary.

TRACE_DIR is a run's folder, a folder of run folders, or a file of OTLP JSON spans. ``--html OUT.html``
also writes the runs as one self-contained page with a waterfall. Exit codes: 0 shown, 2 bad input.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from looplet.cli import ArgumentParser, check_output_file
from looplet.errors import LoopletError
from looplet.provenance.format import Trajectory, TrajectoryError, find_trajectories, load_files, render_files

__all__ = ["main", "load_any", "format_run"]


def load_any(paths: list[str]) -> list[Trajectory]:
    """Trajectories from folders, folders of folders, and OTLP JSON span files."""
    out: list[Trajectory] = []
    for p in paths:
        path = Path(p)
        if (
            path.is_file()
            and path.name != "trajectory.json"
            and path.suffix in (".json", ".jsonl", ".ndjson")
        ):
            from looplet.provenance.spans import read_otlp_json, records_from_spans

            records = records_from_spans(read_otlp_json(path))
            if not records:
                raise TrajectoryError(path, "holds no complete looplet run (no invoke_agent span)")
            out += [load_files(f"{path.name}#{i + 1}", render_files(rec)) for i, rec in enumerate(records)]
        else:
            out += find_trajectories([path])
    for t in out:  # every field read once: a hand-edited "12ms" where a number belongs is bad input
        try:
            format_run(t)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            why = f"a field holds a value of the wrong type ({type(exc).__name__}: {exc}); was it edited by hand? fix the value or record the run again"  # fmt: skip
            raise TrajectoryError(
                Path(t.path) / "trajectory.json" if t.path is not None else t.name, why
            ) from None
    return out


def _cost(value: Any) -> str:
    return f"${value:.6f}" if isinstance(value, (int, float)) else ""


def _step_lines(steps: list[Any], width: int, indent: int) -> list[str]:
    lines, pad = [], "    " * indent
    for s in steps:
        room = max(40, width - 24 - len(pad) - (2 if indent else 0))
        tokens = f"{s.usage.total_tokens:>6} tok" if s.usage else " " * 10
        lines.append(
            f"{pad}{'↳ ' if indent else ''}{s.pretty(room).ljust(room)}  {tokens}  {_cost(s.cost_usd)}".rstrip()
        )
        lines += _step_lines(s.children, width, indent + 1) if s.children else []
    return lines


def format_run(t: Trajectory, width: int = 110) -> str:
    """The text ``looplet show`` prints for one run."""
    head = f"{t.agent} · run {t.run_id[:12]} · {', '.join(t.models) or 'model unknown'}"
    lines = [
        head + (f" · trace {t.trace_id}" if t.trace_id else ""),
        f"  {t.path if t.path is not None else t.name}",
    ]
    task = t.task["goal"] if isinstance(t.task, dict) and "goal" in t.task else t.task
    lines += ([] if task is None else [f"task: {task}"]) + [""]
    lines += _step_lines(t.steps, width, 0) or ["(no steps)"]
    return "\n".join([*lines, "", _totals(t), *_notes(t)])


def _totals(t: Trajectory) -> str:
    u = t.usage
    llm_ms = sum(float(c.get("duration_ms") or 0) for c in t.calls if isinstance(c, dict))
    tool_ms = sum(s.tool_ms for s in t.steps)
    cost = _cost(t.cost_usd) or (
        "unknown (model not priced)" if t.llm_calls else "none (no LLM call was answered)"
    )
    cached = f" ({u.cached_input_tokens} cached)" if u.cached_input_tokens else ""
    return (
        f"{t.stop_reason or 'unfinished'}: {len(t.steps)} steps, {t.llm_calls} LLM calls, {u.input_tokens} input + "
        f"{u.output_tokens} output tokens{cached}, cost {cost}, {t.duration_ms:.0f} ms (LLM {llm_ms:.0f} ms, tools {tool_ms:.0f} ms)"
    )  # fmt: skip


def _evals(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in (e.get("attributes") or {} for e in events if e.get("name") == "eval"):
        outcome = a.get("outcome") or ("pass" if a.get("passed") else "fail")
        out.append(f"  eval {a.get('eval') or a.get('name')}: {outcome}")
    return out


def _notes(t: Trajectory) -> list[str]:
    lines, events = [], [e for e in t.events if isinstance(e, dict)]
    kinds = Counter(s.tool_result.error_kind or "error" for s in t.steps if not s.ok)
    if kinds:
        lines.append("failed steps: " + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items())))
    if t.events:
        names = Counter(str(e.get("name")) for e in events)
        lines.append("events: " + ", ".join(f"{k} ×{n}" for k, n in sorted(names.items())))
    lines += _evals(events)
    lines += [f"error: {t.error}"] if t.error else []
    lines += [f"answer: {t.final_output}"] if t.final_output is not None else []
    if not t.data.get("content", True):
        lines.append("note: recorded from spans without content capture (no arguments, results or prompts)")
    return lines


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = ArgumentParser("looplet show", __doc__)
    parser.add_argument("paths", nargs="+", metavar="TRACE_DIR", help="a run folder, a folder of run folders, or an OTLP JSON file")  # fmt: skip
    parser.add_argument(
        "--html", metavar="OUT.html", help="also write a self-contained HTML page with a waterfall"
    )
    parser.add_argument("--width", type=int, default=None, help="line width (default: the terminal's)")
    args = parser.parse_args(argv)
    width = args.width or max(80, min(160, shutil.get_terminal_size((110, 24)).columns))
    try:
        if args.html:  # before anything is printed: an output that cannot be written stops the command
            check_output_file(args.html, "--html")
        runs = load_any(args.paths)
        print("\n\n".join(format_run(t, width) for t in runs), file=out)
        if args.html:
            from looplet.provenance.html import render_html

            target = Path(args.html)
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            tmp.write_text(render_html(runs), encoding="utf-8")
            os.replace(tmp, target)
            print(f"\nwrote {target}", file=out)
    except (TrajectoryError, LoopletError) as exc:
        print(f"looplet show: error: {' '.join(str(exc).split())}", file=err)
        return 2
    except OSError as exc:
        print(f"looplet show: error: {exc.filename or args.html}: {exc.strerror or exc}", file=err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
