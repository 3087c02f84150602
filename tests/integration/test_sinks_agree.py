"""Every sink tells the same story: one run with a retried LLM call, a failing tool, a denied call, parallel
calls and a sub-agent, seen through RunResult, the chat spans, Prometheus, the JSON log and the trajectory
folder, gives the same LLM-call count, the same tokens and the same cost."""

from __future__ import annotations

import pytest

from tests.integration._sinks import ATTEMPTS, CHILD_USAGE, FAILED, PARENT_USAGE, Sinks, run_scenario
from tests.unit._harness import MODES

TOKEN_KEYS = ("input_tokens", "output_tokens", "cached_input_tokens")


def same(x: float, y: float) -> bool:
    """Equal cost: the sinks add the same per-call floats, in different orders (the run rolls a
    sub-agent's total up as one number), so only the last bits of a float may differ."""
    return round(x, 12) == round(y, 12)


@pytest.fixture
def sinks(tmp_path):
    s = Sinks(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize("mode", MODES)
def test_every_sink_counts_the_same_calls_tokens_and_cost(mode, sinks):
    steps, result = run_scenario(mode, sinks)
    assert result.stop_reason == "done"
    kinds = {s.tool_call.tool: s.tool_result.error_kind for s in steps}
    assert kinds["explode"] == "tool_exception" and kinds["danger"] == "denied"
    (research,) = [s for s in steps if s.tool_call.tool == "research"]
    assert research.tool_result.error is None and len(research.children) == 2

    # the facts: 7 answers (5 parent, 2 child) and 1 failed attempt
    answered = ATTEMPTS - FAILED
    tokens = {
        "input_tokens": 5 * PARENT_USAGE.input_tokens + 2 * CHILD_USAGE.input_tokens,
        "output_tokens": 5 * PARENT_USAGE.output_tokens + 2 * CHILD_USAGE.output_tokens,
        "cached_input_tokens": 5 * PARENT_USAGE.cached_input_tokens,
    }
    cost = result.cost_usd
    assert cost and cost > 0

    # RunResult: the parent's totals include what the sub-agent spent
    assert {k: getattr(result.usage, k) for k in TOKEN_KEYS} == tokens

    # chat spans: one per attempt; the failed one carries error.type and no tokens
    chats = [s for s in sinks.spans() if s.name.startswith("chat")]
    assert len(chats) == ATTEMPTS
    failed = [c for c in chats if c.attributes.get("error.type")]
    assert len(failed) == FAILED and failed[0].attributes["error.type"] == "http_503"
    span_tokens = {
        "input_tokens": sum(c.attributes.get("gen_ai.usage.input_tokens", 0) for c in chats),
        "output_tokens": sum(c.attributes.get("gen_ai.usage.output_tokens", 0) for c in chats),
        "cached_input_tokens": sum(
            c.attributes.get("gen_ai.usage.cache_read.input_tokens", 0) for c in chats
        ),
    }
    assert span_tokens == tokens
    assert same(sum(c.attributes.get("looplet.cost_usd", 0.0) for c in chats), cost)

    # Prometheus: counters and histogram counts
    assert sinks.sample("looplet_llm_requests_total") == ATTEMPTS
    assert sinks.sample("looplet_llm_requests_total", status="error") == FAILED
    assert sinks.sample("looplet_llm_duration_seconds_count") == ATTEMPTS
    assert sinks.sample("gen_ai_client_operation_duration_seconds_count") == ATTEMPTS
    assert sinks.sample("gen_ai_client_operation_duration_seconds_count", error_type="http_503") == FAILED
    assert sinks.sample("gen_ai_client_token_usage_count", gen_ai_token_type="input") == answered
    assert {
        "input_tokens": sinks.sample("looplet_tokens_total", type="input"),
        "output_tokens": sinks.sample("looplet_tokens_total", type="output"),
        "cached_input_tokens": sinks.sample("looplet_tokens_total", type="cached_input"),
    } == tokens
    assert sinks.sample("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == tokens["input_tokens"]
    assert same(sinks.sample("looplet_cost_usd_total"), cost)
    assert sinks.sample("looplet_runs_total", outcome="done") == 2  # the parent and its sub-agent
    assert sinks.sample("looplet_active_runs") == 0

    # the JSON log: one llm.call line per attempt
    lines = sinks.lines()
    calls = [line for line in lines if line["event"] == "llm.call"]
    assert len(calls) == ATTEMPTS
    assert [c["error_type"] for c in calls if c["outcome"] == "error"] == ["http_503"]
    assert {k: sum(c.get(k, 0) for c in calls) for k in TOKEN_KEYS} == tokens
    assert same(sum(c["cost_usd"] or 0.0 for c in calls), cost)
    (end,) = [line for line in lines if line["event"] == "run.end" and line["agent"] == "parent"]
    assert end["input_tokens"] == tokens["input_tokens"] and same(end["cost_usd"], cost)

    # the trajectory folders: the parent's totals (its own calls and the sub-agent's roll-up)
    folders = sinks.trajectories()
    parent, child = folders["parent"], folders["child"]
    assert {k: parent["usage"][k] for k in TOKEN_KEYS} == tokens
    assert same(parent["cost_usd"], cost)
    assert parent["llm_calls"] + child["llm_calls"] == result.llm_calls + research_calls(research)


def research_calls(step) -> int:
    """LLM calls the sub-agent made: its steps with an LLM call of their own."""
    return sum(1 for c in step.children if c.usage is not None)
