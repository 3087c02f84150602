"""looplet 0.4.1's provider backends (``looplet._compat_backends``), ``async_llm_call``
(``_compat_async``), ``PermissionHook(PermissionEngine)`` (``_compat_permissions``), ``on_event(payload)``
hooks (``_compat_events``) and ``Allow(updated_args=)``: each old spelling works and warns once, naming
the 0.5 spelling; the 0.5 spellings next to them are unchanged."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from looplet import (
    AnthropicBackend,
    DefaultState,
    MockLLMBackend,
    OpenAIBackend,
    composable_loop,
    run_loop,
    tools_from,
)

# the warnings each row must give are checked by warns(); the others (a second use, the same helper) are expected
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@contextmanager
def warns(*words: str) -> Iterator[list[str]]:
    """At least one DeprecationWarning; one of them names each of ``words`` and the removal version."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(all(word in m for word in (*words, "0.7")) for m in messages), messages


class FakeOpenAI:
    """Shaped like ``openai.OpenAI`` (``chat.completions.create``), as 0.4.1's tests built it."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers) or ["Hello world"]
        self.requests: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        if kwargs.get("stream"):
            return iter(
                SimpleNamespace(choices=[SimpleNamespace(delta=SimpleNamespace(content=t))]) for t in "ab"
            )
        answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        message = answer if not isinstance(answer, str) else SimpleNamespace(content=answer, tool_calls=None)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.messages = SimpleNamespace(create=self.create, stream=self.stream)

    def create(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        return SimpleNamespace(content=[SimpleNamespace(type="text", text="hi there")])

    def stream(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        return _Ctx(SimpleNamespace(text_stream=iter(["x", "y"])))


class _Ctx:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        return None


# ---------------------------------------------------------------- backends


def test_openai_backend_around_a_duck_typed_client_answers_041_calls() -> None:
    client = FakeOpenAI()
    with warns("OpenAIBackend(client)", "OpenAIBackend(openai.OpenAI(...), model=...)"):
        llm = OpenAIBackend(client, model="m")
    assert isinstance(llm, OpenAIBackend)
    assert llm.generate("hello", system_prompt="be nice") == "Hello world"
    assert client.requests[0]["model"] == "m"
    assert client.requests[0]["messages"] == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hello"},
    ]
    llm.generate("again")
    assert client.requests[1]["messages"] == [{"role": "user", "content": "again"}]
    assert "extra_body" not in client.requests[1]  # no prompt_cache_key unless asked for


def test_openai_native_tool_blocks_keep_only_visible_text() -> None:
    call = SimpleNamespace(id="c1", function=SimpleNamespace(name="done", arguments='{"answer": "ok"}'))
    parts = [{"type": "text", "text": "Hel"}, {"type": "input_file"}, {"type": "text", "text": "lo"}]
    client = FakeOpenAI(SimpleNamespace(content=parts, tool_calls=[call]))
    with warns("OpenAIBackend(client)"):
        llm = OpenAIBackend(client, model="m", tool_choice="required")
    blocks = llm.generate_with_tools("go", tools=[{"name": "done", "input_schema": {"type": "object"}}])
    assert blocks == [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "c1", "name": "done", "input": {"answer": "ok"}},
    ]
    sent = client.requests[0]
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object"}


def test_prompt_cache_key_follows_the_cached_sections_not_the_prompt() -> None:
    from looplet.cache import CacheControl, CachePolicy, compute_breakpoints

    with warns("CachePolicy"):
        policy = CachePolicy(system_prompt=CacheControl())
    with warns("compute_breakpoints"):
        bps = compute_breakpoints(policy, system_prompt="SYS", tool_schemas_text="", memory_text="")
    other = compute_breakpoints(policy, system_prompt="OTHER", tool_schemas_text="", memory_text="")
    client = FakeOpenAI()
    with warns("OpenAIBackend(client)"):
        llm = OpenAIBackend(client, model="m", use_prompt_cache_key=True)
    llm.generate("one", cache_breakpoints=bps)
    llm.generate("two", cache_breakpoints=bps)
    llm.generate("one", cache_breakpoints=other)
    keys = [r["extra_body"]["prompt_cache_key"] for r in client.requests]
    assert keys[0] == keys[1] != keys[2] and keys[0].startswith("looplet-")


def test_anthropic_cache_marks_system_last_tool_and_memory_prefix() -> None:
    from looplet.cache import CacheControl, CachePolicy, compute_breakpoints

    policy = CachePolicy(
        system_prompt=CacheControl(), tool_schemas=CacheControl(ttl="1h"), memory=CacheControl()
    )
    bps = compute_breakpoints(policy, system_prompt="SYS", tool_schemas_text="T", memory_text="MEM")
    client = FakeAnthropic()
    with warns("AnthropicBackend(client)"):
        llm = AnthropicBackend(client, model="claude")
    tools = [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}]
    llm.generate_with_tools("MEM then task", tools=tools, system_prompt="SYS", cache_breakpoints=bps)
    sent = client.requests[0]
    assert sent["system"] == [{"type": "text", "text": "SYS", "cache_control": {"type": "ephemeral"}}]
    assert sent["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in tools[-1] and "cache_control" not in sent["tools"][0]
    assert sent["messages"][0]["content"][0] == {
        "type": "text",
        "text": "MEM",
        "cache_control": {"type": "ephemeral"},
    }
    assert sent["messages"][0]["content"][1] == {"type": "text", "text": " then task"}
    assert llm.generate("no marks") == "hi there"
    assert client.requests[1]["messages"] == [{"role": "user", "content": "no marks"}]


def test_streaming_and_async_classes() -> None:
    from looplet.backends import AnthropicStreamingBackend, AsyncOpenAIBackend, OpenAIStreamingBackend

    with warns("OpenAIStreamingBackend"):
        streaming = OpenAIStreamingBackend(FakeOpenAI(), model="m")
    assert list(streaming.stream("hi")) == ["a", "b"]
    with warns("AnthropicStreamingBackend"):
        assert list(AnthropicStreamingBackend(FakeAnthropic()).stream("hi")) == ["x", "y"]

    async def create(**kwargs: Any) -> Any:
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="async ok"))])

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    with warns("AsyncOpenAIBackend"):
        llm = AsyncOpenAIBackend(client, model="m")
    assert asyncio.run(llm.generate("hi")) == "async ok"


def test_old_backend_runs_the_05_loop_through_json_text() -> None:
    client = FakeOpenAI('{"tool": "done", "args": {"answer": "42"}}')
    with warns("OpenAIBackend(client)"):
        llm = OpenAIBackend(client, model="m")
    with warns("generate(messages"):
        result = run_loop(llm=llm, tools=tools_from([]), max_steps=2, task={"goal": "answer"})
    assert (result.stop_reason, result.final_output) == ("done", "42")
    assert "answer" in client.requests[0]["messages"][-1]["content"]


def test_old_backend_native_tool_calls_reach_the_05_loop() -> None:
    call = SimpleNamespace(id="c9", function=SimpleNamespace(name="done", arguments='{"answer": "native"}'))
    client = FakeOpenAI(SimpleNamespace(content=None, tool_calls=[call]))
    with warns("OpenAIBackend(client)"):
        llm = OpenAIBackend(client, model="m")
    result = run_loop(llm=llm, tools=tools_from([]), max_steps=2, task={"goal": "answer"})
    assert (result.stop_reason, result.final_output, result.steps[0].tool_call.id) == ("done", "native", "c9")
    sent = client.requests[0]["tools"]
    assert [t["function"]["name"] for t in sent] == ["done"]  # 0.5's schemas, as 0.4.1's, as OpenAI's
    assert sent[0]["function"]["parameters"]["required"] == ["answer"]


def test_05_backend_is_unchanged_for_its_own_clients() -> None:
    openai = pytest.importorskip("openai")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        llm = OpenAIBackend(openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1"), model="m")
    assert type(llm) is OpenAIBackend
    with pytest.raises(TypeError, match="openai.OpenAI"):
        OpenAIBackend(object(), model="m")  # not shaped like a client: 0.5's error, no 0.4.1 adapter


def test_from_env_names_every_missing_setting_and_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError) as caught:
        OpenAIBackend.from_env()
    assert isinstance(caught.value, ValueError)
    assert "OPENAI_MODEL is not set" in str(caught.value) and "OPENAI_API_KEY is not set" in str(caught.value)
    monkeypatch.setenv("OPENAI_MODEL", "m")
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set") as only_key:
        OpenAIBackend.from_env()
    assert "OPENAI_MODEL" not in str(only_key.value)


# ---------------------------------------------------------------- async_llm_call


def test_async_llm_call_retries_then_answers_and_never_raises() -> None:
    from looplet.async_loop import async_llm_call

    class Flaky:
        calls = 0

        async def generate(self, prompt: str, **kwargs: Any) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("transient")
            return f"answer to {prompt}"

    llm = Flaky()
    with warns("async_llm_call", "agenerate"):
        result = asyncio.run(async_llm_call(llm, "q", max_retries=1))
    assert (result.ok, result.text, llm.calls) == (True, "answer to q", 2)
    failed = asyncio.run(async_llm_call(Flaky(), "q", max_retries=0))
    assert not failed.ok and isinstance(failed.error, ConnectionError)


def test_async_llm_call_native_tools_need_generate_with_tools() -> None:
    from looplet.async_loop import async_llm_call
    from looplet.native_tools import NativeToolPolicy, NativeToolUnsupportedError

    class TextOnly:
        def generate(self, prompt: str, **kwargs: Any) -> str:
            return "text"

    result = asyncio.run(async_llm_call(TextOnly(), "q", tools=[{"name": "done"}]))
    assert isinstance(result.error, NativeToolUnsupportedError)
    with warns("NativeToolPolicy"):
        policy = NativeToolPolicy(enabled=False)
    assert (
        asyncio.run(async_llm_call(TextOnly(), "q", tools=[{"name": "done"}], native_policy=policy)).text
        == "text"
    )


# ---------------------------------------------------------------- PermissionHook(PermissionEngine)


def _engine_run(engine: Any, *hooks: Any) -> tuple[list[Any], list[str]]:
    from looplet import PermissionHook, ToolSpec

    ran: list[str] = []
    tools = tools_from(
        [ToolSpec("danger", "d", {"cmd": {"type": "string"}}, lambda cmd: ran.append(cmd) or "ok")]
    )
    llm = MockLLMBackend(
        ['{"tool": "danger", "args": {"cmd": "ls"}}', '{"tool": "done", "args": {"answer": "x"}}']
    )
    steps = list(composable_loop(llm=llm, tools=tools, hooks=[PermissionHook(engine), *hooks], max_steps=3))
    return steps, ran


def test_permission_engine_asks_once_and_records_denials() -> None:
    from looplet.permissions import PermissionDecision, PermissionEngine

    asked: list[str] = []
    engine = PermissionEngine(
        ask_handler=lambda call, rule: asked.append(call.args["cmd"]) or PermissionDecision.ALLOW
    )
    engine.ask("danger")
    steps, ran = _engine_run(engine)
    assert (asked, ran, engine.denials) == (["ls"], ["ls"], [])

    class Rewrite:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> None:
            tool_call.args["cmd"] = "rm"  # after the approval: the approved call is not the one to run

    asked.clear()
    steps, ran = _engine_run(engine, Rewrite())
    assert (asked, ran) == (["ls"], [])
    assert steps[0].tool_result.error_kind == "denied" and len(engine.denials) == 1


def test_permission_engine_matcher_failure_denies_without_asking_and_check_permission() -> None:
    from looplet import PermissionHook, ToolCall
    from looplet.permissions import PermissionEngine

    asked: list[Any] = []
    engine = PermissionEngine(ask_handler=lambda call, rule: asked.append(call))
    engine.ask("danger", arg_matcher=lambda args: 1 / 0)
    assert engine.evaluate(ToolCall("danger", {})).denied and asked == []
    hook = PermissionHook(PermissionEngine().deny("danger"))
    with warns("check_permission", "rule_for"):
        assert hook.check_permission(ToolCall("danger", {}), None) is False
    assert hook.check_permission(ToolCall("safe", {}), None) is True


# ---------------------------------------------------------------- on_event(payload), Allow(updated_args=)


def _adder() -> Any:
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    return tools_from([add])


SCRIPT = ['{"tool": "add", "args": {"a": 1, "b": 2}}', '{"tool": "done", "args": {"answer": "ok"}}']


@pytest.mark.parametrize("slot", ["pre_llm_call", "post_llm_response"])
def test_old_on_event_context_reaches_the_model(slot: str) -> None:
    from looplet.testing import MockLLMBackend as OldMock

    seen: list[int] = []

    class Hook:
        def on_event(self, payload: Any) -> Any:
            if payload.event.value == slot:
                seen.append(payload.step_num)
                return "event context"
            return None

    with warns("looplet.testing.MockLLMBackend"):
        llm = OldMock(SCRIPT)
    with warns("on_event(payload)", "on_event(name, attributes)"):
        steps = list(composable_loop(llm=llm, tools=_adder(), hooks=[Hook()], max_steps=3))
    assert [s.tool_call.tool for s in steps] == ["add", "done"]
    assert seen == [1, 2] and "event context" in llm.last_prompt


@pytest.mark.parametrize("slot", ["pre_llm_call", "post_llm_response"])
def test_old_on_event_stop_ends_the_run_after_the_step(slot: str) -> None:
    from looplet import Stop

    class Hook:
        def on_event(self, payload: Any) -> Any:
            return Stop("enough") if payload.event.value == slot else None

    state = DefaultState(max_steps=3)
    with warns("on_event(payload)"):
        steps = list(composable_loop(llm=MockLLMBackend(SCRIPT), tools=_adder(), hooks=[Hook()], state=state))
    assert [s.tool_call.tool for s in steps] == ["add"]
    assert state.result.stop_reason == "hook_stop:enough"
    with warns("state._stop_reason"):
        assert state._stop_reason == "enough"


def test_lifecycle_events_and_a_05_on_event_hook_is_left_alone() -> None:
    events: list[tuple[str, Any]] = []

    class Old:
        def on_event(self, payload: Any) -> None:
            events.append((payload.event, payload.termination_reason))

    class New:
        def on_event(self, name: str, attributes: dict[str, Any]) -> None:
            raise AssertionError("not called: no 0.5 event is emitted in this run")

    from looplet import LifecycleEvent

    assert {e.value for e in LifecycleEvent} >= {"session_start", "pre_tool_use", "stop"}
    new = New()
    run_loop(llm=MockLLMBackend(SCRIPT), tools=_adder(), hooks=[Old(), new], max_steps=3)
    names = [e for e, _ in events]
    assert names[0] == LifecycleEvent.SESSION_START and names[-1] == LifecycleEvent.STOP
    assert LifecycleEvent.POST_TOOL_USE in names and events[-1][1] == "done"


def test_allow_updated_args_rewrites_the_call() -> None:
    from looplet import Allow

    class Rewriter:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
            return Allow(updated_args={"a": 99, "b": 1}) if tool_call.tool == "add" else None

    with warns("Allow(updated_args=...)", "HookDecision(updated_args=...)"):
        result = run_loop(llm=MockLLMBackend(SCRIPT), tools=_adder(), hooks=[Rewriter()], max_steps=3)
    assert result.steps[0].tool_result.data == {"sum": 100}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert Allow().updated_args is None  # 0.5's Allow() unchanged, no warning


def test_a_missing_argument_names_the_stray_one_sent_instead() -> None:
    from looplet import ToolCall, ToolSpec

    schema = {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}
    reg = tools_from([ToolSpec("read", "read a file", schema, lambda file_path: file_path)])
    typo = reg.dispatch(ToolCall("read", {"file_pth": "/etc/hosts"}))
    assert typo.error_kind == "missing_argument"
    assert "Did you mean 'file_path' where you wrote 'file_pth' (accepted: file_path)" in typo.error
    unknown = reg.dispatch(ToolCall("read", {"zzqq": "x"}))
    assert "'zzqq' is not an argument of this tool (accepted: file_path)" in unknown.error
    plain = reg.dispatch(ToolCall("read", {}))
    assert (
        plain.error
        == "Invalid call to read: missing required argument 'file_path'. Fix the arguments and call it again."
    )


def test_emit_event_skips_method_equivalents_logs_failures_and_reads_the_live_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from looplet import Deny
    from looplet.loop import emit_event

    seen: list[str] = []
    hooks: list[Any] = []

    class HasMethod:
        def pre_dispatch(self, *args: Any) -> None:
            return None

        def on_event(self, payload: Any) -> None:
            raise AssertionError("pre_tool_use goes to pre_dispatch, not on_event")

    class Broken:
        def on_event(self, payload: Any) -> None:
            raise RuntimeError("observer failure")

    class Late:
        def on_event(self, payload: Any) -> Any:
            seen.append(payload.event.value)
            return Deny("no")

    class Adds:
        def on_event(self, payload: Any) -> None:
            seen.append("adds")
            hooks.append(Late())

    from looplet.events import LifecycleEvent

    hooks.extend([HasMethod(), Broken(), Adds()])
    with warns("emit_event(hooks, event, ...)"):
        decisions = emit_event(hooks, LifecycleEvent.PRE_TOOL_USE, step_num=3)
    assert seen == ["adds", "pre_tool_use"] and [d.block for d in decisions] == ["no"]
    assert "observer failure" in caplog.text
    emit_event("compaction", saved=1)  # 0.5's form: outside a run, nothing happens and nothing warns


def test_error_detail_families_of_raised_exceptions_and_recovery_hints() -> None:
    from looplet import ToolCall, ToolSpec
    from looplet.types import ErrorKind

    def slow() -> None:
        raise TimeoutError("deadline")

    def bad() -> None:
        raise ValueError("bad arg")

    def boom() -> None:
        raise RuntimeError("oops")

    reg = tools_from([slow, bad, boom, ToolSpec("rank", "d", {"column": "col"}, lambda column: column)])
    with warns("ToolResult.error_detail"):
        timeout = reg.dispatch(ToolCall("slow", {})).error_detail
    assert (timeout.kind, timeout.retriable, timeout.context) == (
        ErrorKind.TIMEOUT,
        False,
        {"effect_unknown": True},
    )
    assert reg.dispatch(ToolCall("bad", {})).error_detail.kind == ErrorKind.VALIDATION
    assert reg.dispatch(ToolCall("boom", {})).error_detail.kind == ErrorKind.EXECUTION
    assert reg.dispatch(ToolCall("rnak", {"column": "x"})).error_detail.recovery_hint == "rank"
    hint = reg.dispatch(ToolCall("rank", {"colmun": "x"})).error_detail.recovery_hint
    assert hint == {
        "unexpected": ["colmun"],
        "expected": ["column"],
        "did_you_mean": "column",
        "missing": ["column"],
    }
    assert reg.dispatch(ToolCall("boom", {})).error_detail.recovery_hint is None


@pytest.mark.parametrize("given", [None, "allow", "deny"])
def test_hook_decision_keeps_041_metadata_and_permission(given: Any) -> None:
    from looplet import HookDecision
    from looplet.hook_decision import normalize_hook_return

    with warns("HookDecision(metadata=...)"):
        decision = HookDecision(block="not in sandbox", permission=given, metadata={"rule": 1})
    gate = normalize_hook_return(decision, slot="pre_dispatch")
    assert (gate.permission, gate.block, gate.metadata) == ("deny", "not in sandbox", {"rule": 1})
    assert decision.permission == given  # the hook's own decision is not changed
    plain = HookDecision(block="x")
    assert normalize_hook_return(plain, slot="check_permission") is plain
    assert not hasattr(plain, "metadata")  # 0.5's HookDecision is unchanged
