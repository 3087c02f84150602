"""AnthropicBackend with the real ``anthropic`` client against the local fake server, through both loops."""

from __future__ import annotations

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import Usage
from looplet.backends.anthropic import AnthropicBackend, to_anthropic
from looplet.tools import INVALID_JSON_KEY
from tests.fakeserver import LLMRecorder, empty, error, hang, text, tool_call, tool_calls, usage
from tests.integration._agent import done, go
from tests.unit._harness import MODES


@pytest.fixture
def llm(fake_llm_server):
    backend = AnthropicBackend(
        model="claude-test", base_url=fake_llm_server.anthropic_url, api_key="test-key", timeout=2.0
    )
    yield backend
    backend.close()


@pytest.mark.parametrize("mode", MODES)
def test_multi_step_run_with_usage_including_cache_reads(mode, llm, fake_llm_server):
    fake_llm_server.script(
        tool_call(
            "search", {"query": "looplet"}, usage=usage(40, 9, cached=25), model="claude-test-20250101"
        ),
        tool_calls([("search", {"query": "a"}), ("broken", {"x": 1})], usage=usage(60, 14)),
        done(),
    )
    rec = LLMRecorder()
    steps, result = go(mode, llm, hooks=[rec])

    assert result.stop_reason == "done" and result.final_output == "an agent loop"
    assert [s.tool_call.tool for s in steps] == ["search", "search", "broken", "done"]
    # input_tokens counts fresh input plus cache reads (the server sent 15 fresh + 25 read)
    assert steps[0].usage == Usage(40, 9, 25, 0) and steps[0].model == "claude-test-20250101"
    assert steps[1].usage == Usage(60, 14) and steps[2].usage is None
    assert result.usage == Usage(40 + 60 + 20, 9 + 14 + 10, 25, 0)
    assert [r.response_id for r in rec.responses] == [q.response_id for q in fake_llm_server.requests]
    assert [r.finish_reason for r in rec.responses] == ["tool_use"] * 3
    first = rec.responses[0]
    assert (first.provider, first.server_address, first.server_port) == (
        "anthropic",
        "127.0.0.1",
        fake_llm_server.port,
    )


@pytest.mark.parametrize("mode", MODES)
def test_transcript_on_the_wire_is_messages_api_shaped(mode, llm, fake_llm_server):
    fake_llm_server.script(
        text("Let me look.", tool_calls=[("search", {"query": "x"}, "tu_a"), ("broken", {"x": 2}, "tu_b")]),
        done(),
    )
    steps, result = go(mode, llm, system_prompt="Be brief.", max_tokens=300)
    assert result.stop_reason == "done"

    first, second = fake_llm_server.bodies("/v1/messages")
    assert first["system"] == "Be brief." and first["max_tokens"] == 300 and first["model"] == "claude-test"
    spec = next(t for t in first["tools"] if t["name"] == "search")
    assert spec["input_schema"]["required"] == ["query"] and spec["description"] == "Search the docs."
    assert first["messages"] == [{"role": "user", "content": [{"type": "text", "text": "What is looplet?"}]}]
    user, assistant, results = second["messages"]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "tu_a", "name": "search", "input": {"query": "x"}},
            {"type": "tool_use", "id": "tu_b", "name": "broken", "input": {"x": 2}},
        ],
    }
    assert results["role"] == "user"  # both results in ONE user turn
    ok, failed = results["content"]
    assert ok["type"] == "tool_result" and ok["tool_use_id"] == "tu_a" and "about x" in ok["content"]
    assert "is_error" not in ok
    assert failed["tool_use_id"] == "tu_b" and failed["is_error"] is True and "disk full" in failed["content"]


