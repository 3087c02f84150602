"""TracingHook: the span tree, its GenAI attributes, context while work runs, lifecycle, events, content."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA
from opentelemetry.semconv.attributes import error_attributes as EA
from opentelemetry.trace import SpanKind, StatusCode

from looplet import (
    DefaultState,
    Deny,
    LoopConfig,
    Stop,
    ToolCall,
    Usage,
    async_composable_loop,
    composable_loop,
    emit_event,
    tool,
    tools_from,
)
from looplet.backends.mock import MockLLMBackend
from looplet.errors import LLMError
from looplet.hooks import current_run
from looplet.telemetry import names as N
from looplet.telemetry.redact import Redactor, redact, redact_json
from looplet.telemetry.tracing import TracingHook, cap_json
from looplet.types import LLMResponse
from tests.unit._harness import MODES, run

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Tracker(SpanProcessor):
    """Remembers every span started and ended, to prove none is left open."""

    def __init__(self) -> None:
        self.started: dict[int, str] = {}
        self.ended: set[int] = set()
        self._lock = threading.Lock()

    def on_start(self, span, parent_context=None):
        with self._lock:
            self.started[span.context.span_id] = span.name

    def on_end(self, span):
        with self._lock:
            self.ended.add(span.context.span_id)

    def open(self) -> list[str]:
        return [name for sid, name in self.started.items() if sid not in self.ended]


@pytest.fixture
def otel():
    exporter = InMemorySpanExporter()
    tracker = Tracker()
    provider = TracerProvider()
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ns = SimpleNamespace(
        provider=provider, exporter=exporter, tracker=tracker, tracer=provider.get_tracer("test")
    )
    ns.spans = lambda: list(exporter.get_finished_spans())
    ns.named = lambda prefix: [s for s in ns.spans() if s.name.startswith(prefix)]
    ns.by_id = lambda: {s.context.span_id: s for s in ns.spans()}
    yield ns
    provider.shutdown()


@tool(description="Add two numbers.")
def add(a: int, b: int) -> int:
    return a + b


def mock(*script, model="gpt-4o-mini", **kw):
    return MockLLMBackend(
        list(script), model=model, usage=Usage(100, 20, cached_input_tokens=30, reasoning_tokens=5), **kw
    )


CALL = '{"tool": "add", "args": {"a": 1, "b": 2}}'
TWO = '[{"tool": "add", "args": {"a": 1, "b": 2}}, {"tool": "add", "args": {"a": 3, "b": "x"}}]'
DONE = '{"tool": "done", "args": {"answer": "3"}}'


def go(mode, llm, hooks, tools=None, **config):
    config.setdefault("llm_backoff_s", 0.001)
    return run(
        mode,
        llm=llm,
        task={"goal": "add"},
        tools=tools or tools_from([add]),
        hooks=hooks,
        config=LoopConfig(**config),
    )


def parent_of(span, by_id):
    return by_id.get(span.parent.span_id) if span.parent else None


# -- the tree --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_span_tree_kinds_names_and_genai_attributes(mode, otel):
    steps, result = go(mode, mock(CALL, TWO, DONE), [TracingHook(otel.provider)], agent_name="adder")
    spans = otel.spans()
    by_id = otel.by_id()
    assert otel.tracker.open() == []

    (agent,) = otel.named("invoke_agent")
    assert agent.name == "invoke_agent adder" and agent.kind is SpanKind.INTERNAL and agent.parent is None
    a = agent.attributes
    assert a[GA.GEN_AI_OPERATION_NAME] == "invoke_agent" and a[GA.GEN_AI_AGENT_NAME] == "adder"
    assert a[GA.GEN_AI_CONVERSATION_ID] == result.run_id and a[GA.GEN_AI_PROVIDER_NAME] == "mock"
    assert a[N.STOP_REASON] == "done" and a[N.RUN_STEPS] == 4 and a[N.RUN_LLM_CALLS] == 3
    assert a[N.RUN_INPUT_TOKENS] == 300 and a[N.RUN_OUTPUT_TOKENS] == 60 and a[N.RUN_CACHED_TOKENS] == 90
    assert a[N.COST_USD] == pytest.approx(result.cost_usd)
    # aggregates never under gen_ai.usage.* on the agent span (backends sum those over a trace)
    assert not [k for k in a if k.startswith("gen_ai.usage.")]
    assert agent.status.status_code is StatusCode.UNSET

    step_spans = sorted(otel.named(N.STEP_SPAN), key=lambda s: s.attributes[N.STEP_NUMBER])
    assert [s.attributes[N.STEP_NUMBER] for s in step_spans] == [1, 2, 3, 4]
    assert all(parent_of(s, by_id) is agent and s.kind is SpanKind.INTERNAL for s in step_spans)
    # every Step carries the trace id and its own step span's id
    for step, span in zip(steps, step_spans, strict=True):
        assert step.trace_id == format(agent.context.trace_id, "032x") == result.trace_id
        assert step.span_id == format(span.context.span_id, "016x")

    chats = otel.named("chat ")
    assert len(chats) == result.llm_calls == 3
    assert [parent_of(c, by_id).attributes[N.STEP_NUMBER] for c in chats] == [1, 2, 4]  # step 3 shared a call
    for c in chats:
        ca = c.attributes
        assert c.name == "chat gpt-4o-mini" and c.kind is SpanKind.CLIENT
        assert ca[GA.GEN_AI_OPERATION_NAME] == "chat" and ca[GA.GEN_AI_PROVIDER_NAME] == "mock"
        assert ca[GA.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini" and ca[GA.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini"
        assert ca[GA.GEN_AI_RESPONSE_ID].startswith("mock-")
        assert ca[GA.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
        assert ca[GA.GEN_AI_USAGE_INPUT_TOKENS] == 100 and ca[GA.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
        assert ca[GA.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 30
        assert ca[GA.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 5
        assert GA.GEN_AI_INPUT_MESSAGES not in ca  # no content unless asked

    tools = otel.named("execute_tool ")
    assert len(tools) == 4
    for t, step in zip(sorted(tools, key=lambda s: s.start_time), steps, strict=True):
        ta = t.attributes
        assert t.kind is SpanKind.INTERNAL and t.name == f"execute_tool {step.tool_call.tool}"
        assert (
            ta[GA.GEN_AI_OPERATION_NAME] == "execute_tool" and ta[GA.GEN_AI_TOOL_NAME] == step.tool_call.tool
        )
        assert ta[GA.GEN_AI_TOOL_CALL_ID] == step.tool_call.id and ta[GA.GEN_AI_TOOL_TYPE] == "function"
        assert parent_of(t, by_id).attributes[N.STEP_NUMBER] == step.number
        assert GA.GEN_AI_TOOL_CALL_ARGUMENTS not in ta
    bad = next(t for t in tools if t.attributes[GA.GEN_AI_TOOL_CALL_ID] == steps[2].tool_call.id)
    assert bad.status.status_code is StatusCode.ERROR and bad.attributes[EA.ERROR_TYPE] == "invalid_argument"

    # spans start and end when the work does: children inside their parents, nothing back-dated
    for s in spans:
        p = parent_of(s, by_id)
        if p is not None:
            assert p.start_time <= s.start_time <= s.end_time <= p.end_time
        assert s.context.trace_id == agent.context.trace_id


def test_only_the_global_provider_is_used_and_never_replaced(otel):
    before = trace.get_tracer_provider()
    hook = TracingHook()  # the global provider (here: the API's proxy, so no SDK: no-op spans)
    steps, result = go("sync", mock(CALL, DONE), [hook])
    assert trace.get_tracer_provider() is before
    assert result.stop_reason == "done" and result.trace_id is None and steps[0].span_id is None


# -- context ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_caller_context_is_untouched_between_yields(mode, otel):
    caller_tracer = otel.tracer

    def check(caller):
        assert trace.get_current_span() is caller
        assert otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None

    if mode == "sync":
        with caller_tracer.start_as_current_span("caller") as caller:
            for _step in composable_loop(
                mock(CALL, TWO, DONE),
                task={"goal": "x"},
                tools=tools_from([add]),
                hooks=[TracingHook(otel.provider, suppress_provider_spans=True)],
            ):
                check(caller)
            check(caller)
    else:

        async def main():
            with caller_tracer.start_as_current_span("caller") as caller:
                async for _step in async_composable_loop(
                    mock(CALL, TWO, DONE),
                    task={"goal": "x"},
                    tools=tools_from([add]),
                    hooks=[TracingHook(otel.provider, suppress_provider_spans=True)],
                ):
                    check(caller)
                    await asyncio.sleep(0)
                check(caller)

        asyncio.run(main())
    assert trace.get_current_span() is trace.INVALID_SPAN
    (agent,) = otel.named("invoke_agent")
    (caller,) = otel.named("caller")
    assert agent.parent.span_id == caller.context.span_id  # the caller's span is the run's parent


class SpanningBackend:
    """A sync-only backend that makes its own span while it works (as an instrumented HTTP client would);
    the async loop runs it in a thread."""

    provider = "mock"

    def __init__(self, tracer, *script):
        self.mock = MockLLMBackend(list(script), model="gpt-4o-mini")
        self.model = "gpt-4o-mini"
        self.tracer = tracer
        self.suppressed = []

    def generate(self, messages, *, tools=None, **options):
        self.suppressed.append(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))
        with self.tracer.start_as_current_span("backend.http"):
            return self.mock.generate(messages, tools=tools, **options)


class AsyncSpanningBackend(SpanningBackend):
    async def agenerate(self, messages, *, tools=None, **options):
        self.suppressed.append(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))
        with self.tracer.start_as_current_span("backend.http"):
            await asyncio.sleep(0.001)
            return await self.mock.agenerate(messages, tools=tools, **options)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cls", [SpanningBackend, AsyncSpanningBackend])
def test_a_span_made_by_the_backend_nests_under_chat(mode, cls, otel):
    llm = cls(otel.tracer, CALL, DONE)  # sync backend in the async loop runs in a thread (context copied)
    go(mode, llm, [TracingHook(otel.provider)])
    by_id = otel.by_id()
    inner = otel.named("backend.http")
    assert len(inner) == 2
    assert all(parent_of(s, by_id).name == "chat gpt-4o-mini" for s in inner)
    assert llm.suppressed == [None, None]


def test_suppress_provider_spans_sets_the_suppression_flag_only_during_the_call(otel):
    llm = SpanningBackend(otel.tracer, CALL, DONE)
    go("sync", llm, [TracingHook(otel.provider, suppress_provider_spans=True)])
    assert llm.suppressed == [True, True]
    assert otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None


def _probe_tool(tracer, seen, *, is_async=False, concurrent_safe=False, pause=0.0):
    if is_async:

        @tool(description="Probe.", concurrent_safe=concurrent_safe)
        async def probe(n: int) -> int:
            await asyncio.sleep(pause)
            with tracer.start_as_current_span("inner", attributes={"n": n}):
                seen.append(threading.current_thread().name)
            return n
    else:

        @tool(description="Probe.", concurrent_safe=concurrent_safe)
        def probe(n: int) -> int:
            time.sleep(pause)
            with tracer.start_as_current_span("inner", attributes={"n": n}):
                seen.append(threading.current_thread().name)
            return n

    return probe


PROBES = '[{"tool": "probe", "args": {"n": 1}}, {"tool": "probe", "args": {"n": 2}}, {"tool": "probe", "args": {"n": 3}}]'


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["inline", "parallel_threads", "timeout_thread", "async_tool"])
def test_a_span_started_inside_a_tool_nests_under_its_execute_tool(mode, variant, otel):
    if variant == "async_tool" and mode == "sync":
        pytest.skip("async tools in the sync loop run on their own event loop; covered by 'inline'")
    seen: list[str] = []
    probe = _probe_tool(
        otel.tracer,
        seen,
        is_async=variant == "async_tool",
        concurrent_safe=variant in ("parallel_threads", "async_tool"),
        pause=0.02,
    )
    config = {"parallel_tools": variant in ("parallel_threads", "async_tool")}
    if variant == "timeout_thread":
        config["tool_timeout_s"] = 5.0
    steps, result = go(
        mode, mock(PROBES, DONE), [TracingHook(otel.provider)], tools=tools_from([probe]), **config
    )
    assert result.stop_reason == "done"
    by_id = otel.by_id()
    inner = otel.named("inner")
    assert len(inner) == 3
    for s in inner:
        tool_span = parent_of(s, by_id)
        assert tool_span.name == "execute_tool probe"
        step = next(x for x in steps if x.tool_call.id == tool_span.attributes[GA.GEN_AI_TOOL_CALL_ID])
        assert step.tool_call.args["n"] == s.attributes["n"]  # the right execute_tool, not a sibling's
        step_span = parent_of(tool_span, by_id)
        assert step_span.attributes[N.STEP_NUMBER] == step.number
        assert step.span_id == format(step_span.context.span_id, "016x")
    if variant == "parallel_threads" and mode == "sync":
        assert all(name.startswith("looplet-tool") for name in seen)
        starts = sorted(t.start_time for t in otel.named("execute_tool probe"))
        ends = sorted(t.end_time for t in otel.named("execute_tool probe"))
        assert starts[-1] < ends[0]  # they really overlapped
    assert otel.tracker.open() == []


def test_http_spans_of_the_real_openai_client_nest_under_chat(otel, fake_llm_server):
    """An HTTP-level span (what an httpx instrumentation makes) inside the official client's request."""
    import httpx2
    import openai

    from looplet.backends.openai import OpenAIBackend
    from tests.fakeserver import tool_call

    class SpanningTransport(httpx2.BaseTransport):
        def __init__(self):
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request):
            with otel.tracer.start_as_current_span("HTTP POST", kind=SpanKind.CLIENT):
                return self.inner.handle_request(request)

    fake_llm_server.script(tool_call("add", {"a": 1, "b": 2}), tool_call("done", {"answer": "3"}))
    client = openai.OpenAI(
        base_url=fake_llm_server.url + "/v1",
        api_key="k",
        http_client=httpx2.Client(transport=SpanningTransport()),
    )
    go("sync", OpenAIBackend(client, model="gpt-4o-mini"), [TracingHook(otel.provider)])
    by_id = otel.by_id()
    http = otel.named("HTTP POST")
    assert len(http) == 2 and all(parent_of(s, by_id).name.startswith("chat ") for s in http)
    chat = otel.named("chat ")[0]
    assert chat.attributes[GA.GEN_AI_PROVIDER_NAME] == "openai"
    assert chat.attributes["server.address"] == "127.0.0.1"


