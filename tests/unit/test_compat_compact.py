"""looplet 0.4.1's compaction services, conversation records, lifecycle events, thread rewrites and record
attributes (looplet._compat_compact, _compat_records, _compat_session): each old spelling works with one
DeprecationWarning naming the 0.5 one, and the services are 0.5 strategies too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from looplet import (
    BaseToolRegistry,
    DefaultState,
    HookDecision,
    LLMResponse,
    LoopConfig,
    MockLLMBackend,
    Prune,
    Step,
    Summarize,
    ToolCall,
    ToolResult,
    ToolSpec,
    Truncate,
    composable_loop,
    tools_from,
)
from looplet.context import CompactChain, compact_chain

from ._compat_support import one_warning, quiet


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet():
        yield


def old(name: str, module: str = "looplet.compact") -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def session_log(n: int) -> Any:
    log = old("SessionLog", "looplet.session")()
    for i in range(1, n + 1):
        log.record(step=i, theory="t", tool=f"tool_{i}", reasoning=f"r{i}", findings=[f"f{i}"])
    return log


def conversation(n: int, *, tool_prefix: str = "tool") -> Any:
    Conversation, Message, Role = (
        old(n_, "looplet.conversation") for n_ in ("Conversation", "Message", "MessageRole")
    )
    conv = Conversation()
    for i in range(n):
        conv.append(Message(role=Role.ASSISTANT, content=f"calling {tool_prefix}_{i}"))
        result = ToolResult(tool=f"{tool_prefix}_{i}", data={"i": i})  # type: ignore[call-arg]
        conv.append(Message(role=Role.TOOL, content=f'{{"i": {i}}}', tool_result=result))
    return conv


def kwargs(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": DefaultState(),
        "session_log": None,
        "llm": None,
        "conversation": None,
        "step_num": 1,
        "reason": "test",
    }
    return {**base, **over}


class Answer:
    """A 0.5 backend answering every call with ``text`` and keeping the messages it got."""

    def __init__(self, text: str = "the summary") -> None:
        self.text, self.seen = text, []  # type: list[list[dict[str, Any]]]

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> LLMResponse:
        self.seen.append(messages)
        return LLMResponse(text=self.text)


class OldStyle:
    """A 0.4.1 backend: ``generate(prompt) -> str``."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompt: str, *, max_tokens: int = 100, system_prompt: str = "") -> str:
        self.prompts.append(prompt)
        return "old-style summary"


class Failing:
    def generate(self, messages: Any, **options: Any) -> Any:
        raise RuntimeError("boom")


# --- the three services ---------------------------------------------------------------------------


def test_services_warn_once_and_are_the_05_strategies() -> None:
    with one_warning("TruncateCompact", "looplet.Truncate(keep_last=...)"):
        t = old("TruncateCompact")(keep_recent=3)
    with one_warning("PruneToolResults", "looplet.Prune(keep_last=...)"):
        p = old("PruneToolResults")()
    with one_warning("SummarizeCompact", "looplet.Summarize(llm"):
        s = old("SummarizeCompact")(keep_recent=1)
    assert isinstance(t, Truncate) and isinstance(p, Prune) and isinstance(s, Summarize)
    assert (t.keep_last, p.keep_last, s.keep_last) == (3, 5, 1)
    assert isinstance(t, old("CompactService")) and isinstance(s, old("CompactService"))
    many = [{"role": "user", "content": "task"}] + [
        {"role": "assistant", "content": "x" * 400} for _ in range(6)
    ]
    out = compact_chain(t)(many, 10)  # as a 0.5 strategy: Truncate's own behaviour
    assert len(out) == 1 + 1 + 3 and out[1]["content"].startswith("[Earlier turns were removed")


def test_truncate_folds_the_log_and_the_conversation() -> None:
    log, conv = session_log(6), conversation(4)
    out = old("TruncateCompact")(keep_recent=2).compact(**kwargs(session_log=log, conversation=conv))
    assert (out.session_entries_before, out.session_entries_after) == (6, 3)
    assert out.compacted_step_range == (1, 4) and out.compacted and out.to_dict()["compacted"] is True
    assert [e.tool for e in log.entries] == ["__summary__", "tool_5", "tool_6"]
    assert "f1" in out.summary and "f4" in out.summary and "f5" not in out.summary
    assert (out.messages_before, out.messages_after) == (8, len(conv.messages)) and len(conv.messages) < 8
    (boundary,) = conv.find_compaction_boundaries()
    assert conv.messages[0] is boundary and boundary.metadata["dropped_message_count"] > 0
    assert conv.messages[-1].content == '{"i": 3}'  # the last turns are the same records


