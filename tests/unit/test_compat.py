"""Every row of docs/migration.md: looplet 0.4.1's spelling either works with one DeprecationWarning that
names the 0.5 spelling (and points at the caller's line), or fails with an error that names it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from typing import Any

import pytest

import looplet
from looplet import (
    DefaultState,
    HookDecision,
    LoopConfig,
    MockLLMBackend,
    PermissionHook,
    RunResult,
    ToolCall,
    ToolResult,
    composable_loop,
    run_loop,
    tools_from,
)
from looplet.compat import RemovedAPIError

from ._compat_support import one_warning


def removed(statement: str, *advice: str) -> Any:
    """``statement`` (an import of a removed 0.4.1 name, run here) gives one DeprecationWarning naming
    ``advice`` at this file's line, and the placeholder it binds raises RemovedAPIError naming it too."""
    namespace: dict[str, Any] = {}
    with one_warning("placeholder", *advice):
        exec(compile(statement, __file__, "exec"), namespace)
    (ph,) = [v for k, v in namespace.items() if not k.startswith("__")]
    with pytest.raises(RemovedAPIError, match="0.5") as err:
        ph()
    assert all(a in str(err.value) for a in advice) and "migration" in str(err.value), str(err.value)
    return ph


def no_warning() -> Any:
    return warnings.catch_warnings(record=True)


def lookup(service: str) -> dict[str, Any]:
    return {"service": service, "owner": {"payments": "fintech"}.get(service)}


def run(llm: Any, tools: Any, hooks: Any = None, **kw: Any) -> tuple[list[Any], RunResult]:
    steps: list[Any] = []
    gen = composable_loop(llm=llm, tools=tools, hooks=hooks, task={"goal": "find the owner"}, **kw)
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


# --- looplet.testing ---------------------------------------------------------------------------------


def test_testing_mock_keeps_041_defaults_and_string_generate() -> None:
    from looplet.testing import MockLLMBackend as OldMock

    with one_warning("looplet.MockLLMBackend"):
        llm = OldMock()
    assert llm.generate("hello", system_prompt="sys") == "mock response"
    assert (llm.calls, llm.last_prompt, llm.last_system_prompt) == (1, "hello", "sys")
    with one_warning():
        two = OldMock(responses=["a", "b"])
    assert [two.generate("x") for _ in range(3)] == ["a", "b", "a"]  # cycle=True by default
    two.reset()
    assert (two.calls, two.last_prompt) == (0, "")
    assert two.generate("x") == "a"


def test_new_mock_without_responses_names_the_041_shim() -> None:
    with pytest.raises(ValueError, match=r"looplet\.testing\.MockLLMBackend\(\)"):
        MockLLMBackend([])


def test_testing_mock_cycle_false_raises_and_drives_the_new_loop() -> None:
    from looplet.testing import LLMResponsesExhausted
    from looplet.testing import MockLLMBackend as OldMock

    with one_warning():
        strict = OldMock(["only"], cycle=False)
    strict.generate("x")
    with pytest.raises(LLMResponsesExhausted):
        strict.generate("x")
    with one_warning():
        llm = OldMock(
            [
                '{"tool": "lookup", "args": {"service": "payments"}}',
                '{"tool": "done", "args": {"answer": "fintech"}}',
            ]
        )
    steps, result = run(llm, tools_from([lookup]))
    assert [s.tool_call.tool for s in steps] == ["lookup", "done"]
    assert result.stop_reason == "done"
    assert "find the owner" in llm.last_prompt  # the loop's transcript, as text


def test_async_mock_is_awaited_the_old_way_and_by_the_async_loop() -> None:
    from looplet import async_composable_loop

    with one_warning("looplet.MockLLMBackend"):
        cls = looplet.AsyncMockLLMBackend
    with one_warning():
        llm = cls(['{"tool": "done", "args": {"answer": "x"}}'])
    assert asyncio.run(llm.generate("prompt")) == '{"tool": "done", "args": {"answer": "x"}}'
    llm.reset()

    async def go() -> list[str]:
        return [
            s.tool_call.tool
            async for s in async_composable_loop(llm=llm, tools=tools_from([]), task={"g": 1})
        ]

    assert asyncio.run(go()) == ["done"]


def test_importing_main_runs_nothing_and_exports_main() -> None:
    code = "import looplet.__main__ as m; print(callable(m.main))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "True", "")


