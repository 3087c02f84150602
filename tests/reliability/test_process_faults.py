"""Process faults: ``kill -9`` at random points with checkpointing on, then the same code run again.

tests/integration/test_checkpoint_kill.py is the core proof (one series of kills per loop: 0 finished steps
redone, 0 lost). This file adds:

* the same kill with full telemetry on (JSON log file, trace folder): a kill never leaves a half-written
  trajectory folder or a broken log line, and the run that finally finishes writes a whole trajectory;
* the figures for docs/reliability.md: many series of kills, totalled. Opt-in, as it takes minutes::

      LOOPLET_KILL_ROUNDS=10 .venv/bin/python -m pytest -q -s tests/reliability/test_process_faults.py -k figures
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from looplet.control import Checkpoint
from tests.integration.test_checkpoint_kill import CHILD, check, kill_at_a_random_point, ledger_lines


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def kill_series(
    mode: str,
    seed: str,
    tmp: Path,
    n_work: int,
    child: str = CHILD,
    extra_args: tuple[str, ...] = (),
    after_kill: Any = None,
) -> dict[str, int]:
    """Start the agent, kill -9 it at a random point, start it again, ... until it finishes. Checks after
    every kill that no finished step was lost or redone; returns the counts."""
    rnd = random.Random(seed)
    folder, ledger, script = tmp / "ckpt", tmp / "ledger.jsonl", tmp / "agent.py"
    script.write_text(child)
    cmd = [sys.executable, str(script), str(folder), mode, str(ledger), str(n_work), *extra_args]
    figures = {
        "processes": 0,
        "kills": 0,
        "mid_answer": 0,
        "redone": 0,
        "lost": 0,
        "in_flight_rerun": 0,
        "killed_after_done": 0,
    }
    before: list[dict[str, Any]] = []
    for _ in range(80):
        seen = len(ledger_lines(ledger))
        finished = {s["tool_call"]["args"].get("i") for s in before}
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        code = kill_at_a_random_point(proc, ledger, seen + rnd.randint(1, 3), rnd.uniform(0.0, 0.012))
        stderr = proc.stderr.read().decode() if proc.stderr else ""  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        assert code in (None, 0), stderr
        figures["processes"] += 1
        figures["kills"] += code is None
        cp = Checkpoint.load(folder)
        after = check(cp)
        figures["lost"] += sum(1 for a, b in zip(before, after, strict=False) if a != b) + max(
            0, len(before) - len(after)
        )
        figures["redone"] += len(set(ledger_lines(ledger)[seen:]) & finished)
        figures["mid_answer"] += bool(cp is not None and cp.pending)
        if after_kill is not None and code is None:
            after_kill()
        before = after
        # only a process that ended finishes the series: one killed after its final checkpoint (stop
        # reason `done`) may not have written its files yet (the trajectory folder comes at the run's end);
        # the next one resumes that checkpoint and finishes at once
        if code == 0:
            break
        if (
            code is None
            and after
            and after[-1]["tool_call"]["tool"] == "done"
            and not after[-1]["tool_result"]["error"]
        ):
            # killed between the done step's checkpoint and the final one: the rerun finishes as `done` at
            # once, without asking the model again (test_a_checkpoint_whose_last_step_is_done_resumes_as_done)
            figures["killed_after_done"] += 1
    else:
        pytest.fail("the agent never finished")
    final = Checkpoint.load(folder)
    assert final is not None and (final.stop_reason == "done" or figures["killed_after_done"])
    work = [s["tool_call"]["args"]["i"] for s in final.steps if s["tool_call"]["tool"] == "work"]
    assert work == list(range(1, n_work + 1)), "work lost, repeated or out of order"
    figures["steps"] = len(final.steps)
    figures["in_flight_rerun"] = len(ledger_lines(ledger)) - n_work
    return figures


# -- kill -9 with telemetry on ---------------------------------------------------------------------------

TELEMETRY_CHILD = CHILD.replace(
    "\nkw = dict(llm=Model()",
    textwrap.dedent("""
        from looplet.telemetry.setup import configure
        session = configure(service_name="killed", json_logs=True, log_file=sys.argv[5], provenance_dir=sys.argv[6])
    """)
    + "kw = dict(llm=Model()",
).replace("hooks=[CheckpointHook(folder), Tracer()]", "hooks=[CheckpointHook(folder), *session.hooks]")


def assert_trace_files_whole(traces: Path, log_file: Path) -> None:
    """Every run folder is complete (each file its manifest lists is there with its size and hash); every
    log line is a whole JSON object."""
    import hashlib

    from looplet.provenance.format import run_folders

    for run_dir in run_folders(traces) if traces.exists() else ():  # traces itself, then runs under it
        manifest = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
        for entry in manifest:
            data = (run_dir / entry["path"]).read_bytes()
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
        json.loads((run_dir / "trajectory.json").read_text())
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            json.loads(line)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_9_with_telemetry_on_leaves_whole_trace_files_and_loses_no_step(mode, tmp_path):
    traces, log_file = tmp_path / "traces", tmp_path / "run.jsonl"
    assert "configure(" in TELEMETRY_CHILD and "session.hooks" in TELEMETRY_CHILD
    figures = kill_series(
        mode,
        f"telemetry-{mode}",
        tmp_path,
        8,
        TELEMETRY_CHILD,
        (str(log_file), str(traces)),
        after_kill=lambda: assert_trace_files_whole(traces, log_file),
    )
    assert figures["lost"] == 0 and figures["redone"] == 0
    assert figures["kills"] >= 2, figures
    assert_trace_files_whole(traces, log_file)
    from looplet.provenance.format import run_folders

    [finished] = run_folders(traces)  # only the run that finished
    trajectory = json.loads((finished / "trajectory.json").read_text())
    assert trajectory["stop_reason"] == "done"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    starts = [ln for ln in lines if ln.get("event") == "run.start"]
    assert len(starts) == figures["processes"]  # every process logged its start before it was killed or ended
    assert [ln for ln in lines if ln.get("event") == "run.end"][-1]["stop_reason"] == "done"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_checkpoint_whose_last_step_is_done_resumes_as_done(mode, tmp_path):
    from looplet import MockLLMBackend, tool, tools_from
    from looplet.control import CheckpointHook
    from tests.unit._harness import run

    @tool(description="One unit of work.")
    def work(i: int) -> str:
        return f"unit {i}"

    script = ['{"tool": "work", "args": {"i": 1}}', '{"tool": "done", "args": {"answer": "all done"}}']
    kw = dict(tools=tools_from([work]), task={"goal": "work"}, hooks=[CheckpointHook(tmp_path)])
    steps, result = run(mode, llm=MockLLMBackend(script), **kw)
    assert result.stop_reason == "done"
    cp = Checkpoint.load(tmp_path)
    cp.stop_reason = None  # as left by a kill -9 right after the done step was saved
    cp.save(tmp_path)

    asked_again = MockLLMBackend(['{"tool": "done", "args": {"answer": "a second answer"}}'])
    steps, result = run(mode, llm=asked_again, **kw)
    assert result.stop_reason == "done" and result.final_output == "all done"
    assert asked_again.calls == 0 and steps == []
    assert [s["tool_call"]["tool"] for s in Checkpoint.load(tmp_path).steps] == ["work", "done"]


# -- figures for docs/reliability.md ---------------------------------------------------------------------

ROUNDS = int(os.environ.get("LOOPLET_KILL_ROUNDS", "0") or 0)


@pytest.mark.skipif(
    ROUNDS < 1,
    reason="figures collection: set LOOPLET_KILL_ROUNDS=N (one series per loop "
    "already runs in tests/integration/test_checkpoint_kill.py)",
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_9_figures(mode, tmp_path):
    total: dict[str, int] = {}
    for r in range(ROUNDS):
        run_dir = tmp_path / f"round{r}"
        run_dir.mkdir()
        figures = kill_series(mode, f"figures-{mode}-{r}", run_dir, 18)
        for k, v in figures.items():
            total[k] = total.get(k, 0) + v
    total["rounds"] = ROUNDS
    print(f"\nkill -9 figures ({mode}): " + json.dumps(total))
    out = os.environ.get("LOOPLET_FIGURES_FILE")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"mode": mode, **total}) + "\n")
    assert total["lost"] == 0 and total["redone"] == 0