@pytest.mark.parametrize("mode", MODES)
def test_one_chat_span_per_call_with_the_anthropic_backend(mode, otel, fake_llm_server):
    """The anthropic client traces itself by default; AnthropicBackend turns that off (open_telemetry=False)
    so looplet's chat span is the only CLIENT span of each call."""
    import anthropic

    from looplet.backends.anthropic import AnthropicBackend
    from tests.fakeserver import tool_call

    fake_llm_server.script(tool_call("add", {"a": 1, "b": 2}), tool_call("done", {"answer": "3"}))
    cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
    client = cls(
        base_url=fake_llm_server.anthropic_url, api_key="k", open_telemetry={"tracer_provider": otel.provider}
    )
    go(mode, AnthropicBackend(client, model="claude-test"), [TracingHook(otel.provider)])
    clients = [s for s in otel.spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in clients] == ["chat claude-test", "chat claude-test"]
    assert clients[0].attributes[GA.GEN_AI_PROVIDER_NAME] == "anthropic"


# -- parents ---------------------------------------------------------------------------------------


def _agent(otel):
    (agent,) = otel.named("invoke_agent")
    return agent


def test_parent_as_traceparent_string_context_and_env(otel, monkeypatch):
    llm = lambda: mock(DONE)  # noqa: E731
    run_loop = lambda **kw: list(composable_loop(llm(), task={"goal": "x"}, tools=tools_from([add]), **kw))  # noqa: E731

    run_loop(hooks=[TracingHook(otel.provider)], parent=TRACEPARENT)
    agent = _agent(otel)
    assert format(agent.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(agent.parent.span_id, "016x") == "b7ad6b7169203331" and agent.parent.is_remote
    otel.exporter.clear()

    with otel.tracer.start_as_current_span("elsewhere") as other:
        ctx = trace.set_span_in_context(other)
    run_loop(hooks=[TracingHook(otel.provider)], parent=ctx)
    assert [s for s in otel.named("invoke_agent") if s.parent.span_id == other.get_span_context().span_id]
    otel.exporter.clear()

    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    run_loop(hooks=[TracingHook(otel.provider)])
    assert format(_agent(otel).context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    otel.exporter.clear()

    with otel.tracer.start_as_current_span("caller") as caller:  # a current span wins over the variable
        run_loop(hooks=[TracingHook(otel.provider)])
    assert _agent(otel).parent.span_id == caller.get_span_context().span_id
    otel.exporter.clear()

    run_loop(hooks=[TracingHook(otel.provider, use_env_traceparent=False)])
    assert _agent(otel).parent is None


def test_a_bad_traceparent_starts_a_new_trace_with_a_warning(otel, caplog):
    list(
        composable_loop(
            mock(DONE),
            task={"goal": "x"},
            tools=tools_from([add]),
            hooks=[TracingHook(otel.provider)],
            parent="not-a-traceparent",
        )
    )
    assert _agent(otel).parent is None
    assert "not a valid W3C traceparent" in caplog.text


def test_earlier_runs_become_links(otel):
    class Resumed:
        def on_loop_start(self, state, session_log, context):
            current_run().links.append(TRACEPARENT)

    list(
        composable_loop(
            mock(DONE),
            task={"goal": "x"},
            tools=tools_from([add]),
            hooks=[Resumed(), TracingHook(otel.provider)],
        )
    )
    (link,) = _agent(otel).links
    assert format(link.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


# -- lifecycle -------------------------------------------------------------------------------------


def _all_closed(otel, status=StatusCode.UNSET, stop="cancelled"):
    assert otel.tracker.open() == []
    agent = _agent(otel)
    assert agent.attributes[N.STOP_REASON] == stop
    assert agent.status.status_code is status
    return agent


@pytest.mark.parametrize("how", ["close", "gc", "exception_in_body", "throw", "keyboard_interrupt_in_tool"])
def test_every_span_ends_when_the_sync_caller_leaves_early(how, otel):
    @tool(description="Interrupt.")
    def interrupt() -> None:
        raise KeyboardInterrupt

    script = (
        [CALL, CALL, CALL, DONE] if how != "keyboard_interrupt_in_tool" else ['{"tool": "interrupt"}', DONE]
    )
    gen = composable_loop(
        mock(*script),
        task={"goal": "x"},
        tools=tools_from([add, interrupt]),
        hooks=[TracingHook(otel.provider)],
    )
    if how == "close":
        next(gen)
        gen.close()
    elif how == "gc":
        for _ in gen:
            break
        del gen
        gc.collect()
    elif how == "exception_in_body":
        with pytest.raises(RuntimeError):
            for _ in gen:
                raise RuntimeError("caller failed")
        del gen
        gc.collect()
    elif how == "throw":
        next(gen)
        with pytest.raises(ValueError, match="from the caller"):
            gen.throw(ValueError("from the caller"))
        agent = _all_closed(otel, StatusCode.ERROR)
        assert agent.attributes[EA.ERROR_TYPE] == "ValueError"
        return
    else:
        with pytest.raises(KeyboardInterrupt):
            list(gen)
        agent = _all_closed(otel, StatusCode.ERROR)
        assert agent.attributes[EA.ERROR_TYPE] == "KeyboardInterrupt"
        (tool_span,) = otel.named("execute_tool")
        assert tool_span.status.status_code is StatusCode.ERROR
        assert tool_span.attributes[EA.ERROR_TYPE] == "KeyboardInterrupt"
        return
    _all_closed(otel)  # the caller chose to stop: cancelled, not an error


@pytest.mark.parametrize("how", ["aclose", "gc", "throw", "task_cancelled"])
def test_every_span_ends_when_the_async_caller_leaves_early(how, otel):
    class Slow(MockLLMBackend):
        async def agenerate(self, messages, *, tools=None, **options):
            if self.calls >= 1:
                await asyncio.sleep(30)
            return await super().agenerate(messages, tools=tools, **options)

    async def main():
        agen = async_composable_loop(
            Slow([CALL, CALL, DONE], model="m"),
            task={"goal": "x"},
            tools=tools_from([add]),
            hooks=[TracingHook(otel.provider)],
        )
        if how == "aclose":
            await agen.__anext__()
            await agen.aclose()
        elif how == "gc":
            async for _ in agen:
                break
            del agen
            gc.collect()
            for _ in range(5):
                await asyncio.sleep(0)
        elif how == "throw":
            await agen.__anext__()
            with pytest.raises(ValueError):
                await agen.athrow(ValueError("from the caller"))
        else:

            async def consume():
                async for _ in agen:
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.05)  # now inside the second (slow) LLM call
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    if how in ("aclose", "gc"):
        _all_closed(otel)
        return
    agent = _all_closed(otel, StatusCode.ERROR)
    if how == "task_cancelled":
        assert agent.attributes[EA.ERROR_TYPE] == "CancelledError"
        chat = [c for c in otel.named("chat") if c.status.status_code is StatusCode.ERROR]
        assert len(chat) == 1 and "CancelledError" in chat[0].attributes[EA.ERROR_TYPE]
        open_step = [s for s in otel.named(N.STEP_SPAN) if s.status.status_code is StatusCode.ERROR]
        assert len(open_step) == 1  # the step whose LLM call was cut off, ended with the run


@pytest.mark.parametrize("mode", MODES)
def test_llm_errors_retries_and_the_run_status(mode, otel):
    flaky = LLMError("rate limited, key sk-proj-ABCDEFGHIJKLMNOPQRSTUV", retryable=True, status=429)
    fatal = LLMError("bad request", status=400)
    steps, result = go(mode, mock(flaky, CALL, fatal), [TracingHook(otel.provider)], llm_retries=1)
    assert result.stop_reason == "llm_error" and len(steps) == 1
    assert otel.tracker.open() == []
    by_id = otel.by_id()
    chats = sorted(otel.named("chat"), key=lambda s: s.start_time)
    assert [c.status.status_code for c in chats] == [StatusCode.ERROR, StatusCode.UNSET, StatusCode.ERROR]
    assert (
        chats[0].attributes[EA.ERROR_TYPE] == "http_429" and chats[2].attributes[EA.ERROR_TYPE] == "http_400"
    )
    exc_event = next(e for e in chats[0].events if e.name == "exception")
    assert "sk-proj" not in exc_event.attributes["exception.message"]  # error texts are redacted
    assert "sk-proj" not in exc_event.attributes["exception.stacktrace"]
    assert "sk-proj" not in chats[0].status.description
    step1 = parent_of(chats[0], by_id)
    assert parent_of(chats[1], by_id) is step1  # the retry stays in its step
    (retry,) = [e for e in step1.events if e.name == N.EV_RETRY]
    assert retry.attributes[N.RETRY_ATTEMPT] == 1 and retry.attributes[EA.ERROR_TYPE] == "http_429"
    step2 = parent_of(chats[2], by_id)
    assert step2.attributes[N.STEP_NUMBER] == 2 and step2.status.status_code is StatusCode.ERROR
    agent = _agent(otel)
    assert agent.status.status_code is StatusCode.ERROR and agent.attributes[EA.ERROR_TYPE] == "llm_error"


# -- events ----------------------------------------------------------------------------------------


class DenyAdd:
    def pre_dispatch(self, state, session_log, tool_call, step_num):
        if tool_call.args.get("a") == 3:
            return Deny("no threes")


class StopAfterTwo:
    def should_stop(self, state, step_num, new_entities):
        return Stop("enough") if step_num >= 2 else None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tracing_first", [True, False])
def test_hook_decisions_are_span_events(mode, tracing_first, otel):
    tracing = TracingHook(otel.provider)
    hooks = [tracing, DenyAdd(), StopAfterTwo()] if tracing_first else [DenyAdd(), StopAfterTwo(), tracing]
    llm = mock('[{"tool": "add", "args": {"a": 1, "b": 2}}, {"tool": "add", "args": {"a": 3, "b": 3}}]', DONE)
    steps, result = go(mode, llm, hooks)
    assert result.stop_reason == "hook_stop:enough"
    assert otel.tracker.open() == []
    events = [(s, e) for s in otel.spans() for e in s.events if e.name == N.EV_HOOK_DECISION]
    decisions = {e.attributes[N.DECISION]: (s, e) for s, e in events}
    span, deny = decisions["deny"]
    assert deny.attributes[N.HOOK] == "DenyAdd" and deny.attributes[N.REASON] == "no threes"
    assert deny.attributes[GA.GEN_AI_TOOL_NAME] == "add"
    assert decisions["stop"][1].attributes[N.REASON] == "enough"
    # the denied call is still a step with its own step span (even when its pre_dispatch missed us)
    step_spans = {s.attributes[N.STEP_NUMBER]: s for s in otel.named(N.STEP_SPAN)}
    assert steps[1].tool_result.error_kind == "denied"
    assert steps[1].span_id == format(step_spans[2].context.span_id, "016x")
    # the denied call is visible as an execute_tool span that says it never ran, in error
    denied, ran = sorted(otel.named("execute_tool"), key=lambda s: s.attributes.get(N.TOOL_EXECUTED, True))
    assert N.TOOL_EXECUTED not in ran.attributes and ran.status.status_code is StatusCode.UNSET
    assert denied.attributes[N.TOOL_EXECUTED] is False and denied.status.status_code is StatusCode.ERROR
    assert denied.attributes[EA.ERROR_TYPE] == "denied" and "no threes" in denied.status.description
    assert denied.attributes[GA.GEN_AI_TOOL_CALL_ID] == steps[1].tool_call.id
    assert denied.parent.span_id == step_spans[2].context.span_id and denied.name == "execute_tool add"
    # step spans carry looplet's own keys only: GenAI-aware UIs would list them as extra tool spans
    for s in step_spans.values():
        assert not any(k.startswith("gen_ai.") for k in s.attributes), s.attributes
        assert s.attributes[N.STEP_TOOL] == "add"


@pytest.mark.parametrize("mode", MODES)
def test_events_emitted_inside_a_tool_land_on_its_span_and_hook_errors_are_events(mode, otel):
    @tool(description="Compacts.")
    def squeeze() -> str:
        emit_event("compaction", strategy="prune", tokens_before=900, tokens_after=300)
        return "ok"

    class Broken:
        def on_step(self, state, step):
            raise RuntimeError("observer bug with a@b.io")

    go(
        mode,
        mock('{"tool": "squeeze"}', DONE),
        [TracingHook(otel.provider), Broken()],
        tools=tools_from([squeeze]),
    )
    (tool_span,) = [s for s in otel.named("execute_tool") if s.name.endswith("squeeze")]
    (ev,) = [e for e in tool_span.events if e.name == N.EV_COMPACTION]
    assert dict(ev.attributes) == {
        "looplet.compaction.strategy": "prune",
        "looplet.compaction.tokens_before": 900,
        "looplet.compaction.tokens_after": 300,
    }
    errors = [e for s in otel.spans() for e in s.events if e.name == N.EV_HOOK_ERROR]
    assert len(errors) == 2 and errors[0].attributes[N.HOOK] == "Broken"
    assert (
        errors[0].attributes[N.HOOK_METHOD] == "on_step"
        and "a@b.io" not in errors[0].attributes["exception.message"]
    )


# -- content ---------------------------------------------------------------------------------------

SECRET = "sk-ant-api03-" + "x" * 30


@pytest.mark.parametrize("mode", MODES)
def test_content_is_captured_only_when_asked_and_always_redacted(mode, otel):
    @tool(description="Echo.")
    def echo(text: str) -> str:
        return f"echo {text} to admin@example.com"

    llm = mock(json.dumps({"tool": "echo", "args": {"text": SECRET}}), DONE)
    run(
        mode,
        llm=llm,
        task={"goal": f"use key {SECRET}"},
        tools=tools_from([echo]),
        hooks=[TracingHook(otel.provider, capture_content=True)],
    )
    everything = json.dumps([dict(s.attributes) for s in otel.spans()])
    assert SECRET not in everything and "admin@example.com" not in everything
    assert "[REDACTED:anthropic_key]" in everything and "[REDACTED:email]" in everything
    chat = sorted(otel.named("chat"), key=lambda s: s.start_time)[1]
    system = json.loads(chat.attributes[GA.GEN_AI_SYSTEM_INSTRUCTIONS])
    assert system[0]["type"] == "text" and "calling tools" in system[0]["content"]
    messages = json.loads(chat.attributes[GA.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["parts"][0]["type"] == "tool_call" and messages[1]["parts"][0]["name"] == "echo"
    assert messages[2]["parts"][0]["type"] == "tool_call_response"
    output = json.loads(chat.attributes[GA.GEN_AI_OUTPUT_MESSAGES])
    assert output[0]["role"] == "assistant" and output[0]["parts"][0]["name"] == "done"
    tool_span = next(s for s in otel.named("execute_tool") if s.name.endswith("echo"))
    assert json.loads(tool_span.attributes[GA.GEN_AI_TOOL_CALL_ARGUMENTS]) == {
        "text": "[REDACTED:anthropic_key]"
    }
    assert tool_span.attributes[GA.GEN_AI_TOOL_CALL_RESULT].startswith("echo [REDACTED:anthropic_key]")
    agent = _agent(otel)
    assert json.loads(agent.attributes[N.TASK]) == {"goal": "use key [REDACTED:anthropic_key]"}
    assert agent.attributes[N.FINAL_OUTPUT] == "3"
    # the task and the answer, in the attributes GenAI-aware UIs (Phoenix) show as the agent's input/output
    assert json.loads(agent.attributes[GA.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "use key [REDACTED:anthropic_key]"}]}
    ]
    assert json.loads(agent.attributes[GA.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "3"}], "finish_reason": "stop"}
    ]
    # Phoenix fills its Input/Output columns only from OpenInference's input.value/output.value (checked
    # with bench/phoenix_check.py), and would show gen_ai.response.model as the output: not on this span
    assert agent.attributes[N.OI_INPUT_VALUE] == "use key [REDACTED:anthropic_key]"
    assert agent.attributes[N.OI_OUTPUT_VALUE] == "3"
    assert GA.GEN_AI_RESPONSE_MODEL not in agent.attributes