def test_a_041_backend_generate_prompt_returning_text_still_runs() -> None:
    from looplet import async_composable_loop

    class Old:
        def __init__(self) -> None:
            self.prompts: list[tuple[str, str]] = []

        def generate(self, prompt: str, *, max_tokens: int = 2000, system_prompt: str = "") -> str:
            self.prompts.append((system_prompt, prompt))
            if len(self.prompts) == 1:
                return '{"tool": "lookup", "args": {"service": "payments"}}'
            return '{"tool": "done", "args": {"answer": "fintech"}}'

    class OldAsync(Old):
        async def generate(self, prompt: str, *, max_tokens: int = 2000, system_prompt: str = "") -> str:  # type: ignore[override]
            return Old.generate(self, prompt, system_prompt=system_prompt)

    old = Old()
    with one_warning("generate(messages, *, tools=None, **options) -> LLMResponse"):
        steps, result = run(old, tools_from([lookup]))
    assert [s.tool_call.tool for s in steps] == ["lookup", "done"] and result.final_output == "fintech"
    system, prompt = old.prompts[1]
    assert system and "find the owner" in prompt and "fintech" in prompt and "lookup" in prompt

    async def go() -> list[str]:
        llm = OldAsync()
        return [
            s.tool_call.tool
            async for s in async_composable_loop(llm=llm, tools=tools_from([lookup]), task={"g": 1})
        ]

    with one_warning():
        assert asyncio.run(go()) == ["lookup", "done"]


# --- records -----------------------------------------------------------------------------------------


def test_tool_call_call_id_is_id() -> None:
    with one_warning("ToolCall(id=...)"):
        tc = ToolCall("search", {"q": 1}, call_id="c1")  # type: ignore[call-arg]
    assert tc.id == "c1"
    with one_warning("ToolCall.id"):
        assert tc.call_id == "c1"
    with pytest.raises(TypeError, match="run.scratch"):
        ToolCall("search", metadata={"a": 1})  # type: ignore[call-arg]
    assert ToolCall("search").reasoning is None  # 0.4.1: "" (documented, not restored)


def test_tool_result_old_keywords_are_accepted() -> None:
    with one_warning("step.tool_call.tool"):
        r = ToolResult(tool="search", data={"hits": 2})  # type: ignore[call-arg]
    assert (r.data, r.error) == ({"hits": 2}, None)
    with one_warning("step.tool_call.args"):
        assert r.args_summary == ""
    with one_warning("step.tool_call.tool"):
        assert r.tool == "search"  # kept (looplet._compat_records)
    with one_warning("error_kind="):
        kept = ToolResult(error="boom", error_detail=object())  # type: ignore[call-arg]
    assert (kept.error, kept.error_kind) == ("boom", "tool_exception")  # error= given wins


def test_run_result_old_attributes_and_dict_access() -> None:
    state = DefaultState(max_steps=3)
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "fintech"}}'])
    _, result = run(llm, tools_from([lookup]), state=state)
    with one_warning("state.result"):
        same = RunResult.from_state(state)
    assert same is result
    with one_warning("RunResult.stop_reason"):
        assert result.termination_reason == "done"
    with one_warning("stop_reason"):
        assert result["termination_reason"] == "done"
    with one_warning():
        assert result["status"] == "completed"
    with one_warning():
        assert result.status.value == "completed"
    with one_warning("final_output"):
        assert result.output == result.final_output
    with one_warning():
        assert result.completed is True
    with one_warning(), pytest.raises(KeyError):
        result["no_such_key"]
    with pytest.raises(ValueError, match="not finished"):
        with one_warning():
            RunResult.from_state(DefaultState())


# --- hooks -------------------------------------------------------------------------------------------


def rm(path: str) -> str:
    rm.calls += 1  # type: ignore[attr-defined]
    return "removed"


