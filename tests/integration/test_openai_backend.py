"""OpenAIBackend with the real ``openai`` client against the local fake server, through both loops."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from looplet import Usage
from looplet.backends.openai import OpenAIBackend
from looplet.errors import LLMError
from looplet.tools import INVALID_JSON_KEY
from tests.fakeserver import LLMRecorder, empty, error, hang, text, tool_call, tool_calls, usage
from tests.integration._agent import done, go
from tests.unit._harness import MODES


@pytest.fixture
def llm(fake_llm_server):
    backend = OpenAIBackend(
        model="gpt-4o-mini", base_url=fake_llm_server.openai_url, api_key="test-key", timeout=2.0
    )
    yield backend
    backend.close()


@pytest.mark.parametrize("mode", MODES)
def test_multi_step_run_carries_usage_model_id_and_finish_reason(mode, llm, fake_llm_server):
    fake_llm_server.script(
        tool_call(
            "search",
            {"query": "looplet"},
            usage=usage(30, 8, cached=10, reasoning=2),
            model="gpt-4o-mini-2024-07-18",
        ),
        tool_calls([("search", {"query": "a"}), ("broken", {"x": 1})], usage=usage(50, 12)),
        done(),
    )
    rec = LLMRecorder()
    steps, result = go(mode, llm, hooks=[rec])

    assert result.stop_reason == "done" and result.final_output == "an agent loop"
    assert [s.tool_call.tool for s in steps] == ["search", "search", "broken", "done"]
    assert steps[0].tool_result.data == {"results": ["about looplet"]}
    assert steps[2].tool_result.error_kind == "tool_exception"
    assert steps[0].usage == Usage(30, 8, 10, 2) and steps[0].model == "gpt-4o-mini-2024-07-18"
    assert steps[1].usage == Usage(50, 12) and steps[2].usage is None  # one response, counted once
    assert result.usage == Usage(30 + 50 + 20, 8 + 12 + 10, 10, 2) and result.llm_calls == 3
    assert [r.response_id for r in rec.responses] == [q.response_id for q in fake_llm_server.requests]
    assert [r.finish_reason for r in rec.responses] == ["tool_calls"] * 3
    first = rec.responses[0]
    assert (first.provider, first.server_address, first.server_port) == (
        "openai",
        "127.0.0.1",
        fake_llm_server.port,
    )
    assert first.time_to_first_chunk_s is None and steps[0].ttfc_ms is None  # not streamed


@pytest.mark.parametrize("mode", MODES)
def test_transcript_on_the_wire(mode, llm, fake_llm_server):
    fake_llm_server.script(
        tool_calls([("search", {"query": "x"}, "call_a"), ("broken", {"x": 2}, "call_b")]), done()
    )
    steps, result = go(mode, llm, system_prompt="Be brief.")
    assert result.stop_reason == "done"

    first, second = fake_llm_server.bodies()
    assert first["model"] == "gpt-4o-mini" and "stream" not in first
    assert {t["function"]["name"] for t in first["tools"]} == {"search", "broken", "done"}
    spec = next(t for t in first["tools"] if t["function"]["name"] == "search")
    assert spec["type"] == "function" and spec["function"]["parameters"]["required"] == ["query"]
    assert first["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is looplet?"},
    ]
    system, user, assistant, tool_a, tool_b = second["messages"]
    assert assistant["role"] == "assistant" and assistant["content"] == ""  # None is sent as ""
    assert [
        (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ] == [("call_a", "function", "search", {"query": "x"}), ("call_b", "function", "broken", {"x": 2})]
    assert tool_a["role"] == "tool" and tool_a["tool_call_id"] == "call_a" and "about x" in tool_a["content"]
    assert tool_b["tool_call_id"] == "call_b" and tool_b["content"].startswith("ERROR:")
    assert "disk full" in tool_b["content"]


@pytest.mark.parametrize("mode", MODES)
def test_429_is_retried_after_retry_after(mode, llm, fake_llm_server):
    fake_llm_server.script(error(429, "slow down", retry_after=0.05), done())
    rec = LLMRecorder()
    steps, result = go(mode, llm, hooks=[rec])
    assert result.stop_reason == "done" and len(fake_llm_server.requests) == 2
    [(attempt, err, delay)] = rec.retries
    assert attempt == 1 and delay == 0.05  # the server's Retry-After, not the backoff
    assert isinstance(err, LLMError) and err.retryable and err.status == 429 and "slow down" in str(err)


@pytest.mark.parametrize("mode", MODES)
def test_persistent_500_ends_with_llm_error(mode, llm, fake_llm_server):
    fake_llm_server.script(*[error(500, "boom")] * 3)
    steps, result = go(mode, llm, llm_retries=2)
    assert steps == [] and result.stop_reason == "llm_error"
    assert "HTTP 500" in result.error and "boom" in result.error
    assert len(fake_llm_server.requests) == 3  # 1 + 2 retries by the loop; none by the client


@pytest.mark.parametrize("mode", MODES)
def test_timeout_is_retryable(mode, fake_llm_server):
    llm = OpenAIBackend(model="m", base_url=fake_llm_server.openai_url, api_key="k", timeout=0.3)
    fake_llm_server.script(hang(5), done())
    rec = LLMRecorder()
    steps, result = go(mode, llm, hooks=[rec])
    assert result.stop_reason == "done"
    [(_, err, _)] = rec.retries
    assert err.retryable and err.kind == "timeout" and "0.3s" in str(err)


@pytest.mark.parametrize("mode", MODES)
def test_malformed_arguments_become_an_error_step_and_the_model_recovers(mode, llm, fake_llm_server):
    fake_llm_server.script(
        tool_call("search", '{"query": "unterminated', "call_bad"),
        tool_call("search", {"query": "fixed"}),
        done(),
    )
    steps, result = go(mode, llm)
    assert result.stop_reason == "done"
    bad = steps[0]
    assert bad.tool_call.args == {INVALID_JSON_KEY: '{"query": "unterminated'}
    assert bad.tool_result.error_kind == "invalid_argument" and "not valid JSON" in bad.tool_result.error
    assert steps[1].ok and steps[1].tool_result.data == {"results": ["about fixed"]}
    feedback = fake_llm_server.bodies()[1]["messages"][-1]
    assert feedback["tool_call_id"] == "call_bad" and feedback["content"].startswith("ERROR:")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "hint"),
    [(400, "tool schemas"), (401, "OPENAI_API_KEY"), (403, "permission"), (404, "check base_url")],
)
def test_client_errors_are_not_retried_and_say_what_to_do(mode, llm, fake_llm_server, status, hint):
    fake_llm_server.script(error(status), done())
    steps, result = go(mode, llm)
    assert result.stop_reason == "llm_error" and len(fake_llm_server.requests) == 1
    assert f"HTTP {status}" in result.error and hint in result.error


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_choices_list_is_a_non_retryable_error(mode, llm, fake_llm_server):
    fake_llm_server.script(empty(), done())
    steps, result = go(mode, llm)
    assert result.stop_reason == "llm_error" and "empty choices" in result.error
    assert len(fake_llm_server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_text_answers_without_tool_calls_are_fed_back(mode, llm, fake_llm_server):
    fake_llm_server.script(text("I think I am done."), done())
    steps, result = go(mode, llm)
    assert result.stop_reason == "done" and [s.tool_call.tool for s in steps] == ["done"]
    messages = fake_llm_server.bodies()[1]["messages"]
    assert messages[-2] == {"role": "assistant", "content": "I think I am done."}
    assert messages[-1]["role"] == "user" and "did not call a tool" in messages[-1]["content"]


@pytest.mark.parametrize("mode", MODES)
def test_a_users_client_is_used_without_its_own_retries(mode, fake_llm_server):
    if mode == "sync":
        client = openai.OpenAI(base_url=fake_llm_server.openai_url, api_key="k", max_retries=5)
    else:
        client = openai.AsyncOpenAI(base_url=fake_llm_server.openai_url, api_key="k", max_retries=5)
    llm = OpenAIBackend(client, model="gpt-4o")
    fake_llm_server.script(error(503), done())
    steps, result = go(mode, llm, llm_retries=0)
    assert result.stop_reason == "llm_error" and "HTTP 503" in result.error
    assert len(fake_llm_server.requests) == 1  # the client did not retry behind the loop's back
    assert client.max_retries == 5  # the user's client itself is left as it was
    assert llm.server_port == fake_llm_server.port


def test_an_async_client_in_the_sync_loop_is_a_clear_error(fake_llm_server):
    llm = OpenAIBackend(openai.AsyncOpenAI(base_url=fake_llm_server.openai_url, api_key="k"), model="m")
    with pytest.raises(TypeError, match="async_composable_loop"):
        llm.generate([{"role": "user", "content": "hi"}])


def test_async_client_is_remade_for_each_event_loop(llm, fake_llm_server):
    fake_llm_server.script(done(), done())
    messages = [{"role": "user", "content": "hi"}]
    first = asyncio.run(llm.agenerate(messages))
    second = asyncio.run(llm.agenerate(messages))  # a client bound to the first, closed loop would fail here
    assert first.tool_calls[0].tool == second.tool_calls[0].tool == "done"


def test_from_env(monkeypatch, fake_llm_server):
    for name in ("OPENAI_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="OPENAI_MODEL"):
        OpenAIBackend.from_env()
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend.from_env()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm_server.openai_url)
    llm = OpenAIBackend.from_env()
    assert (llm.model, llm.server_port) == ("gpt-4o-mini", fake_llm_server.port)
    fake_llm_server.script(done())
    assert llm.generate([{"role": "user", "content": "hi"}]).tool_calls[0].tool == "done"
    assert fake_llm_server.requests[0].headers["authorization"] == "Bearer sk-test"


def test_server_address_defaults_the_port_from_the_scheme():
    llm = OpenAIBackend(model="m", base_url="https://llm.example.com/v1", api_key="k")  # no request is made
    assert (llm.provider, llm.server_address, llm.server_port) == ("openai", "llm.example.com", 443)


def test_bad_arguments_fail_at_once(fake_llm_server):
    client = openai.OpenAI(base_url=fake_llm_server.openai_url, api_key="k")
    with pytest.raises(ValueError, match="either a client or base_url"):
        OpenAIBackend(client, model="m", base_url="http://other/v1")
    with pytest.raises(TypeError, match="openai.OpenAI"):
        OpenAIBackend(object(), model="m")
    with pytest.raises(ValueError, match="model"):
        OpenAIBackend(client, model="")
