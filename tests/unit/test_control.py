"""Control hooks on both loops: approval, permissions, checkpoint and resume, budget, stagnation."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from looplet import (
    DefaultState,
    Deny,
    LLMResponse,
    LoopConfig,
    MockLLMBackend,
    ToolCall,
    Usage,
    tool,
    tools_from,
)
from looplet.control import (
    ApprovalHook,
    BudgetHook,
    Checkpoint,
    CheckpointHook,
    PermissionHook,
    Rule,
    StagnationHook,
    aresume,
    resume,
)
from looplet.control.checkpoint import APPROVALS, FILENAME, PENDING_APPROVAL
from looplet.hooks import current_run

from ._harness import MODES, run
from .test_compaction import Events, assert_paired

DONE = '{"tool": "done", "args": {"answer": "ok"}}'


class Ledger:
    """Tools whose every execution is written down, to prove what ran and how often."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        ledger = self

        @tool(description="Delete a file.")
        def rm(path: str) -> str:
            ledger.ran.append(("rm", {"path": path}))
            return f"removed {path}"

        @tool(description="List a folder.")
        def ls(path: str) -> str:
            ledger.ran.append(("ls", {"path": path}))
            return f"files in {path}"

        @tool(description="Run a shell command.")
        def shell(cmd: str) -> str:
            ledger.ran.append(("shell", {"cmd": cmd}))
            return "ok"

        self.tools = tools_from([rm, ls, shell])


def three_calls_then_done(**kw: Any) -> MockLLMBackend:
    first = json.dumps(
        [
            {"tool": "ls", "args": {"path": "/a"}},
            {"tool": "rm", "args": {"path": "/tmp/x"}},
            {"tool": "ls", "args": {"path": "/b"}},
        ]
    )
    return MockLLMBackend([first, DONE], usage=Usage(100, 10), model="gpt-4o-mini", **kw)


def resume_in(mode: str, *args: Any, **kw: Any) -> Any:
    if mode == "sync":
        return resume(*args, **kw)
    return asyncio.run(aresume(*args, **kw))


def assert_totals_match_steps(result: Any) -> None:
    """Usage and cost sit on the first step of each LLM answer: their sums are the run's totals."""
    usage = sum((s.usage for s in result.steps if s.usage), Usage())
    assert (usage.input_tokens, usage.output_tokens) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )
    assert sum(s.cost_usd or 0.0 for s in result.steps) == pytest.approx(result.cost_usd or 0.0)