@pytest.mark.parametrize("mode", MODES)
def test_without_content_capture_no_span_holds_content(mode, otel):
    go(mode, mock(CALL, DONE), [TracingHook(otel.provider, capture_content=False)])
    content = {
        GA.GEN_AI_INPUT_MESSAGES,
        GA.GEN_AI_OUTPUT_MESSAGES,
        GA.GEN_AI_SYSTEM_INSTRUCTIONS,
        GA.GEN_AI_TOOL_CALL_ARGUMENTS,
        GA.GEN_AI_TOOL_CALL_RESULT,
        N.TASK,
        N.FINAL_OUTPUT,
        N.OI_INPUT_VALUE,
        N.OI_OUTPUT_VALUE,
    }
    assert otel.spans() and all(not content & set(s.attributes) for s in otel.spans())


@pytest.mark.parametrize("mode", MODES)
def test_chat_spans_name_the_conversation_and_tool_spans_describe_the_tool(mode, otel):
    state = DefaultState(max_steps=5)
    state.metadata["conversation_id"] = "support-ticket-42"
    run(
        mode,
        llm=mock(CALL, DONE),
        task={"goal": "add"},
        tools=tools_from([add]),
        hooks=[TracingHook(otel.provider)],
        state=state,
    )
    chats = otel.named("chat")
    assert len(chats) == 2
    assert {c.attributes[GA.GEN_AI_CONVERSATION_ID] for c in chats} == {"support-ticket-42"}
    assert _agent(otel).attributes[GA.GEN_AI_CONVERSATION_ID] == "support-ticket-42"
    descriptions = {s.name: s.attributes[GA.GEN_AI_TOOL_DESCRIPTION] for s in otel.named("execute_tool")}
    assert descriptions["execute_tool add"] == "Add two numbers."
    assert descriptions["execute_tool done"].startswith("Finish")


