"""Compaction and context hooks: strategies, the chain, the threshold and pressure hooks, token counts."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest

from looplet import DefaultState, LLMResponse, LoopConfig, MockLLMBackend, ToolCall, Usage, tool, tools_from
from looplet.context import (
    ContextPressureHook,
    Prune,
    Summarize,
    ThresholdCompactHook,
    TokenMeter,
    Truncate,
    compact_chain,
    estimate_tokens,
)
from looplet.context.compaction import REMOVED_MARK, SUMMARY_MARK, split

from ._harness import MODES, run


# --- helpers -----------------------------------------------------------------------------------------
def transcript(
    turns: int, *, calls_per_turn: int = 1, out_chars: int = 800, seed: int = 0
) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are an agent. Use tools."},
        {"role": "user", "content": "Find out how looplet traces tool calls."},
    ]
    k = 0
    for t in range(turns):
        calls = []
        for _ in range(rnd.randint(1, calls_per_turn)):
            k += 1
            calls.append(
                {
                    "id": f"c{k}",
                    "type": "function",
                    "function": {"name": "search", "arguments": json.dumps({"query": f"q{k}", "page": t})},
                }
            )
        msgs.append(
            {"role": "assistant", "content": None if t % 2 else f"Looking at step {t}.", "tool_calls": calls}
        )
        for c in calls:
            body = json.dumps(
                {
                    "results": [
                        {"title": f"hit {i} for {c['id']}", "score": rnd.random()}
                        for i in range(out_chars // 40)
                    ]
                }
            )
            msgs.append({"role": "tool", "tool_call_id": c["id"], "content": body})
    return msgs


def assert_paired(msgs: list[dict[str, Any]]) -> None:
    """Every tool call has exactly one result right after its turn, and every result follows its call."""
    open_ids: set[str] = set()
    seen: set[str] = set()
    for m in msgs:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_ids, f"orphan tool result {m['tool_call_id']}"
            open_ids.discard(m["tool_call_id"])
            seen.add(m["tool_call_id"])
            continue
        assert not open_ids, f"tool calls without results: {open_ids}"
        for c in m.get("tool_calls") or ():
            assert c["id"] not in seen
            open_ids.add(c["id"])
    assert not open_ids


class Events:
    """A hook that records ``emit_event`` / hook decisions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, dict(attributes)))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [a for n, a in self.events if n == name]