# --- approval ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_approval_pauses_then_resume_runs_the_approved_call_exactly_there(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, events, llm = Ledger(), Events(), three_calls_then_done()
    with caplog.at_level(logging.INFO, logger="looplet"):
        steps, result = run(
            mode,
            llm=llm,
            tools=ledger.tools,
            task={"goal": "clean up"},
            hooks=[CheckpointHook(tmp_path), ApprovalHook(["rm"]), events],
        )
    assert result.stop_reason == "awaiting_approval"
    assert ledger.ran == [("ls", {"path": "/a"})]
    cp = Checkpoint.load(tmp_path)
    assert cp is not None and cp.stop_reason == "awaiting_approval"
    pending = cp.metadata[PENDING_APPROVAL]
    assert pending["tool"] == "rm" and pending["args"] == {"path": "/tmp/x"}
    assert events.named("approval") == [
        {"tool": "rm", "decision": "requested", "pending": 1, "call_id": pending["call_id"]}
    ]
    assert any("needs approval" in r.getMessage() for r in caplog.records)
    assert llm.calls == 1

    events2 = Events()
    result2 = resume_in(
        mode, tmp_path, llm=llm, tools=ledger.tools, approvals={pending["call_id"]: True}, hooks=[events2]
    )
    assert result2.stop_reason == "done"
    assert ledger.ran == [("ls", {"path": "/a"}), ("rm", {"path": "/tmp/x"}), ("ls", {"path": "/b"})]
    assert llm.calls == 2  # the model was asked only for what came after the approved call
    # the pause stays on record as a not_run step; the approved call runs as the next step
    assert [s.number for s in result2.steps] == [1, 2, 3, 4, 5]
    assert [s.tool_call.tool for s in result2.steps] == ["ls", "rm", "rm", "ls", "done"]
    assert result2.steps[1].tool_result.error_kind == "not_run"
    assert result2.steps[2].ok and result2.steps[2].tool_call.id == pending["call_id"]
    assert result2.llm_calls == 1 and result2.steps[2].llm_ms == 0.0 and result2.steps[2].usage is None
    approved = events2.named("approval")
    assert (
        approved[0]["decision"] == "approved" and approved[0]["pending"] == -1 and approved[0]["wait_s"] >= 0
    )
    final = Checkpoint.load(tmp_path)
    assert final is not None and final.stop_reason == "done"
    assert PENDING_APPROVAL not in final.metadata and APPROVALS not in final.metadata
    assert_paired(final.transcript)
    assert_totals_match_steps(result2)
    assert result2.usage.input_tokens == 200  # two real LLM calls, each counted once


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_call_is_an_error_step_and_never_runs(mode: str, tmp_path: Path) -> None:
    ledger, llm = Ledger(), three_calls_then_done()
    run(
        mode,
        llm=llm,
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[CheckpointHook(tmp_path), ApprovalHook(["rm"])],
    )
    call_id = Checkpoint.load(tmp_path).metadata[PENDING_APPROVAL]["call_id"]  # type: ignore[union-attr]
    result = resume_in(mode, tmp_path, llm=llm, tools=ledger.tools, approvals={call_id: False})
    assert result.stop_reason == "done"
    assert ("rm", {"path": "/tmp/x"}) not in ledger.ran
    refused = result.steps[2]
    assert refused.tool_result.error_kind == "denied" and "refused" in refused.tool_result.error
    assert_paired(Checkpoint.load(tmp_path).transcript)  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
def test_resume_from_a_paused_state_in_memory(mode: str) -> None:
    ledger, llm = Ledger(), three_calls_then_done()
    state = DefaultState()
    run(mode, llm=llm, tools=ledger.tools, task={"goal": "g"}, state=state, hooks=[ApprovalHook(["rm"])])
    assert state.result.stop_reason == "awaiting_approval"  # type: ignore[union-attr]
    call_id = state.metadata[PENDING_APPROVAL]["call_id"]
    result = resume_in(mode, state, llm=llm, tools=ledger.tools, approvals={call_id: True})
    assert result.stop_reason == "done" and [t for t, _ in ledger.ran] == ["ls", "rm", "ls"]


@pytest.mark.parametrize("mode", MODES)
def test_rerunning_without_a_decision_pauses_again_without_a_second_request(
    mode: str, tmp_path: Path
) -> None:
    ledger, events = Ledger(), Events()
    hooks = lambda: [CheckpointHook(tmp_path), ApprovalHook(["rm"]), events]  # noqa: E731
    run(mode, llm=three_calls_then_done(), tools=ledger.tools, task={"goal": "g"}, hooks=hooks())
    _s, again = run(mode, llm=three_calls_then_done(), tools=ledger.tools, task={"goal": "g"}, hooks=hooks())
    assert again.stop_reason == "awaiting_approval"
    assert [s.tool_call.tool for s in again.steps] == ["ls", "rm"]
    assert [a["decision"] for a in events.named("approval")] == [
        "requested"
    ]  # the gauge is not counted twice
    assert ledger.ran == [("ls", {"path": "/a"})]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_handler_decides_inline(mode: str, kind: str) -> None:
    asked: list[str] = []

    def sync_handler(tc: ToolCall) -> bool:
        asked.append(tc.args["path"])
        return tc.args["path"].startswith("/tmp")

    async def async_handler(tc: ToolCall) -> bool:
        await asyncio.sleep(0)
        return sync_handler(tc)

    ledger, events = Ledger(), Events()
    llm = MockLLMBackend(
        [
            json.dumps(
                [{"tool": "rm", "args": {"path": "/tmp/x"}}, {"tool": "rm", "args": {"path": "/etc"}}]
            ),
            DONE,
        ]
    )
    handler = sync_handler if kind == "sync" else async_handler
    _s, result = run(
        mode,
        llm=llm,
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[ApprovalHook(lambda tc: tc.tool == "rm", handler), events],
    )
    assert result.stop_reason == "done" and asked == ["/tmp/x", "/etc"]
    assert ledger.ran == [("rm", {"path": "/tmp/x"})]
    assert not result.steps[1].ok and "refused" in result.steps[1].tool_result.error
    decisions = [(a["decision"], a["pending"]) for a in events.named("approval")]
    assert decisions == [("requested", 1), ("approved", -1), ("requested", 1), ("refused", -1)]
    assert all(a["wait_s"] >= 0 for a in events.named("approval") if a["decision"] != "requested")


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_handler_refuses_rather_than_lets_the_call_through(mode: str) -> None:
    def handler(tc: ToolCall) -> bool:
        raise RuntimeError("approval service down")

    ledger = Ledger()
    _s, result = run(
        mode,
        llm=MockLLMBackend(['{"tool": "rm", "args": {"path": "/"}}', DONE]),
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[ApprovalHook(["rm"], handler)],
    )
    assert ledger.ran == [] and "handler failed" in result.steps[0].tool_result.error


