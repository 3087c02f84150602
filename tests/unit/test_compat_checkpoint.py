"""looplet 0.4.1's checkpoints, session log, run envelope, free tools, restored step budgets and hook-return
helpers (looplet._compat_checkpoint, _compat_session, _compat_loop, _compat_hooks): each old spelling works
with one DeprecationWarning naming the 0.5 one, and a 0.5 run never goes through them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from looplet import (
    BaseToolRegistry,
    DefaultState,
    HookDecision,
    LoopConfig,
    MockLLMBackend,
    Stop,
    ToolResult,
    ToolSpec,
    composable_loop,
    tools_from,
)

from ._compat_support import one_warning, quiet


@pytest.fixture(autouse=True)
def _quiet_elsewhere() -> Iterator[None]:
    with quiet():
        yield


def old(name: str) -> Any:
    import looplet.checkpoint

    return getattr(looplet.checkpoint, name)


def record(step: int = 3, **extra: Any) -> Any:
    fields: dict[str, Any] = {
        "session_log_data": {"entries": [], "current_theory": ""},
        "conversation_data": None,
        "config_snapshot": {"max_steps": 4, "queries_used": 2, "budget_remaining": 2},
        "tool_results_store": {"k": {"rows": [1]}},
        "metadata": {"task": "t"},
    }
    return old("Checkpoint")(step_number=step, **{**fields, **extra})


def work_tools(effects: list[str]) -> BaseToolRegistry:
    def work() -> str:
        effects.append("work")
        return "worked"

    return tools_from([work], include_done=True)


# --- the record and the store -------------------------------------------------------------------------


def test_checkpoint_record_warns_and_round_trips_through_json() -> None:
    with one_warning("Checkpoint(step_number=...)", "CheckpointHook(dir)"):
        cp = record()
    copy = cp.to_dict()
    copy["tool_results_store"]["k"]["rows"].append(2)  # a copy: the record is unchanged
    assert cp.tool_results_store == {"k": {"rows": [1]}}
    back = old("Checkpoint").from_dict(json.loads(json.dumps(cp.to_dict())))
    assert (back.step_number, back.metadata, back.created_at) == (3, {"task": "t"}, cp.created_at)
    for bad in (None, "1", True):
        with pytest.raises(ValueError, match="step_number"):
            old("Checkpoint").from_dict({"step_number": bad})
    assert old("Checkpoint") is __import__("looplet").Checkpoint  # looplet.Checkpoint is 0.4.1's record too


def test_file_store_saves_loads_and_picks_what_to_resume(tmp_path: Path) -> None:
    with one_warning("FileCheckpointStore(dir)", "CheckpointHook(dir)"):
        store = old("FileCheckpointStore")(tmp_path / "cps")
    assert isinstance(store, old("CheckpointStore"))
    store.save(record(1), "step_1")
    store.save(record(2), "step_2")
    assert (tmp_path / "cps" / "step_2.json").exists() and store.load("nope") is None
    assert store.load("step_2").step_number == 2
    assert store.load_latest_for_resume().step_number == 2
    store.save(record(3, run_status="completed", run_phase="terminal"), "step_3")
    assert store.load_latest_for_resume() is None  # the run ended: nothing to resume
    assert store.load_latest().step_number == 3


def test_file_store_keeps_runs_apart_and_refuses_an_unreadable_checkpoint(tmp_path: Path) -> None:
    store = old("FileCheckpointStore")(tmp_path)
    mine = record(2, run_envelope={"run_id": "a"})
    store.save(mine, "step_2")
    assert old("FileCheckpointStore").key_for(mine, "step_2") == "a__step_2"
    with pytest.raises(ValueError, match="belongs to run 'a'"):
        store.load("step_2", run_id="b")
    (tmp_path / "b__step_9.json").write_text("{")  # another run's broken file does not matter
    assert store.load_latest_for_resume(run_id="a").step_number == 2
    (tmp_path / "a__step_5.json").write_text('{"step_number": "x"}')
    with pytest.raises(ValueError, match="Cannot safely resume"):
        store.load_latest_for_resume(run_id="a")


def test_store_based_checkpoint_hook_saves_every_n_recorded_steps(tmp_path: Path) -> None:
    store = old("FileCheckpointStore")(tmp_path)
    state = DefaultState(max_steps=5)
    seen: list[tuple[int, int]] = []

    def data(step: int) -> Any:
        seen.append((step, len(state.steps)))
        return record(step)

    with one_warning("CheckpointHook(store=", "CheckpointHook(dir)"):
        hook = old("CheckpointHook")(store=store, get_checkpoint_data=data, save_every_n_steps=2)
    llm = MockLLMBackend(['{"tool": "work", "args": {}}'] * 4 + ['{"tool": "done", "args": {"answer": "x"}}'])
    list(composable_loop(llm, tools=work_tools([]), hooks=[hook], state=state))
    assert seen == [(2, 2), (4, 4)]  # after the loop recorded the step
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["step_2.json", "step_4.json"]
    with pytest.raises(ValueError, match="save_every_n_steps"):
        old("CheckpointHook")(store=store, get_checkpoint_data=data, save_every_n_steps=0)


def test_resume_loop_state_rebases_the_budget_and_refuses_unknown_effects() -> None:
    cp = record()
    cp.session_log_data = {
        "entries": [{"step": 1, "tool": "search", "entities_seen": ["h"]}],
        "current_theory": "x",
    }
    with one_warning("resume_loop_state(checkpoint)", "resume(dir"):
        out = old("resume_loop_state")(cp, max_steps=6)
    assert out["state_counters"] == {"queries_used": 2, "budget_remaining": 4}  # 2 left, cap raised by 2
    assert out["step_offset"] == 3 and out["session_log"].all_entities() == {"h"}
    assert cp.config_snapshot["budget_remaining"] == 2
    with pytest.raises(ValueError, match="nonnegative integers"):
        old("resume_loop_state")(cp, max_steps=-1)
    cp.metadata["pending_calls"] = [{"call_id": "c1", "execution_status": "effect_unknown"}]
    with pytest.raises(RuntimeError, match="Tool effects unknown for calls c1"):
        old("resume_loop_state")(cp)


def test_session_log_and_run_envelope_work_with_a_warning() -> None:
    from looplet import RunEnvelope
    from looplet.session import SessionLog

    with one_warning("SessionLog()", "state.steps"):
        log = SessionLog()
    log.record(1, "theory", "search", "why", entities=["a"])
    log.record(2, "", "done", "end", findings=["f"])
    assert [e["theory"] for e in log.to_list()] == ["theory", "theory"] and log.all_entities() == {"a"}
    with one_warning("RunEnvelope(run_id=...)", "current_run().run_id"):
        env = RunEnvelope(run_id="r1", tenant_id="t")
    assert env.to_dict() == {"run_id": "r1", "tenant_id": "t"}


# --- LoopConfig(checkpoint_dir=...), free tools, budgets -----------------------------------------------


def test_checkpoint_dir_writes_041_checkpoints_and_resumes_the_step_budget(tmp_path: Path) -> None:
    with one_warning("LoopConfig(checkpoint_dir=...)", "CheckpointHook(dir)"):
        config = LoopConfig(max_steps=4, checkpoint_dir=str(tmp_path))
    assert isinstance(config, LoopConfig) and config.checkpoint_dir == str(tmp_path)  # type: ignore[attr-defined]
    effects: list[str] = []
    llm = MockLLMBackend(['{"tool": "work", "args": {}}'] * 3)
    store = old("FileCheckpointStore")(tmp_path)
    store.save(record(3, config_snapshot={"max_steps": 4, "budget_remaining": 1}), "before")
    state = DefaultState(max_steps=4)
    steps = list(composable_loop(llm, tools=work_tools(effects), config=config, state=state))
    assert len(steps) == 1 and effects == ["work"]  # one step was left of the saved budget
    assert state.budget_remaining == 0
    assert store.load("step_1").session_log_data["entries"][0]["tool"] == "work"
    assert store.load_latest_for_resume() is None  # the run ended: a terminal checkpoint
    assert store.load("step_1_final").metadata["status"] == "max_steps"
    done = MockLLMBackend(['{"tool": "done", "args": {"answer": "x"}}'])
    list(composable_loop(done, tools=work_tools([]), config=LoopConfig(checkpoint_dir=str(tmp_path / "d"))))
    assert old("FileCheckpointStore")(tmp_path / "d").load("step_1_done").metadata["status"] == "done"


def test_a_crash_while_a_tool_runs_blocks_the_rerun(tmp_path: Path) -> None:
    def effect() -> None:
        raise KeyboardInterrupt

    tools = BaseToolRegistry([ToolSpec("effect", "Side effect.", {}, effect)])
    config = LoopConfig(max_steps=2, checkpoint_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        list(composable_loop(MockLLMBackend(['{"tool": "effect", "args": {}}']), tools=tools, config=config))
    pending = old("FileCheckpointStore")(tmp_path).load_latest_for_resume()
    assert pending.metadata["pending_calls"][0]["execution_status"] == "effect_unknown"
    llm = MockLLMBackend(['{"tool": "effect", "args": {}}'])
    with pytest.raises(RuntimeError, match="Tool effects unknown"):
        list(composable_loop(llm, tools=tools, config=config))
    assert llm.calls == 0


def test_free_tool_calls_do_not_count_as_steps() -> None:
    with one_warning("ToolSpec(free=True)", "max_steps"):
        note = ToolSpec("note", "A free note.", {}, lambda: "noted", free=True)  # type: ignore[call-arg]
    tools = work_tools([])
    tools.register(note)
    llm = MockLLMBackend(['{"tool": "note", "args": {}}'] * 2 + ['{"tool": "work", "args": {}}'] * 3)
    state = DefaultState(max_steps=2)
    budgets: list[int] = []

    class Watch:
        def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
            budgets.append(state.budget_remaining)

    steps = list(composable_loop(llm, tools=tools, state=state, hooks=[Watch()]))
    assert [s.tool_call.tool for s in steps] == ["note", "note", "work", "work"]
    assert budgets == [2, 2, 2, 1] and state.budget_remaining == 0


def test_setting_budget_remaining_restores_a_budget() -> None:
    state = DefaultState(max_steps=4)
    with one_warning("state.budget_remaining = n", "DefaultState(max_steps=n)"):
        state.budget_remaining = 2
    assert state.budget_remaining == 2
    state.budget_remaining = 9
    assert state.budget_remaining == 4  # never more than max_steps allows
    for bad in (True, -1, 1.5, "1"):
        with pytest.raises(ValueError, match="nonnegative integer"):
            state.budget_remaining = bad  # type: ignore[assignment]


def test_a_05_run_does_not_load_the_compat_modules() -> None:
    code = (
        "import sys, looplet\n"
        "from looplet import LoopConfig, MockLLMBackend, ToolSpec, run_loop, tools_from\n"
        "assert type(LoopConfig(max_steps=2)) is LoopConfig\n"
        "assert type(ToolSpec('t', 'd', {}, print)) is ToolSpec\n"
        'run_loop(llm=MockLLMBackend([\'{"tool": "done", "args": {"answer": "x"}}\']), tools=tools_from([]))\n'
        "print(sorted(m for m in sys.modules if m.startswith('looplet._compat')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- hook returns -----------------------------------------------------------------------------------------


def test_normalize_hook_return_and_effect_fields(caplog: pytest.LogCaptureFixture) -> None:
    from looplet.hook_decision import hook_effect_fields, normalize_hook_return

    with one_warning("normalize_hook_return", "docs/hooks.md"):
        assert normalize_hook_return("hint", slot="pre_prompt").additional_context == "hint"
    assert normalize_hook_return("not yet", slot="check_done").block == "not yet"
    assert normalize_hook_return(False, slot="check_permission").block == "permission denied"
    assert normalize_hook_return(True, slot="check_permission").allow is True
    assert normalize_hook_return(False, slot="should_stop") is None
    assert normalize_hook_return(True, slot="should_stop").stop
    result = ToolResult(data=1)
    assert normalize_hook_return(result, slot="pre_dispatch").updated_result is result
    with pytest.raises(TypeError, match="pre_dispatch hook returned object"):
        normalize_hook_return(object(), slot="pre_dispatch")
    assert hook_effect_fields("pre_tool_use") == hook_effect_fields("pre_dispatch")
    with caplog.at_level(logging.WARNING):
        decision = Stop("x")
        assert normalize_hook_return(decision, slot="check_done") is decision
    assert "ignores effect fields stop" in caplog.text
    with one_warning("ignored_effects", "docs/hooks.md"):
        assert HookDecision(updated_args={"a": 1}).ignored_effects("pre_prompt") == ("updated_args",)


# --- 0.4.1 hooks in a 0.5 loop ------------------------------------------------------------------------------


@pytest.mark.parametrize("gate_first", [False, True])
@pytest.mark.parametrize("allowed", [False, True])
def test_check_permission_is_asked_last_on_the_final_call(gate_first: bool, allowed: bool) -> None:
    ran: list[str] = []
    asked: list[dict[str, Any]] = []

    def search(scope: str) -> str:
        ran.append(scope)
        return "live"

    class Cache:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
            if tool_call.tool == "search":
                return HookDecision(
                    updated_args={"scope": "narrow"}, updated_result=ToolResult(data="cached")
                )
            return None

    class Gate:
        def check_permission(self, tool_call: Any, state: Any) -> bool:
            if tool_call.tool == "search":
                asked.append(dict(tool_call.args))
                return allowed
            return True

    llm = MockLLMBackend(
        ['{"tool": "search", "args": {"scope": "wide"}}', '{"tool": "done", "args": {"answer": "x"}}']
    )
    hooks = [Gate(), Cache()] if gate_first else [Cache(), Gate()]
    steps = list(composable_loop(llm, tools=tools_from([search], include_done=True), hooks=hooks))
    assert asked == [{"scope": "narrow"}] and ran == []  # asked after the cache hook, on its arguments
    first = steps[0].tool_result
    assert (first.data, first.error_kind) == (("cached", None) if allowed else (None, "denied"))


def test_post_step_runs_after_each_recorded_step_and_loop_hook_is_a_protocol() -> None:
    from looplet.loop import LoopHook

    seen: list[tuple[int, int]] = []

    class Old:
        def post_step(self, state: Any, session_log: Any, step_num: int) -> None:
            seen.append((step_num, len(state.steps)))

        def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
            return None

    llm = MockLLMBackend(['{"tool": "work", "args": {}}', '{"tool": "done", "args": {"answer": "x"}}'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(composable_loop(llm, tools=work_tools([]), hooks=[Old()]))
    assert seen == [(1, 1), (2, 2)]
    assert any("on_step(state, step)" in str(w.message) for w in caught)
    assert not isinstance(Old(), LoopHook)
    with one_warning("subclassing LoopHook", "plain class"):

        class Full(LoopHook):
            pass

    assert isinstance(Full(), LoopHook) and Full().should_stop(None, 1, ()) is None


def test_max_steps_must_be_a_positive_integer_not_a_bool() -> None:
    for bad in (True, 1.5, 0):
        with pytest.raises(ValueError, match="positive integer"):
            LoopConfig(max_steps=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="positive integer"):
            DefaultState(max_steps=bad)  # type: ignore[arg-type]


def test_check_permission_may_deny_with_a_reason() -> None:
    class Sandbox:
        def check_permission(self, tool_call: Any, state: Any) -> Any:
            return HookDecision(block="sandbox forbids work") if tool_call.tool == "work" else True

    llm = MockLLMBackend(['{"tool": "work", "args": {}}', '{"tool": "done", "args": {"answer": "x"}}'])
    effects: list[str] = []
    steps = list(composable_loop(llm, tools=work_tools(effects), hooks=[Sandbox()]))
    assert effects == [] and "sandbox forbids work" in (steps[0].tool_result.error or "")


def test_extract_entities_is_called_after_each_tool_call() -> None:
    seen: list[Any] = []

    def entities(data: Any, state: Any = None) -> list[str]:
        seen.append((data, state))
        return ["host-a"]

    with one_warning("LoopConfig(extract_entities=...)", "post_dispatch"):
        config = LoopConfig(extract_entities=entities)
    state = DefaultState()
    llm = MockLLMBackend(['{"tool": "work", "args": {}}', '{"tool": "done", "args": {"answer": "x"}}'])
    list(composable_loop(llm, tools=work_tools([]), config=config, state=state))
    assert seen == [("worked", state)]  # not for done
    assert state.metadata["entities"] == ["host-a"]
    one_arg: list[Any] = []
    config = LoopConfig(extract_entities=lambda data: one_arg.append(data) or [])
    list(
        composable_loop(MockLLMBackend(['{"tool": "work", "args": {}}']), tools=work_tools([]), config=config)
    )
    assert one_arg[0] == "worked"


def test_parse_functions_read_041s_envelope_and_reasoning() -> None:
    from looplet.parse import parse_multi_tool_calls, parse_tool_call

    with one_warning("parse_multi_tool_calls(text)", "composable_loop"):
        calls = parse_multi_tool_calls(
            '{"theory": "t1", "tools": [{"tool": "a", "args": {}}, {"tool": "b"}]}'
        )
    assert [(c.tool, c.args) for c in calls] == [("a", {"__theory__": "t1"}), ("b", {"__theory__": "t1"})]
    assert parse_tool_call('```json\n{"tool": "a", "args": {}, "reasoning": "why"}\n```').reasoning == "why"
    assert parse_tool_call('{"tool": "a", "args": {}}').reasoning is None


def test_state_lifecycle_attributes_of_041() -> None:
    state = DefaultState()
    with one_warning("state.run_status", "stop_reason"):
        assert state.run_status == "created"
    assert (state.run_phase, state.termination_reason) == ("starting", None)
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "x"}}'])
    list(composable_loop(llm, tools=work_tools([]), state=state))
    assert (state.run_status, state.run_phase, state.termination_reason) == ("completed", "terminal", "done")


def test_pre_loop_gets_the_registry_when_it_asks_and_an_async_one_is_awaited() -> None:
    import asyncio

    from looplet import async_composable_loop

    got: list[Any] = []

    class Sync:
        def pre_loop(self, state: Any, session_log: Any, context: Any, tools: Any = None) -> None:
            got.append(tools)

    class Plain:
        def pre_loop(self, state: Any, session_log: Any, context: Any) -> None:
            got.append("plain")

    class Async:
        async def pre_loop(self, state: Any, session_log: Any, context: Any, **kw: Any) -> None:
            got.append(kw.get("tools"))

    tools = work_tools([])
    done = '{"tool": "done", "args": {"answer": "x"}}'
    list(composable_loop(MockLLMBackend([done]), tools=tools, hooks=[Sync(), Plain()]))

    async def run() -> None:
        async for _ in async_composable_loop(MockLLMBackend([done]), tools=tools, hooks=[Async()]):
            pass

    asyncio.run(run())
    assert got == [tools, "plain", tools]
