"""Draw each Grafana dashboard's panels as a PNG from a real Prometheus, for docs/dashboards.md.

Grafana cannot run on the machine that builds the docs, so this is not a Grafana screenshot. It starts the
same stack as tests/integration/test_prometheus_live.py (the demo agent with ``--stream`` serving /metrics,
and a real ``prometheus`` scraping it every second), lets it run, then sends every Prometheus query of every
dashboard to Prometheus (``query_range`` for graphs, instant queries for stats and tables) and lays the
answers out with matplotlib on the dashboards' own grid. Two kinds of panel have no Prometheus behind them:

* the Loki log panel shows the demo's own JSON log lines that the panel's LogQL filter keeps;
* the Tempo tables show the spans that the panels' TraceQL selects, evaluated here on spans recorded by a
  ``TracingHook`` in this process (one demo run and one run whose LLM call fails).

    .venv/bin/python tools/render_dashboards.py [--seconds 150] [--out docs/img]

Needs the ``prometheus`` binary (Debian package ``prometheus``) and matplotlib (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tests.integration import test_stack_files as files  # noqa: E402
from tests.integration.test_prometheus_live import LiveStack  # noqa: E402

UNIT_W, UNIT_H = 0.62, 0.36  # inches per Grafana grid column / row
COLORS = [
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
]
RATE_INTERVAL = "15s"


# --------------------------------------------------------------------------------------------- values
def fmt(value: float, unit: str | None, decimals: int | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "currencyUSD":
        d = decimals if decimals is not None else (2 if abs(value) >= 1 else 5)
        return f"${value:,.{d}f}"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "ops":
        return f"{value:.2f}/s"
    d = (
        0
        if decimals == 0
        else (decimals if decimals is not None else (0 if float(value).is_integer() else 2))
    )
    return f"{value:,.{d}f}"


def legend(template: str, labels: dict[str, str]) -> str:
    if not template or template == "__auto":
        inner = ", ".join(f"{k}={v}" for k, v in labels.items() if k not in ("job", "instance", "__name__"))
        return inner or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def axis_formatter(unit: str | None) -> Any:
    from matplotlib.ticker import FuncFormatter

    def tick(v: float, _pos: int) -> str:
        if unit == "percentunit":
            return f"{v * 100:.3g}%"
        if unit == "currencyUSD":
            return f"${v:,.2f}" if abs(v) >= 1 else "$" + f"{v:.6f}".rstrip("0").rstrip(".")
        if unit == "s":
            return f"{v * 1000:.3g} ms" if abs(v) < 1 else f"{v:.3g} s"
        if unit == "ops":
            return f"{v:.3g}/s"
        return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.3g}"

    return FuncFormatter(tick)


# --------------------------------------------------------------------------------------------- panels
class Renderer:
    def __init__(self, stack: LiveStack, start: float, end: float, spans: tuple[Any, ...]) -> None:
        self.stack = stack
        self.start = start
        self.end = end
        self.range = f"{int(end - stack.started)}s"
        self.spans = spans

    def expr(
        self, panel: dict[str, Any], target: dict[str, Any], values: dict[str, str] | None = None
    ) -> str:
        interval = panel.get("interval") or "5s"
        return files.substitute(
            target["expr"], rate_interval=RATE_INTERVAL, interval=interval, range_=self.range, values=values
        )

    def panel(
        self,
        fig: Figure,
        panel: dict[str, Any],
        rect: tuple[float, float, float, float],
        values: dict[str, str] | None = None,
    ) -> None:
        ax = fig.add_axes(rect)
        title = panel["title"].replace("$tool", (values or {}).get("tool", ""))
        kind = panel["type"]
        draw = {
            "stat": self.stat,
            "timeseries": self.timeseries,
            "heatmap": self.heatmap,
            "table": self.table,
            "logs": self.logs,
        }[kind]
        ax.set_title(title, fontsize=8, loc="left", fontweight="bold", color="#222")
        try:
            draw(ax, panel, values)
        except Exception as exc:
            ax.text(
                0.5,
                0.5,
                f"query failed: {exc}",
                ha="center",
                va="center",
                fontsize=7,
                color="#c00",
                transform=ax.transAxes,
                wrap=True,
            )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def stat(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        d = panel["fieldConfig"]["defaults"]
        result = self.stack.query(self.expr(panel, panel["targets"][0], values))
        value = float(result[0]["value"][1]) if result else float("nan")
        steps = d.get("thresholds", {}).get("steps", [])
        color = "#37872d"
        for step in steps:
            if step["value"] is None or (math.isfinite(value) and value >= step["value"]):
                color = {"green": "#37872d", "orange": "#e07b00", "red": "#c4162a"}.get(step["color"], color)
        text = fmt(value, d.get("unit"), d.get("decimals")) if result else "No data"
        ax.text(
            0.5,
            0.42,
            text,
            ha="center",
            va="center",
            fontsize=17,
            fontweight="bold",
            color=color,
            transform=ax.transAxes,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)

    def timeseries(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        custom = panel["fieldConfig"]["defaults"].get("custom", {})
        unit = panel["fieldConfig"]["defaults"].get("unit")
        stacked = custom.get("stacking", {}).get("mode") == "normal"
        series = []
        for target in panel["targets"]:
            expr = self.expr(panel, target, values)
            for r in self.stack.query_range(expr, self.start, self.end, 2):
                xs = [float(t) - self.end for t, _ in r["values"]]
                ys = [float(v) for _, v in r["values"]]
                series.append((legend(target.get("legendFormat"), r["metric"]), xs, ys))
        if not series:
            ax.text(
                0.5,
                0.5,
                "No data",
                ha="center",
                va="center",
                fontsize=9,
                color="#888",
                transform=ax.transAxes,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            return
        base = None
        for i, (name, xs, ys) in enumerate(series):
            color = COLORS[i % len(COLORS)]
            if stacked:
                lower = base if base is not None and len(base) == len(ys) else [0.0] * len(ys)
                upper = [a + b for a, b in zip(lower, ys, strict=False)]
                ax.fill_between(xs, lower, upper, color=color, alpha=0.35, linewidth=0)
                ax.plot(xs, upper, color=color, linewidth=1.2, label=name)
                base = upper
            else:
                ax.plot(xs, ys, color=color, linewidth=1.4, label=name)
        ax.set_xlabel("seconds before the end of the run", fontsize=6, color="#555")
        if any(t.get("exemplar") for t in panel["targets"]):
            self.exemplars(ax, panel, values)
        ax.yaxis.set_major_formatter(axis_formatter(unit))
        ax.tick_params(labelsize=6)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=5.5, loc="upper left", ncol=2 if len(series) > 4 else 1, frameon=False)

    def exemplars(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        metric = re.search(r"(\w+_bucket)", panel["targets"][0]["expr"])
        if not metric:
            return
        data = self.stack.api("query_exemplars", query=metric.group(1), start=self.start, end=self.end)
        points = [(float(e["timestamp"]) - self.end, float(e["value"])) for s in data for e in s["exemplars"]]
        if points:
            xs, ys = zip(*points[-200:], strict=False)
            ax.scatter(xs, ys, s=4, color="#b877d9", alpha=0.6, label="exemplars (trace links)", zorder=3)

    def heatmap(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        import numpy as np

        result = self.stack.query_range(
            self.expr(panel, panel["targets"][0], values), self.start, self.end, 4
        )
        rows = sorted(
            ((float(r["metric"]["le"]), [float(v) for _, v in r["values"]]) for r in result),
            key=lambda x: x[0],
        )
        if not rows:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
            return
        n = min(len(v) for _, v in rows)
        cum = np.array([v[:n] for _, v in rows])
        counts = np.diff(np.vstack([np.zeros(n), cum]), axis=0).clip(min=0)  # per-bucket rate
        keep = counts.sum(axis=1) > 0
        counts, les = counts[keep], [le for (le, _), k in zip(rows, keep, strict=False) if k]
        ax.imshow(counts, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
        ax.set_yticks(range(len(les)))
        ax.set_yticklabels(["+Inf" if math.isinf(le) else fmt(le, "s") for le in les], fontsize=5.5)
        ax.set_xticks([])
        ax.set_xlabel("time (upper bucket bounds on the left)", fontsize=6, color="#555")

    def table(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        ax.axis("off")
        if panel["datasource"]["type"] == "tempo":
            return self.tempo_table(ax, panel, values)
        rename = next(
            (t["options"]["renameByName"] for t in panel.get("transformations", []) if t["id"] == "organize"),
            {},
        )
        columns: list[str] = []
        rows: dict[str, dict[str, str]] = {}
        units = {
            o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
            for o in panel["fieldConfig"].get("overrides", [])
        }
        for target in panel["targets"]:
            col = rename.get(f"Value #{target['refId']}", target["refId"])
            columns.append(col)
            for r in self.stack.query(self.expr(panel, target, values)):
                key = r["metric"].get("tool", "")
                props = units.get(col, {})
                rows.setdefault(key, {})[col] = fmt(
                    float(r["value"][1]), props.get("unit"), props.get("decimals")
                )
        cells = [[k, *[rows[k].get(c, "") for c in columns]] for k in sorted(rows)]
        if cells:
            tab = ax.table(cellText=cells, colLabels=["tool", *columns], loc="upper center", cellLoc="left")
            tab.auto_set_font_size(False)
            tab.set_fontsize(7)
            tab.scale(1, 1.2)

    def tempo_table(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        query = files.substitute(panel["targets"][0]["query"], rate_interval="", interval="", range_="")
        match = files.traceql_matcher(query)
        selected = re.findall(r"span\.([\w.]+)", query.split("| select", 1)[1]) if "| select" in query else []
        found = sorted((s for s in self.spans if match(s)), key=lambda s: s.start_time - s.end_time)
        cells = [
            [
                s.name,
                f"{(s.end_time - s.start_time) / 1e6:.1f} ms",
                *[str(s.attributes.get(k, ""))[:28] for k in selected],
            ]
            for s in found[:8]
        ]
        if not cells:
            ax.text(0.5, 0.5, "No spans", ha="center", va="center", transform=ax.transAxes)
            return
        tab = ax.table(
            cellText=cells,
            colLabels=["span", "duration", *[k.split(".")[-1] for k in selected]],
            loc="upper center",
            cellLoc="left",
        )
        tab.auto_set_font_size(False)
        tab.set_fontsize(6.5)
        tab.scale(1, 1.15)

    def logs(self, ax: Axes, panel: dict[str, Any], values: dict[str, str] | None) -> None:
        ax.axis("off")
        lines = []
        for raw in self.stack.log_file.read_text().splitlines():
            rec = json.loads(raw)
            if rec.get("agent") == "demo-agent" and (
                rec.get("level") in ("error", "warning") or rec.get("error")
            ):
                lines.append(
                    f"{rec.get('timestamp', '')[11:23]}  {rec.get('level', ''):7} {rec.get('event', ''):10} "
                    f"tool={rec.get('tool', '')} error_kind={rec.get('error_kind', '')} "
                    f"error={str(rec.get('error', ''))[:60]}  trace_id={rec.get('trace_id', '')}"
                )
        for i, line in enumerate(reversed(lines[-9:])):
            ax.text(
                0.0,
                0.95 - i * 0.105,
                line,
                fontsize=6.2,
                family="monospace",
                transform=ax.transAxes,
                color="#b35900" if " warning " in line else "#c4162a",
            )


def render(board: dict[str, Any], renderer: Renderer, out: Path, note: str) -> None:
    panels = list(files.all_panels(board))
    expanded: list[tuple[dict[str, Any], dict[str, int], dict[str, str] | None]] = []
    for p in panels:
        if p.get("repeat") == "tool":  # Grafana repeats it per selected tool, left to right
            tools = sorted(renderer.stack.api("label/tool/values", **{"match[]": "looplet_steps_total"}))
            for i, tool in enumerate(t for t in tools if t != "done"):
                pos = dict(p["gridPos"])
                pos["x"] = (i % p.get("maxPerRow", 3)) * pos["w"]
                pos["y"] += (i // p.get("maxPerRow", 3)) * pos["h"]
                expanded.append((p, pos, {"tool": re.escape(tool)}))
        else:
            expanded.append((p, p["gridPos"], None))
    height_units = max(pos["y"] + pos["h"] for _, pos, _ in expanded)
    top_in = 0.7
    fig = plt.figure(figsize=(24 * UNIT_W, height_units * UNIT_H + top_in))
    fig.patch.set_facecolor("#f4f5f5")
    H = height_units * UNIT_H + top_in
    fig.text(0.01, 1 - 0.22 / H, board["title"], fontsize=13, fontweight="bold", va="top")
    fig.text(0.01, 1 - 0.40 / H, "\n".join(textwrap.wrap(note, 250)), fontsize=6.5, color="#555", va="top")
    for p, pos, values in expanded:
        x0 = pos["x"] / 24
        y_top = (pos["y"] * UNIT_H + top_in) / H
        h = pos["h"] * UNIT_H / H
        if p["type"] == "row":
            fig.text(
                x0 + 0.005, 1 - y_top - h * 0.6, p["title"], fontsize=9.5, fontweight="bold", color="#333"
            )
            continue
        graph = p["type"] == "timeseries"
        pad_x, pad_top, pad_bottom = (0.04 if graph else 0.015), 0.30 / H, (0.42 if graph else 0.12) / H
        rect = (
            x0 + pad_x,
            1 - y_top - h + pad_bottom,
            pos["w"] / 24 - pad_x - 0.006,
            h - pad_top - pad_bottom,
        )
        renderer.panel(fig, p, rect, values)
    fig.savefig(out, dpi=110, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150, help="how long the demo runs before drawing")
    parser.add_argument("--latency", type=float, default=0.15, help="the demo's simulated LLM latency")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    spans = files.traced_runs()
    with tempfile.TemporaryDirectory() as tmp, LiveStack(Path(tmp), latency=args.latency) as stack:
        stack.wait_for_scrapes(5)
        time.sleep(max(0.0, args.seconds - (time.time() - stack.started)))
        end = time.time()
        renderer = Renderer(stack, stack.started + 20, end, spans)
        note = (
            f"Rendered with matplotlib from a real Prometheus {stack.scrape_s}s-scrape of `python -m looplet demo "
            f"--stream --latency {args.latency}` ({int(end - stack.started)} s of data) - not a Grafana "
            f"screenshot. Template variables: agent=demo-agent, model=gpt-4o-mini."
        )
        for path in files.dashboard_files():
            out = args.out / f"{path.stem}.png"
            board = files.load_dashboard(path)
            kinds = {p.get("datasource", {}).get("type") for p in files.all_panels(board)}
            extra = ""
            if "loki" in kinds:
                extra += " Log panel: the demo's JSON log lines that its LogQL filter keeps (no Loki here)."
            if "tempo" in kinds:
                extra += (
                    " Tempo tables: their TraceQL evaluated on spans a TracingHook recorded in this process"
                    " (one demo run, one run whose LLM call fails; no Tempo here)."
                )
            render(board, renderer, out, note + extra)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
