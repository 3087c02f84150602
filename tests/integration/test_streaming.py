"""Streaming through the loop with the real ``openai`` and ``anthropic`` clients against the fake server:
the same Steps as without streaming plus time to first chunk, exact usage, chunk hooks, cut-off and
stalled streams, and a caller that walks away mid-stream."""

from __future__ import annotations

import asyncio
import json

import pytest

from looplet import DefaultState, LoopConfig, Usage, async_composable_loop
from looplet.backends.anthropic import AnthropicBackend
from looplet.backends.openai import OpenAIBackend
from tests.fakeserver import LLMRecorder, Reply, text, tool_call, usage
from tests.integration._agent import TASK, TOOLS, go
from tests.unit._harness import MODES


class Abort(BaseException):
    """What a caller raises to walk away (like KeyboardInterrupt, without upsetting pytest)."""


@pytest.fixture(params=["openai", "anthropic"])
def provider(request):
    return request.param


def backend(provider, server, timeout=2.0):
    if provider == "openai":
        return OpenAIBackend(model="gpt-4o-mini", base_url=server.openai_url, api_key="k", timeout=timeout)
    return AnthropicBackend(model="claude-test", base_url=server.anthropic_url, api_key="k", timeout=timeout)


def done(**kw):
    return tool_call("done", {"answer": "streamed"}, "call_done", **kw)


def comparable(step):
    d = step.to_dict()
    for key in ("llm_ms", "tool_ms", "ttfc_ms"):
        d.pop(key, None)
    d["tool_result"].pop("duration_ms")
    return d


@pytest.mark.parametrize("mode", MODES)
def test_streaming_gives_the_same_steps_with_exact_usage_and_ttfc(provider, mode, fake_llm_server):
    answers = [
        text(
            "Checking both.",
            tool_calls=[("search", {"query": "x"}, "c1"), ("broken", {"x": 1}, "c2")],
            usage=usage(30, 8, cached=5),
        ),
        done(usage=usage(44, 6)),
    ]
    llm = backend(provider, fake_llm_server)
    fake_llm_server.script(*answers, *answers)
    plain_steps, plain = go(mode, llm)
    streamed_steps, streamed = go(mode, llm, stream=True)

    assert streamed.stop_reason == plain.stop_reason == "done"
    assert [comparable(s) for s in streamed_steps] == [comparable(s) for s in plain_steps]
    assert streamed_steps[0].usage == Usage(30, 8, 5) and streamed_steps[2].usage == Usage(44, 6)
    assert streamed.usage == plain.usage == Usage(74, 14, 5)
    assert [s.ttfc_ms is not None for s in streamed_steps] == [True, False, True]  # once per LLM call
    assert all(s.ttfc_ms is None for s in plain_steps)
    first = streamed_steps[0]
    assert 0 < first.ttfc_ms <= first.llm_ms
    body = fake_llm_server.bodies()[-1]
    assert body["stream"] is True
    if provider == "openai":
        assert body["stream_options"] == {"include_usage": True}  # else OpenAI sends no usage on streams


class AsyncChunks:
    def __init__(self):
        self.seen = []

    async def on_llm_chunk(self, state, chunk, step_num):
        await asyncio.sleep(0)
        self.seen.append((step_num, chunk))


