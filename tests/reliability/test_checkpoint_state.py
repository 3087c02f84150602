"""Checkpoints against the state attacks of issue 14, with real files and real ``kill -9``.

- a process killed after the final ``done`` was saved: the rerun returns the finished result, runs nothing;
- five 10 MB tool results: stored once each by content hash, so a step writes its own output, not all;
- a truncated checkpoint: one clear error naming the file, never a raw ``JSONDecodeError``;
- a process killed mid-write: its temporary file is removed when the next run starts;
- a call paused for approval runs only with an approval for its own id, whatever the resuming code passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from looplet import DefaultState, LoopConfig, MockLLMBackend, run_loop, tool, tools_from
from looplet.control import ApprovalHook, Checkpoint, CheckpointHook, resume
from looplet.control.checkpoint import BLOBS, FILENAME, CheckpointError

ROOT = Path(__file__).resolve().parents[2]
DONE = '{"tool": "done", "args": {"answer": "x"}}'

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from looplet import MockLLMBackend, run_loop, tool, tools_from
    from looplet.control import CheckpointHook

    folder, ledger = sys.argv[1], sys.argv[2]

    @tool(description="Send an e-mail (a side effect: a line in the ledger).")
    def send(to: str) -> str:
        with open(ledger, "a") as f:
            f.write(to + "\\n")
        return f"sent to {to}"

    script = ['{"tool": "send", "args": {"to": "a@example.com"}}',
              '{"tool": "send", "args": {"to": "b@example.com"}}',
              '{"tool": "done", "args": {"answer": "two sent"}}']
    llm = MockLLMBackend(script)
    result = run_loop(llm, {"goal": "send"}, tools_from([send]), hooks=[CheckpointHook(folder)])
    print(json.dumps({"stop": result.stop_reason, "steps": len(result.steps), "llm": llm.calls,
                      "answer": result.final_output, "calls": result.llm_calls}), flush=True)
    if len(sys.argv) > 3:
        time.sleep(60)  # killed here: after the final save, before the exit
    """
)


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_kill_9_after_the_final_done_then_rerun_returns_the_finished_run(tmp_path: Path) -> None:
    folder, ledger = tmp_path / "cp", tmp_path / "ledger.txt"
    first = child(str(folder), str(ledger), "then-hang")
    assert first.stdout is not None
    summary = json.loads(first.stdout.readline())  # printed after the run and its final checkpoint
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert summary["stop"] == "done" and ledger.read_text().splitlines() == ["a@example.com", "b@example.com"]
    assert Checkpoint.load(folder).stop_reason == "done"  # type: ignore[union-attr]

    again = child(str(folder), str(ledger))
    out, _ = again.communicate(timeout=120)
    rerun = json.loads(out.splitlines()[0])
    assert rerun == {"stop": "done", "steps": 3, "llm": 0, "answer": "two sent", "calls": 0}
    assert ledger.read_text().splitlines() == ["a@example.com", "b@example.com"]  # no e-mail sent twice


MB10 = 10 * 1024 * 1024


@tool(description="Fetch a large page.")
def fetch(i: int) -> str:
    return chr(ord("a") + i) * MB10


class Bytes:
    def __init__(self) -> None:
        self.per_save: list[int] = []

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "checkpoint":
            self.per_save.append(attributes["bytes"])


def test_five_10_mb_results_are_stored_once_each(tmp_path: Path) -> None:
    script = [f'{{"tool": "fetch", "args": {{"i": {i}}}}}' for i in range(5)]
    script.append('{"tool": "done", "args": {"answer": "fetched"}}')
    written = Bytes()
    result = run_loop(
        MockLLMBackend(script),
        {"goal": "fetch"},
        tools_from([fetch]),
        hooks=[CheckpointHook(tmp_path), written],
        config=LoopConfig(max_steps=10, max_tool_output_chars=100),
    )
    assert result.stop_reason == "done"
    blobs = sorted((tmp_path / BLOBS).iterdir())
    assert len(blobs) == 5 and all(b.stat().st_size == MB10 for b in blobs)
    assert (tmp_path / FILENAME).stat().st_size < 64 * 1024
    # saves after each fetch write that fetch's 10 MB plus a small checkpoint; the rest stay small
    big = [n for n in written.per_save if n > MB10]
    assert len(big) == 5 and all(n < MB10 + 64 * 1024 for n in big)
    assert sum(written.per_save) < 5 * MB10 + 512 * 1024  # was 10+20+30+40+50+50 MB before
    cp = Checkpoint.load(tmp_path)
    assert cp is not None and [s["tool_result"]["data"][:3] for s in cp.steps[:5]] == [
        "aaa",
        "bbb",
        "ccc",
        "ddd",
        "eee",
    ]