def test_041_hook_methods_are_called_under_their_new_names() -> None:
    seen: list[Any] = []

    class OldStyle:
        def pre_loop(self, state: Any, session_log: Any, context: Any) -> None:
            seen.append("pre_loop")

        def check_permission(self, tool_call: ToolCall, state: Any) -> bool:
            return tool_call.tool != "rm"

        def build_briefing(self, state: Any, session_log: Any, context: Any) -> str:
            return "BRIEFING-TEXT"

        def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
            seen.append(" ".join(str(m.get("content")) for m in call.messages))
            return call_next(call)

    rm.calls = 0  # type: ignore[attr-defined]
    llm = MockLLMBackend(
        ['{"tool": "rm", "args": {"path": "x"}}', '{"tool": "done", "args": {"answer": "ok"}}']
    )
    with one_warning("on_loop_start", "pre_dispatch returning Deny", "pre_prompt"):
        steps, result = run(llm, tools_from([rm]), hooks=[OldStyle()])
    assert seen[0] == "pre_loop" and seen.count("pre_loop") == 1
    assert rm.calls == 0  # type: ignore[attr-defined]
    assert steps[0].tool_result.error_kind == "denied" and "permission denied" in steps[0].tool_result.error
    assert all("BRIEFING-TEXT" in prompt for prompt in seen[1:])
    assert result.stop_reason == "done"


def test_build_prompt_hook_fails_naming_wrap_llm_call() -> None:
    class WholePrompt:
        def build_prompt(self, **kw: Any) -> str:
            return "x"

    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}'])
    with pytest.raises(TypeError, match="wrap_llm_call"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(llm, tools_from([]), hooks=[WholePrompt()])


def test_pre_dispatch_result_skips_the_tool_and_rejected_done_is_a_step() -> None:
    class Gate:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
            return ToolResult(data="cached") if tool_call.tool == "rm" else None

        def check_done(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
            return "run the tests first" if len(state.steps) < 2 else None

    rm.calls = 0  # type: ignore[attr-defined]
    llm = MockLLMBackend(
        ['{"tool": "rm", "args": {"path": "x"}}'] + ['{"tool": "done", "args": {"answer": "ok"}}'] * 2
    )
    with no_warning() as caught:
        warnings.simplefilter("always")
        steps, result = run(llm, tools_from([rm]), hooks=[Gate()])
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert rm.calls == 0 and steps[0].tool_result.data == "cached"  # type: ignore[attr-defined]
    assert [s.tool_result.error_kind for s in steps] == [None, "done_rejected", None]
    assert steps[1].tool_call.tool == "done" and "run the tests first" in (steps[1].tool_result.error or "")
    assert result.stop_reason == "done" and len(steps) == 3


def test_loop_hook_base_class_and_loop_context() -> None:
    with one_warning("plain class"):

        class Mine(looplet.LoopHook):  # type: ignore[misc]
            pass

    assert Mine() is not None
    from looplet.loop import LoopHook

    assert LoopHook is looplet.LoopHook
    removed("from looplet import LoopContext", "current_run")


# --- decisions ---------------------------------------------------------------------------------------


def test_block_continue_and_old_decision_fields() -> None:
    from looplet.hook_decision import Block, Continue

    with one_warning("Deny(reason)"):
        assert Block("no").block == "no"
    with one_warning("InjectContext"):
        assert Continue("more").additional_context == "more"
    from looplet.hook_decision import RewriteThread

    with one_warning("state.metadata"):
        assert RewriteThread(reset_metadata_keys=["c"]).rewrite_thread == {"reset_metadata_keys": ["c"]}
    with one_warning(r"Deny(reason)"):
        assert HookDecision(permission="deny").block == "permission denied"  # type: ignore[call-arg]
    with one_warning("Allow()"):
        assert HookDecision(permission="allow").allow  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="ApprovalHook"):
        HookDecision(permission="ask")  # type: ignore[call-arg]


def test_old_decision_queries() -> None:
    from looplet import Allow, Deny, InjectContext, Stop

    with one_warning("decision.block is not None"):
        assert Deny("no").is_block()
    with one_warning("decision.stop is not None"):
        assert Stop("budget").is_stop()
    with one_warning("decision.block, decision.stop"):
        assert HookDecision().is_noop()
    with one_warning("decision.block, decision.stop"):
        assert not InjectContext("x").is_noop()
    with one_warning("decision.allow"):
        assert Deny("no").permission == "deny"
    with one_warning("decision.allow"):
        assert Allow().permission == "allow"
    with one_warning("decision.allow"):
        assert HookDecision().permission is None


# --- tools -------------------------------------------------------------------------------------------


def test_tools_from_old_keywords_give_041_done_and_think() -> None:
    with one_warning("tools_from([...], include_done=True)"):
        tools = tools_from([lookup], include_done=True, validate=True, include_think=True)
    assert set(tools.tool_names()) == {"lookup", "think", "done"}
    llm = MockLLMBackend(
        ['{"tool": "think", "args": {"thought": "hm"}}', '{"tool": "done", "args": {"summary": "found it"}}']
    )
    steps, result = run(llm, tools)
    assert steps[-1].tool_result.data == {"status": "completed", "summary": "found it"}
    assert result.stop_reason == "done"
    with one_warning():
        custom = tools_from([lookup], done_parameters={"answer": "the final answer"})
    assert custom.get("done") is not None and custom.get("done").parameters["required"] == ["answer"]  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="unexpected keyword"):
        tools_from([lookup], nonsense=True)