def test_truncate_leaves_a_short_log_alone() -> None:
    log = session_log(3)
    out = old("TruncateCompact")(keep_recent=2).compact(**kwargs(session_log=log))
    assert (out.session_entries_before, out.session_entries_after, out.compacted_step_range) == (3, 3, None)
    assert not out.compacted


def test_summarize_asks_once_through_summarize_and_splices_the_summary() -> None:
    log, conv, llm = session_log(5), conversation(5), Answer("TASK: keep this")
    out = old("SummarizeCompact")(keep_recent=2).compact(
        **kwargs(session_log=log, conversation=conv, llm=llm)
    )
    assert len(llm.seen) == 1 and out.llm_calls_spent == 1
    assert llm.seen[0][0]["role"] == "system" and "r3" in llm.seen[0][1]["content"]  # Summarize's request
    assert (out.summary, out.extra and out.extra["mode"]) == ("TASK: keep this", "llm_summary")
    assert [e.tool for e in log.entries] == ["__summary__", "__compact_summary__", "tool_4", "tool_5"]
    assert conv.find_compaction_boundaries()[-1].metadata["summary"] == "TASK: keep this"
    assert out.messages_after is not None and out.messages_after < 10


def test_summarize_with_a_0_4_1_backend_and_its_fallbacks() -> None:
    backend = OldStyle()
    out = old("SummarizeCompact")(backend, keep_recent=1).compact(**kwargs(session_log=session_log(5)))
    assert (out.summary, len(backend.prompts)) == ("old-style summary", 1)
    log = session_log(5)
    failed = old("SummarizeCompact")(keep_recent=1).compact(**kwargs(session_log=log, llm=Failing()))
    assert failed.extra and failed.extra["mode"] == "llm_fallback"
    assert "__compact_summary__" not in [e.tool for e in log.entries] and len(log.entries) == 2
    empty = old("SummarizeCompact")().compact(
        **kwargs(session_log=old("SessionLog", "looplet.session")(), llm=Answer())
    )
    assert (empty.extra and empty.extra["mode"], empty.llm_calls_spent) == ("empty_fallback", 0)


def test_prune_clears_all_but_the_last_tool_results() -> None:
    conv = conversation(6)
    prune = old("PruneToolResults")(keep_recent=2)
    out = prune.compact(**kwargs(conversation=conv))
    assert out.extra == {"mode": "prune", "cleared": 4} and out.messages_before == out.messages_after == 12
    tools = [m for m in conv.messages if m.role == "tool"]
    assert [m.tool_result.data for m in tools[-2:]] == [{"i": 4}, {"i": 5}]
    assert all(m.content == m.tool_result.data == "[tool result cleared by compact]" for m in tools[:4])
    assert prune.compact(**kwargs(conversation=conv)).extra == {"mode": "prune", "cleared": 0}
    only = old("PruneToolResults")(keep_recent=1, compactable_tools=frozenset({"tool_0", "tool_1"}))
    assert only.compact(**kwargs(conversation=conversation(4))).extra == {"mode": "prune", "cleared": 1}
    assert prune.compact(**kwargs()).extra == {"mode": "no_conversation"}


def test_default_service_warns_once_and_reports_its_stages() -> None:
    with one_warning("DefaultCompactService", "ThresholdCompactHook"):
        service = old("DefaultCompactService")(keep_recent=2, keep_recent_tool_results=3)
    conv, log = conversation(8), session_log(8)
    out = service.compact(**kwargs(session_log=log, conversation=conv, llm=Answer("default summary")))
    assert [s["name"] for s in out.extra["stages"]] == ["prune_tool_results", "summarize_context"]
    assert (out.summary, out.llm_calls_spent, out.extra["cleared"], out.compacted) == (
        "default summary",
        1,
        5,
        True,
    )
    offline = old("DefaultCompactService")(keep_recent=2, use_llm_summary=False)
    quiet = offline.compact(**kwargs(session_log=session_log(6)))
    assert (
        quiet.llm_calls_spent == 0
        and quiet.session_entries_after < 6
        and quiet.extra["use_llm_summary"] is False
    )


def test_compact_chain_of_services_stops_at_the_first_effective_stage() -> None:
    chain_of = old("compact_chain")
    Prune_, Trunc = old("PruneToolResults"), old("TruncateCompact")
    out = chain_of(Prune_(keep_recent=2), Trunc(keep_recent=1)).compact(
        **kwargs(session_log=session_log(5), conversation=conversation(6))
    )
    assert (out.extra["chain_stage"], out.extra["cleared"]) == (0, 4)
    fell = chain_of(Prune_(keep_recent=5), Trunc(keep_recent=1)).compact(**kwargs(session_log=session_log(5)))
    assert fell.extra["chain_stage"] == 1 and fell.session_entries_after == 2
    assert isinstance(chain_of(Prune(), Truncate()), CompactChain)  # 0.5 strategies: the 0.5 chain
    with pytest.raises(ValueError, match="at least one"):
        chain_of()