def test_a_resumed_run_with_blobs_continues_and_writes_no_blob_twice(tmp_path: Path) -> None:
    script = [f'{{"tool": "fetch", "args": {{"i": {i}}}}}' for i in range(3)]
    script.append('{"tool": "done", "args": {"answer": "fetched"}}')
    run_loop(
        MockLLMBackend(script),
        {"goal": "f"},
        tools_from([fetch]),
        hooks=[CheckpointHook(tmp_path)],
        max_steps=2,
    )
    written = Bytes()
    llm = MockLLMBackend(script)
    llm.calls = 2
    result = run_loop(
        llm, {"goal": "f"}, tools_from([fetch]), hooks=[CheckpointHook(tmp_path), written], max_steps=10
    )
    assert result.stop_reason == "done" and [s.tool_call.args.get("i") for s in result.steps[:3]] == [0, 1, 2]
    assert result.steps[0].tool_result.data == "a" * MB10  # read back from its blob
    assert len([n for n in written.per_save if n > MB10]) == 1  # only the new fetch's blob


def truncate(folder: Path) -> Path:
    path = folder / FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def finished_run(folder: Path) -> None:
    script = ['{"tool": "fetch", "args": {"i": 0}}', '{"tool": "done", "args": {"answer": "x"}}']
    run_loop(
        MockLLMBackend(script),
        {"goal": "f"},
        tools_from([fetch]),
        hooks=[CheckpointHook(folder)],
        max_steps=1,
    )


def test_a_truncated_checkpoint_is_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    finished_run(tmp_path)
    path = truncate(tmp_path)
    with pytest.raises(CheckpointError) as info:
        resume(tmp_path, llm=MockLLMBackend([DONE]), tools=tools_from([fetch]))
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "not valid JSON" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    before = path.read_bytes()
    result = run_loop(
        MockLLMBackend([DONE]), {"goal": "f"}, tools_from([fetch]), hooks=[CheckpointHook(tmp_path)]
    )
    assert result.stop_reason == "hook_stop:checkpoint_error" and path.read_bytes() == before


