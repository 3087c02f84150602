"""``looplet show --html``: one self-contained HTML file per set of runs (inline CSS and JS, no network).

Each run gets a header with its totals, a waterfall of its LLM and tool calls on a time axis (drawn by the
inline script from the JSON embedded in the page; failed calls in red with a ✗), and the details of every
step (arguments, result, and the prompt and response of the LLM call that proposed it) as ``<details>``
blocks, which work without the script too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any

from looplet.provenance.format import Trajectory

__all__ = ["render_html"]

_CSS = """
:root{--llm:#3b6fd8;--tool:#2e9e6a;--err:#d23c3c;--fg:#1d2330;--mute:#6b7385;--line:#e3e6ee;--bg:#fafbfd}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:24px 32px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.run{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:0 0 28px}
.meta{color:var(--mute);font-size:13px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e7f5ee;color:#1f7a50}
.badge.bad{background:#fbe9e9;color:#b12f2f}
.totals{display:flex;flex-wrap:wrap;gap:8px 26px;margin:12px 0 4px}
.totals div{min-width:90px}.totals b{display:block;font-size:17px}.totals span{color:var(--mute);font-size:12px}
.task{margin:10px 0;padding:8px 12px;background:#f3f5f9;border-radius:6px;white-space:pre-wrap}
.wf{position:relative;margin-top:6px}
.axis{position:relative;height:20px;margin-left:260px;border-bottom:1px solid var(--line);font-size:11px;color:var(--mute)}
.tick{position:absolute;top:0;transform:translateX(-50%);white-space:nowrap}
.row{display:flex;align-items:center;height:24px;cursor:pointer;border-radius:4px}
.row:hover{background:#f0f3f9}
.label{width:260px;flex:none;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padding-right:10px;font-size:12.5px}
.label .n{color:var(--mute)}
.track{position:relative;flex:1;height:100%}
.bar{position:absolute;top:5px;height:14px;border-radius:3px;min-width:2px}
.bar.llm{background:var(--llm)}.bar.tool{background:var(--tool)}
.bar.error{background:var(--err)}
.dur{position:absolute;top:4px;font-size:11px;color:var(--mute);white-space:nowrap;padding-left:4px}
.legend{font-size:12px;color:var(--mute);margin:6px 0 0 260px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 12px;vertical-align:-1px}
details.step,details.call{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
details.step>summary,details.call>summary{padding:6px 10px;cursor:pointer;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
details.step.failed>summary{color:#b12f2f}
details[open]>summary{border-bottom:1px solid var(--line)}
.body{padding:8px 12px}
.kv{display:grid;grid-template-columns:110px 1fr;gap:2px 12px;font-size:13px;margin-bottom:6px}
.kv span{color:var(--mute)}
pre{background:#f6f7fa;border:1px solid var(--line);border-radius:4px;padding:8px;margin:4px 0 8px;white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto;font-size:12px}
.children{margin-left:22px}
.events li{font-size:13px}
table.sum{border-collapse:collapse;font-size:13px}table.sum td{padding:2px 14px 2px 0}
"""

_JS = """
(function(){
  var data = JSON.parse(document.getElementById('looplet-data').textContent);
  var drawn = 0, errors = 0;
  function fmt(ms){ return ms >= 1000 ? (ms/1000).toFixed(2)+' s' : (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1))+' ms'; }
  data.runs.forEach(function(run, r){
    var root = document.getElementById('wf-' + r);
    if (!root) return;
    var end = run.duration_ms || 0;
    run.timeline.forEach(function(e){ end = Math.max(end, e.start_ms + e.duration_ms); });
    if (end <= 0) end = 1;
    var axis = document.createElement('div'); axis.className = 'axis';
    for (var i = 0; i <= 4; i++) {
      var t = document.createElement('span'); t.className = 'tick';
      t.style.left = (i * 25) + '%'; t.textContent = fmt(end * i / 4);
      if (i === 0) t.style.transform = 'none'; else if (i === 4) t.style.transform = 'translateX(-100%)';
      axis.appendChild(t);
    }
    root.appendChild(axis);
    run.timeline.forEach(function(e){
      var row = document.createElement('div'); row.className = 'row';
      var label = document.createElement('div'); label.className = 'label';
      var what = e.kind === 'llm' ? ('LLM call ' + e.call) : ('#' + (e.step == null ? '?' : e.step));
      label.innerHTML = '<span class="n"></span> ';
      label.firstChild.textContent = what;
      label.appendChild(document.createTextNode(e.name + (e.error ? '  \\u2717' : '')));
      label.title = e.name + (e.error ? ' \\u2014 ' + e.error : '');
      var track = document.createElement('div'); track.className = 'track';
      var bar = document.createElement('div');
      bar.className = 'bar ' + e.kind + (e.error ? ' error' : '');
      var left = 100 * e.start_ms / end, width = 100 * e.duration_ms / end;
      bar.style.left = left + '%'; bar.style.width = width + '%';
      bar.title = e.name + ': ' + fmt(e.duration_ms) + (e.error ? ' \\u2014 ' + e.error : '');
      bar.dataset.kind = e.kind;
      var dur = document.createElement('span'); dur.className = 'dur';
      if (left + width > 85) { dur.style.right = (100 - left) + '%'; dur.style.paddingRight = '4px'; }
      else { dur.style.left = (left + width) + '%'; }
      dur.textContent = fmt(e.duration_ms);
      track.appendChild(bar); track.appendChild(dur);
      row.appendChild(label); row.appendChild(track);
      var target = e.kind === 'llm' ? ('r' + r + '-call-' + e.call) : ('r' + r + '-step-' + e.step);
      row.addEventListener('click', function(){
        var d = document.getElementById(target);
        if (d) { d.open = true; d.scrollIntoView({behavior: 'smooth', block: 'center'}); }
      });
      root.appendChild(row);
      drawn++; if (e.error) errors++;
    });
    var legend = document.createElement('div'); legend.className = 'legend';
    legend.innerHTML = '<i style="background:var(--llm)"></i>LLM call<i style="background:var(--tool)"></i>tool call' +
      '<i style="background:var(--err)"></i>failed';
    root.appendChild(legend);
  });
  if (location.hash) {  // a link to #r0-step-3 opens that step
    var target = document.getElementById(location.hash.slice(1));
    if (target && target.tagName === 'DETAILS') target.open = true;
  }
  document.body.dataset.bars = drawn;
  document.body.dataset.errorBars = errors;
  document.body.dataset.rendered = 'yes';
})();
"""


def _fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _pre(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, indent=2)
    return f"<pre>{escape(text)}</pre>"


def _money(cost: Any) -> str:
    return "—" if cost is None else f"${cost:.6f}"


def _step_html(
    t: Trajectory, r: int, step: Any, depth: int, shown_calls: set[int], calls: dict[int, Any]
) -> str:
    d = step.to_dict()
    raw = _raw_step(t, step.number) if depth == 0 else {}
    n = raw.get("llm_call")
    res = step.tool_result
    ident = f' id="r{r}-step-{step.number}"' if depth == 0 else ""
    cls = "step failed" if res.error is not None else "step"
    rows = [("tool", escape(step.tool_call.tool)), ("call id", escape(step.tool_call.id or "—"))]
    if step.usage:
        rows.append(("tokens", f"{step.usage.input_tokens} in + {step.usage.output_tokens} out"))
    rows += [("cost", _money(step.cost_usd)), ("LLM", _fmt_ms(step.llm_ms)), ("tool", _fmt_ms(step.tool_ms))]
    if res.error_kind:
        rows.append(("error kind", escape(res.error_kind)))
    if step.span_id:
        rows.append(("span", escape(step.span_id)))
    parts = [
        f'<details class="{cls}"{ident}><summary>{escape(step.pretty(110))}</summary><div class="body">',
        '<div class="kv">' + "".join(f"<span>{k}</span><div>{v}</div>" for k, v in rows) + "</div>",
        "<b>arguments</b>",
        _pre(d["tool_call"]["args"]),
    ]
    if res.error is not None:
        parts += ["<b>error</b>", _pre(res.error)]
    else:
        parts += ["<b>result</b>", _pre(d["tool_result"]["data"])]
    if step.tool_call.reasoning:
        parts += ["<b>reasoning</b>", _pre(step.tool_call.reasoning)]
    if isinstance(n, int) and n not in shown_calls and n in calls:
        shown_calls.add(n)
        parts.append(_call_html(t, r, calls[n]))
    if step.children:
        parts.append('<div class="children"><b>sub-agent steps</b>')
        parts += [_step_html(t, r, c, depth + 1, shown_calls, calls) for c in step.children]
        parts.append("</div>")
    parts.append("</div></details>")
    return "".join(parts)


def _raw_step(t: Trajectory, number: int) -> dict[str, Any]:
    for e in t.data.get("steps", []):
        if isinstance(e, dict) and e.get("number") == number:
            return e
    return {}


def _call_html(t: Trajectory, r: int, c: dict[str, Any]) -> str:
    n = c.get("number")
    usage = c.get("usage") or {}
    head = (
        f"LLM call {n} · {c.get('model') or '?'} · {_fmt_ms(float(c.get('duration_ms') or 0))}"
        + (f" · {usage.get('input_tokens', 0)} in + {usage.get('output_tokens', 0)} out" if usage else "")
        + (" · ✗ " + str(c.get("error")) if c.get("error") else "")
    )
    prompt = t.prompt(int(n)) if c.get("prompt_file") and isinstance(n, int) else None
    response = t.text(c["response_file"]) if c.get("response_file") else None
    body = [
        "<b>prompt</b>",
        _pre(prompt) if prompt is not None else "<p class=meta>not recorded (content capture was off)</p>",
        "<b>response</b>",
        _pre(response) if response is not None else "<p class=meta>not recorded</p>",
    ]
    return (
        f'<details class="call" id="r{r}-call-{n}"><summary>{escape(head)}</summary><div class="body">'
        + "".join(body)
        + "</div></details>"
    )


def _run_html(t: Trajectory, r: int) -> str:
    stop = str(t.stop_reason or "unfinished")
    badge = "badge" if stop == "done" else "badge bad"
    u = t.usage
    totals = [
        ("steps", str(len(t.steps))),
        ("LLM calls", str(t.llm_calls)),
        ("input tokens", str(u.input_tokens)),
        ("output tokens", str(u.output_tokens)),
        ("cost", _money(t.cost_usd)),
        ("duration", _fmt_ms(t.duration_ms)),
        ("LLM time", _fmt_ms(sum(float(c.get("duration_ms") or 0) for c in t.calls))),
        ("tool time", _fmt_ms(sum(s.tool_ms for s in t.steps))),
    ]
    out = [
        f'<section class="run" id="run-{r}"><h1>{escape(t.agent)} <span class="{badge}">{escape(stop)}</span></h1>',
        f'<div class="meta">{escape(t.name)} · run {escape(t.run_id)} · models {escape(", ".join(t.models) or "—")}'
        + (f" · trace {escape(str(t.trace_id))}" if t.trace_id else "")
        + "</div>",
        *_task_html(t.task),
    ]
    out.append(
        '<div class="totals">'
        + "".join(f"<div><b>{v}</b><span>{k}</span></div>" for k, v in totals)
        + "</div>"
    )
    if t.error:
        out.append(f'<div class="meta">error: {escape(str(t.error))}</div>')
    out += [
        "<h2>Waterfall</h2>",
        f'<div class="wf" id="wf-{r}"><noscript>The waterfall needs JavaScript; the '
        "steps below do not.</noscript></div>",
        "<h2>Steps</h2>",
    ]
    calls: dict[Any, Any] = {c.get("number"): c for c in t.calls if isinstance(c, dict)}
    shown: set[int] = set()
    out += [_step_html(t, r, s, 0, shown, calls) for s in t.steps]
    rest = [c for n, c in calls.items() if n not in shown]
    if rest:
        out.append("<h2>LLM calls without a step</h2>")
        out += [_call_html(t, r, c) for c in rest]
    out += _events_html(t.events)
    if t.final_output is not None:
        out += ["<h2>Final output</h2>", _pre(t.final_output)]
    out.append("</section>")
    return "".join(out)


def _task_html(task: Any) -> list[str]:
    if task is None:
        return []
    task = task.get("goal", task) if isinstance(task, dict) and len(task) == 1 else task
    return [
        f'<div class="task">{escape(task if isinstance(task, str) else json.dumps(task, ensure_ascii=False))}</div>'
    ]


def _events_html(events: list[Any]) -> list[str]:
    if not events:
        return []
    out = ['<h2>Events</h2><ul class="events">']
    for e in events:
        attrs = ", ".join(f"{k}={v}" for k, v in (e.get("attributes") or {}).items() if v not in ("", None))
        out.append(
            f"<li><b>{escape(str(e.get('name')))}</b> at {_fmt_ms(float(e.get('at_ms') or 0))}"
            f"{' — ' + escape(attrs) if attrs else ''}</li>"
        )
    return [*out, "</ul>"]


def render_html(trajectories: Iterable[Trajectory], title: str = "looplet trajectory") -> str:
    """The whole page as a string."""
    runs = list(trajectories)
    data = {
        "runs": [
            {
                "name": t.name,
                "duration_ms": t.duration_ms,
                "timeline": [
                    {
                        "kind": e.get("kind"),
                        "name": e.get("name"),
                        "call": e.get("call"),
                        "step": e.get("step"),
                        "start_ms": float(e.get("start_ms") or 0),
                        "duration_ms": float(e.get("duration_ms") or 0),
                        "error": e.get("error"),
                    }
                    for e in t.timeline
                    if isinstance(e, dict)
                ],
            }
            for t in runs
        ]
    }
    blob = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")  # nothing in it can end the script
    body = "".join(_run_html(t, r) for r, t in enumerate(runs))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}"
        f'<script type="application/json" id="looplet-data">{blob}</script><script>{_JS}</script>'
        "</body></html>\n"
    )