def test_approval_hook_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"tools=\['rm'\]"):
        ApprovalHook("rm")
    with pytest.raises(TypeError, match="handler"):
        ApprovalHook(["rm"], handler="yes")  # type: ignore[arg-type]


def test_approval_hook_can_write_its_own_checkpoint(tmp_path: Path) -> None:
    ledger = Ledger()
    run(
        "sync",
        llm=three_calls_then_done(),
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[ApprovalHook(["rm"], checkpoint_dir=tmp_path)],
    )
    cp = Checkpoint.load(tmp_path)
    assert cp is not None and cp.stop_reason == "awaiting_approval" and PENDING_APPROVAL in cp.metadata


# --- permissions ------------------------------------------------------------------------------------
RULES = [
    Rule("deny", "shell", {"cmd": re.compile(r"rm\s+-rf")}, reason="destructive command", name="no-rm-rf"),
    Rule("allow", "shell", {"cmd": "git *"}, name="git"),
    ("ask", "rm", {"path": "/etc/*"}),
    {"action": "allow", "tool": re.compile(r"^(ls|rm)$"), "name": "files"},
]


@pytest.mark.parametrize("mode", MODES)
def test_permission_rules_first_match_wins_and_denials_are_counted(mode: str) -> None:
    ledger, events = Ledger(), Events()
    calls = [
        {"tool": "shell", "args": {"cmd": "sudo rm  -rf /"}},
        {"tool": "shell", "args": {"cmd": "git status"}},
        {"tool": "shell", "args": {"cmd": "make"}},
        {"tool": "ls", "args": {"path": "/"}},
        {"tool": "rm", "args": {"path": "/etc/passwd"}},
    ]
    perms = PermissionHook(RULES, default="deny", handler=lambda tc: False)
    _s, result = run(
        mode,
        llm=MockLLMBackend([json.dumps(calls), DONE]),
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[perms, events],
    )
    assert ledger.ran == [("shell", {"cmd": "git status"}), ("ls", {"path": "/"})]
    first, _git, make, _ls, etc = result.steps[:5]
    assert first.tool_result.error_kind == "denied"
    assert "destructive command" in first.tool_result.error and "no-rm-rf" in first.tool_result.error
    assert "default:deny" in make.tool_result.error
    assert "refused" in etc.tool_result.error  # the ask rule went to the handler
    assert perms.denials == {("shell", "no-rm-rf"): 1, ("shell", "default:deny"): 1}
    assert [(a["tool"], a["rule"]) for a in events.named("permission")] == [
        ("shell", "no-rm-rf"),
        ("shell", "default:deny"),
    ]
    denied = [a for n, a in events.events if n == "hook.decision" and a["decision"] == "deny"]
    assert len(denied) == 3