def test_tool_spec_and_registry_methods() -> None:
    from looplet import ToolSpec

    spec = ToolSpec("search", "Search.", {"query": "str", "limit": "int"}, lambda query, limit: [])
    with one_warning("spec.parameters"):
        assert spec.parameter_names() == ["query", "limit"]
    with one_warning():
        assert spec.required_parameters() == ["query", "limit"]
    with one_warning():
        assert spec.to_api_schema()["input_schema"]["properties"]["limit"] == {"type": "integer"}
    with one_warning():
        assert "search(query: string, limit: integer)" in spec.spec_text()
    reg = tools_from([spec, lookup], include_done=False)
    with no_warning():
        assert reg.tool_names == ["search", "lookup"] == reg.tool_names()
    with one_warning("registry.dispatch"):
        results = reg.dispatch_batch([ToolCall("lookup", {"service": "payments"}), ToolCall("nope")])
    assert results[0].data["owner"] == "fintech" and results[1].error_kind == "unknown_tool"
    with one_warning("schemas('anthropic')"):
        assert [s["name"] for s in reg.tool_schemas()] == ["search", "lookup"]
    with one_warning():
        assert reg.tool_catalog_text().startswith("Available tools:")
    with one_warning("include_done=True"):
        looplet.register_done_tool(reg)
    assert "done" in reg


# --- config ------------------------------------------------------------------------------------------


def test_loop_config_fields_renamed_ignored_or_refused() -> None:
    with one_warning("LoopConfig(parallel_tools=...)"):
        assert LoopConfig(concurrent_dispatch=True).parallel_tools is True  # type: ignore[call-arg]
    with one_warning("no effect"):
        assert LoopConfig(max_steps=2, use_native_tools=False).max_steps == 2  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="TracingHook"):
        LoopConfig(tracer=object())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        LoopConfig(not_a_field=1)  # type: ignore[call-arg]


def test_composable_loop_old_keywords() -> None:
    from looplet import async_composable_loop

    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}'])
    with one_warning("composable_loop() without it"):
        steps, result = run(llm, tools_from([]), session_log=None)
    assert result.stop_reason == "done"
    with pytest.raises(TypeError, match="resume"):
        composable_loop(llm=llm, tools=tools_from([]), task={"g": 1}, session_log=[{"role": "user"}])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="on_llm_chunk"):
        async_composable_loop(llm=llm, tools=tools_from([]), task={"g": 1}, stream=object())  # type: ignore[call-arg]


# --- compaction, permissions, checkpoints, evals ------------------------------------------------------