@pytest.mark.parametrize(
    "value,on",
    [
        ("true", True),
        ("TRUE", True),
        ("SPAN_ONLY", True),
        ("span_and_event", True),
        ("false", False),
        ("EVENT_ONLY", False),
        ("NO_CONTENT", False),
        ("", False),
    ],
)
def test_content_capture_follows_the_genai_environment_variable(value, on, otel, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    go("sync", mock(CALL, DONE), [TracingHook(otel.provider)])
    chat = otel.named("chat")[0]
    assert (GA.GEN_AI_INPUT_MESSAGES in chat.attributes) is on
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert TracingHook(otel.provider, capture_content=False).capture_content is False  # the argument wins


def test_captured_content_is_size_capped_and_stays_valid_json(otel):
    @tool(description="Big.")
    def big() -> dict:
        return {"rows": ["y" * 500] * 200}

    llm = mock('{"tool": "big"}', '{"tool": "big"}', DONE)
    go(
        "sync",
        llm,
        [TracingHook(otel.provider, capture_content=True, max_content_chars=2000)],
        tools=tools_from([big]),
    )
    for s in otel.spans():
        for key in (GA.GEN_AI_INPUT_MESSAGES, GA.GEN_AI_OUTPUT_MESSAGES, GA.GEN_AI_TOOL_CALL_ARGUMENTS):
            if key in s.attributes:
                assert len(s.attributes[key]) <= 2000
                json.loads(s.attributes[key])
    last_chat = sorted(otel.named("chat"), key=lambda s: s.start_time)[-1]
    messages = json.loads(last_chat.attributes[GA.GEN_AI_INPUT_MESSAGES])
    assert messages[-1]["role"] == "tool"  # the newest messages are kept; big strings were cut
    assert "chars]" in json.dumps(messages)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=10), children, max_size=8)
    ),
    max_leaves=60,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, limit=st.integers(min_value=24, max_value=3000))