def test_permission_patterns() -> None:
    hook = PermissionHook(RULES)
    decide = lambda tool, **args: hook.rule_for(ToolCall(tool, args)).name  # noqa: E731
    assert decide("shell", cmd="rm -rf /") == "no-rm-rf"
    assert decide("shell", cmd="git push") == "git"
    assert decide("shell", cmd="echo git") == "default:allow"  # a glob matches the whole value
    assert decide("rm", path="/etc/hosts") == "ask:rm"
    assert decide("rm", path="/tmp/x") == "files"
    assert decide("rm") == "files"  # a missing argument does not match an argument pattern
    assert (
        PermissionHook([Rule("deny", "*", {"n": "4*"})]).rule_for(ToolCall("x", {"n": 42})).action == "deny"
    )
    with pytest.raises(ValueError, match="action"):
        Rule("block", "x")
    with pytest.raises(ValueError, match="default"):
        PermissionHook([], default="maybe")


@pytest.mark.parametrize("mode", MODES)
def test_an_ask_rule_without_handler_pauses_and_resumes(mode: str, tmp_path: Path) -> None:
    ledger = Ledger()
    llm = MockLLMBackend(['{"tool": "rm", "args": {"path": "/etc/x"}}', DONE])
    hooks = [CheckpointHook(tmp_path), PermissionHook(RULES)]
    _s, paused = run(mode, llm=llm, tools=ledger.tools, task={"goal": "g"}, hooks=hooks)
    assert paused.stop_reason == "awaiting_approval"
    call_id = Checkpoint.load(tmp_path).metadata[PENDING_APPROVAL]["call_id"]  # type: ignore[union-attr]
    result = resume_in(
        mode, tmp_path, llm=llm, tools=ledger.tools, approvals={call_id: True}, hooks=[PermissionHook(RULES)]
    )
    assert result.stop_reason == "done" and ledger.ran == [("rm", {"path": "/etc/x"})]


# --- checkpoint -------------------------------------------------------------------------------------
class CrashAfter:
    """Keeps a copy of the checkpoint as it was right after step ``n``: what a kill -9 then would leave."""

    def __init__(self, source: Path, copy: Path, n: int) -> None:
        self.source, self.copy, self.n = source, copy, n

    def on_step(self, state: Any, step: Any) -> None:
        if step.number == self.n:
            shutil.copytree(self.source, self.copy)


class FakeTracer:
    """Stands in for a tracing hook: continues ``run.parent``'s trace when there is one."""

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        run = current_run()
        assert run is not None
        self.parent, self.links = run.parent, list(run.links)
        run.trace_id = run.parent.split("-")[1] if run.parent else "ab" * 16
        run.span_id = "cd" * 8


def scripted(n: int) -> MockLLMBackend:
    """Answers 1 and 3 hold two calls each."""
    answers = []
    for i in range(1, n + 1):
        calls = [{"tool": "ls", "args": {"path": f"/{i}"}}]
        if i % 2:
            calls.append({"tool": "shell", "args": {"cmd": f"echo {i}"}})
        answers.append(json.dumps(calls))
    return MockLLMBackend(answers + [DONE], usage=Usage(50, 5), model="gpt-4o-mini")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("crash_after", [1, 2, 4])  # mid-answer, end of answer, mid-answer