# --- run_compact, events, thread rewrites -----------------------------------------------------------


def test_run_compact_sends_pre_and_post_events_and_applies_rewrites() -> None:
    events = old("LifecycleEvent", "looplet.events")
    seen, cleaned = [], []

    class Observer:
        def on_event(self, payload: Any) -> Any:
            seen.append(payload)
            if payload.event == events.POST_COMPACT:
                return old("RewriteThread", "looplet.hook_decision")(reset_metadata_keys=["hook_cache"])
            raise RuntimeError("an observer that raises is skipped")

    class Service:
        def compact(self, **kw: Any) -> Any:
            return old("CompactOutcome")(
                reason=kw["reason"],
                follow_up={"reset_metadata_keys": ["cache"], "metadata_updates": {"compacted": True}},
                cleanup=lambda: cleaned.append(1),
            )

    state = DefaultState()
    state.metadata.update(cache=1, hook_cache=2, keep=3)
    out = old("run_compact")(Service(), hooks=[Observer()], **kwargs(state=state, reason="pressure"))
    assert [p.event for p in seen] == [events.PRE_COMPACT, events.POST_COMPACT]
    assert old("LIFECYCLE_EVENTS", "looplet.events").index(events.POST_COMPACT) == 8
    assert seen[1].extra["outcome"]["reason"] == "pressure" == out.reason
    assert state.metadata == {"keep": 3, "compacted": True} and cleaned == [1]


def test_run_compact_aborts_on_a_stop_and_survives_a_failing_cleanup() -> None:
    class Aborter:
        def on_event(self, payload: Any) -> Any:
            return HookDecision(stop="not now")

    class Angry:
        def compact(self, **kw: Any) -> Any:
            raise AssertionError("must not run")

    assert "aborted" in old("run_compact")(Angry(), hooks=[Aborter()], **kwargs()).reason

    class Breaks:
        def compact(self, **kw: Any) -> Any:
            return old("CompactOutcome")(reason="x", cleanup=lambda: 1 / 0)

    assert old("run_compact")(Breaks(), hooks=[], **kwargs()).reason == "x"


def test_rewrite_thread_decision_and_wire_form() -> None:
    with one_warning("RewriteThread", "state.metadata"):
        d = old("RewriteThread", "looplet.hook_decision")(
            reset_metadata_keys=["c"], metadata_updates={"x": 1}
        )
    assert isinstance(d, HookDecision) and d.rewrite_thread == {
        "reset_metadata_keys": ["c"],
        "metadata_updates": {"x": 1},
    }
    assert d.is_noop() is False
    with one_warning("to_wire", "asdict"):
        wire = d.to_wire()
    assert wire["kind"] == "HookDecision" and wire["rewrite_thread"] == d.rewrite_thread
    with one_warning("from_wire"):
        back = HookDecision.from_wire(wire)
    assert back.rewrite_thread == d.rewrite_thread
    assert HookDecision.from_wire({"kind": "Deny", "reason": "no"}).block == "no"
    assert HookDecision.from_wire({"kind": "HookDecision", "stop": "s"}).stop == "s"
    assert HookDecision.from_wire({"kind": "Continue"}) is None and HookDecision.from_wire(None) is None
    with pytest.raises(ValueError, match="Teleport"):
        HookDecision.from_wire({"kind": "Teleport"})
    apply = old("apply_thread_rewrite")
    state = DefaultState()
    state.metadata["keep"] = 1
    apply(state, None)
    apply(object(), {"metadata_updates": {"x": 1}})  # no metadata: nothing to do
    assert state.metadata == {"keep": 1}


def test_loop_config_compact_service_compacts_the_run_with_its_strategy() -> None:
    service = old("compact_chain")(
        old("PruneToolResults")(keep_recent=2), old("TruncateCompact")(keep_recent=1)
    )
    with one_warning("compact_service", "ThresholdCompactHook"):
        config = LoopConfig(max_steps=6, context_window=400, compact_service=service)  # type: ignore[call-arg]
    assert config.compact_service is service  # type: ignore[attr-defined]

    def fetch(n: int) -> str:
        """A long page."""
        return f"page {n} " + "x" * 600

    seen: list[int] = []

    class Sizes:
        def pre_prompt(
            self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int
        ) -> None:
            seen.append(sum(len(str(m.get("content") or "")) for m in session_log))

    script = [f'{{"tool": "fetch", "args": {{"n": {i}}}}}' for i in range(4)]
    llm = MockLLMBackend([*script, '{"tool": "done", "args": {"answer": "ok"}}'])
    tools = tools_from([fetch], include_done=True)
    steps = list(composable_loop(llm=llm, tools=tools, config=config, hooks=[Sizes()], task={"goal": "t"}))
    assert [s.tool_call.tool for s in steps] == ["fetch"] * 4 + ["done"]
    assert max(seen) < 4 * 600  # without compaction the transcript holds every page

    class OwnService:  # a service of one's own (only .compact()) is no 0.5 strategy
        def compact(self, **kwargs: Any) -> None:
            return None

    with pytest.raises(TypeError, match="ThresholdCompactHook"):
        LoopConfig(compact_service=OwnService())  # type: ignore[call-arg]


