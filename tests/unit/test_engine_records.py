"""Facts once, on the records: every LLM call attempt is an LLMCall carrying its facts, written by the
innermost link of the wrap chain; Steps and the RunResult are derived from those records."""

from __future__ import annotations

import pytest

from looplet import Deny, LLMCall, LLMResponse, MockLLMBackend, ToolCall, ToolResult, Usage, tool, tools_from
from looplet.errors import LLMError
from looplet.loop import LoopConfig
from looplet.telemetry.cost import cost_of
from tests.unit._harness import MODES, run

DONE = '{"tool": "done", "args": {"answer": "42"}}'
USAGE = Usage(100, 20)
MODEL = "gpt-4o-mini"


@tool(description="Echo a word.")
def echo(word: str) -> str:
    return word


class Flaky(MockLLMBackend):
    """Fails its first ``fail`` calls with a retryable 503, then answers from the script."""

    def __init__(self, responses: list[object], fail: int) -> None:
        super().__init__(responses, usage=USAGE, model=MODEL)
        self.fail = fail

    def generate(self, messages, *, tools=None, **options):  # type: ignore[no-untyped-def]
        if self.fail:
            self.fail -= 1
            raise LLMError("server busy", retryable=True, status=503)
        return super().generate(messages, tools=tools, **options)

    async def agenerate(self, messages, *, tools=None, **options):  # type: ignore[no-untyped-def]
        if self.fail:
            self.fail -= 1
            raise LLMError("server busy", retryable=True, status=503)
        return await super().agenerate(messages, tools=tools, **options)


class Records:
    """Keeps every on_llm_call record, and what an around-hook sees right after call_next."""

    def __init__(self) -> None:
        self.calls: list[LLMCall] = []
        self.seen_in_wrap: list[tuple[str, str | None, float | None]] = []

    def on_llm_call(self, state, call):  # type: ignore[no-untyped-def]
        self.calls.append(call)

    def wrap_llm_call(self, call, call_next):  # type: ignore[no-untyped-def]
        try:
            return call_next(call)
        finally:
            self.seen_in_wrap.append((call.outcome, call.error_type, call.cost_usd))

    async def awrap_llm_call(self, call, call_next):  # type: ignore[no-untyped-def]
        try:
            return await call_next(call)
        finally:
            self.seen_in_wrap.append((call.outcome, call.error_type, call.cost_usd))


@pytest.mark.parametrize("mode", MODES)
def test_every_attempt_is_its_own_record_with_its_facts(mode: str) -> None:
    rec = Records()
    llm = Flaky(['{"tool": "echo", "args": {"word": "a"}}', DONE], fail=1)
    config = LoopConfig(llm_retries=2, llm_backoff_s=0.001)
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[rec], config=config
    )

    assert result.stop_reason == "done"
    failed, first, second = rec.calls
    assert len({id(c) for c in rec.calls}) == 3  # each attempt its own object
    assert (failed.attempt, failed.outcome, failed.error_type, failed.response) == (
        1,
        "error",
        "http_503",
        None,
    )
    assert failed.duration_ms >= 0.0 and failed.usage is None and failed.cost_usd is None
    assert (first.attempt, first.outcome, first.step) == (2, "ok", 1)
    assert (second.attempt, second.outcome, second.step) == (1, "ok", 2)
    price = cost_of(MODEL, USAGE)
    for ok in (first, second):
        assert ok.usage == USAGE and ok.cost_usd == pytest.approx(price) and ok.response_model == MODEL
        assert isinstance(ok.response, LLMResponse) and not ok.replayed
    # the around-hook saw the facts right after call_next returned or raised
    assert rec.seen_in_wrap == [
        ("error", "http_503", None),
        ("ok", None, first.cost_usd),
        ("ok", None, second.cost_usd),
    ]
    # Steps and the run are derived from the records
    assert [s.cost_usd for s in steps] == [first.cost_usd, second.cost_usd]
    assert [s.llm_ms for s in steps] == [first.duration_ms, second.duration_ms]
    assert result.llm_calls == 2 and result.llm_errors == 1
    assert result.usage == USAGE + USAGE and result.cost_usd == pytest.approx(2 * price)


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_a_hook_gives_back_is_replayed_not_counted(mode: str) -> None:
    class Cache:
        def wrap_llm_call(self, call, call_next):  # type: ignore[no-untyped-def]
            if call.step == 1:  # answered without calling the model
                return LLMResponse(tool_calls=[ToolCall("echo", {"word": "cached"}, "c1")], model=MODEL)
            return call_next(call)

    rec = Records()
    llm = MockLLMBackend([DONE], usage=USAGE, model=MODEL)
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[rec, Cache()])

    cached, real = rec.calls
    assert cached.replayed and cached.outcome == "ok" and cached.usage is None and cached.duration_ms == 0.0
    assert not real.replayed and real.usage == USAGE
    assert rec.seen_in_wrap[0] == ("ok", None, None)  # the outer hook already saw it marked
    assert steps[0].tool_result.data == "cached" and steps[0].llm_ms == 0.0 and steps[0].usage is None
    assert result.llm_calls == 1 and result.llm_errors == 0 and result.usage == USAGE


@pytest.mark.parametrize("mode", MODES)
def test_a_tools_own_spend_is_counted_once(mode: str) -> None:
    """A sub-agent's cost stays on its ToolResult and joins the run's total; the Step keeps its own call."""

    @tool(description="Ask a sub-agent.")
    def ask() -> ToolResult:
        return ToolResult(data="answer", usage=Usage(1000, 100), cost_usd=0.5)

    llm = MockLLMBackend(['{"tool": "ask", "args": {}}', DONE], usage=USAGE, model=MODEL)
    steps, result = run(mode, llm=llm, tools=tools_from([ask]), task={"goal": "x"})

    own = cost_of(MODEL, USAGE)
    assert steps[0].cost_usd == pytest.approx(own) and steps[0].usage == USAGE
    assert steps[0].tool_result.cost_usd == 0.5
    assert result.cost_usd == pytest.approx(2 * own + 0.5)
    assert result.cost_usd == pytest.approx(
        sum(s.cost_usd for s in steps) + sum(s.tool_result.cost_usd or 0 for s in steps)
    )
    assert result.usage == USAGE + USAGE + Usage(1000, 100)


@pytest.mark.parametrize("mode", MODES)
def test_a_denied_call_is_a_step_with_error_kind_denied(mode: str) -> None:
    class No:
        def pre_dispatch(self, state, session_log, tool_call, step_num):  # type: ignore[no-untyped-def]
            return Deny("not allowed") if tool_call.tool == "echo" else None

    llm = MockLLMBackend(['{"tool": "echo", "args": {"word": "a"}}', DONE])
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[No()])
    assert steps[0].tool_result.error_kind == "denied" and steps[0].tool_ms == 0.0
    assert result.stop_reason == "done"
