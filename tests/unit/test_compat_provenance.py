"""looplet 0.4.1's provenance recorders as deprecated adapters (``looplet._compat_provenance``):
``RecordingLLMBackend``, ``AsyncRecordingLLMBackend``, ``TrajectoryRecorder``, ``StepRecord`` and
``looplet.provenance.LLMCall`` work, each with one DeprecationWarning naming the 0.5 spelling, and save
0.4.1's file layout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import looplet.provenance
from looplet import LoopConfig, composable_loop, tools_from
from looplet.compat import RemovedAPIError

from ._compat_support import one_warning, quiet

# Each old name's warning is checked once, with one_warning(); elsewhere the deprecated names are just used.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def old(name: str) -> Any:
    with quiet():
        return getattr(looplet.provenance, name)


class Prompted:
    """A 0.4.1 backend: ``generate(prompt, *, system_prompt) -> str`` (no max_tokens or temperature)."""

    def __init__(self, *answers: str) -> None:
        self.answers, self.seen = list(answers), []  # type: list[str], list[tuple[str, str]]

    def generate(self, prompt: str, *, system_prompt: str = "") -> str:
        self.seen.append((prompt, system_prompt))
        return self.answers.pop(0)


def test_each_recorder_warns_once_when_made_naming_the_sink() -> None:
    recording, async_recording, recorder = (
        old(n) for n in ("RecordingLLMBackend", "AsyncRecordingLLMBackend", "TrajectoryRecorder")
    )
    with one_warning("RecordingLLMBackend", "ProvenanceSink(dir).wrap_llm(llm)"):
        recording(Prompted())
    with one_warning("AsyncRecordingLLMBackend", "ProvenanceSink(dir).wrap_llm(llm)"):
        async_recording(Prompted())
    with one_warning("TrajectoryRecorder", "ProvenanceSink(dir).trajectory_hook()"):
        recorder()


def test_the_records_warn_when_imported_and_0_5_llmcall_is_untouched() -> None:
    from looplet.types import LLMCall as NewLLMCall

    with one_warning("looplet.provenance.LLMCall", "wrap_llm"):
        from looplet.provenance import LLMCall
    with one_warning("looplet.provenance.StepRecord", "looplet.Step"):
        from looplet.provenance import StepRecord
    assert LLMCall is not NewLLMCall and looplet.LLMCall is NewLLMCall
    call = LLMCall(index=0, timestamp=1.0, duration_ms=2.0, method="generate", prompt="abc", system_prompt="", response="xy")  # fmt: skip
    call.metadata["k"] = "v"
    assert call.to_dict()["prompt_chars"] == 3 and call.to_dict()["metadata"] == {"k": "v"}
    step = StepRecord(step_num=2, timestamp=0.0, duration_ms=1.0, pretty="", tool_call={}, tool_result={})
    assert step.to_dict()["step_num"] == 2 and step.metadata == {}
    with pytest.warns(DeprecationWarning), pytest.raises(RemovedAPIError, match="no counterpart"):
        from looplet.tools import LLMCall as Elsewhere  # only looplet.provenance had 0.4.1's

        Elsewhere()


def test_recording_backend_records_redacts_and_forwards_only_what_the_backend_takes() -> None:
    backend = Prompted("token=SECRET here")
    rec = old("RecordingLLMBackend")(backend, redact=lambda s: s.replace("SECRET", "***"))
    out = rec.generate("key SECRET", system_prompt="sys SECRET", temperature=0.5, max_tokens=9)
    assert out == "token=SECRET here"  # the caller gets what the backend returned
    assert backend.seen == [("key ***", "sys ***")]  # redact_upstream: the secret never left
    (call,) = rec.calls
    assert (call.method, call.prompt, call.system_prompt, call.response) == ("generate", "key ***", "sys ***", "token=*** here")  # fmt: skip
    assert (call.temperature, call.max_tokens, call.error) == (0.5, 9, None)
    assert not hasattr(rec, "generate_with_tools")


def test_a_failed_call_is_recorded_and_the_same_exception_raised() -> None:
    failure = RuntimeError("provider down: SECRET")

    class Down:
        def generate(self, prompt: str, **kw: Any) -> str:
            raise failure

    rec = old("RecordingLLMBackend")(Down(), redact=lambda s: s.replace("SECRET", "***"))
    with pytest.raises(RuntimeError) as raised:
        rec.generate("x")
    assert raised.value is failure and str(failure).endswith("SECRET")
    assert rec.calls[0].error == "RuntimeError: provider down: ***"


def test_native_calls_record_a_redacted_copy_and_return_the_live_blocks() -> None:
    blocks = [{"type": "tool_use", "name": "send", "input": {"to": ["a@SECRET", 3, None]}}]
    schemas = [{"name": "send", "description": "SECRET"}]

    class Native:
        def generate(self, prompt: str, **kw: Any) -> str:
            return ""

        async def generate_with_tools(self, prompt: str, *, tools: Any, **kw: Any) -> Any:
            assert tools is schemas
            return blocks

    rec = old("AsyncRecordingLLMBackend")(Native(), redact=lambda s: s.replace("SECRET", "x"))
    assert asyncio.run(rec.generate_with_tools("q", tools=schemas)) is blocks
    (call,) = rec.calls
    assert call.method == "generate_with_tools" and call.tools == [{"name": "send", "description": "x"}]
    assert call.response == [{"type": "tool_use", "name": "send", "input": {"to": ["a@x", 3, None]}}]
    assert blocks[0]["input"]["to"][0] == "a@SECRET" and schemas[0]["description"] == "SECRET"


def test_long_prompts_are_cut_with_a_note() -> None:
    rec = old("RecordingLLMBackend")(Prompted("ok"), max_chars_per_call=80)
    rec.generate("y" * 1000)
    assert len(rec.calls[0].prompt) <= 80 and "truncated" in rec.calls[0].prompt


def test_save_writes_041_call_files_and_keeps_an_existing_gitignore(tmp_path: Path) -> None:
    rec = old("RecordingLLMBackend")(Prompted("r1", "r2"))
    rec.generate("p1", system_prompt="sys")
    rec.generate("p2")
    (tmp_path / "call_07_prompt.txt").write_text("stale")
    (tmp_path / "call_notes_prompt.txt").write_text("mine")
    assert rec.save(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".gitignore", "call_00_prompt.txt", "call_00_response.txt", "call_01_prompt.txt",
        "call_01_response.txt", "call_notes_prompt.txt", "manifest.jsonl",
    ]  # fmt: skip
    assert (tmp_path / ".gitignore").read_text() == "*\n"
    prompt = (tmp_path / "call_00_prompt.txt").read_text()
    assert "## SYSTEM PROMPT\nsys" in prompt and prompt.endswith("## USER PROMPT\np1")
    assert (tmp_path / "call_01_response.txt").read_text().endswith("## RESPONSE\nr2")
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [(m["index"], m["response_chars"]) for m in lines] == [(0, 2), (1, 2)]
    other = tmp_path / "other"
    other.mkdir()
    (other / ".gitignore").write_text("*.txt\n")
    rec.save(other)
    assert (other / ".gitignore").read_text() == "*.txt\n"


def echo(value: int) -> dict[str, int]:
    """Echo a value."""
    return {"value": value}


def test_trajectory_recorder_records_a_05_run_with_its_calls(tmp_path: Path) -> None:
    from looplet.testing import MockLLMBackend as OldMock

    answers = ['{"tool": "echo", "args": {"value": 7}}', '{"tool": "done", "args": {"answer": "ok"}}']
    with quiet():
        llm = old("RecordingLLMBackend")(OldMock(answers, cycle=False))
        recorder = old("TrajectoryRecorder")(recording_llm=llm, output_dir=tmp_path / "run")
        steps = list(
            composable_loop(
                llm=llm, tools=tools_from([echo]), hooks=[recorder], task={"goal": "echo"}, config=LoopConfig(max_steps=3)
            )
        )  # fmt: skip
    t = recorder.trajectory
    assert [s.step_num for s in t.steps] == [s.number for s in steps] == [1, 2]
    assert t.steps[0].tool_call["tool"] == "echo" and t.steps[0].tool_result["data"] == {"value": 7}
    assert [s.llm_call_indices for s in t.steps] == [[0], [1]] and len(t.llm_calls) == 2
    assert t.termination_reason == "done" and t.task == {"goal": "echo"}
    assert t.ended_at is not None and t.ended_at >= t.started_at
    saved = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    assert saved["step_count"] == 2 and saved["termination_reason"] == "done"
    assert (
        json.loads((tmp_path / "run" / "steps" / "step_02.json").read_text())["tool_call"]["tool"] == "done"
    )
    assert (tmp_path / "run" / "call_01_response.txt").exists()
    assert recorder.summary().startswith("2 steps, done")


def test_trajectory_recorder_by_hand_infers_the_end_and_redacts_only_the_saved_copy(tmp_path: Path) -> None:
    from looplet.types import Step, ToolCall, ToolResult

    recorder = old("TrajectoryRecorder")(redact=lambda s: s.replace("SECRET", "***"))
    steps = [
        Step(number=1, tool_call=ToolCall(tool="look", args={"q": "SECRET"}), tool_result=ToolResult(data=1))
    ]

    class State:
        def __init__(self) -> None:
            self.steps = steps
            self.metadata = {"policy_decisions": [{"tool": "rm", "decision": "deny"}]}

    state = State()
    recorder.pre_loop(state, None, None)
    recorder.pre_prompt(state, None, "briefing", step_num=1)
    recorder.on_loop_end(state, None, None, None)  # the step had no post_dispatch: swept in
    t = recorder.trajectory
    assert [s.step_num for s in t.steps] == [1] and t.termination_reason == "max_steps_or_stop"
    assert t.metadata["policy_decisions"] == [{"tool": "rm", "decision": "deny"}]
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "step_09.json").write_text("stale")
    recorder.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["step_01.json"]
    assert json.loads((tmp_path / "steps" / "step_01.json").read_text())["tool_call"]["args"] == {"q": "***"}
    assert t.steps[0].tool_call["args"] == {"q": "SECRET"}


def test_save_eval_run_writes_a_folder_041_readers_take_back(tmp_path: Path) -> None:
    from looplet import EvalContext, save_eval_run
    from looplet.types import Step, ToolCall, ToolResult

    steps = [
        Step(number=1, tool_call=ToolCall(tool="done", args={"answer": 42}), tool_result=ToolResult(data=42))
    ]
    task = {"goal": "answer", "expected": {"answer": 42}}
    ctx = EvalContext(steps=steps, final_output=42, stop_reason="done", task=task)

    class Case:
        expected = {"answer": 42}

        def to_dict(self) -> dict[str, Any]:
            return {"id": "c1", "expected": self.expected}

    class Result:
        def to_dict(self) -> dict[str, Any]:
            return {"name": "right", "score": 1.0}

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "case.json").write_text("stale")
    with one_warning("save_eval_run", "ProvenanceSink(dir)", "python -m looplet eval"):
        root = save_eval_run(tmp_path / "run", context=ctx, case=Case(), results=[Result()])
    saved = json.loads((root / "trajectory.json").read_text())
    assert saved["task"] == {"goal": "answer"} and task["expected"] == {"answer": 42}  # the live task kept
    assert json.loads((root / "expected.json").read_text()) == {"answer": 42}
    assert json.loads((root / "evals.json").read_text()) == [{"name": "right", "score": 1.0}]
    assert json.loads((root / "case.json").read_text())["id"] == "c1"
    assert (root / ".gitignore").read_text() == "*\n"
    with quiet():
        back = EvalContext.from_trajectory_dir(root)
    assert (back.stop_reason, back.final_output, back.expected) == ("done", 42, {"answer": 42})
    assert [s.tool_call.tool for s in back.steps] == ["done"]
    with quiet():
        save_eval_run(root, context=EvalContext(steps=[], stop_reason="done"))
    assert not (root / "case.json").exists() and not (root / "expected.json").exists()
    with quiet(), pytest.raises(ValueError, match="recorder=, context="):
        save_eval_run(tmp_path / "none")


def test_the_05_sink_keeps_its_own_behaviour_for_041_callers(tmp_path: Path) -> None:
    from looplet import ProvenanceSink

    with pytest.raises(TypeError):
        ProvenanceSink(tmp_path, overwrite=True)  # type: ignore[call-arg]  # 0.4.1's keyword: changed
    (tmp_path / "trajectory.json").write_text("{}")  # a folder holding a run: later runs go under it
    sink = ProvenanceSink(tmp_path)
    assert sink.flush() == [] and type(sink.trajectory_hook()).__name__ == "TrajectoryHook"