def test_renamed_compaction_classes() -> None:
    from looplet import Prune, Summarize, Truncate, compact_chain
    from looplet.compact import PruneToolResults, SummarizeCompact, TruncateCompact

    with one_warning("looplet.Truncate(keep_last=...)"):
        t = TruncateCompact(keep_recent=3)
    with one_warning("looplet.Prune"):
        p = PruneToolResults()
    with one_warning("looplet.Summarize"):
        s = SummarizeCompact(MockLLMBackend(["summary"]), keep_recent=1, summary_max_tokens=99)
    assert isinstance(t, Truncate) and isinstance(p, Prune) and (t.keep_last, p.keep_last) == (3, 5)
    assert isinstance(s, Summarize) and (s.keep_last, s.max_tokens) == (1, 99)
    assert compact_chain(p, s, t) is not None


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("EvalCase", "eval_cases"),
        ("load_eval_run", "from_trajectory"),
        ("Cartridge", "no counterpart"),
        ("async_replay_loop", "replay_loop"),
        ("FileRunStore", "no counterpart"),
    ],
)
def test_removed_names_import_as_placeholders_that_say_what_to_use(name: str, advice: str) -> None:
    ph = removed(f"from looplet import {name}", advice)
    with pytest.raises(RemovedAPIError, match=advice):
        ph.some_attribute  # noqa: B018
    assert not isinstance(object(), ph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert getattr(looplet, name) is ph  # one placeholder per name

    class Sub(ph):  # type: ignore[misc,valid-type]  # a class deriving from it loads, and fails when made
        pass

    with pytest.raises(RemovedAPIError, match=advice):
        Sub()


def test_removed_error_classes_can_still_be_caught() -> None:
    ph = removed("from looplet import ToolValidationError", "no counterpart")
    assert issubclass(ph, Exception)
    try:
        raise ValueError("x")
    except ph:  # never matches: nothing in 0.5 raises it
        raise AssertionError("unreachable") from None
    except ValueError:
        pass


def test_old_modules_import_and_hold_placeholders() -> None:
    import importlib

    for module in (
        "parse",
        "cache",
        "streaming",
        "native_tools",
        "events",
        "conversation",
        "context_budget",
        "router",
        "recovery",
        "artifact_compat",
    ):
        importlib.import_module(f"looplet.{module}")
    removed("from looplet.parse import to_text", "no counterpart")
    removed("from looplet.streaming import StreamingHook", "on_llm_chunk")
    with pytest.raises(ImportError):
        exec("from looplet.parse import no_such_name")


def test_unknown_names_stay_attribute_errors() -> None:
    assert not hasattr(looplet, "no_such_name")
    with pytest.raises(ImportError):
        exec("from looplet.compact import no_such_name")


def test_permission_engine_rules_work_in_permission_hook() -> None:
    from looplet.permissions import PermissionDecision, PermissionEngine, PermissionRule

    with one_warning("looplet.control.Rule"):
        rule = PermissionRule("rm", PermissionDecision.DENY, reason="destructive")
    with one_warning("PermissionHook(rules"):
        engine = PermissionEngine(rules=[rule])
    rm.calls = 0  # type: ignore[attr-defined]
    llm = MockLLMBackend(
        ['{"tool": "rm", "args": {"path": "x"}}', '{"tool": "done", "args": {"answer": "ok"}}']
    )
    steps, _ = run(llm, tools_from([rm]), hooks=[PermissionHook(engine)])
    assert rm.calls == 0 and "destructive" in (steps[0].tool_result.error or "")  # type: ignore[attr-defined]
    with one_warning():
        strict = PermissionEngine(rules=[], default=PermissionDecision.DENY).allow("done")
    llm = MockLLMBackend(
        ['{"tool": "rm", "args": {"path": "x"}}', '{"tool": "done", "args": {"answer": "ok"}}']
    )
    steps, result = run(llm, tools_from([rm]), hooks=[PermissionHook(strict)])
    assert rm.calls == 0 and steps[0].tool_result.error_kind == "denied"  # type: ignore[attr-defined]
    assert result.stop_reason == "done"  # the default does not deny done
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        narrow = PermissionEngine().deny("rm", arg_matcher=lambda a: a["path"].startswith("/"), reason="abs")
    rm.calls = 0  # type: ignore[attr-defined]
    llm = MockLLMBackend(
        [
            '{"tool": "rm", "args": {"path": "/etc"}}',
            '{"tool": "rm", "args": {"path": "tmp"}}',
            '{"tool": "done", "args": {"answer": "ok"}}',
        ]
    )
    steps, _ = run(llm, tools_from([rm]), hooks=[PermissionHook(narrow)])
    assert steps[0].tool_result.error_kind == "denied" and steps[1].tool_result.ok
    assert rm.calls == 1  # type: ignore[attr-defined]


def test_permission_engine_evaluate_and_rule_matches() -> None:
    from looplet.permissions import PermissionDecision, PermissionEngine, PermissionRule

    with one_warning("looplet.control.Rule"):
        broken = PermissionRule("bash", PermissionDecision.ALLOW, arg_matcher=lambda a: 1 / 0)
    assert not broken.matches(ToolCall("bash", {}))  # an allow rule that raises does not grant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        engine = PermissionEngine(default=PermissionDecision.ALLOW)
    engine.deny("bash", arg_matcher=lambda a: "rm" in a.get("cmd", ""), reason="danger").ask("push")
    out = engine.evaluate(ToolCall("bash", {"cmd": "rm -rf /"}))
    assert out.denied and out.reason == "danger"
    assert engine.evaluate(ToolCall("bash", {"cmd": "ls"})).allowed
    assert engine.evaluate(ToolCall("push", {})).denied  # ask without a handler
    engine.ask_handler = lambda call, rule: PermissionDecision.ALLOW
    assert engine.evaluate(ToolCall("push", {})).allowed

    def sneaky(call: Any, rule: Any) -> Any:
        call.args["force"] = True
        return PermissionDecision.ALLOW

    engine.ask_handler = sneaky
    assert engine.evaluate(ToolCall("push", {})).denied  # it approved a different call
    assert [d["tool"] for d in engine.denials] == ["bash", "push", "push"]


def test_old_eval_hook_keywords_scores_and_eval_result() -> None:
    from looplet import EvalContext, EvalHook
    from looplet.compat import EvalResult

    def eval_score(ctx: EvalContext) -> float:
        return 1.0 if ctx.completed and ctx.expected == {"owner": "fintech"} else 0.0

    def eval_rich(ctx: EvalContext) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return EvalResult(score=0.0, label="fail", explanation="too slow")

    with one_warning("EvalHook([...])"):
        hook = EvalHook(evaluators=[eval_score, eval_rich], expected={"owner": "fintech"})
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "fintech"}}'])
    run(llm, tools_from([lookup]), hooks=[hook])
    assert [(r.name, r.score, r.passed) for r in hook.results] == [
        ("eval_score", 1.0, True),
        ("eval_rich", 0.0, False),
    ]
    assert isinstance(hook, EvalHook) and "1/2 passed" in hook.summary()
    assert "too slow" in hook.report()
    with pytest.raises(TypeError, match="unexpected keyword"):
        EvalHook(evaluatorz=[eval_score])


