"""``looplet show TRACE_DIR...``: a saved run as step lines with tokens, cost and timings, and a summary.

TRACE_DIR is a run's folder, a folder of run folders, or a file of OTLP JSON spans. ``--html OUT.html``
also writes the runs as one self-contained page (inline CSS, no network): each run's totals, a waterfall
of its LLM and tool calls on a time axis (failed calls in red with a ✗; a click opens the call's step),
and every step (arguments, result, the prompt and response of the LLM call that proposed it) as
``<details>`` blocks; a prompt shows what its call added, after a link to the call it continues.
Exit codes: 0 shown, 2 bad input.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any, TextIO

from looplet.cli import ArgumentParser, check_output_file
from looplet.errors import LoopletError
from looplet.provenance.format import (
    PROMPT_AFTER,
    Trajectory,
    TrajectoryError,
    find_trajectories,
    load_files,
    render_files,
)
from looplet.provenance.spans import read_otlp_json, records_from_spans

__all__ = ["main", "load_any", "format_run", "render_html"]


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
            records = records_from_spans(read_otlp_json(path))
            if not records:
                raise TrajectoryError(path, "holds no complete looplet run (no invoke_agent span)")
            out += [
                load_files(f"{path.name}#{i + 1}", render_files(rec).get) for i, rec in enumerate(records)
            ]
        else:
            out += find_trajectories([path])
    for t in out:  # every field read once: a hand-edited "12ms" where a number belongs is bad input
        try:
            format_run(t)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            why = f"a field holds a value of the wrong type ({type(exc).__name__}: {exc}); was it edited by hand? fix the value or record the run again"  # fmt: skip
            raise TrajectoryError(t.path / "trajectory.json" if t.path is not None else t.name, why) from None
    return out


def _cost(value: Any, none: str = "") -> str:
    return f"${value:.6f}" if isinstance(value, (int, float)) else none


def _step_lines(steps: list[Any], width: int, indent: int) -> list[str]:
    lines, pad = [], "    " * indent
    for s in steps:
        room = max(40, width - 24 - len(pad) - (2 if indent else 0))
        tokens = f"{s.usage.total_tokens:>6} tok" if s.usage else " " * 10
        line = f"{pad}{'↳ ' if indent else ''}{s.pretty(room).ljust(room)}  {tokens}  {_cost(s.cost_usd)}"
        lines += [line.rstrip(), *_step_lines(s.children, width, indent + 1)]
    return lines


def format_run(t: Trajectory, width: int = 110) -> str:
    """The text ``looplet show`` prints for one run."""
    head = f"{t.agent} · run {t.run_id[:12]} · {', '.join(t.models) or 'model unknown'}"
    lines = [head + (f" · trace {t.trace_id}" if t.trace_id else ""), f"  {t.path or t.name}"]
    task = t.task["goal"] if isinstance(t.task, dict) and "goal" in t.task else t.task
    lines += ([] if task is None else [f"task: {task}"]) + [""]
    lines += _step_lines(t.steps, width, 0) or ["(no steps)"]
    return "\n".join([*lines, "", _totals(t), *_notes(t)])


def _totals(t: Trajectory) -> str:
    u = t.usage
    llm_ms, tool_ms = _llm_ms(t), sum(s.tool_ms for s in t.steps)
    cost = _cost(
        t.cost_usd, "unknown (model not priced)" if t.llm_calls else "none (no LLM call was answered)"
    )
    cached = f" ({u.cached_input_tokens} cached)" if u.cached_input_tokens else ""
    return (
        f"{t.stop_reason or 'unfinished'}: {len(t.steps)} steps, {t.llm_calls} LLM calls, {u.input_tokens} input + "
        f"{u.output_tokens} output tokens{cached}, cost {cost}, {t.duration_ms:.0f} ms (LLM {llm_ms:.0f} ms, tools {tool_ms:.0f} ms)"
    )  # fmt: skip


def _llm_ms(t: Trajectory) -> float:
    return sum(float(c.get("duration_ms") or 0) for c in t.calls if isinstance(c, dict))


def _eval(a: dict[str, Any]) -> str:
    return f"  eval {a.get('eval') or a.get('name')}: {a.get('outcome') or ('pass' if a.get('passed') else 'fail')}"


def _notes(t: Trajectory) -> list[str]:
    lines, events = [], [e for e in t.events if isinstance(e, dict)]
    kinds = Counter(s.tool_result.error_kind or "error" for s in t.steps if not s.ok)
    if kinds:
        lines.append("failed steps: " + ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items())))
    if t.events:
        names = Counter(str(e.get("name")) for e in events)
        lines.append("events: " + ", ".join(f"{k} ×{n}" for k, n in sorted(names.items())))
    lines += [_eval(e.get("attributes") or {}) for e in events if e.get("name") == "eval"]
    lines += [f"error: {t.error}"] if t.error else []
    lines += [f"answer: {t.final_output}"] if t.final_output is not None else []
    if not t.data.get("content", True):
        lines.append("note: recorded from spans without content capture (no arguments, results or prompts)")
    return lines


# -- --html ---------------------------------------------------------------------------------------------

_CSS = """
:root{--llm:#3b6fd8;--tool:#2e9e6a;--err:#d23c3c;--fg:#1d2330;--mute:#6b7385;--line:#e3e6ee;--bg:#fafbfd}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:24px 32px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.run{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:0 0 28px}
.meta{color:var(--mute);font-size:13px}
.badge{padding:1px 8px;border-radius:10px;font-size:12px;background:#e7f5ee;color:#1f7a50}.badge.bad{background:#fbe9e9;color:#b12f2f}
.totals{display:flex;flex-wrap:wrap;gap:8px 26px;margin:12px 0 4px}.totals b{display:block;font-size:17px}
.totals span,.legend{color:var(--mute);font-size:12px}.legend{margin:6px 0 0 260px}
.task{margin:10px 0;padding:8px 12px;background:#f3f5f9;border-radius:6px;white-space:pre-wrap}
.axis{position:relative;height:20px;margin-left:260px;border-bottom:1px solid var(--line);font-size:11px;color:var(--mute)}
.tick{position:absolute;top:0;white-space:nowrap}
.row{display:flex;align-items:center;height:24px;border-radius:4px;color:inherit;text-decoration:none}.row:hover{background:#f0f3f9}
.label{width:260px;flex:none;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padding-right:10px;font-size:12.5px}
.n{color:var(--mute)}.track{position:relative;flex:1;height:100%}
.bar{position:absolute;top:5px;height:14px;border-radius:3px;min-width:2px}
.llm{background:var(--llm)}.tool{background:var(--tool)}.bar.error,.legend .error{background:var(--err)}
.dur{position:absolute;top:4px;font-size:11px;color:var(--mute);white-space:nowrap;padding:0 4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 12px}
details{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
summary{padding:6px 10px;cursor:pointer;font-family:ui-monospace,Menlo,monospace;font-size:12.5px}
details.failed>summary{color:#b12f2f}details[open]>summary{border-bottom:1px solid var(--line)}
.body{padding:8px 12px}.kv{display:grid;grid-template-columns:110px 1fr;gap:2px 12px;font-size:13px}.kv span{color:var(--mute)}
pre{background:#f6f7fa;border:1px solid var(--line);border-radius:4px;padding:8px;white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto;font-size:12px}
.children{margin-left:22px}
"""
# opens the <details> a link (a waterfall row, or OUT.html#r0-step-3) points at
_JS = """function o(){var d=document.getElementById(location.hash.slice(1));if(d&&d.tagName==='DETAILS')d.open=true}
addEventListener('hashchange',o);o();document.body.dataset.rendered='yes';"""


def _ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _pre(value: Any) -> str:
    return f"<pre>{escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2))}</pre>"


def _row(e: dict[str, Any], end: float, r: int) -> str:
    """One waterfall row: label, bar and duration; a link to its call or step."""
    llm, err, ms = e.get("kind") == "llm", e.get("error"), float(e["duration_ms"] or 0)
    left, width = 100 * float(e["start_ms"] or 0) / end, 100 * ms / end
    label = f"LLM call {e.get('call')}" if llm else f"#{'?' if e.get('step') is None else e['step']}"
    title = escape(f"{e.get('name')}: {_ms(ms)}" + (f" — {err}" if err else ""))
    where = f"right:{100 - left}%" if left + width > 85 else f"left:{left + width}%"
    target = f"call-{e.get('call')}" if llm else f"step-{e.get('step')}"
    return (
        f'<a class="row" href="#r{r}-{target}"><div class="label" title="{title}"><span class="n">{label}</span> '
        f'{escape(str(e.get("name")))}{"  ✗" if err else ""}</div><div class="track">'
        f'<div class="bar {"llm" if llm else "tool"}{" error" if err else ""}" style="left: {left}%; width: {width}%;" '
        f'title="{title}"></div><span class="dur" style="{where}">{_ms(ms)}</span></div></a>'
    )


def _waterfall(t: Trajectory, r: int) -> str:
    """The run's LLM and tool calls as bars on one time axis."""
    rows = [e for e in t.timeline if isinstance(e, dict)]
    end = (
        max([t.duration_ms] + [float(e["start_ms"] or 0) + float(e["duration_ms"] or 0) for e in rows]) or 1.0
    )
    ticks = "".join(
        f'<span class="tick" style="left:{25 * i}%;transform:translateX(-{25 * i}%)">{_ms(end * i / 4)}</span>'
        for i in range(5)
    )
    legend = '<i class="llm"></i>LLM call<i class="tool"></i>tool call<i class="error"></i>failed'
    return f'<div class="axis">{ticks}</div>{"".join(_row(e, end, r) for e in rows)}<div class="legend">{legend}</div>'


def _step_html(
    t: Trajectory,
    r: int,
    step: Any,
    depth: int,
    shown: set[int],
    calls: dict[Any, Any],
    call_of: dict[Any, Any],
) -> str:
    """One step as a ``<details>`` block, with the LLM call that proposed it (``call_of``: step number ->
    call number, from ``trajectory.json``) the first time that call comes up, and its sub-agent's steps."""
    d, res = step.to_dict(), step.tool_result
    n = call_of.get(step.number) if depth == 0 else None
    rows = [("tool", escape(step.tool_call.tool)), ("call id", escape(step.tool_call.id or "—"))]
    if step.usage:
        rows.append(("tokens", f"{step.usage.input_tokens} in + {step.usage.output_tokens} out"))
    rows += [("cost", _cost(step.cost_usd, "—")), ("LLM", _ms(step.llm_ms)), ("tool", _ms(step.tool_ms))]
    rows += [(k, escape(v)) for k, v in (("error kind", res.error_kind), ("span", step.span_id)) if v]
    parts = [
        f'<details class="step{" failed" if res.error is not None else ""}"'
        + (f' id="r{r}-step-{step.number}"' if depth == 0 else "")
        + f'><summary>{escape(step.pretty(110))}</summary><div class="body"><div class="kv">'
        + "".join(f"<span>{k}</span><div>{v}</div>" for k, v in rows)
        + "</div><b>arguments</b>"
        + _pre(d["tool_call"]["args"]),
        *(("<b>error</b>", _pre(res.error)) if res.error is not None else ("<b>result</b>", _pre(d["tool_result"]["data"]))),
    ]  # fmt: skip
    if step.tool_call.reasoning:
        parts += ["<b>reasoning</b>", _pre(step.tool_call.reasoning)]
    if isinstance(n, int) and n not in shown and n in calls:
        shown.add(n)
        parts.append(_call_html(t, r, calls[n]))
    if step.children:
        kids = "".join(_step_html(t, r, c, depth + 1, shown, calls, call_of) for c in step.children)
        parts.append(f'<div class="children"><b>sub-agent steps</b>{kids}</div>')
    return "".join(parts) + "</div></details>"


def _call_html(t: Trajectory, r: int, c: dict[str, Any]) -> str:
    n, usage = c.get("number"), c.get("usage") or {}
    head = f"LLM call {n} · {c.get('model') or '?'} · {_ms(float(c.get('duration_ms') or 0))}"
    head += f" · {usage.get('input_tokens', 0)} in + {usage.get('output_tokens', 0)} out" if usage else ""
    head += f" · ✗ {c['error']}" if c.get("error") else ""
    prompt = t.text(c["prompt_file"]) if c.get("prompt_file") else None
    response = t.text(c["response_file"]) if c.get("response_file") else None
    after, earlier = c.get("prompt_after"), ""
    if prompt is not None and isinstance(after, int):  # what this call added, after a link to the rest:
        prompt = prompt.removeprefix(PROMPT_AFTER.format(after) + "\n\n")  # the page stays linear in steps
        earlier = f'<p class=meta>the prompt of <a href="#r{r}-call-{after}">LLM call {after}</a>, then:</p>'
    return (
        f'<details class="call" id="r{r}-call-{n}"><summary>{escape(head)}</summary><div class="body"><b>prompt</b>'
        + (
            earlier + _pre(prompt)
            if prompt is not None
            else "<p class=meta>not recorded (content capture was off)</p>"
        )
        + "<b>response</b>"
        + (_pre(response) if response is not None else "<p class=meta>not recorded</p>")
        + "</div></details>"
    )


def _task_html(task: Any) -> str:
    task = task.get("goal", task) if isinstance(task, dict) and len(task) == 1 else task
    text = task if isinstance(task, str) else json.dumps(task, ensure_ascii=False)
    return "" if task is None else f'<div class="task">{escape(text)}</div>'


def _run_html(t: Trajectory, r: int) -> str:
    stop, u = str(t.stop_reason or "unfinished"), t.usage
    totals = [
        ("steps", len(t.steps)), ("LLM calls", t.llm_calls), ("input tokens", u.input_tokens),
        ("output tokens", u.output_tokens), ("cost", _cost(t.cost_usd, "—")), ("duration", _ms(t.duration_ms)),
        ("LLM time", _ms(_llm_ms(t))),
        ("tool time", _ms(sum(s.tool_ms for s in t.steps))),
    ]  # fmt: skip
    out = [
        f'<section class="run" id="run-{r}"><h1>{escape(t.agent)} <span class="badge{"" if stop == "done" else " bad"}">{escape(stop)}</span></h1>'
        f'<div class="meta">{escape(t.name)} · run {escape(t.run_id)} · models {escape(", ".join(t.models) or "—")}'
        + (f" · trace {escape(str(t.trace_id))}" if t.trace_id else "") + "</div>",
        _task_html(t.task),
        '<div class="totals">' + "".join(f"<div><b>{v}</b><span>{k}</span></div>" for k, v in totals) + "</div>",
        f'<div class="meta">error: {escape(str(t.error))}</div>' if t.error else "",
        f"<h2>Waterfall</h2>{_waterfall(t, r)}<h2>Steps</h2>",
    ]  # fmt: skip
    calls: dict[Any, Any] = {c.get("number"): c for c in t.calls if isinstance(c, dict)}
    call_of = {e.get("number"): e.get("llm_call") for e in t.data.get("steps", []) if isinstance(e, dict)}
    shown: set[int] = set()
    out += [_step_html(t, r, s, 0, shown, calls, call_of) for s in t.steps]
    rest = [c for n, c in calls.items() if n not in shown]
    if rest:
        out += ["<h2>LLM calls without a step</h2>", *(_call_html(t, r, c) for c in rest)]
    out.append(_events_html(t.events))
    if t.final_output is not None:
        out += ["<h2>Final output</h2>", _pre(t.final_output)]
    return "".join(out) + "</section>"


def _events_html(events: list[Any]) -> str:
    out = [""] if not events else ['<h2>Events</h2><ul class="events">']
    for e in events:
        a = ", ".join(f"{k}={v}" for k, v in (e.get("attributes") or {}).items() if v not in ("", None))
        at = _ms(float(e.get("at_ms") or 0))
        out.append(f"<li><b>{escape(str(e.get('name')))}</b> at {at}{' — ' + escape(a) if a else ''}</li>")
    return "".join(out) + ("</ul>" if events else "")


def render_html(trajectories: Iterable[Trajectory], title: str = "looplet trajectory") -> str:
    """The whole page as a string."""
    runs = list(trajectories)
    rows = [e for t in runs for e in t.timeline if isinstance(e, dict)]
    body = "".join(_run_html(t, r) for r, t in enumerate(runs))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<style>{_CSS}</style></head><body data-bars="{len(rows)}" '
        f'data-error-bars="{sum(1 for e in rows if e.get("error"))}">{body}<script>{_JS}</script></body></html>\n'
    )


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = ArgumentParser("looplet show", __doc__)
    parser.add_argument("paths", nargs="+", metavar="TRACE_DIR", help="a run folder, a folder of run folders, or an OTLP JSON file")  # fmt: skip
    parser.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page with a waterfall")  # fmt: skip
    parser.add_argument("--width", type=int, default=None, help="line width (default: the terminal's)")
    args = parser.parse_args(argv)
    width = args.width or max(80, min(160, shutil.get_terminal_size((110, 24)).columns))
    try:
        if args.html:  # before anything is printed: an output that cannot be written stops the command
            check_output_file(args.html, "--html")
        runs = load_any(args.paths)
        print("\n\n".join(format_run(t, width) for t in runs), file=out)
        if args.html:
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