@pytest.mark.parametrize("mode", MODES)
def test_context_injected_after_tool_results_keeps_turns_alternating(mode, llm, fake_llm_server):
    class Remind:
        def pre_prompt(self, state, session_log, context, step_num):
            return "Reminder: be brief." if step_num > 1 else None

    fake_llm_server.script(tool_call("search", {"query": "x"}, "tu_1"), done())
    steps, result = go(mode, llm, hooks=[Remind()])
    assert result.stop_reason == "done"  # the fake, like the API, rejects two user turns in a row
    last = fake_llm_server.bodies()[1]["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]
    assert last["content"][1]["text"] == "Reminder: be brief."


@pytest.mark.parametrize("mode", MODES)
def test_overload_429_and_timeout_are_retried(mode, fake_llm_server):
    llm = AnthropicBackend(
        model="claude-test", base_url=fake_llm_server.anthropic_url, api_key="k", timeout=0.3
    )
    fake_llm_server.script(error(529, "Overloaded"), error(429, retry_after=0), hang(5), done())
    rec = LLMRecorder()
    steps, result = go(mode, llm, hooks=[rec], llm_retries=3)
    assert result.stop_reason == "done"
    assert [(e.status, e.kind) for _, e, _ in rec.retries] == [
        (529, "http_529"),
        (429, "http_429"),
        (None, "timeout"),
    ]
    assert rec.retries[1][2] == 0.0  # Retry-After: 0


@pytest.mark.parametrize("mode", MODES)
def test_persistent_500_ends_with_llm_error(mode, llm, fake_llm_server):
    fake_llm_server.script(*[error(500, "internal")] * 2)
    steps, result = go(mode, llm, llm_retries=1)
    assert (
        result.stop_reason == "llm_error"
        and "HTTP 500" in result.error
        and len(fake_llm_server.requests) == 2
    )


@pytest.mark.parametrize("mode", MODES)
def test_bad_key_is_not_retried_and_names_the_variable(mode, llm, fake_llm_server):
    fake_llm_server.script(error(401, "invalid x-api-key"))
    steps, result = go(mode, llm)
    assert result.stop_reason == "llm_error" and "ANTHROPIC_API_KEY" in result.error
    assert len(fake_llm_server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_malformed_streamed_arguments_become_an_error_step(mode, llm, fake_llm_server):
    fake_llm_server.script(tool_call("search", '{"query": "unterminated', "tu_bad"), done())
    steps, result = go(mode, llm, stream=True)
    assert result.stop_reason == "done"
    assert steps[0].tool_call.args == {INVALID_JSON_KEY: '{"query": "unterminated'}
    assert steps[0].tool_result.error_kind == "invalid_argument"
    results = fake_llm_server.bodies()[1]["messages"][-1]["content"]
    assert results[0]["tool_use_id"] == "tu_bad" and results[0]["is_error"] is True


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_answer_is_fed_back_and_the_model_recovers(mode, llm, fake_llm_server):
    fake_llm_server.script(empty(), done())
    steps, result = go(mode, llm)
    assert result.stop_reason == "done"
    messages = fake_llm_server.bodies()[1]["messages"]
    assert messages[-2] == {"role": "assistant", "content": [{"type": "text", "text": "(no answer)"}]}
    assert "did not call a tool" in messages[-1]["content"][0]["text"]


def _traced_client(server, exporter, cls=anthropic.Anthropic):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return cls(base_url=server.anthropic_url, api_key="k", open_telemetry={"tracer_provider": provider})


def test_the_clients_own_spans_are_off(fake_llm_server):
    exporter = InMemorySpanExporter()
    client = _traced_client(fake_llm_server, exporter)
    fake_llm_server.script(text("hi"), text("hi"), text("hi"))
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert len(exporter.get_finished_spans()) == 1  # the client traces when left alone...
    exporter.clear()

    llm = AnthropicBackend(client, model="m")
    llm.generate([{"role": "user", "content": "hi"}])
    llm.generate([{"role": "user", "content": "hi"}], stream=True)
    assert exporter.get_finished_spans() == ()  # ...but not inside looplet, whose chat span is the only one


def test_transcript_conversion_edge_cases():
    system, messages = to_anthropic(
        [
            {"role": "system", "content": "A"},
            {"role": "system", "content": "B"},
            {"role": "user", "content": "task"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": ""},
            {"role": "assistant", "content": "   "},
            {"role": "user", "content": [{"type": "text", "text": "more"}, {"type": "text", "text": ""}]},
        ]
    )
    assert system == "A\n\nB"
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {INVALID_JSON_KEY: "{not json"}}
    ]
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": "(empty)"}]
    assert messages[3]["content"] == [{"type": "text", "text": "(no answer)"}]
    assert messages[4]["content"] == [{"type": "text", "text": "more"}]


def test_from_env_and_bad_arguments(monkeypatch, fake_llm_server):
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_MODEL"):
        AnthropicBackend.from_env()
    monkeypatch.setenv("ANTHROPIC_MODEL", "claude-test")
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend.from_env()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_llm_server.anthropic_url)
    assert AnthropicBackend.from_env().server_port == fake_llm_server.port
    with pytest.raises(ValueError, match="max_tokens"):
        AnthropicBackend(model="m", api_key="k", max_tokens=0)
    with pytest.raises(TypeError, match="anthropic.Anthropic"):
        AnthropicBackend(object(), model="m")


@pytest.mark.parametrize(
    ("mode", "kind"), [("sync", "sync_client"), ("async", "sync_client"), ("async", "async_client")]
)
def test_a_users_client_is_used_without_its_own_retries(mode, kind, fake_llm_server):
    cls = anthropic.Anthropic if kind == "sync_client" else anthropic.AsyncAnthropic
    client = cls(base_url=fake_llm_server.anthropic_url, api_key="user-key", max_retries=5)
    llm = AnthropicBackend(client, model="claude-test")
    fake_llm_server.script(error(503), done())
    steps, result = go(mode, llm, llm_retries=0)
    assert result.stop_reason == "llm_error" and "HTTP 503" in result.error
    assert len(fake_llm_server.requests) == 1 and client.max_retries == 5
    assert (
        fake_llm_server.requests[0].headers.get("authorization") == "Bearer user-key"
        or fake_llm_server.requests[0].headers.get("x-api-key") == "user-key"
    )
