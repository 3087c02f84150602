"""The loop's behaviour, proved on the sync and the async loop by the same tests."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time

import pytest

from looplet import (
    Allow,
    DefaultState,
    Deny,
    HookDecision,
    InjectContext,
    LoopConfig,
    MockLLMBackend,
    Stop,
    ToolResult,
    Usage,
    composable_loop,
    tool,
    tools_from,
)
from looplet.errors import HookError, LLMError
from looplet.loop import CancelToken

from ._harness import MODES, run


@tool(description="Add two numbers.")
def add(a: int, b: int = 0) -> int:
    return a + b


@tool(description="Echo text.", concurrent_safe=True)
def echo(text: str) -> str:
    return text


def script(*calls: str) -> MockLLMBackend:
    return MockLLMBackend(list(calls))


DONE = '{"tool": "done", "args": {"answer": "ok"}}'


@pytest.mark.parametrize("mode", MODES)
def test_runs_to_done_with_a_real_transcript(mode: str) -> None:
    llm = MockLLMBackend(
        ['{"tool": "add", "args": {"a": 2, "b": 3}}', DONE], usage=Usage(10, 5), model="gpt-4o-mini"
    )
    state = DefaultState()
    steps, result = run(mode, llm=llm, tools=tools_from([add]), task={"goal": "add"}, state=state)
    assert [s.tool_call.tool for s in steps] == ["add", "done"]
    assert steps[0].tool_result.data == 5 and steps[0].ok
    assert result.stop_reason == "done" and result.final_output == "ok"
    assert [s.number for s in steps] == [1, 2]
    assert result.usage.input_tokens == 20 and result.usage.output_tokens == 10
    assert result.cost_usd == pytest.approx(2 * (10 * 0.15 + 5 * 0.60) / 1e6)
    roles = [m["role"] for m in state.transcript]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    call = state.transcript[2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3}
    assert state.transcript[3]["tool_call_id"] == call["id"] == steps[0].tool_call.id
    assert state.transcript[1]["content"] == "add"


@pytest.mark.parametrize("mode", MODES)
def test_several_calls_in_one_response_become_several_steps(mode: str) -> None:
    llm = script('[{"tool": "echo", "args": {"text": "a"}}, {"tool": "echo", "args": {"text": "b"}}]', DONE)
    llm.usage = Usage(100, 10)
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"})
    assert [s.tool_result.data for s in steps[:2]] == ["a", "b"]
    assert steps[0].usage is not None and steps[1].usage is None  # usage counted once per response
    assert sum(s.usage.input_tokens for s in steps if s.usage) == result.usage.input_tokens == 200


@pytest.mark.parametrize("mode", MODES)
def test_parallel_tools_run_together(mode: str) -> None:
    barrier = threading.Barrier(3, timeout=5)

    @tool(concurrent_safe=True)
    def wait(i: int) -> int:
        barrier.wait()  # only passes when all three run at once
        return i

    @tool(concurrent_safe=True)
    async def await_(i: int) -> int:
        await asyncio.sleep(0.05)
        return i

    calls = json.dumps([{"tool": "wait", "args": {"i": i}} for i in range(3)])
    if mode == "async":
        calls = json.dumps([{"tool": "await_", "args": {"i": i}} for i in range(3)])
    llm = script(calls, DONE)
    started = time.perf_counter()
    steps, result = run(
        mode,
        llm=llm,
        tools=tools_from([wait, await_]),
        task={"goal": "x"},
        config=LoopConfig(parallel_tools=True, tool_timeout_s=10),
    )
    assert [s.tool_result.data for s in steps[:3]] == [0, 1, 2]
    assert all(s.ok for s in steps)
    if mode == "async":
        assert time.perf_counter() - started < 0.14  # three 50 ms sleeps overlapped


@pytest.mark.parametrize("mode", MODES)
def test_max_steps_and_transcript_stays_valid(mode: str) -> None:
    llm = MockLLMBackend(
        ['[{"tool": "echo", "args": {"text": "a"}}, {"tool": "echo", "args": {"text": "b"}}]'], cycle=True
    )
    state = DefaultState(max_steps=3)
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, state=state)
    assert len(steps) == 3 and result.stop_reason == "max_steps"
    ids = {c["id"] for m in state.transcript if m["role"] == "assistant" for c in m.get("tool_calls", [])}
    answered = {m["tool_call_id"] for m in state.transcript if m["role"] == "tool"}
    assert ids == answered  # the call not run still has an answer


@pytest.mark.parametrize("mode", MODES)
def test_tool_failures_become_error_results(mode: str) -> None:
    @tool
    def boom() -> None:
        raise RuntimeError("disk on fire")

    @tool(timeout_s=0.05)
    def slow() -> str:
        time.sleep(1)
        return "late"

    @tool
    def nan() -> float:
        return float("nan")

    @tool
    def raw() -> bytes:
        return b"\x00"

    llm = script(
        '{"tool": "ad", "args": {"a": 1}}',
        '{"tool": "add", "args": {}}',
        '{"tool": "add", "args": {"a": 1, "c": 2}}',
        '{"tool": "add", "args": {"a": "one"}}',
        '{"tool": "boom", "args": {}}',
        '{"tool": "slow", "args": {}}',
        '{"tool": "nan", "args": {}}',
        '{"tool": "raw", "args": {}}',
        DONE,
    )
    steps, result = run(mode, llm=llm, tools=tools_from([add, boom, slow, nan, raw]), task={"goal": "x"})
    kinds = [s.tool_result.error_kind for s in steps]
    assert kinds == [
        "unknown_tool",
        "missing_argument",
        "unexpected_argument",
        "invalid_argument",
        "tool_exception",
        "timeout",
        "unserializable_result",
        "unserializable_result",
        None,
    ]
    assert "Did you mean 'add'" in steps[0].tool_result.error
    assert "disk on fire" in steps[4].tool_result.error
    assert result.stop_reason == "done"


@pytest.mark.parametrize("mode", MODES)
def test_pre_dispatch_decisions(mode: str) -> None:
    seen: list[dict] = []

    class Policy:
        def pre_dispatch(self, state, session_log, tool_call, step_num):
            if tool_call.args.get("text") == "secret":
                return Deny("no secrets", retry=True)
            if tool_call.args.get("text") == "fix":
                return HookDecision(updated_args={"text": "fixed"})
            if tool_call.args.get("text") == "skip":
                return ToolResult(data="cached")
            return Allow()

        def post_dispatch(self, state, session_log, tool_call, tool_result, step_num):
            seen.append({"args": tool_call.args, "data": tool_result.data})
            return "note for the model"

    llm = script(
        *[json.dumps({"tool": "echo", "args": {"text": t}}) for t in ("secret", "fix", "skip")], DONE
    )
    state = DefaultState()
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[Policy()], state=state
    )
    assert steps[0].tool_result.error_kind == "denied" and "no secrets" in steps[0].tool_result.error
    assert steps[1].tool_result.data == "fixed" and steps[1].tool_call.args == {"text": "fixed"}
    assert steps[2].tool_result.data == "cached"
    tool_msgs = [m["content"] for m in state.transcript if m["role"] == "tool"]
    assert all(m.endswith("note for the model") for m in tool_msgs)


@pytest.mark.parametrize("mode", MODES)
def test_pre_prompt_injects_and_stops(mode: str) -> None:
    prompts: list[list] = []

    class Inject:
        def pre_prompt(self, state, session_log, context, step_num):
            if step_num == 3:
                return Stop("enough")
            return InjectContext(f"hint {step_num}")

    class Spy:
        def wrap_llm_call(self, call, call_next):
            prompts.append(list(call.messages))
            return call_next(call)

    llm = MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True)
    state = DefaultState()
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[Inject(), Spy()], state=state
    )
    assert result.stop_reason == "hook_stop:enough" and len(steps) == 2
    assert prompts[0][-1] == {"role": "user", "content": "hint 1"}
    assert not any(m.get("content") == "hint 1" for m in state.transcript)  # for that prompt only


@pytest.mark.parametrize("mode", MODES)
def test_check_done_rejects_then_accepts(mode: str) -> None:
    class NotYet:
        calls = 0

        def check_done(self, state, session_log, context, step_num):
            self.calls += 1
            return "verify first" if self.calls == 1 else None

    llm = script(DONE, DONE)
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[NotYet()])
    assert steps[0].tool_result.error_kind == "done_rejected" and "verify first" in steps[0].tool_result.error
    assert result.stop_reason == "done" and len(steps) == 2


@pytest.mark.parametrize("mode", MODES)
def test_should_stop_variants(mode: str) -> None:
    class After2:
        def should_stop(self, state, step_num, new_entities):
            assert new_entities[0].number == step_num
            return HookDecision(stop="two") if step_num == 2 else None

    llm = MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True)
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[After2()])
    assert result.stop_reason == "hook_stop:two" and len(steps) == 2


@pytest.mark.parametrize("mode", MODES)
def test_async_hooks_work_in_both_loops(mode: str) -> None:
    events: list[str] = []

    class AsyncHook:
        async def on_loop_start(self, state, session_log, context):
            events.append("start")

        async def pre_dispatch(self, state, session_log, tool_call, step_num):
            events.append(f"pre{step_num}")

        async def on_loop_end(self, state, session_log, context, result):
            events.append(result.stop_reason)

    steps, result = run(
        mode, llm=script(DONE), tools=tools_from([echo]), task={"goal": "x"}, hooks=[AsyncHook()]
    )
    assert events == ["start", "pre1", "done"]


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_hook_is_isolated_and_reported(mode: str) -> None:
    reported: list[tuple] = []

    class Broken:
        def pre_prompt(self, state, session_log, context, step_num):
            raise ValueError("bug in hook")

        def post_dispatch(self, state, session_log, tool_call, tool_result, step_num):
            return 42  # wrong type

    class Reporter:
        def on_hook_error(self, hook, method, error):
            reported.append((type(hook).__name__, method, type(error).__name__))

    steps, result = run(
        mode, llm=script(DONE), tools=tools_from([echo]), task={"goal": "x"}, hooks=[Broken(), Reporter()]
    )
    assert result.stop_reason == "done"
    assert ("Broken", "pre_prompt", "ValueError") in reported
    assert ("Broken", "post_dispatch", "TypeError") in reported


@pytest.mark.parametrize("mode", MODES)
def test_strict_hooks_end_the_run(mode: str) -> None:
    ended: list[str] = []

    class Broken:
        def pre_prompt(self, state, session_log, context, step_num):
            raise ValueError("bug")

        def on_loop_end(self, state, session_log, context, result):
            ended.append(result.stop_reason)

    with pytest.raises(HookError, match="bug"):
        run(
            mode,
            llm=script(DONE),
            tools=tools_from([echo]),
            task={"goal": "x"},
            hooks=[Broken()],
            config=LoopConfig(strict_hooks=True),
        )
    assert ended == ["hook_error"]


@pytest.mark.parametrize("mode", MODES)
def test_wrap_hooks_fold_first_outermost(mode: str) -> None:
    order: list[str] = []

    class W:
        def __init__(self, name):
            self.name = name

        def wrap_tool(self, tool_call, call_next):
            order.append(f"{self.name}>")
            out = call_next(tool_call)
            if hasattr(out, "__await__"):

                async def finish():
                    r = await out
                    order.append(f"<{self.name}")
                    return r

                return finish()
            order.append(f"<{self.name}")
            return out

    run(mode, llm=script(DONE), tools=tools_from([echo]), task={"goal": "x"}, hooks=[W("a"), W("b")])
    assert order == ["a>", "b>", "<b", "<a"]


@pytest.mark.parametrize("mode", MODES)
def test_retryable_llm_errors_are_retried_then_fail(mode: str) -> None:
    retries: list[int] = []

    class R:
        def on_llm_retry(self, state, attempt, error, delay_s):
            retries.append(attempt)

    flaky = MockLLMBackend([LLMError("rate limited", retryable=True, status=429, retry_after=0.0), DONE])
    steps, result = run(
        mode,
        llm=flaky,
        tools=tools_from([echo]),
        task={"goal": "x"},
        hooks=[R()],
        config=LoopConfig(llm_backoff_s=0.001),
    )
    assert result.stop_reason == "done" and retries == [1]
    dead = MockLLMBackend([LLMError("500", retryable=True, status=500)], cycle=True)
    steps, result = run(
        mode,
        llm=dead,
        tools=tools_from([echo]),
        task={"goal": "x"},
        config=LoopConfig(llm_backoff_s=0.001, llm_retries=2),
    )
    assert result.stop_reason == "llm_error" and "500" in result.error and dead.calls == 3
    fatal = MockLLMBackend([LLMError("bad key", retryable=False, status=401)])
    steps, result = run(mode, llm=fatal, tools=tools_from([echo]), task={"goal": "x"})
    assert result.stop_reason == "llm_error" and fatal.calls == 1


@pytest.mark.parametrize("mode", MODES)
def test_exhausted_script_ends_with_llm_error(mode: str) -> None:
    steps, result = run(
        mode,
        llm=script('{"tool": "echo", "args": {"text": "a"}}'),
        tools=tools_from([echo]),
        task={"goal": "x"},
    )
    assert result.stop_reason == "llm_error" and "exhausted" in result.error and len(steps) == 1


@pytest.mark.parametrize("mode", MODES)
def test_text_json_tool_calls_and_malformed_feedback(mode: str) -> None:
    llm = script(
        'Sure: ```json\n{"tool": "echo", "args": {"text": "hi"}}\n```', "I refuse to use tools.", "Still no."
    )
    state = DefaultState()
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, state=state)
    assert steps[0].tool_result.data == "hi"
    assert result.stop_reason == "llm_error" and "without calling a tool" in result.error
    assert any("did not call a tool" in (m.get("content") or "") for m in state.transcript)
    assert result.llm_calls == 3


@pytest.mark.parametrize("mode", MODES)
def test_cancel_from_another_thread(mode: str) -> None:
    token = CancelToken()
    llm = MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True, latency_s=0.01)
    threading.Timer(0.1, token.cancel).start()
    steps, result = (
        run(
            mode,
            llm=llm,
            tools=tools_from([echo]),
            task={"goal": "x"},
            cancel=token,
            config=LoopConfig(max_steps=1000),
            _state_max=1000,
        )
        if mode == "async"
        else run(
            mode,
            llm=llm,
            tools=tools_from([echo]),
            task={"goal": "x"},
            cancel=token,
            state=DefaultState(max_steps=1000),
            config=LoopConfig(max_steps=1000),
        )
    )
    assert result.stop_reason == "cancelled" and 0 < len(steps) < 1000


def test_async_task_cancellation_ends_the_run() -> None:
    ended: list[str] = []

    class End:
        def on_loop_end(self, state, session_log, context, result):
            ended.append(result.stop_reason)

    async def main() -> None:
        from looplet import async_composable_loop

        llm = MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True, latency_s=0.01)

        async def consume():
            async for _ in async_composable_loop(
                llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[End()], max_steps=1000
            ):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ended == ["cancelled"]


def test_breaking_out_and_throwing_in_end_the_run_once() -> None:
    ended: list[tuple] = []

    class End:
        def on_loop_end(self, state, session_log, context, result):
            ended.append((result.stop_reason, len(result.steps)))

    llm = MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True)
    for step in composable_loop(llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[End()]):
        if step.number == 2:
            break
    import gc

    gc.collect()
    assert ended == [("cancelled", 2)]
    gen = composable_loop(llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[End()])
    next(gen)
    with pytest.raises(KeyError):
        gen.throw(KeyError("caller failed"))
    assert ended[-1] == ("cancelled", 1)


def test_return_value_is_the_run_result() -> None:
    gen = composable_loop(llm=script(DONE), tools=tools_from([echo]), task={"goal": "x"})
    assert next(gen).tool_call.tool == "done"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    result = stop.value.value
    assert result.stop_reason == "done" and result.steps[0].tool_call.tool == "done"


@pytest.mark.parametrize("mode", MODES)
def test_every_run_has_exactly_one_stop_reason(mode: str) -> None:
    ends: list[str] = []

    class End:
        def on_loop_end(self, state, session_log, context, result):
            ends.append(result.stop_reason)

    for llm in (
        script(DONE),
        script("no tool here", "still none"),
        MockLLMBackend(['{"tool": "echo", "args": {"text": "a"}}'], cycle=True),
    ):
        run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[End()], max_steps=3)
    assert ends == ["done", "llm_error", "max_steps"]


def test_step_pretty_and_to_dict() -> None:
    gen = composable_loop(
        llm=script('{"tool": "add", "args": {"a": 1, "b": 2}}', '{"tool": "nope", "args": {}}', DONE),
        tools=tools_from([add]),
        task={"goal": "x"},
    )
    s1, s2, _ = list(gen)
    assert s1.pretty().startswith("#1 ✓ add(a=1, b=2) → 3 [")
    assert s2.pretty().startswith("#2 ✗ nope() → ERROR: Unknown tool 'nope'")
    assert len(s1.pretty(width=60)) <= 80
    assert json.loads(json.dumps(s1.to_dict()))["tool_result"]["data"] == 3


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_fails_fast_with_the_argument_named() -> None:
    llm = script(DONE)
    tools = tools_from([echo])
    with pytest.raises(TypeError, match="task must be a dict.*'goal'"):
        composable_loop(llm=llm, tools=tools, task="do it")
    with pytest.raises(TypeError, match="tools must be a BaseToolRegistry.*tools_from"):
        composable_loop(llm=llm, tools=[echo], task={"goal": "x"})
    with pytest.raises(ValueError, match="tools is required"):
        composable_loop(llm=llm, task={"goal": "x"})
    with pytest.raises(ValueError, match="max_steps"):
        composable_loop(llm=llm, tools=tools, task={"goal": "x"}, max_steps=0)
    with pytest.raises(ValueError, match="max_steps"):
        LoopConfig(max_steps=0)
    with pytest.raises(TypeError, match="llm must be a backend"):
        composable_loop(llm=object(), tools=tools, task={"goal": "x"})
    with pytest.raises(TypeError, match="hooks must be a list"):
        composable_loop(llm=llm, tools=tools, task={"goal": "x"}, hooks=object())

    class BadSig:
        def pre_prompt(self, state):
            pass

    with pytest.raises(TypeError, match=r"BadSig.pre_prompt.*\(state, session_log, context, step_num\)"):
        composable_loop(llm=llm, tools=tools, task={"goal": "x"}, hooks=[BadSig()])


@pytest.mark.parametrize("mode", MODES)
def test_streaming_gives_the_same_steps_plus_chunks_and_ttfc(mode: str) -> None:
    chunks: list[dict] = []

    class Chunks:
        def on_llm_chunk(self, state, chunk, step_num):
            chunks.append((step_num, chunk))

    answers = ['{"tool": "echo", "args": {"text": "a"}}', DONE]
    plain, _ = run(mode, llm=MockLLMBackend(answers), tools=tools_from([echo]), task={"goal": "x"})
    streamed, result = run(
        mode,
        llm=MockLLMBackend(answers, latency_s=0.01),
        tools=tools_from([echo]),
        task={"goal": "x"},
        hooks=[Chunks()],
        config=LoopConfig(stream=True),
    )
    assert [(s.tool_call.tool, s.tool_call.args, s.tool_result.data) for s in streamed] == [
        (s.tool_call.tool, s.tool_call.args, s.tool_result.data) for s in plain
    ]
    assert all(s.ttfc_ms is not None and 2 <= s.ttfc_ms < s.llm_ms for s in streamed)
    assert plain[0].ttfc_ms is None
    args = "".join(c["arguments"] for n, c in chunks if n == 1 and c["type"] == "tool_call")
    assert json.loads(args) == {"text": "a"} and {n for n, _ in chunks} == {1, 2}


@pytest.mark.parametrize("mode", MODES)
def test_async_chunk_hooks_run_in_both_loops_and_strict_errors_are_hook_errors(mode: str) -> None:
    seen: list[str] = []

    class AsyncChunks:
        async def on_llm_chunk(self, state, chunk, step_num):
            await asyncio.sleep(0)
            seen.append(chunk["type"])

    answers = ['{"tool": "echo", "args": {"text": "a"}}', DONE]
    steps, result = run(
        mode,
        llm=MockLLMBackend(answers),
        tools=tools_from([echo]),
        task={"goal": "x"},
        hooks=[AsyncChunks()],
        config=LoopConfig(stream=True),
    )
    assert result.stop_reason == "done" and seen and set(seen) == {"tool_call"}

    class Broken:
        def on_llm_chunk(self, state, chunk, step_num):
            raise ValueError("chunk bug")

    with pytest.raises(HookError, match="chunk bug"):
        run(
            mode,
            llm=MockLLMBackend(answers),
            tools=tools_from([echo]),
            task={"goal": "x"},
            hooks=[Broken()],
            config=LoopConfig(stream=True, strict_hooks=True),
        )
    steps, result = run(
        mode,
        llm=MockLLMBackend(answers),
        tools=tools_from([echo]),
        task={"goal": "x"},
        hooks=[Broken()],
        config=LoopConfig(stream=True),
    )
    assert result.stop_reason == "done"  # not strict: isolated


@pytest.mark.parametrize("mode", MODES)
def test_teardown_runs_in_reverse_and_every_llm_answer_is_reported(mode: str) -> None:
    order: list[str] = []
    answers: list[tuple] = []

    class H:
        def __init__(self, name):
            self.name = name

        def on_loop_start(self, state, session_log, context):
            order.append(f"start {self.name}")

        def on_loop_end(self, state, session_log, context, result):
            order.append(f"end {self.name}")

        def on_llm_call(self, state, call):
            if self.name == "a":
                r = call.response
                answers.append(
                    (call.step, len(r.tool_calls), call.cost_usd is not None, call.duration_ms >= 0)
                )

    llm = MockLLMBackend(["thinking out loud, no tool", DONE], usage=Usage(10, 2), model="gpt-4o-mini")
    steps, result = run(mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[H("a"), H("b")])
    assert order == ["start a", "start b", "end b", "end a"]
    assert answers == [(1, 0, True, True), (1, 1, True, True)]  # the answer without a tool call too
    assert result.llm_calls == 2 and len(steps) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_finished_run_leaves_its_records_to_reference_counting_not_the_garbage_collector(mode):
    """Nothing the loop builds for a run refers back to itself, so the run's transcript and Steps go when
    the run goes: a long run does not leave its whole history for the collector to walk (which made the
    next run in the process slower)."""

    def work(x: int) -> int:
        return x

    spec = tool(work)
    script = [json.dumps({"tool": "work", "args": {"x": 1}})]

    def one(steps: int) -> None:
        llm = MockLLMBackend(script, cycle=True)
        state = DefaultState(max_steps=steps)
        run(mode, llm=llm, tools=tools_from([spec]), task={"goal": "g"}, state=state, max_steps=steps)

    one(5)  # first-use caches
    gc.collect()
    gc.disable()
    try:
        one(300)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable < 100, f"{unreachable} objects of a 300-step run were left in reference cycles"