# --- records ----------------------------------------------------------------------------------------


def test_tool_result_keeps_0_4_1_fields_and_dispatch_leaves_its_call() -> None:
    with one_warning("ToolResult(call_id=...)", "step.tool_call.id"):
        r = ToolResult(data=1, call_id="abc")  # type: ignore[call-arg]
    assert (r.call_id, r.tool, r.result_key, r.args_summary) == ("abc", "", None, "")
    r2 = ToolResult(tool="search", args_summary="q=x", result_key="k", data=[])  # type: ignore[call-arg]
    assert (r2.tool, r2.args_summary, r2.result_key, r2.call_id) == ("search", "q=x", "k", None)
    assert ToolResult(data=1) == ToolResult(data=1)  # 0.5 records unchanged
    registry = BaseToolRegistry([ToolSpec("echo", "e", {"text": "str"}, lambda text: {"echoed": text})])
    result = registry.dispatch(ToolCall("echo", {"text": "hi"}, "id-7"))
    assert (result.data, result.tool, result.call_id) == ({"echoed": "hi"}, "echo", "id-7")
    unknown = registry.dispatch(ToolCall("nope", {}, ""))
    assert (unknown.tool, unknown.call_id) == ("nope", None)


def test_tool_call_id_made_on_first_read_and_step_summary() -> None:
    a, b = ToolCall("search", {}, ""), ToolCall("search", {}, "")
    with one_warning("ToolCall.call_id", "ToolCall.id"):
        first = a.call_id
    assert first and first == a.id == a.call_id and b.call_id != first
    assert ToolCall("x", {}, "given").call_id == "given"
    ok = Step(1, ToolCall("search", {"q": "x"}, "1"), ToolResult(data=["a", "b"]))
    bad = Step(3, ToolCall("shell", {}, "2"), ToolResult(error="timeout"))
    with one_warning("Step.summary()", "step.pretty()"):
        line = ok.summary()
    assert line.startswith("S1: search(q='x') ✓") and "2 items" in line
    assert bad.summary() == "S3: shell() ✗ ERROR: timeout"


def test_registry_introspect_tool_spec_free_and_agent_state() -> None:
    params = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    registry = BaseToolRegistry(
        [ToolSpec("search", "Search", dict(params), lambda q: q, concurrent_safe=True)]
    )
    with one_warning("introspect()"):
        info = registry.introspect()
    assert info == {
        "tool_count": 1,
        "tools": [
            {
                "name": "search",
                "description": "Search",
                "parameters": params,
                "concurrent_safe": True,
                "free": False,
            }
        ],
    }
    free = ToolSpec("think", "t", {}, lambda: None, free=True)  # type: ignore[call-arg]
    assert BaseToolRegistry([free]).introspect()["tools"][0]["free"] is True
    think = BaseToolRegistry()
    with one_warning("register_think_tool"):
        old("register_think_tool", "looplet.tools")(think)
    assert think.introspect()["tools"][0]["free"] is True  # 0.4.1's think tool was free
    with one_warning("ToolSpec.free"):
        assert registry.get("search").free is False  # type: ignore[union-attr]
    with one_warning("DefaultState"):
        from looplet.types import AgentState  # type: ignore[attr-defined]

    class Minimal:
        steps: list[Any] = []

    assert isinstance(DefaultState(), AgentState) and isinstance(Minimal(), AgentState)
    assert not isinstance(object(), AgentState)


def test_tool_spec_keeps_0_4_1_retry_contract_fields() -> None:
    with one_warning("ToolSpec(retryable=...)", "kept on the spec"):
        spec = ToolSpec("read", "Read", {}, lambda: {}, retryable=True)  # type: ignore[call-arg]
    with one_warning("ToolSpec.retryable"):
        assert spec.retryable is True
    plain = ToolSpec("read", "Read", {}, lambda: {})
    assert (plain.idempotency, plain.retryable, plain.requires, plain.render) == ("unknown", False, [], {})
    plain.tags.append("x")  # a fresh default each time, as 0.4.1's default_factory
    assert plain.tags == [] and plain == ToolSpec("read", "Read", {}, plain.execute)