@pytest.mark.parametrize("mode", MODES)
def test_chunk_hooks_see_text_and_tool_call_deltas(provider, mode, fake_llm_server):
    args = {"query": "streaming", "limit": "10"}
    fake_llm_server.script(
        text("Let me search the docs.", tool_calls=[("search", args, "c_s")], pieces=4), done()
    )
    rec, aio = LLMRecorder(), AsyncChunks()  # a sync and an async on_llm_chunk hook
    steps, result = go(mode, backend(provider, fake_llm_server), hooks=[rec, aio], stream=True)
    assert result.stop_reason == "done"
    assert aio.seen == rec.chunks

    first = [c for n, c in rec.chunks if n == 1]
    texts = [c["text"] for c in first if c["type"] == "text"]
    calls = [c for c in first if c["type"] == "tool_call"]
    assert len(texts) > 1 and "".join(texts) == "Let me search the docs."  # deltas, not the whole text
    assert len(calls) > 2 and {(c["index"], c["id"], c["name"]) for c in calls} == {(0, "c_s", "search")}
    assert json.loads("".join(c["arguments"] for c in calls)) == args
    assert first.index(calls[0]) > first.index({"type": "text", "text": texts[-1]})  # in arrival order
    assert {n for n, _ in rec.chunks} == {1, 2}  # the done call was streamed as step 2


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_without_usage_leaves_usage_empty_not_zero(provider, mode, fake_llm_server):
    fake_llm_server.script(tool_call("search", {"query": "x"}, usage=None), done(usage=None))
    rec = LLMRecorder()
    steps, result = go(mode, backend(provider, fake_llm_server), hooks=[rec], stream=True)
    assert result.stop_reason == "done"
    assert [r.usage for r in rec.responses] == [None, None]
    assert steps[0].usage is None and steps[0].cost_usd is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cut_mode", ["drop", "end"])
def test_a_stream_cut_halfway_is_retried_then_ends_with_llm_error(provider, mode, cut_mode, fake_llm_server):
    cut = tool_call("search", {"query": "a long query"}, cut_after=4, cut_mode=cut_mode)
    fake_llm_server.script(cut, tool_call("search", {"query": "x"}), cut, cut)
    rec = LLMRecorder()
    steps, result = go(mode, backend(provider, fake_llm_server), hooks=[rec], stream=True, llm_retries=1)

    assert [s.tool_call.tool for s in steps] == ["search"]  # the half answer never became a Step
    assert result.stop_reason == "llm_error"
    assert "cut off" in result.error or "ended before" in result.error
    assert len(rec.retries) == 2 and all(e.retryable and e.kind == "stream_cut" for _, e, _ in rec.retries)
    assert len(fake_llm_server.requests) == 4


@pytest.mark.parametrize("mode", MODES)
def test_a_stalled_stream_times_out_and_is_retried(provider, mode, fake_llm_server):
    fake_llm_server.script(text("slow " * 10, pieces=5, chunk_delay_s=3), done())
    rec = LLMRecorder()
    steps, result = go(mode, backend(provider, fake_llm_server, timeout=0.3), hooks=[rec], stream=True)
    assert result.stop_reason == "done"
    [(_, err, _)] = rec.retries
    assert err.kind == "timeout" and "stalled" in str(err)


@pytest.mark.parametrize("mode", MODES)
def test_walking_away_mid_stream_closes_the_stream(provider, mode, fake_llm_server):
    class WalkAway:
        def on_llm_chunk(self, state, chunk, step_num):
            raise Abort()

    fake_llm_server.script(text("x" * 200, pieces=50, chunk_delay_s=0.02))
    state = DefaultState()
    with pytest.raises(Abort):
        go(mode, backend(provider, fake_llm_server), hooks=[WalkAway()], state=state, stream=True)
    assert fake_llm_server.wait_aborted(1, timeout=5)  # the server saw the client hang up mid-stream
    assert state.result.stop_reason == "cancelled"


def test_cancelling_the_async_task_closes_the_stream(provider, fake_llm_server):
    fake_llm_server.script(text("x" * 200, pieces=50, chunk_delay_s=0.02))
    state = DefaultState()

    async def main():
        first = asyncio.Event()

        class Signal:
            def on_llm_chunk(self, state, chunk, step_num):
                first.set()

        async def consume():
            async for _ in async_composable_loop(
                backend(provider, fake_llm_server),
                TASK,
                TOOLS,
                hooks=[Signal()],
                state=state,
                config=LoopConfig(stream=True),
            ):
                pass

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fake_llm_server.wait_aborted(1, timeout=5)
    assert state.result.stop_reason == "cancelled"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_a_base_url_that_is_not_an_llm_api_is_a_clear_non_retryable_error(
    provider, mode, stream, fake_llm_server
):
    fake_llm_server.script(*[Reply(raw="<html>Welcome to nginx</html>")] * 3)
    steps, result = go(mode, backend(provider, fake_llm_server), stream=stream)
    assert result.stop_reason == "llm_error" and len(fake_llm_server.requests) == 1
    assert "check that base_url points at" in result.error
