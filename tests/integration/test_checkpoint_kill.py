"""kill -9 a real agent process at random points, many times, and rerun the same code until it finishes.

Checked after every kill: the checkpoint on disk is valid on its own (every tool call has its result, steps
numbered 1..n), it extends the previous one (no finished step lost), and the tools of steps already in the
previous checkpoint were not run again (no finished step redone). At the end: every unit of work was done,
in order, and usage/cost totals equal the sums over the steps; every step carries the first run's trace id.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from looplet.control import Checkpoint

from ..unit.test_compaction import assert_paired

N_WORK = 16

CHILD = textwrap.dedent('''
    import asyncio, json, os, sys, time, uuid
    from looplet import LLMResponse, ToolCall, Usage, tool, tools_from, composable_loop, async_composable_loop
    from looplet.control import CheckpointHook
    from looplet.hooks import current_run

    folder, mode, ledger, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    @tool(description="Do one unit of work (its side effect is a line in the ledger).")
    def work(i: int) -> str:
        with open(ledger, "a") as f:
            f.write(json.dumps({"i": i, "pid": os.getpid()}) + "\\n")
            f.flush()
            os.fsync(f.fileno())
        time.sleep(0.003)
        return f"unit {i} done"

    class Model:
        """Answers from the transcript, as a real model would when asked again after a crash.
        Every third answer holds two calls, so some kills land between two calls of one answer."""
        model, provider = "gpt-4o-mini", "mock"

        def generate(self, messages, *, tools=None, **kw):
            k = sum(1 for m in messages if m.get("role") == "tool")
            if k >= n:
                calls = [ToolCall("done", {"answer": "all done"}, "c_done")]
            else:
                calls = [ToolCall("work", {"i": k + 1}, f"c{k + 1}")]
                if k % 3 == 0 and k + 2 <= n:
                    calls.append(ToolCall("work", {"i": k + 2}, f"c{k + 2}"))
            return LLMResponse(tool_calls=calls, usage=Usage(100 + k, 10), model="gpt-4o-mini")

        async def agenerate(self, messages, *, tools=None, **kw):
            return self.generate(messages, tools=tools)

    class Tracer:
        """Stands in for a tracing hook: continues run.parent's trace when a checkpoint gave one."""
        def on_loop_start(self, state, session_log, context):
            run = current_run()
            run.trace_id = run.parent.split("-")[1] if run.parent else uuid.uuid4().hex
            run.span_id = uuid.uuid4().hex[:16]

    kw = dict(llm=Model(), tools=tools_from([work]), task={"goal": "do the work"}, max_steps=n + 5,
              hooks=[CheckpointHook(folder), Tracer()])
    if mode == "sync":
        for _ in composable_loop(**kw):
            pass
    else:
        async def main():
            async for _ in async_composable_loop(**kw):
                pass
        asyncio.run(main())
''')


def ledger_lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["i"])
        except ValueError:  # a line cut by the kill
            pass
    return out


def kill_at_a_random_point(
    child: subprocess.Popen[bytes], ledger: Path, lines: int, delay: float
) -> int | None:
    """Let the child do ``lines`` more units of work, wait ``delay`` more (so the kill lands anywhere: in a
    tool, between the tool and the checkpoint, in the middle of a write, in an LLM call), then kill -9 it.
    Progress-based, so a slow or busy machine moves the kill points but not their spread. Returns the exit
    code, or None when it was killed."""
    deadline = time.monotonic() + 60.0
    while child.poll() is None and len(ledger_lines(ledger)) < lines and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if child.poll() is not None:
        return child.returncode
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return None


def check(cp: Checkpoint | None) -> list[dict[str, Any]]:
    if cp is None:
        return []
    assert [s["number"] for s in cp.steps] == list(range(1, len(cp.steps) + 1))
    assert_paired(cp.transcript)
    results = [m["tool_call_id"] for m in cp.transcript if m["role"] == "tool"]
    assert results == [s["tool_call"]["id"] for s in cp.steps]  # one result per step, in step order
    return cp.steps


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_9_at_random_points_then_rerun(mode: str, tmp_path: Path) -> None:
    rnd = random.Random(f"kill-{mode}")
    folder, ledger, script = tmp_path / "ckpt", tmp_path / "ledger.jsonl", tmp_path / "agent.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, str(script), str(folder), mode, str(ledger), str(N_WORK)]
    kills = mid_answer = 0
    before: list[dict[str, Any]] = []
    for attempt in range(80):  # noqa: B007 - read after the loop
        seen = len(ledger_lines(ledger))
        finished = {s["tool_call"]["args"].get("i") for s in before}
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        code = kill_at_a_random_point(child, ledger, seen + rnd.randint(1, 4), rnd.uniform(0.0, 0.012))
        kills += code is None
        stderr = child.stderr.read().decode() if child.stderr else ""  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
        assert code in (None, 0), stderr
        cp = Checkpoint.load(folder)
        after = check(cp)
        assert after[: len(before)] == before, "a finished step was lost or changed"
        ran_now = ledger_lines(ledger)[seen:]
        assert not (set(ran_now) & finished), f"finished steps redone: {set(ran_now) & finished}"
        if cp is not None and cp.pending:
            mid_answer += 1
        before = after
        if code == 0 or (cp is not None and cp.stop_reason == "done"):  # killed while exiting counts as done
            break
    else:
        pytest.fail("the agent never finished")
    final = Checkpoint.load(folder)
    assert final is not None and final.stop_reason == "done"
    work = [s["tool_call"]["args"]["i"] for s in final.steps if s["tool_call"]["tool"] == "work"]
    assert work == list(range(1, N_WORK + 1)), "work lost, repeated or out of order"
    assert final.steps[-1]["tool_call"]["tool"] == "done"
    assert set(ledger_lines(ledger)) == set(range(1, N_WORK + 1))
    assert sum(s["usage"]["input_tokens"] for s in final.steps if s["usage"]) == final.usage["input_tokens"]
    assert sum(s["cost_usd"] or 0 for s in final.steps) == pytest.approx(final.cost_usd)
    assert len({s["trace_id"] for s in final.steps}) == 1 and final.trace_id == final.steps[0]["trace_id"]
    assert kills >= 5, f"only {kills} kills landed; the child may be too fast for this machine"
    print(
        f"{mode}: {kills} kills ({mid_answer} left a checkpoint between two calls of one answer), "
        f"{attempt + 1} processes; 0 finished steps redone, 0 lost; "
        f"{len(ledger_lines(ledger)) - N_WORK} in-flight tool calls ran again (at-least-once for unfinished steps)"
    )
