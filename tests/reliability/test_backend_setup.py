"""Plain setup mistakes with the real clients give one clear error, at construction when possible."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from looplet import DefaultState, LoopConfig, tools_from
from looplet.backends.anthropic import AnthropicBackend
from looplet.backends.openai import OpenAIBackend
from looplet.progress import StepPrinter
from tests.unit._harness import MODES, run

PROVIDERS = ["openai", "anthropic"]


def test_anthropic_without_a_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend(model="claude-haiku-4-5", base_url="http://127.0.0.1:9")


def test_anthropic_takes_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-from-env")
    llm = AnthropicBackend(model="claude-haiku-4-5", base_url="http://127.0.0.1:9")
    llm.close()


@pytest.mark.parametrize("value", [True, False, None, {"traces": False}])
def test_anthropic_open_telemetry_takes_what_the_recipe_shows(value, fake_llm_server):
    from tests.fakeserver import tool_call

    fake_llm_server.script(tool_call("done", {"answer": "ok"}))
    llm = AnthropicBackend(
        model="claude-haiku-4-5", base_url=fake_llm_server.anthropic_url, api_key="k", open_telemetry=value
    )
    out = llm.generate([{"role": "user", "content": "hi"}])
    assert out.tool_calls[0].tool == "done"
    llm.close()


def test_anthropic_open_telemetry_of_the_wrong_type_is_a_clear_type_error():
    with pytest.raises(TypeError, match="open_telemetry"):
        AnthropicBackend(model="claude-haiku-4-5", api_key="k", open_telemetry="yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend(provider: str, url: str) -> Any:
    if provider == "openai":
        return OpenAIBackend(model="gpt-4o-mini", base_url=url, api_key="k", timeout=2.0)
    return AnthropicBackend(model="claude-haiku-4-5", base_url=url, api_key="k", timeout=2.0)


def go(mode: str, llm: Any) -> Any:
    _steps, result = run(
        mode,
        llm=llm,
        task={"goal": "x"},
        tools=tools_from([]),
        state=DefaultState(max_steps=2),
        config=LoopConfig(max_steps=2, llm_retries=1, llm_backoff_s=0.01),
    )
    return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_nothing_listening_at_the_base_url_is_reported_as_a_connection_failure(provider, mode):
    url = f"http://127.0.0.1:{_free_port()}" + ("/v1" if provider == "openai" else "")
    result = go(mode, backend(provider, url))
    assert result.stop_reason == "llm_error" and result.llm_calls == 0
    assert "connection to" in result.error and "failed" in result.error and "127.0.0.1" in result.error
    assert "price" not in result.error
    summary = StepPrinter(io.StringIO()).summary(result)  # what `looplet run` and the examples print
    assert "not priced" not in summary and "no LLM call was answered" in summary


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_base_url_with_the_wrong_path_is_reported_as_not_found(provider, mode, fake_llm_server):
    result = go(mode, backend(provider, fake_llm_server.url + "/wrong/path"))
    assert result.stop_reason == "llm_error" and result.llm_calls == 0
    assert "HTTP 404" in result.error and "check base_url" in result.error