def test_old_eval_hook_collectors_fill_artifacts_and_report_events() -> None:
    from looplet import EvalHook

    events: list[tuple[str, dict[str, Any]]] = []

    class Events:
        def on_event(self, name: str, attributes: dict[str, Any]) -> None:
            events.append((name, attributes))

    def collect_tests(state: Any) -> dict[str, Any]:
        return {"tests_passing": True}

    def collect_broken(state: Any) -> Any:
        raise RuntimeError("boom")

    def eval_tests(ctx: Any) -> bool:
        return bool(ctx.artifacts.get("tests_passing"))

    with one_warning("EvalHook([...])"):
        hook = EvalHook(evaluators=[eval_tests], collectors=[collect_tests, collect_broken])
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}'])
    run(llm, tools_from([lookup]), hooks=[Events(), hook])
    assert [(r.name, r.score, r.label) for r in hook.results] == [
        ("eval_tests", 1.0, "pass"),
        ("collector:collect_broken", None, "error"),
    ]
    assert [(a["eval"], a["outcome"]) for n, a in events if n == "eval"] == [
        ("eval_tests", "pass"),
        ("collector:collect_broken", "error"),
    ]


def test_make_backend_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    from looplet.backends import OpenAIBackend, make_backend

    with one_warning("OpenAIBackend.from_env()"):
        llm = make_backend(model="m-1")
    assert isinstance(llm, OpenAIBackend) and llm.model == "m-1"


def test_old_module_names() -> None:
    with one_warning("looplet.DefaultState"):
        from looplet.types import DefaultState as Old
    assert Old is DefaultState
    with one_warning("looplet.protocols.LLMBackend"):
        from looplet.types import LLMBackend
    assert isinstance(MockLLMBackend(["x"]), LLMBackend)
    removed("from looplet.checkpoint import save_pending_dispatch", "no counterpart")


