"""LLM faults on the real wire: the real ``openai`` and ``anthropic`` clients against the fake server.

Whatever the server does (rate limits, 5xx, resets, hangs, cut-off bodies, empty answers, tool calls the
registry cannot run, the same bad arguments forever) the run ends with the right stop reason and nothing is
lost: every step is recorded once, in order, and every tool call in the transcript has exactly one answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from looplet import DefaultState, LoopConfig, tool, tools_from
from looplet.backends.anthropic import AnthropicBackend
from looplet.backends.openai import OpenAIBackend
from looplet.control import StagnationHook
from looplet.tools import INVALID_JSON_KEY
from tests.fakeserver import LLMRecorder, empty, error, hang, reset, text, tool_call, tool_calls, truncated
from tests.unit._harness import MODES, run

PROVIDERS = ["openai", "anthropic"]


@tool(description="Search the docs.")
def search(query: str) -> dict:
    return {"results": [f"about {query}"]}


TOOLS = tools_from([search])


def backend(provider: str, server: Any, timeout: float = 5.0) -> Any:
    if provider == "openai":
        return OpenAIBackend(model="gpt-4o-mini", base_url=server.openai_url, api_key="k", timeout=timeout)
    return AnthropicBackend(
        model="claude-haiku-4-5", base_url=server.anthropic_url, api_key="k", timeout=timeout
    )


def go(mode: str, llm: Any, *, hooks: Any = (), max_steps: int = 10, **config: Any) -> tuple[list, Any, Any]:
    config.setdefault("llm_backoff_s", 0.01)
    state = DefaultState(max_steps=max_steps)
    try:
        steps, result = run(
            mode,
            llm=llm,
            task={"goal": "What is looplet?"},
            tools=TOOLS,
            hooks=list(hooks),
            state=state,
            config=LoopConfig(max_steps=max_steps, **config),
        )
    finally:
        llm.close()
    return steps, result, state


def assert_nothing_lost(steps: list, result: Any, state: Any) -> None:
    """Every step yielded is recorded once and in order; every tool call in the transcript has one answer,
    and the answers are exactly the steps' calls (plus calls the run never got to, marked as such)."""
    assert len(result.steps) == len(steps) == len(state.steps)
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    assert (
        [s.tool_call.id for s in state.steps]
        == [s.tool_call.id for s in result.steps]
        == [s.tool_call.id for s in steps]
    )
    asked: list[str] = []
    answered: list[str] = []
    for m in state.transcript:
        if m["role"] == "assistant":
            asked += [c["id"] for c in m.get("tool_calls") or ()]
            json.dumps(m)  # the transcript stays JSON (it is checkpointed and exported)
        elif m["role"] == "tool":
            assert m["tool_call_id"] in asked, f"a tool answer for a call never made: {m}"
            answered.append(m["tool_call_id"])
    assert sorted(asked) == sorted(answered), "a tool call without exactly one answer"
    step_ids = [s.tool_call.id for s in steps]
    assert answered[: len(step_ids)] == step_ids  # the steps' answers come first, in order
    for m in state.transcript:
        if m["role"] == "tool" and m["tool_call_id"] not in step_ids:
            assert m["content"].startswith("Not run"), "a call that never ran must say so"


# -- transient faults: retried, then the run goes on -----------------------------------------------------