def test_rerun_resumes_after_a_crash_without_redoing_or_losing_steps(
    mode: str, crash_after: int, tmp_path: Path
) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    full = Ledger()
    _s, reference = run(
        mode,
        llm=scripted(3),
        tools=full.tools,
        task={"goal": "g"},
        hooks=[CheckpointHook(live), CrashAfter(live, crashed, crash_after)],
    )
    assert reference.stop_reason == "done" and len(reference.steps) == 6

    first = Ledger()  # what ran before the "crash": the steps the copied checkpoint holds
    cp = Checkpoint.load(crashed)
    assert cp is not None and cp.step_count == crash_after and cp.stop_reason is None
    assert_paired(cp.transcript)  # valid on its own, even between two calls of one answer
    assert bool(cp.pending) == (crash_after in (1, 4))  # mid-answer: the open call is kept aside
    first.ran = [(s["tool_call"]["tool"], s["tool_call"]["args"]) for s in cp.steps]
    llm = scripted(3)
    llm.calls = {1: 1, 2: 1, 4: 3}[crash_after]  # where a fresh process of a real model would pick up
    tracer, events = FakeTracer(), Events()
    _s, result = run(
        mode, llm=llm, tools=first.tools, task={"goal": "g"}, hooks=[CheckpointHook(crashed), tracer, events]
    )
    assert result.stop_reason == "done"
    assert [s.number for s in result.steps] == list(range(1, 7))
    assert first.ran == full.ran  # every call ran exactly once over the two processes
    assert [s.tool_call.to_dict() for s in result.steps] == [s.tool_call.to_dict() for s in reference.steps]
    final = Checkpoint.load(crashed)
    assert final is not None and final.step_count == 6 and final.stop_reason == "done"
    assert_paired(final.transcript)
    assert_totals_match_steps(result)
    assert result.usage.input_tokens == reference.usage.input_tokens
    assert result.cost_usd == pytest.approx(reference.cost_usd)
    restore = events.named("checkpoint.restore")[0]
    assert restore["steps"] == crash_after and restore["replayed_calls"] == {1: 1, 2: 0, 4: 1}[crash_after]
    writes = events.named("checkpoint")
    assert len(writes) == 6 - crash_after + 1 and all(w["bytes"] > 0 for w in writes)


@pytest.mark.parametrize("mode", MODES)
def test_a_resumed_run_continues_the_first_runs_trace(mode: str, tmp_path: Path) -> None:
    tracer = FakeTracer()
    llm = MockLLMBackend([ToolCall("ls", {"path": "/"}), ToolCall("ls", {"path": "/x"}), DONE])
    ledger = Ledger()
    run(
        mode,
        llm=llm,
        tools=ledger.tools,
        task={"goal": "g"},
        max_steps=1,
        hooks=[CheckpointHook(tmp_path), tracer],
    )
    first_trace = Checkpoint.load(tmp_path).trace_id  # type: ignore[union-attr]
    assert first_trace == "ab" * 16 and tracer.parent is None
    tracer2 = FakeTracer()
    _s, result = run(
        mode,
        llm=llm,
        tools=ledger.tools,
        task={"goal": "g"},
        max_steps=5,
        hooks=[CheckpointHook(tmp_path), tracer2],
    )
    assert tracer2.parent == f"00-{first_trace}-{'cd' * 8}-01" and tracer2.links == [tracer2.parent]
    assert {s.trace_id for s in result.steps} == {first_trace}
    assert Checkpoint.load(tmp_path).trace_id == first_trace  # type: ignore[union-attr]