class Calls:
    """A wrap_llm_call hook that records every LLM call passing through the run's chain."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        self.calls.append(call)
        return call_next(call)


@tool(description="Return a big blob.")
def blob(n: int) -> str:
    return f"row {n}: " + "lorem ipsum dolor sit amet " * 60


# --- the token estimate against a real tokenizer --------------------------------------------------------
def test_estimate_error_against_a_real_tokenizer() -> None:
    """The estimate vs the o200k_base BPE tokenizer (gpt-4o family), counted the way OpenAI's cookbook
    frames chat messages (3 tokens a message, 3 for the reply). Measured, not assumed: the figure is
    printed and bounded."""
    bpe = pytest.importorskip("bpe_openai")
    enc = bpe.get_encoding("o200k_base")

    def real(msgs: list[dict[str, Any]]) -> int:
        n = 3
        for m in msgs:
            n += 3 + len(enc.encode(m.get("content") or ""))
            for c in m.get("tool_calls") or ():
                n += 3 + len(enc.encode(c["function"]["name"])) + len(enc.encode(c["function"]["arguments"]))
        return n

    prose = open(__file__, encoding="utf-8").read()
    cases = {
        "json tool results": transcript(30, calls_per_turn=2, seed=3),
        "prose and code": [{"role": "system", "content": "You are helpful."}]
        + [
            {"role": "user" if i % 2 else "assistant", "content": prose[i * 900 : (i + 1) * 900]}
            for i in range(len(prose) // 900)
        ],
    }
    for name, msgs in cases.items():
        est, exact = estimate_tokens(msgs), real(msgs)
        error = (est - exact) / exact
        print(f"estimate error on {name}: {error:+.1%} ({est} estimated, {exact} real tokens)")
        assert abs(error) < 0.15, (name, est, exact)


class ExactUsageLLM(MockLLMBackend):
    """Reports input tokens as the o200k count of the messages plus a fixed schema overhead."""

    def __init__(self, enc: Any, **kw: Any) -> None:
        super().__init__(['{"tool": "blob", "args": {"n": 1}}'], cycle=True, **kw)
        self.enc, self.real_inputs = enc, []

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> LLMResponse:
        r = super().generate(messages, tools=tools, **options)
        n = 140 + sum(
            4
            + len(self.enc.encode(m.get("content") or ""))
            + sum(8 + len(self.enc.encode(c["function"]["arguments"])) for c in m.get("tool_calls") or ())
            for m in messages
        )
        self.real_inputs.append(n)
        r.usage = Usage(n, 20)
        return r


def test_meter_tracks_reported_usage() -> None:
    """With usage from the backend the meter only estimates what was added since the last call, so its
    error shrinks as the transcript grows (the plain estimate also misses the schema overhead)."""
    bpe = pytest.importorskip("bpe_openai")
    llm = ExactUsageLLM(bpe.get_encoding("o200k_base"))
    predicted: list[int] = []

    class Probe:
        def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
            from looplet.context.tokens import meter_for
            from looplet.hooks import current_run

            predicted.append(meter_for(current_run()).count(session_log))

    run(
        "sync",
        llm=llm,
        tools=tools_from([blob]),
        task={"goal": "g"},
        max_steps=12,
        hooks=[Probe(), ContextPressureHook(window=10**6)],
    )
    errors = [abs(p - r) / r for p, r in zip(predicted[1:], llm.real_inputs[1:], strict=False)]
    print(
        f"meter error once calibrated: max {max(errors):.2%}; uncalibrated first call: "
        f"{abs(predicted[0] - llm.real_inputs[0]) / llm.real_inputs[0]:.1%}"
    )
    assert max(errors) < 0.08 and errors[-1] < 0.02


# --- strategies -----------------------------------------------------------------------------------------
def test_split_keeps_calls_with_their_results() -> None:
    msgs = transcript(6, calls_per_turn=3, seed=1)
    core, head, units = split(msgs)
    assert (core, head) == (2, 2)
    for start, end in units:
        ids = {c["id"] for c in msgs[start].get("tool_calls") or ()}
        assert {m["tool_call_id"] for m in msgs[start + 1 : end]} == ids


@pytest.mark.parametrize("seed", range(12))
def test_no_strategy_ever_splits_a_call_from_its_result(seed: int) -> None:
    msgs = transcript(random.Random(seed).randint(1, 25), calls_per_turn=3, seed=seed)
    target = estimate_tokens(msgs) // random.Random(seed).choice([2, 4, 10, 100])
    for strategy in (Prune(keep_last=1), Truncate(keep_last=1), compact_chain(Prune(), Truncate())):
        out = strategy(msgs, target, TokenMeter())
        assert_paired(out)
        assert out[:2] == msgs[:2]  # system prompt and task stay


def test_prune_stubs_old_outputs_and_keeps_recent_turns_whole() -> None:
    msgs = transcript(8)
    out = Prune(keep_last=3)(msgs, 1, TokenMeter())
    _, _, units = split(out)
    old = [out[k] for s, e in units[:-3] for k in range(s + 1, e)]
    recent = [out[k] for s, e in units[-3:] for k in range(s + 1, e)]
    assert all("[pruned:" in m["content"] and len(m["content"]) < 260 for m in old)
    assert all("[pruned:" not in m["content"] for m in recent)
    assert old[0]["content"].startswith(msgs[3]["content"][:120])  # the model still sees how it began
    assert msgs[3]["content"] != old[0]["content"]  # the input list was not edited


def test_prune_stops_as_soon_as_it_fits() -> None:
    msgs = transcript(10)
    target = estimate_tokens(msgs) - 100
    out = Prune(keep_last=1)(msgs, target, TokenMeter())
    pruned = sum("[pruned:" in (m.get("content") or "") for m in out)
    assert pruned == 1 and estimate_tokens(out) <= target


def test_truncate_drops_oldest_turns_and_counts_them_in_a_note() -> None:
    msgs = transcript(10)
    target = estimate_tokens(msgs[:2] + msgs[-6:])
    out = Truncate(keep_last=2)(msgs, target, TokenMeter())
    assert out[2]["content"].startswith(REMOVED_MARK)
    removed = len(msgs) + 1 - len(out)
    assert f": {removed} messages" in out[2]["content"]
    assert out[-4:] == msgs[-4:]
    again = Truncate(keep_last=1)(out + transcript(3, seed=9)[2:], target, TokenMeter())
    notes = [m for m in again if (m.get("content") or "").startswith(REMOVED_MARK)]
    assert len(notes) == 1 and int(notes[0]["content"].split(": ")[1].split()[0]) > removed


def test_truncate_cuts_long_messages_when_dropping_is_not_enough() -> None:
    msgs = transcript(1, out_chars=40_000)
    out = Truncate(keep_last=1, max_chars=1000)(msgs, 600, TokenMeter())
    assert "characters cut" in out[-1]["content"] and len(out[-1]["content"]) < 1100
    assert_paired(out)


def test_chain_runs_in_order_only_until_it_fits() -> None:
    events = Events()
    msgs = transcript(12)
    target = estimate_tokens(msgs) * 2 // 3
    from looplet.hooks import _CURRENT_RUN, Run

    r = Run("r", "a", None, None, None)
    r._events = (events.on_event,)
    token = _CURRENT_RUN.set(r)
    try:
        out = compact_chain(Prune(keep_last=2), Truncate())(msgs, target)
    finally:
        _CURRENT_RUN.reset(token)
    assert [a["strategy"] for a in events.named("compaction")] == ["prune"]
    ev = events.named("compaction")[0]
    assert ev["tokens_before"] > target >= ev["tokens_after"] == estimate_tokens(out)


# --- Summarize: a traced, costed LLM call ------------------------------------------------------------
class Summarizer(MockLLMBackend):
    def __init__(self) -> None:
        super().__init__(
            [LLMResponse(text="Searched 6 pages; hits 0-19 found.", usage=Usage(500, 40))],
            cycle=True,
            model="gpt-4o-mini",
        )
        self.seen: list[list[dict[str, Any]]] = []

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> LLMResponse:
        self.seen.append(messages)
        return super().generate(messages, tools=tools, **options)

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any
    ) -> LLMResponse:
        self.seen.append(messages)
        return await super().agenerate(messages, tools=tools, **options)


@pytest.mark.parametrize("mode", MODES)
def test_summarize_goes_through_the_run_and_is_counted(mode: str) -> None:
    summarizer = Summarizer()
    calls, events = Calls(), Events()
    llm = MockLLMBackend(
        ['{"tool": "blob", "args": {"n": 1}}'], cycle=True, usage="estimate", model="gpt-4o-mini"
    )  # realistic usage: the meter trusts what the backend reports
    hook = ThresholdCompactHook(
        max_tokens=2500, strategy=compact_chain(Summarize(summarizer, keep_last=2), Truncate())
    )
    state = DefaultState(max_steps=12)
    _steps, result = run(
        mode, llm=llm, tools=tools_from([blob]), task={"goal": "g"}, state=state, hooks=[calls, events, hook]
    )
    summaries = [c for c in calls.calls if c.purpose == "summarize"]
    assert summaries and len(summaries) == len(summarizer.seen)
    assert "row 1" in summarizer.seen[0][1]["content"]  # the old turns were rendered for the summarizer
    assert any(m["content"].startswith(SUMMARY_MARK) for m in state.transcript if m["role"] == "user")
    n = len(summaries)
    steps_usage = sum((s.usage for s in result.steps if s.usage), Usage())
    assert result.usage.input_tokens == steps_usage.input_tokens + 500 * n
    assert result.usage.output_tokens == steps_usage.output_tokens + 40 * n
    step_cost = sum(s.cost_usd for s in result.steps if s.cost_usd)
    assert result.cost_usd == pytest.approx(step_cost + n * (500 * 0.15 + 40 * 0.60) / 1e6)
    assert {a["strategy"] for a in events.named("compaction")} <= {"summarize", "truncate"}
    assert "summarize" in {a["strategy"] for a in events.named("compaction")}
    assert_paired(state.transcript)


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_summarizer_leaves_the_transcript_to_the_next_strategy(mode: str) -> None:
    broken = MockLLMBackend([RuntimeError("model down")], cycle=True)
    events = Events()
    llm = MockLLMBackend(['{"tool": "blob", "args": {"n": 2}}'], cycle=True)
    state = DefaultState(max_steps=10)
    _s, result = run(
        mode,
        llm=llm,
        tools=tools_from([blob]),
        task={"goal": "g"},
        state=state,
        hooks=[events, ThresholdCompactHook(2000, compact_chain(Summarize(broken), Truncate()))],
    )
    assert result.stop_reason == "max_steps"
    assert {a["strategy"] for a in events.named("compaction")} == {"truncate"}
    assert estimate_tokens(state.transcript) < 2500


# --- the hooks in a run -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_threshold_hook_keeps_a_long_run_under_its_limit(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    seen_sizes: list[int] = []

    class Spy(MockLLMBackend):
        def generate(self, messages: Any, **kw: Any) -> LLMResponse:
            seen_sizes.append(estimate_tokens(messages))
            return super().generate(messages, **kw)

        async def agenerate(self, messages: Any, **kw: Any) -> LLMResponse:
            seen_sizes.append(estimate_tokens(messages))
            return await super().agenerate(messages, **kw)

    events = Events()
    state = DefaultState(max_steps=40)
    kw: dict[str, Any] = {"max_steps": 40}
    with caplog.at_level(logging.INFO, logger="looplet"):
        _s, result = run(
            mode,
            llm=Spy(['{"tool": "blob", "args": {"n": 3}}'], cycle=True),
            tools=tools_from([blob]),
            task={"goal": "g"},
            state=state,
            hooks=[events, ThresholdCompactHook(max_tokens=3000)],
            **kw,
        )
    assert result.stop_reason == "max_steps" and len(result.steps) == 40
    assert max(seen_sizes) <= 3000 + 600  # at most one step's growth over the limit
    assert events.named("compaction") and all(
        a["tokens_after"] < a["tokens_before"] for a in events.named("compaction")
    )
    assert any("compaction prune" in r.getMessage() for r in caplog.records)
    assert_paired(state.transcript)


def test_threshold_defaults_to_the_configured_context_window() -> None:
    events = Events()
    state = DefaultState(max_steps=30)
    run(
        "sync",
        llm=MockLLMBackend(['{"tool": "blob", "args": {"n": 3}}'], cycle=True),
        tools=tools_from([blob]),
        task={"goal": "g"},
        state=state,
        config=LoopConfig(max_steps=30, context_window=4000),
        hooks=[events, ThresholdCompactHook()],
    )
    assert events.named("compaction")
    assert estimate_tokens(state.transcript) <= 3200 + 600


@pytest.mark.parametrize("mode", MODES)
def test_context_pressure_tells_the_model_how_much_is_left(mode: str) -> None:
    prompts: list[list[dict[str, Any]]] = []

    class Spy(MockLLMBackend):
        def generate(self, messages: Any, **kw: Any) -> LLMResponse:
            prompts.append(list(messages))
            return super().generate(messages, **kw)

        async def agenerate(self, messages: Any, **kw: Any) -> LLMResponse:
            prompts.append(list(messages))
            return await super().agenerate(messages, **kw)

    events = Events()
    run(
        mode,
        llm=Spy(['{"tool": "blob", "args": {"n": 1}}'], cycle=True),
        tools=tools_from([blob]),
        task={"goal": "g"},
        max_steps=6,
        hooks=[events, ContextPressureHook(window=3000, warn_at=0.3)],
    )
    notes = [
        p[-1]["content"] for p in prompts if p[-1]["content"] and p[-1]["content"].startswith("[context]")
    ]
    assert prompts[0][-1]["content"] == "g"  # below warn_at: nothing added
    assert notes and "of 3,000 tokens" in notes[-1] and "left" in notes[-1]
    used = [a["tokens"] for a in events.named("context.pressure")]
    assert used == sorted(used) and all(a["window"] == 3000 for a in events.named("context.pressure"))


def test_hooks_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        ThresholdCompactHook(max_tokens=0)
    with pytest.raises(ValueError, match="warn_at"):
        ContextPressureHook(warn_at=2)
    with pytest.raises(ValueError, match="at least one strategy"):
        compact_chain()
    with pytest.raises(TypeError, match="generate"):
        Summarize(object())


def test_summary_call_sees_a_step_number_and_no_tools() -> None:
    calls = Calls()
    summarizer = Summarizer()
    run(
        "sync",
        llm=MockLLMBackend([ToolCall("blob", {"n": 1})], cycle=True),
        tools=tools_from([blob]),
        task={"goal": "g"},
        max_steps=8,
        hooks=[
            calls,
            ThresholdCompactHook(1500, compact_chain(Summarize(summarizer, keep_last=1), Truncate())),
        ],
    )
    s = next(c for c in calls.calls if c.purpose == "summarize")
    assert s.tools == [] and s.step >= 2 and s.model == "gpt-4o-mini"


# --- with the real telemetry hooks -------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_summary_is_a_chat_span_and_compactions_are_span_events_and_metrics(mode: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.metrics import MetricsHook
    from looplet.telemetry.tracing import TracingHook

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    llm = MockLLMBackend(
        ['{"tool": "blob", "args": {"n": 1}}'], cycle=True, usage="estimate", model="gpt-4o-mini"
    )
    hook = ThresholdCompactHook(2500, compact_chain(Summarize(Summarizer(), keep_last=2), Truncate()))
    run(
        mode,
        llm=llm,
        tools=tools_from([blob]),
        task={"goal": "g"},
        max_steps=10,
        hooks=[TracingHook(provider), MetricsHook(registry), hook],
    )
    spans = exporter.get_finished_spans()
    summaries = [s for s in spans if s.attributes.get("looplet.llm.purpose") == "summarize"]
    assert summaries and all(s.name.startswith("chat") for s in summaries)
    assert summaries[0].attributes["gen_ai.usage.input_tokens"] == 500
    assert summaries[0].parent is not None  # inside the run's trace, under the step being prompted
    events = [e for s in spans for e in s.events if e.name == "looplet.compaction"]
    assert events and events[0].attributes["looplet.compaction.strategy"] == "summarize"
    assert (
        events[0].attributes["looplet.compaction.tokens_before"]
        > events[0].attributes["looplet.compaction.tokens_after"]
    )
    assert registry.get_sample_value(
        "looplet_compactions_total", {"agent": "looplet", "strategy": "summarize"}
    ) == len([e for e in events if e.attributes["looplet.compaction.strategy"] == "summarize"])