TRANSIENT = {
    "429_retry_after": (lambda: error(429, "slow down", retry_after=0.3), "http_429"),
    "500": (lambda: error(500, "boom"), "http_500"),
    "503": (lambda: error(503, "overloaded"), "http_503"),
    "connection_reset": (reset, "connection"),
    "timeout": (lambda: hang(3), "timeout"),
    "truncated_json": (lambda: truncated(40), "bad_json"),
    "short_body": (lambda: truncated(40, "short"), "connection"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_a_transient_fault_mid_run_is_retried_and_nothing_is_lost(fault, mode, provider, fake_llm_server):
    make, kind = TRANSIENT[fault]
    fake_llm_server.script(
        tool_call("search", {"query": "a"}),
        make(),
        tool_call("search", {"query": "b"}),
        tool_call("done", {"answer": "an agent loop"}),
    )
    rec = LLMRecorder()
    llm = backend(provider, fake_llm_server, timeout=0.5 if fault == "timeout" else 5.0)
    steps, result, state = go(mode, llm, hooks=[rec])

    assert result.stop_reason == "done" and result.final_output == "an agent loop", result.error
    assert [s.tool_call.tool for s in steps] == ["search", "search", "done"]
    assert [s.tool_result.data for s in steps[:2]] == [{"results": ["about a"]}, {"results": ["about b"]}]
    [(attempt, err, delay)] = rec.retries
    assert attempt == 1 and err.retryable and err.kind == kind, err
    assert result.llm_calls == 3 and len(fake_llm_server.requests) == 4 and fake_llm_server.pending == 0
    assert_nothing_lost(steps, result, state)
    if fault == "429_retry_after":  # the server's Retry-After is honoured, not the 10 ms backoff
        gap = fake_llm_server.requests[2].at - fake_llm_server.requests[1].at
        assert delay == 0.3 and gap >= 0.3


# -- persistent faults: the run ends with llm_error and keeps what it had --------------------------------

PERSISTENT = {
    "500": (lambda: error(500, "boom"), "HTTP 500"),
    "429": (lambda: error(429, "slow down", retry_after=0.01), "HTTP 429"),
    "connection_reset": (reset, "connection to"),
    "truncated_json": (lambda: truncated(40), "not valid JSON"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(PERSISTENT))
def test_a_fault_that_does_not_clear_ends_the_run_with_llm_error_and_keeps_its_steps(
    fault, mode, provider, fake_llm_server
):
    make, says = PERSISTENT[fault]
    fake_llm_server.script(tool_call("search", {"query": "a"}), *[make() for _ in range(3)])
    rec = LLMRecorder()
    steps, result, state = go(mode, backend(provider, fake_llm_server), hooks=[rec], llm_retries=2)

    assert result.stop_reason == "llm_error" and says in result.error
    assert [s.tool_call.tool for s in steps] == ["search"] and steps[0].ok
    assert len(rec.retries) == 2 and len(fake_llm_server.requests) == 4  # 1 answer + 1 try + 2 retries
    assert result.llm_calls == 1 and result.usage.input_tokens == 20  # the answer that came is counted once
    assert_nothing_lost(steps, result, state)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_timeout_that_does_not_clear_ends_with_llm_error(mode, provider, fake_llm_server):
    fake_llm_server.script(tool_call("search", {"query": "a"}), hang(3), hang(3))
    steps, result, state = go(mode, backend(provider, fake_llm_server, timeout=0.3), llm_retries=1)
    assert result.stop_reason == "llm_error" and "0.3s" in result.error
    assert len(steps) == 1 and len(fake_llm_server.requests) == 3
    assert_nothing_lost(steps, result, state)


# -- answers the loop cannot use -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_an_empty_answer_every_time_ends_with_llm_error_after_a_bounded_number_of_calls(
    mode, provider, fake_llm_server
):
    fake_llm_server.script(tool_call("search", {"query": "a"}), *[empty() for _ in range(10)])
    steps, result, state = go(mode, backend(provider, fake_llm_server), max_malformed=1)
    assert result.stop_reason == "llm_error"
    if provider == "openai":  # an empty choices list: nothing to feed back, not retried
        assert "empty choices" in result.error and len(fake_llm_server.requests) == 2
    else:  # an empty content list: told once to call a tool, then given up on
        assert "without calling a tool" in result.error and len(fake_llm_server.requests) == 3
    assert [s.tool_call.tool for s in steps] == ["search"]
    assert fake_llm_server.exhausted == 0  # every request the server saw was a valid transcript
    assert_nothing_lost(steps, result, state)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_call_to_an_unknown_tool_is_answered_and_the_run_goes_on(mode, provider, fake_llm_server):
    fake_llm_server.script(
        tool_calls([("delete_everything", {"path": "/"}), ("search", {"query": "a"})]),
        tool_call("done", {"answer": "ok"}),
    )
    steps, result, state = go(mode, backend(provider, fake_llm_server))
    assert result.stop_reason == "done"
    unknown = steps[0]
    assert unknown.tool_result.error_kind == "unknown_tool" and "search" in unknown.tool_result.error
    assert steps[1].ok and len(steps) == 3
    sent = fake_llm_server.bodies()[1]
    assert "delete_everything" in json.dumps(sent)  # the model is shown its bad call and the error
    assert_nothing_lost(steps, result, state)


INVALID = {  # arguments -> the error kind the model is told
    "wrong_argument_name": ({"q": "looplet"}, "missing_argument"),
    "wrong_type": ({"query": ["a", "b"]}, "invalid_argument"),
    "not_json": ('{"query": "unterminated', "invalid_argument"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", list(INVALID))
def test_the_same_invalid_arguments_forever_are_stopped_by_the_stagnation_guard(
    bad, mode, provider, fake_llm_server
):
    args, kind = INVALID[bad]
    fake_llm_server.script(*[tool_call("search", args) for _ in range(30)])
    steps, result, state = go(
        mode, backend(provider, fake_llm_server), hooks=[StagnationHook(n=3)], max_steps=25
    )
    assert result.stop_reason == "hook_stop:stagnation"
    assert len(steps) == 3 and [s.tool_result.error_kind for s in steps] == [kind] * 3
    if bad == "not_json":
        assert steps[0].tool_call.args == {INVALID_JSON_KEY: args}
    assert len(fake_llm_server.requests) == 3  # no call after the stop
    assert_nothing_lost(steps, result, state)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_invalid_arguments_that_change_every_time_are_stopped_by_max_steps(mode, provider, fake_llm_server):
    fake_llm_server.script(*[tool_call("search", {"q": f"attempt {i}"}) for i in range(30)])
    steps, result, state = go(
        mode, backend(provider, fake_llm_server), hooks=[StagnationHook(n=3)], max_steps=6
    )
    assert result.stop_reason == "max_steps" and len(steps) == 6
    assert [s.tool_result.error_kind for s in steps] == ["missing_argument"] * 6
    assert len(fake_llm_server.requests) == 6
    assert_nothing_lost(steps, result, state)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_max_steps_inside_a_multi_call_answer_leaves_no_call_unanswered(mode, provider, fake_llm_server):
    fake_llm_server.script(tool_calls([("search", {"query": str(i)}) for i in range(5)]))
    steps, result, state = go(mode, backend(provider, fake_llm_server), max_steps=3)
    assert result.stop_reason == "max_steps" and len(steps) == 3
    tool_msgs = [m for m in state.transcript if m["role"] == "tool"]
    assert len(tool_msgs) == 5  # 3 results + 2 calls the run never got to, each answered
    assert_nothing_lost(steps, result, state)


@pytest.mark.parametrize("mode", MODES)
def test_every_llm_call_is_in_the_duration_metrics_even_without_a_step(mode, fake_llm_server):
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.metrics import MetricsHook

    registry = CollectorRegistry()
    fake_llm_server.script(text("Let me think."), tool_call("done", {"answer": "ok"}))
    steps, result, state = go(mode, backend("openai", fake_llm_server), hooks=[MetricsHook(registry)])
    assert result.stop_reason == "done" and result.llm_calls == 2

    def count(name: str) -> float:
        return sum(s.value for m in registry.collect() for s in m.samples if s.name == name)

    assert count("looplet_llm_requests_total") == 2
    assert count("gen_ai_client_operation_duration_seconds_count") == 2
    assert count("looplet_llm_duration_seconds_count") == 2