def test_cap_json_is_always_valid_and_within_the_limit(value, limit):
    out = cap_json(value, limit)
    assert len(out) <= limit
    json.loads(out)
    if len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) <= limit:
        assert json.loads(out) == value


def test_cap_json_drops_only_the_oldest_messages_it_must():
    """A long transcript keeps its newest messages: exactly the fewest oldest ones are dropped."""
    messages = [{"role": "user", "content": f"message {i} " + "x" * 200} for i in range(400)]
    out = json.loads(cap_json(messages, 32_000))
    dropped = out[0]["truncated"]
    assert out[1:] == messages[dropped:]
    one_fewer = [{"truncated": dropped - 1}] + messages[dropped - 1 :]
    assert len(json.dumps(one_fewer, ensure_ascii=False, separators=(",", ":"))) > 32_000


# -- redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret,name",
    [
        ("sk-proj-" + "A1b2" * 10, "openai_key"),
        ("sk-" + "Z" * 48, "openai_key"),
        ("sk-ant-api03-" + "q" * 40, "anthropic_key"),
        ("AKIA" + "ABCDEFGHIJKLMNOP", "aws_access_key"),
        ("ghp_" + "a" * 36, "github_token"),
        ("github_pat_" + "b" * 40, "github_token"),
        ("AIza" + "c" * 35, "google_api_key"),
        ("xoxb-1234567890-abcdef", "slack_token"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        ("jane.doe+tag@mail.example.org", "email"),
    ],
)
def test_redactor_patterns(secret, name):
    text = f"before {secret} after"
    assert redact(text) == f"before [REDACTED:{name}] after"


