"""The order of the built-in telemetry hooks changes nothing: for every permutation of TracingHook,
MetricsHook, LoggingHook and ProvenanceSink.trajectory_hook(), the spans, the metrics, the log lines (with
the spans they point at) and the trajectory are the same, modulo ids and timings."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.integration._sinks import Sinks, run_scenario
from tests.unit._harness import MODES

ORDERS = list(itertools.permutations(("tracing", "metrics", "logging", "trajectory")))
_ID_ATTRS = {"looplet.run.id", "gen_ai.conversation.id", "gen_ai.tool.call.id", "gen_ai.response.id"}
_TIMED = ("duration_ms", "timestamp", "ttfc_ms", "delay_s")


def span_key(span: Any, by_id: dict[int, Any]) -> str:
    """A name for a span that does not depend on its random id: its name and what it is about."""
    a = span.attributes
    if span.name == "looplet.step":
        agent = span_key(by_id[span.parent.span_id], by_id)
        return f"{agent}/step {a['looplet.step.number']}"
    if span.name.startswith(("chat", "execute_tool")):
        parent = span_key(by_id[span.parent.span_id], by_id) if span.parent else "-"
        extra = (
            a.get("looplet.llm.attempt", "") if span.name.startswith("chat") else a.get("gen_ai.tool.name")
        )
        return f"{parent}/{span.name} {extra}".rstrip()
    return f"{span.name} {a.get('gen_ai.agent.name', '')}"


def spans_view(sinks: Sinks) -> tuple[list[Any], dict[str, str]]:
    spans = sinks.spans()
    by_id = {s.context.span_id: s for s in spans}
    names = {format(s.context.span_id, "016x"): span_key(s, by_id) for s in spans}
    view = sorted(
        (
            span_key(s, by_id),
            s.kind.name,
            s.status.status_code.name,
            sorted((k, str(v)) for k, v in s.attributes.items() if k not in _ID_ATTRS),
            [e.name for e in s.events],
        )
        for s in spans
    )
    return view, names


def lines_view(sinks: Sinks, names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for line in sinks.lines():
        assert "run_id" in line and "trace_id" in line and "span_id" in line, line
        line = {k: ("<t>" if k in _TIMED else v) for k, v in line.items() if k not in ("run_id", "trace_id")}
        line["span_id"] = names.get(line["span_id"], "<not a span of this run>")
        out.append(line)
    return out


def metrics_view(sinks: Sinks) -> list[Any]:
    """Counters, gauges and histogram counts (sums and buckets depend on timing)."""
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for f in sinks.registry.collect()
        for s in f.samples
        if s.name.endswith(("_total", "_count")) or f.type == "gauge"
    )


def trajectory_view(sinks: Sinks) -> dict[str, Any]:
    out = {}
    for agent, t in sinks.trajectories().items():
        out[agent] = {
            "stop_reason": t["stop_reason"],
            "usage": t["usage"],
            "cost_usd": t["cost_usd"],
            "llm_calls": t["llm_calls"],
            "steps": [(s.get("tool"), s.get("error_kind")) for s in t.get("steps", [])],
        }
    return out


def observe(mode: str, tmp_path: Any, order: tuple[str, ...]) -> dict[str, Any]:
    sinks = Sinks(tmp_path / "-".join(order), order)
    try:
        steps, result = run_scenario(mode, sinks)
        spans, names = spans_view(sinks)
        return {
            "stop": result.stop_reason,
            "steps": [(s.tool_call.tool, s.tool_result.error_kind) for s in steps],
            "spans": spans,
            "lines": lines_view(sinks, names),
            "metrics": metrics_view(sinks),
            "trajectory": trajectory_view(sinks),
        }
    finally:
        sinks.close()


@pytest.mark.parametrize("mode", MODES)
def test_every_order_of_the_telemetry_hooks_gives_the_same_output(mode, tmp_path):
    first = observe(mode, tmp_path, ORDERS[0])
    assert first["stop"] == "done" and len(first["spans"]) > 10 and first["lines"]
    # log lines point at the operation they are about
    for line in first["lines"]:
        if line["event"] == "llm.call":
            assert "/chat " in line["span_id"], line
        elif line["event"] == "tool.call":
            assert "/execute_tool " in line["span_id"], line
    for order in ORDERS[1:]:
        other = observe(mode, tmp_path, order)
        for key in first:
            assert other[key] == first[key], (order, key)