def test_a_missing_blob_is_named(tmp_path: Path) -> None:
    finished_run(tmp_path)
    for blob in (tmp_path / BLOBS).iterdir():
        blob.unlink()
    with pytest.raises(CheckpointError, match="blobs"):
        Checkpoint.load(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys
    from looplet.control.checkpoint import Checkpoint
    cp = Checkpoint(steps=[], transcript=[{"role": "user", "content": "x" * 60_000}] * 800)
    while True:
        cp.save(sys.argv[1])
    """
)


def test_a_temporary_file_left_by_kill_9_mid_write_is_removed_at_the_next_start(tmp_path: Path) -> None:
    leftover: list[Path] = []
    for _attempt in range(20):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob(".checkpoint.*.tmp")):
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        leftover = list(tmp_path.glob(".checkpoint.*.tmp"))
        if leftover:
            break
    assert leftover, "no kill landed mid-write in 20 tries"
    Checkpoint.load(tmp_path)  # the last complete checkpoint is whole
    run_loop(
        MockLLMBackend(['{"tool": "done", "args": {"answer": "x"}}']),
        {"goal": "g"},
        tools_from([fetch]),
        hooks=[CheckpointHook(tmp_path, fresh=True)],
    )
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))


# --- approval ---------------------------------------------------------------------------------------


class Files:
    """A delete tool with a real effect on real files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir()
        (root / "data" / "important.csv").write_text("keep me\n")

        @tool(description="Delete a file.")
        def delete(path: str) -> str:
            (root / "data" / path).unlink()
            return f"deleted {path}"

        @tool(description="List files.")
        def ls() -> list[str]:
            return sorted(p.name for p in (root / "data").iterdir())

        self.tools = tools_from([delete, ls])

    @property
    def intact(self) -> bool:
        return (self.root / "data" / "important.csv").exists()


SCRIPT = [
    '{"tool": "ls", "args": {}}',
    '{"tool": "delete", "args": {"path": "important.csv"}}',
    '{"tool": "done", "args": {"answer": "cleaned"}}',
]


def paused(tmp_path: Path) -> tuple[Files, Path, str, DefaultState]:
    files, folder = Files(tmp_path), tmp_path / "cp"
    state = DefaultState()
    result = run_loop(
        MockLLMBackend(SCRIPT),
        {"goal": "clean up"},
        files.tools,
        state=state,
        hooks=[CheckpointHook(folder), ApprovalHook(tools=["delete"])],
    )
    assert result.stop_reason == "awaiting_approval" and files.intact
    call_id = state.metadata["looplet.approval"]["call_id"]
    return files, folder, call_id, state


def later_model() -> MockLLMBackend:
    llm = MockLLMBackend(SCRIPT)
    llm.calls = 2  # a model asked again would go on to done
    return llm


@pytest.mark.parametrize(
    "how",
    ["resume_dir_without_hooks", "resume_state", "approval_for_another_id", "rerun_with_checkpoint_only"],
)
def test_a_paused_call_never_runs_without_its_own_approval(tmp_path: Path, how: str) -> None:
    files, folder, call_id, state = paused(tmp_path)
    llm = later_model()
    if how == "resume_dir_without_hooks":
        result = resume(folder, llm=llm, tools=files.tools)
    elif how == "resume_state":
        result = resume(state, llm=llm, tools=files.tools)
    elif how == "approval_for_another_id":
        result = resume(folder, llm=llm, tools=files.tools, approvals={"call_other": True})
    else:
        result = run_loop(llm, {"goal": "clean up"}, files.tools, hooks=[CheckpointHook(folder)])
    assert result.stop_reason == "awaiting_approval"
    assert files.intact and llm.calls == 2  # the model was not asked either
    assert [s.tool_call.tool for s in result.steps if s.tool_result.error_kind != "not_run"] == ["ls"]
    cp = Checkpoint.load(folder)
    assert cp is not None and cp.metadata["looplet.approval"]["call_id"] == call_id  # still waiting


def test_a_refusal_for_its_id_is_an_error_step_and_the_run_goes_on(tmp_path: Path) -> None:
    files, folder, call_id, _ = paused(tmp_path)
    result = resume(folder, llm=later_model(), tools=files.tools, hooks=[], approvals={call_id: False})
    assert files.intact and result.stop_reason == "done"
    refused = [s for s in result.steps if s.tool_call.id == call_id and s.tool_result.error_kind == "denied"]
    assert len(refused) == 1 and "refused" in (refused[0].tool_result.error or "")


@pytest.mark.parametrize("with_hook", [False, True])
def test_an_approval_for_its_id_runs_it_once(tmp_path: Path, with_hook: bool) -> None:
    files, folder, call_id, _ = paused(tmp_path)
    hooks = [CheckpointHook(folder, approvals={call_id: True})]
    if with_hook:
        hooks.append(ApprovalHook(tools=["delete"]))
    result = run_loop(later_model(), {"goal": "clean up"}, files.tools, hooks=hooks)
    assert not files.intact and result.stop_reason == "done"
    ran = [s for s in result.steps if s.tool_call.id == call_id and s.tool_result.error is None]
    assert len(ran) == 1
    cp = Checkpoint.load(folder)
    assert cp is not None and "looplet.approval" not in cp.metadata and "looplet.approvals" not in cp.metadata


BLOB_CHILD = textwrap.dedent(
    """
    import sys
    from looplet import LLMResponse, ToolCall, tool, tools_from, run_loop
    from looplet.control import CheckpointHook

    folder, ledger, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    @tool(description="Make a large page (a line in the ledger per call).")
    def page(i: int) -> str:
        with open(ledger, "a") as f:
            f.write(f"{i}\\n")
        return (str(i) + "-") * 40_000  # ~200-300 KB: stored as a blob

    class Model:
        model, provider = "m", "mock"

        def generate(self, messages, *, tools=None, **kw):
            k = sum(1 for m in messages if m.get("role") == "tool")
            call = ToolCall("page", {"i": k + 1}, f"c{k + 1}") if k < n else ToolCall("done", {"answer": "ok"}, "d")
            return LLMResponse(tool_calls=[call], model="m")

    run_loop(Model(), {"goal": "pages"}, tools_from([page]), hooks=[CheckpointHook(folder)], max_steps=n + 2)
    """
)


def test_kill_9_during_runs_with_blobs_leaves_every_checkpoint_whole(tmp_path: Path) -> None:
    folder, ledger, n = tmp_path / "cp", tmp_path / "ledger.txt", 12
    kills = 0
    for attempt in range(30):
        proc = subprocess.Popen(
            [sys.executable, "-c", BLOB_CHILD, str(folder), str(ledger), str(n)], cwd=ROOT
        )
        if (
            attempt < 8
        ):  # let it make progress, then kill it anywhere (in a tool, a blob or a checkpoint write)
            start = len(ledger.read_text().splitlines()) if ledger.exists() else 0
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                done = len(ledger.read_text().splitlines()) if ledger.exists() else 0
                if done >= start + 1 + attempt % 3:
                    break
                time.sleep(0.002)
            time.sleep(0.01 * (attempt % 4))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        proc.wait(timeout=120)
        cp = Checkpoint.load(folder)  # whole after every kill: its blobs are all there
        if cp is None:
            continue  # killed before the first step was saved
        for s in cp.steps:
            i = s["tool_call"]["args"].get("i")
            if i is not None and s["tool_result"]["error"] is None:
                assert s["tool_result"]["data"] == (str(i) + "-") * 40_000
        if cp.stop_reason == "done":
            break
    assert kills >= 3 and cp is not None and cp.stop_reason == "done"
    assert [s["tool_call"]["args"].get("i") for s in cp.steps][:n] == list(range(1, n + 1))
    assert len(list((folder / BLOBS).iterdir())) >= n
    assert not list(folder.glob(".checkpoint.*.tmp"))