def test_redactor_bearer_private_key_json_and_custom_patterns():
    assert redact("Authorization: Bearer abcDEF123456.xyz") == "Authorization: Bearer [REDACTED:bearer_token]"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    assert redact(f"key:\n{pem}\nend") == "key:\n[REDACTED:private_key]\nend"
    assert (
        redact("plain text, a task-list, skip-this, sk-short")
        == "plain text, a task-list, skip-this, sk-short"
    )
    out = redact_json(
        {"api_key": "hunter2", "nested": [{"Authorization": "x"}, "mail bob@example.com"], "n": 3}
    )
    assert out == {
        "api_key": "[REDACTED:secret_field]",
        "nested": [{"Authorization": "[REDACTED:secret_field]"}, "mail [REDACTED:email]"],
        "n": 3,
    }
    custom = Redactor(patterns=(), extra=[("ticket", r"TCK-\d{6}"), r"(?i)password=\S+"])
    assert custom("TCK-123456 PASSWORD=x a@b.io") == "[REDACTED:ticket] [REDACTED:custom] a@b.io"
    with pytest.raises(ValueError, match="bad"):
        Redactor(extra=[("bad", "(")])


def test_tracing_accepts_any_redact_callable(otel):
    go(
        "sync",
        mock(CALL, DONE),
        [TracingHook(otel.provider, capture_content=True, redact=lambda s: s.upper())],
    )
    tool_span = otel.named("execute_tool")[0]
    assert tool_span.attributes[GA.GEN_AI_TOOL_CALL_RESULT] == "3"
    assert '"A":1' in tool_span.attributes[GA.GEN_AI_TOOL_CALL_ARGUMENTS].upper()
    assert "ADD" in _agent(otel).attributes[N.TASK]


