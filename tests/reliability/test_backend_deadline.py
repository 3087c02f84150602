"""A backend's ``timeout`` bounds the whole call, on the real wire, streams included.

The fake server trickles its answer one byte every 0.25 s: it is never silent long enough for a
per-read timeout to fire, so before the fix a ``timeout=1`` call stayed open as long as the server
kept trickling (15 s for an OpenAI answer in the issue). Now the call ends at its deadline with the
backend's retryable timeout error, whichever provider, loop or streaming mode, and the client closes
its connection (the server sees the hang-up).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from looplet import DefaultState, LLMError, LoopConfig, tool, tools_from
from looplet.backends.anthropic import AnthropicBackend
from looplet.backends.openai import OpenAIBackend
from tests.fakeserver import LLMRecorder, tool_call
from tests.unit._harness import MODES, run

PROVIDERS = ["openai", "anthropic"]
TRICKLE_S = 0.25  # the answer (hundreds of bytes) would take minutes to arrive whole


def backend(provider: str, server: Any, timeout: float) -> Any:
    if provider == "openai":
        return OpenAIBackend(model="gpt-4o-mini", base_url=server.openai_url, api_key="k", timeout=timeout)
    return AnthropicBackend(
        model="claude-haiku-4-5", base_url=server.anthropic_url, api_key="k", timeout=timeout
    )


def slow_answer() -> Any:
    return tool_call("done", {"answer": "x" * 200}, trickle_s=TRICKLE_S)


def call(llm: Any, mode: str, stream: bool) -> Any:
    messages = [{"role": "user", "content": "hi"}]
    if mode == "sync":
        return llm.generate(messages, stream=stream)
    return asyncio.run(llm.agenerate(messages, stream=stream))


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_trickling_server_cannot_keep_a_call_open_past_its_timeout(provider, mode, stream, fake_llm_server):
    fake_llm_server.script(slow_answer())
    llm = backend(provider, fake_llm_server, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        call(llm, mode, stream)
    elapsed = time.monotonic() - started
    llm.close()
    err = info.value
    assert err.retryable and err.kind == "timeout"
    assert "1s" in str(err) and "whole call" in str(err)
    # the whole answer needs > 60 s at this pace; the call ended at its deadline (+ scheduling slack)
    assert elapsed < 6.0, elapsed
    assert fake_llm_server.wait_aborted(1, timeout=10.0), "the client did not hang up"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_run_against_a_trickling_server_ends_in_llm_error_after_its_retries(
    provider, mode, fake_llm_server
):
    fake_llm_server.script(slow_answer(), slow_answer())
    rec = LLMRecorder()
    state = DefaultState(max_steps=3)
    started = time.monotonic()
    steps, result = run(
        mode,
        llm=backend(provider, fake_llm_server, timeout=1.0),
        task={"goal": "x"},
        tools=tools_from([]),
        hooks=[rec],
        state=state,
        config=LoopConfig(max_steps=3, llm_retries=1, llm_backoff_s=0.01, stream=True),
    )
    elapsed = time.monotonic() - started
    assert result.stop_reason == "llm_error" and steps == []
    assert [e.kind for _, e, _ in rec.retries] == ["timeout"]
    assert "timeout" in (result.error or "") or "stalled" in (result.error or "")
    assert elapsed < 12.0, elapsed  # 2 attempts of 1 s each, not 2 x minutes


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_fast_answer_is_not_disturbed_by_the_deadline_and_the_connection_is_reused(
    provider, fake_llm_server
):
    """The watchdog is disarmed before the connection goes back to the pool: many calls in a row on a
    short timeout all succeed."""

    @tool(description="noop")
    def noop() -> str:
        return "ok"

    fake_llm_server.script(*[tool_call("noop") for _ in range(20)])
    llm = backend(provider, fake_llm_server, timeout=2.0)
    for stream in [False, True] * 10:
        out = llm.generate([{"role": "user", "content": "hi"}], stream=stream)
        assert [c.tool for c in out.tool_calls] == ["noop"]
    llm.close()