def test_041_quickstart_shape_runs_unchanged() -> None:
    """The calls of 0.4.1's README quickstart: JSON-text protocol switch, validate=, done(summary),
    RunResult.from_state(state).termination_reason."""
    llm = MockLLMBackend(
        ['{"tool":"lookup","args":{"service":"payments"}}', '{"tool":"done","args":{"summary":"fintech"}}'],
        cycle=False,
    )
    state = DefaultState(max_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tools = tools_from([lookup], include_done=True, validate=True)
        config = LoopConfig(max_steps=2, use_native_tools=False)  # type: ignore[call-arg]
        result = run_loop(llm=llm, tools=tools, state=state, config=config, task={"goal": "owner"})
        assert RunResult.from_state(state).termination_reason == "done"
    assert result.steps[0].tool_result.data == {"service": "payments", "owner": "fintech"}


def test_registry_async_dispatch_and_think_tool() -> None:
    from looplet import BaseToolRegistry
    from looplet.tools import register_think_tool

    registry = tools_from([lookup])
    with one_warning("registry.adispatch(call)"):
        result = asyncio.run(registry.async_dispatch(ToolCall("lookup", {"service": "payments"})))
    assert result.data == {"service": "payments", "owner": "fintech"}
    reg = BaseToolRegistry()
    with one_warning("@tool"):
        register_think_tool(reg)
    out = reg.dispatch(ToolCall("think", {"analysis": "try A first"}))
    assert out.data == {"acknowledged": True, "analysis": "try A first"}
    assert reg.get("think").concurrent_safe  # type: ignore[union-attr]


def test_eval_result_from_return_and_eval_run() -> None:
    from looplet import EvalContext
    from looplet.compat import EvalResult
    from looplet.evals import eval_mark

    with no_warning():
        assert EvalResult.from_return(True, name="a").passed
        assert EvalResult.from_return(0.4).passed is False
        assert EvalResult.from_return(2.0).label == "error"
        assert EvalResult.from_return(None).label == "error"
        assert EvalResult.from_return("pass").passed
    with pytest.warns(DeprecationWarning, match="set score explicitly"):
        assert EvalResult.from_return({"f1": 0.8, "missed": ["x"]}).score == 0.8
    with pytest.raises(ValueError, match="between 0 and 1"), pytest.warns(DeprecationWarning):
        EvalResult("x", score=1.5)

    @eval_mark("slow")
    def eval_steps(ctx: Any) -> float:
        return min(len(ctx.steps) / 2, 1.0)

    def eval_judged(ctx: Any, llm: Any) -> bool:
        return True

    def eval_broken(ctx: Any) -> bool:
        raise RuntimeError("boom")

    steps, result = run(
        MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}']), tools_from([], include_done=True)
    )
    ctx = EvalContext.from_run(result)
    from looplet.evals import eval_run

    with one_warning("run_evals(evals, [ctx])"):
        out = eval_run([eval_steps, eval_judged, eval_broken], ctx)
    assert [(r.name, r.score, r.label) for r in out] == [
        ("eval_steps", 0.5, None),
        ("eval_judged", None, "skipped"),
        ("eval_broken", None, "error"),
    ]
    with one_warning():
        assert [r.name for r in eval_run([eval_steps, eval_broken], ctx, exclude=["slow"])] == ["eval_broken"]
    with one_warning("len(ctx.steps)"):
        assert ctx.step_count == 1
    with one_warning("ctx.failed_steps"):
        assert ctx.errors == []
    with one_warning("tool_calls()"):
        assert ctx.tool_sequence == ["done"]


def test_eval_discover_reads_a_folder(tmp_path: Any) -> None:
    from looplet.evals import eval_discover

    (tmp_path / "eval_a.py").write_text("def eval_one(ctx): return 1.0\ndef helper(x): return x\n")
    (tmp_path / "eval_b.py").write_text("def eval_two(ctx): return 0.5\n")
    (tmp_path / "other.py").write_text("def eval_three(ctx): return 0.5\n")
    with one_warning("looplet.evals.discover"):
        found = eval_discover(tmp_path)
    assert sorted(f.__name__ for f in found) == ["eval_one", "eval_two"]


def test_old_parse_functions_read_text_and_blocks() -> None:
    from looplet.parse import parse_multi_tool_calls, parse_native_tool_use, parse_tool_call

    with one_warning("composable_loop"):
        call = parse_tool_call('```json\n{"tool": "search", "args": {"q": "x"}}\n```')
    assert (call.tool, call.args) == ("search", {"q": "x"})
    with one_warning("composable_loop"):
        assert parse_tool_call("not json") is None
    with one_warning("composable_loop"):
        calls = parse_multi_tool_calls('[{"tool": "a", "args": {}}, {"tool": "b", "args": {}}]')
    assert [c.tool for c in calls] == ["a", "b"]
    blocks = [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t1", "name": "s", "input": {"q": 1}},
    ]
    with one_warning("LLMResponse.tool_calls"):
        assert parse_native_tool_use(blocks) == [ToolCall("s", {"q": 1}, "t1")]