def test_checkpoint_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    ledger = Ledger()
    run("sync", llm=scripted(2), tools=ledger.tools, task={"goal": "g"}, hooks=[CheckpointHook(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILENAME]
    data = json.loads((tmp_path / FILENAME).read_text())
    assert data["version"] == 1 and data["step_count"] == len(data["steps"]) == 4
    assert data["usage"]["input_tokens"] == 150 and data["cost_usd"] > 0
    assert Checkpoint.from_json(json.dumps(data)).step_count == 4
    with pytest.raises(ValueError, match="version"):
        Checkpoint.from_json(json.dumps({**data, "version": 99}))


def test_a_finished_run_returns_its_result_again_and_fresh_starts_a_new_one(tmp_path: Path) -> None:
    ledger = Ledger()
    _, first = run(
        "sync",
        llm=MockLLMBackend([ToolCall("ls", {"path": "/"}), DONE]),
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[CheckpointHook(tmp_path)],
    )
    calls = list(ledger.ran)
    llm = MockLLMBackend([ToolCall("ls", {"path": "/again"}), DONE])
    _, again = run("sync", llm=llm, tools=ledger.tools, task={"goal": "g"}, hooks=[CheckpointHook(tmp_path)])
    assert again.stop_reason == "done" and again.final_output == first.final_output
    assert [s.tool_call.id for s in again.steps] == [s.tool_call.id for s in first.steps]
    assert again.llm_calls == 0 and llm.calls == 0 and ledger.ran == calls  # nothing ran
    state = DefaultState()
    run(
        "sync",
        llm=MockLLMBackend([ToolCall("ls", {"path": "/"}), DONE]),
        tools=ledger.tools,
        task={"goal": "g2"},
        state=state,
        hooks=[CheckpointHook(tmp_path, fresh=True)],
    )
    assert [s.tool_call.tool for s in state.steps] == ["ls", "done"]
    assert state.transcript[1]["content"] == "g2"
    kept = [p.name for p in tmp_path.iterdir() if p.name != FILENAME]
    assert len(kept) == 1 and kept[0].startswith("checkpoint-")  # the finished run is kept, not overwritten


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume(tmp_path, llm=MockLLMBackend([DONE]), tools=Ledger().tools)
    with pytest.raises(TypeError, match="checkpoint directory"):
        resume(42, llm=MockLLMBackend([DONE]), tools=Ledger().tools)


# --- budget and stagnation -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_token_budget_stops_before_the_call_that_would_pass_it(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = Events()
    llm = MockLLMBackend([ToolCall("ls", {"path": "/"})], cycle=True, usage="estimate")
    with caplog.at_level(logging.INFO, logger="looplet"):
        _s, result = run(
            mode,
            llm=llm,
            tools=Ledger().tools,
            task={"goal": "g"},
            max_steps=50,
            hooks=[BudgetHook(max_tokens=3000), events],
        )
    assert result.stop_reason == "hook_stop:budget_tokens"
    assert result.usage.total_tokens <= 3000
    last = events.named("budget")[0]
    assert last["spent"] + last["next_call"] > 3000 and last["limit"] == 3000
    assert any("budget: stopping" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", MODES)
def test_cost_budget_stops_with_a_clear_reason(mode: str) -> None:
    llm = MockLLMBackend([ToolCall("ls", {"path": "/"})], cycle=True, usage=Usage(1000, 100), model="gpt-4o")
    per_call = (1000 * 2.5 + 100 * 10) / 1e6
    _s, result = run(
        mode,
        llm=llm,
        tools=Ledger().tools,
        task={"goal": "g"},
        max_steps=50,
        config=LoopConfig(max_steps=50, max_tokens=100),
        hooks=[BudgetHook(max_cost_usd=per_call * 4.5)],
    )
    assert result.stop_reason == "hook_stop:budget_cost"
    assert result.cost_usd <= per_call * 4.5 and len(result.steps) >= 3


def test_budget_hook_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="max_cost_usd"):
        BudgetHook()
    with pytest.raises(ValueError, match="max_tokens"):
        BudgetHook(max_tokens=0)


@pytest.mark.parametrize("mode", MODES)
def test_stagnation_stops_the_same_call_repeated(mode: str) -> None:
    events = Events()
    answers = [
        ToolCall("ls", {"path": "/a"}),
        ToolCall("ls", {"path": "/b"}),
        ToolCall("ls", {"path": "/a"}),
        ToolCall("ls", {"path": "/a"}),
        ToolCall("ls", {"path": "/c"}),
    ]
    _s, result = run(
        mode,
        llm=MockLLMBackend(answers),
        tools=Ledger().tools,
        task={"goal": "g"},
        hooks=[StagnationHook(n=3), events],
    )
    assert result.stop_reason == "hook_stop:stagnation" and len(result.steps) == 4
    assert events.named("stagnation") == [{"tool": "ls", "repeats": 3}]


@pytest.mark.parametrize("mode", MODES)
def test_stagnation_window_forgets_old_calls(mode: str) -> None:
    answers = [ToolCall("ls", {"path": p}) for p in "aabbaacc"]
    answers.append(LLMResponse(tool_calls=[ToolCall("done", {"answer": "x"})]))
    _s, result = run(
        mode,
        llm=MockLLMBackend(answers),
        tools=Ledger().tools,
        task={"goal": "g"},
        hooks=[StagnationHook(n=3, window=3)],
    )
    assert result.stop_reason == "done"
    _s, whole_run = run(
        mode,
        llm=MockLLMBackend(answers),
        tools=Ledger().tools,
        task={"goal": "g"},
        hooks=[StagnationHook(n=3)],
    )
    assert whole_run.stop_reason == "hook_stop:stagnation" and len(whole_run.steps) == 5
    with pytest.raises(ValueError):
        StagnationHook(n=1)


def test_deny_decisions_still_come_from_other_hooks() -> None:
    """A PermissionHook allow does not override another hook's Deny (first Deny wins, as in the loop)."""

    class No:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
            return Deny("no")

    ledger = Ledger()
    run(
        "sync",
        llm=MockLLMBackend([ToolCall("ls", {"path": "/"}), DONE]),
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[PermissionHook([Rule("allow", "ls")]), No()],
    )
    assert ledger.ran == []


# --- with the real telemetry hooks -------------------------------------------------------------------
def _spans() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize("mode", MODES)
def test_resumed_spans_join_the_first_trace_and_link_to_it(mode: str, tmp_path: Path) -> None:
    from looplet.telemetry.tracing import TracingHook

    provider, exporter = _spans()
    ledger = Ledger()
    llm = three_calls_then_done()
    run(
        mode,
        llm=llm,
        tools=ledger.tools,
        task={"goal": "g"},
        hooks=[CheckpointHook(tmp_path), TracingHook(provider), ApprovalHook(["rm"])],
    )
    call_id = Checkpoint.load(tmp_path).metadata[PENDING_APPROVAL]["call_id"]  # type: ignore[union-attr]
    result = resume_in(
        mode,
        tmp_path,
        llm=llm,
        tools=ledger.tools,
        approvals={call_id: True},
        hooks=[TracingHook(provider), ApprovalHook(["rm"])],
    )
    spans = exporter.get_finished_spans()
    first, second = [s for s in spans if s.name.startswith("invoke_agent")]
    assert {s.context.trace_id for s in spans} == {first.context.trace_id}  # one trace for the whole task
    assert second.parent.span_id == first.context.span_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert second.attributes["looplet.run.resumed_steps"] == 2
    assert {s.trace_id for s in result.steps} == {format(first.context.trace_id, "032x")}
    events = [e for s in spans for e in s.events if e.name == "looplet.approval"]
    assert [e.attributes["looplet.approval.decision"] for e in events] == ["requested", "approved"]
    chats = [s for s in spans if s.name.startswith("chat")]
    assert len(chats) == 2  # the replayed answer is not a model call and has no chat span


@pytest.mark.parametrize("mode", MODES)
def test_approval_and_permission_metrics(mode: str, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.metrics import MetricsHook

    registry = CollectorRegistry()
    metrics = MetricsHook(registry)
    ledger = Ledger()
    llm = MockLLMBackend(
        [
            json.dumps(
                [{"tool": "shell", "args": {"cmd": "rm -rf /"}}, {"tool": "rm", "args": {"path": "/tmp/x"}}]
            ),
            DONE,
        ]
    )
    hooks = [CheckpointHook(tmp_path), metrics, PermissionHook([RULES[0]]), ApprovalHook(["rm"])]
    run(mode, llm=llm, tools=ledger.tools, task={"goal": "g"}, hooks=hooks)
    value = registry.get_sample_value
    assert value("looplet_approvals_pending", {"agent": "looplet"}) == 1
    assert (
        value("looplet_hook_denials_total", {"agent": "looplet", "tool": "shell", "hook": "PermissionHook"})
        == 1
    )
    call_id = Checkpoint.load(tmp_path).metadata[PENDING_APPROVAL]["call_id"]  # type: ignore[union-attr]
    resume_in(mode, tmp_path, llm=llm, tools=ledger.tools, approvals={call_id: True}, hooks=[metrics])
    assert value("looplet_approvals_pending", {"agent": "looplet"}) == 0
    assert value("looplet_approval_wait_seconds_count", {"agent": "looplet", "tool": "rm"}) == 1
    assert (
        value(
            "looplet_llm_requests_total",
            {"agent": "looplet", "provider": "mock", "model": "mock-model", "status": "ok"},
        )
        == 2
    )  # the replay is not a request


def test_an_unreadable_checkpoint_stops_the_run_and_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILENAME).write_text('{"version": 1, "steps": [{"number": 1}], "transcript": []}')
    ledger = Ledger()
    with caplog.at_level(logging.ERROR, logger="looplet"):
        _s, result = run(
            "sync",
            llm=MockLLMBackend([ToolCall("ls", {"path": "/"}), DONE]),
            tools=ledger.tools,
            task={"goal": "g"},
            hooks=[CheckpointHook(tmp_path)],
        )
    assert result.stop_reason == "hook_stop:checkpoint_error" and ledger.ran == []
    assert (tmp_path / FILENAME).read_text().startswith('{"version": 1, "steps": [{"number": 1}]')
    assert any("could not be restored" in r.getMessage() for r in caplog.records)


# --- against a strict fake provider, with the real openai / anthropic clients ------------------------
def _backend(provider: str, server: Any) -> Any:
    if provider == "openai":
        from looplet.backends.openai import OpenAIBackend

        return OpenAIBackend(model="gpt-4o-mini", base_url=server.openai_url, api_key="k", timeout=5.0)
    from looplet.backends.anthropic import AnthropicBackend

    return AnthropicBackend(model="claude-haiku-4-5", base_url=server.anthropic_url, api_key="k", timeout=5.0)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", MODES)
def test_resumed_and_compacted_transcripts_are_accepted_by_a_strict_server(
    mode: str, provider: str, tmp_path: Path
) -> None:
    """The fake server answers 400 to a malformed transcript (a result without its call, a null content,
    turns that do not alternate): a pause in the middle of a three-call answer, the resume that splits that
    answer, and a Summarize/Truncate compaction must all produce transcripts it accepts."""
    from looplet.context import Summarize, ThresholdCompactHook, Truncate, compact_chain
    from tests.fakeserver import FakeLLMServer, text, tool_call, tool_calls, usage

    with FakeLLMServer() as agent_server, FakeLLMServer() as summary_server:
        agent_server.script(
            tool_calls(
                [
                    ("ls", {"path": "/a"}, "c1"),
                    ("rm", {"path": "/tmp/x"}, "c2"),
                    ("ls", {"path": "/b"}, "c3"),
                ],
                usage=usage(900, 30),
            ),
            *[tool_call("shell", {"cmd": f"echo {'x' * 400} {i}"}, usage=None) for i in range(8)],
            tool_call("done", {"answer": "ok"}),
        )
        summary_server.script(
            *[text("Listed /a and /b, removed /tmp/x, echoed a lot.", usage=usage(300, 20)) for _ in range(8)]
        )
        llm, summarizer = _backend(provider, agent_server), _backend(provider, summary_server)
        ledger = Ledger()
        compact = ThresholdCompactHook(700, compact_chain(Summarize(summarizer, keep_last=2), Truncate()))
        _s, paused = run(
            mode,
            llm=llm,
            tools=ledger.tools,
            task={"goal": "g"},
            hooks=[CheckpointHook(tmp_path), ApprovalHook(["rm"]), compact],
        )
        assert paused.stop_reason == "awaiting_approval"
        result = resume_in(
            mode,
            tmp_path,
            llm=llm,
            tools=ledger.tools,
            approvals={"c2": True},
            hooks=[ApprovalHook(["rm"]), compact],
            max_steps=20,
        )
        assert result.stop_reason == "done", result.error
        assert [t for t, _ in ledger.ran] == ["ls", "rm", "ls"] + ["shell"] * 8
        assert len(summary_server.bodies()) >= 1  # compaction ran and its transcript went through too
        assert_paired(Checkpoint.load(tmp_path).transcript)  # type: ignore[union-attr]
        for backend in (llm, summarizer):
            getattr(backend, "close", lambda: None)()