def test_llm_response_extras_reach_the_chat_span(otel):
    response = LLMResponse(
        tool_calls=[ToolCall("done", {"answer": "x"}, "c1")],
        usage=Usage(10, 2),
        model="m-2",
        response_id="r1",
        finish_reason="tool_use",
        provider="anthropic",
        server_address="api.example",
        server_port=443,
        time_to_first_chunk_s=0.25,
    )

    class Fixed:
        model, provider = "m", "anthropic"

        def generate(self, messages, *, tools=None, **options):
            return response

    run(
        "sync",
        llm=Fixed(),
        task={"goal": "x"},
        tools=tools_from([add]),
        hooks=[TracingHook(otel.provider)],
        config=LoopConfig(stream=True, temperature=0.2, max_tokens=99),
    )
    a = otel.named("chat")[0].attributes
    assert a[GA.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.25 and a["server.address"] == "api.example"
    assert a["server.port"] == 443 and a[GA.GEN_AI_REQUEST_STREAM] is True
    assert a[GA.GEN_AI_REQUEST_TEMPERATURE] == 0.2 and a[GA.GEN_AI_REQUEST_MAX_TOKENS] == 99
    assert a[GA.GEN_AI_RESPONSE_MODEL] == "m-2" and a[GA.GEN_AI_REQUEST_MODEL] == "m"


def test_two_concurrent_runs_share_one_hook_without_mixing_spans(otel):
    hook = TracingHook(otel.provider)

    async def one(name):
        state = DefaultState()
        async for _ in async_composable_loop(
            mock(CALL, CALL, DONE),
            task={"goal": name},
            tools=tools_from([add]),
            hooks=[hook],
            state=state,
            config=LoopConfig(agent_name=name),
        ):
            await asyncio.sleep(0.001)
        return state.result

    async def main():
        return await asyncio.gather(one("a"), one("b"))

    ra, rb = asyncio.run(main())
    assert ra.trace_id != rb.trace_id
    for agent in otel.named("invoke_agent"):
        trace_spans = [s for s in otel.spans() if s.context.trace_id == agent.context.trace_id]
        assert len(trace_spans) == 1 + 3 + 3 + 3  # agent, steps, chats, tools
    assert otel.tracker.open() == []


def test_dict_keys_are_redacted_and_colliding_keys_are_kept():
    out = redact_json({"a@b.io": {"plan": "pro"}, "c@d.io": 1, "sk-proj-" + "Q" * 24: True, "ok": "x"})
    assert out == {
        "[REDACTED:email]": {"plan": "pro"},
        "[REDACTED:email]#2": 1,
        "[REDACTED:openai_key]": True,
        "ok": "x",
    }


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_name_the_model_made_up_is_redacted_and_the_span_name_stays_bounded(mode, otel):
    invented = "jane.doe@example.com"
    go(mode, mock(json.dumps({"tool": invented, "args": {}}), DONE), [TracingHook(otel.provider)])
    everything = json.dumps([(s.name, dict(s.attributes)) for s in otel.spans()])
    assert invented not in everything
    (tool_span,) = [s for s in otel.named("execute_tool") if s.status.status_code is StatusCode.ERROR]
    assert tool_span.name == "execute_tool" and tool_span.attributes[EA.ERROR_TYPE] == "unknown_tool"
    assert tool_span.attributes[GA.GEN_AI_TOOL_NAME] == "[REDACTED:email]"


def test_per_name_caches_of_the_telemetry_hooks_stay_bounded(otel):
    """A backend that answers with a new model name each time and a model that invents a new tool name
    each time (1,500 of each): every per-name map in the three hooks stays within its limit."""
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.logging import LoggingHook
    from looplet.telemetry.metrics import MetricsHook

    n = 1500
    script = [
        LLMResponse(tool_calls=[ToolCall(f"made_up_{i}", {}, f"c{i}")], model=f"model-{i}", usage=Usage(1, 1))
        for i in range(n)
    ]
    hooks = [
        TracingHook(otel.provider),
        MetricsHook(CollectorRegistry(), max_label_values=50),
        LoggingHook(structlog_null()),
    ]
    steps, result = go("sync", MockLLMBackend(script), hooks, max_steps=n)
    assert len(steps) == n and len({s.model for s in steps}) == n

    def sizes(obj, seen=None):
        """Sizes of every dict/set reachable from the hook's own attributes (one level into helpers)."""
        out = {}
        for name, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
            if isinstance(value, (dict, set)):
                out[name] = len(value)
            elif hasattr(value, "__slots__") and not callable(value):
                for slot in value.__slots__:
                    inner = getattr(value, slot, None)
                    if isinstance(inner, (dict, set)):
                        out[f"{name}.{slot}"] = len(inner)
        return out

    for hook in hooks:
        found = sizes(hook)
        assert found, type(hook).__name__
        assert all(size <= 1000 for size in found.values()), (type(hook).__name__, found)
    # the price table's memory of model names (the loop prices every answer) is bounded too
    from looplet.telemetry import cost

    assert len(cost._cache) <= 1000 and len(cost.unknown_models()) <= 1000


def structlog_null():
    import structlog

    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])