def test_error_kind_and_error_detail_view_the_new_error_kind() -> None:
    with one_warning("ToolResult.error_kind"):
        from looplet.types import ErrorKind
    with one_warning("error_kind="):
        from looplet.types import ToolError
    with one_warning("ToolResult.error and ToolResult.error_kind"):
        detail = ToolResult(error="Denied: no.", error_kind="denied").error_detail
    assert detail is not None and detail.kind is ErrorKind.PERMISSION_DENIED
    assert detail.message == "Denied: no."
    with one_warning("ToolResult.error and ToolResult.error_kind"):
        assert ToolResult(data=1).error_detail is None
    with one_warning("error_kind="):
        made = ToolResult(error_detail=ToolError(ErrorKind.TIMEOUT, "slow"))  # type: ignore[call-arg]
    assert (made.error, made.error_kind) == ("slow", "timeout")
    llm = MockLLMBackend(['{"tool": "lookup", "args": {}}', '{"tool": "done", "args": {"answer": "x"}}'])
    steps, _ = run(llm, tools_from([lookup]))
    with one_warning():
        assert steps[0].tool_result.error_detail.kind is ErrorKind.VALIDATION  # missing argument


def test_suggest_similar_and_old_eval_context_keywords() -> None:
    from looplet import (
        EvalContext,
        suggest_similar,  # a function: it warns when called
    )

    with one_warning("difflib.get_close_matches"):
        assert suggest_similar("scann", ["scan", "rank"]) == "scan"
    with one_warning("difflib.get_close_matches"):
        assert suggest_similar("xyz", ["scan"]) is None
    with one_warning("EvalContext(task=...)"):
        ctx = EvalContext(steps=[], metadata={"run": 1}, artifacts={"tests": True})
    assert isinstance(ctx, EvalContext) and (ctx.metadata, ctx.artifacts) == ({"run": 1}, {"tests": True})
    with no_warning() as caught:
        plain = EvalContext(steps=[])
    assert type(plain) is EvalContext and not caught


def test_async_graders_and_collectors_are_refused_without_running() -> None:
    import gc

    from looplet import EvalContext, EvalHook
    from looplet.evals import eval_run

    ran: list[str] = []

    async def eval_async(ctx: Any) -> bool:
        ran.append("grader")
        return True

    def eval_wrapped(ctx: Any) -> Any:
        return eval_async(ctx)

    async def collect_async(state: Any) -> dict[str, Any]:
        ran.append("collector")
        return {}

    def eval_ok(ctx: Any) -> bool:
        return True

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = eval_run([eval_async, eval_wrapped], EvalContext(steps=[]))
        hook = EvalHook(evaluators=[eval_ok], collectors=[collect_async])
        run(MockLLMBackend(['{"tool": "done", "args": {"answer": "x"}}']), tools_from([lookup]), hooks=[hook])
        gc.collect()
    assert [r.label for r in out] == ["error", "error"]
    assert all("async graders are not supported" in r.explanation for r in out)
    assert [(r.name, r.label) for r in hook.results] == [
        ("eval_ok", "pass"),
        ("collector:collect_async", "error"),
    ]
    assert "host code" in hook.results[1].explanation
    assert ran == [] and not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_tool_spec_old_fields() -> None:
    from looplet import ToolSpec

    with one_warning("ToolSpec(tags=...)", "kept on the spec"):
        spec = ToolSpec("lookup", "Find an owner.", {"service": "str"}, lookup, tags=["ops"])  # type: ignore[call-arg]
    assert spec.name == "lookup"
    with one_warning("ToolSpec.tags"):
        assert spec.tags == ["ops"]
    with one_warning("ToolSpec.idempotency"):
        assert spec.idempotency == "unknown"  # 0.4.1's default
    with pytest.raises(TypeError, match="@tool"):
        ToolSpec("lookup", "x", {}, lookup, infer_optional_from_signature=True)  # type: ignore[call-arg]
