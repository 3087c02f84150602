"""``looplet batch`` on the local engine: real subprocesses, real signals, a real OTLP receiver, real
prometheus_client. The Ray engine has its own module (test_batch_ray.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from looplet.batch import BatchError, read_results, run_batch
from tests.integration._otlp_receiver import HttpReceiver, Reply, otlp_ok

ROOT = Path(__file__).resolve().parents[2]
AGENT = f"{ROOT / 'tests' / 'integration' / '_batch_agent.py'}:build"


def write_tasks(path: Path, n: int, extra: dict[str, Any] | None = None) -> list[str]:
    ids = [f"task-{i:03d}" for i in range(n)]
    with path.open("w") as f:
        for i in ids:
            f.write(json.dumps({"id": i, "task": {"goal": f"echo {i}", **(extra or {})}}) + "\n")
    return ids


def lines(path: Path) -> list[dict[str, Any]]:
    """The readable result lines (a torn one is skipped, as the batch does)."""
    out = []
    for raw in path.read_text().splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def batch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "looplet", "batch", *args]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    e.pop("TRACEPARENT", None)
    e["LOOPLET_PROGRESS"] = "on"
    e.update(extra)
    return e


def check_results(out: Path, ids: list[str], traces: Path | None = None) -> list[dict[str, Any]]:
    """Every task exactly once, each run done; with ``traces``, one trajectory folder per task, by id."""
    records = lines(out)
    assert sorted(r["id"] for r in records) == ids
    assert {r["stop_reason"] for r in records} == {"done"}
    assert all(r["usage"]["total_tokens"] == 240 and r["llm_calls"] == 2 for r in records)
    if traces is not None:
        assert sorted(p.name for p in traces.iterdir()) == ids
        for r in records[:5]:
            assert r["trajectory"] == str(traces / r["id"])
            saved = json.loads((traces / r["id"] / "trajectory.json").read_text())
            assert saved["task"]["goal"] == f"echo {r['id']}"
    return records


def check_one_trace(spans: list[dict[str, Any]], records: list[dict[str, Any]], engine: str) -> None:
    """One ``looplet.batch`` span, parent of every run's ``invoke_agent`` span, all in its trace."""
    (batch,) = [s for s in spans if s["name"] == "looplet.batch"]
    assert batch["attributes"]["looplet.batch.tasks"] == len(records)
    assert batch["attributes"]["looplet.batch.engine"] == engine
    agents = [s for s in spans if s["name"].startswith("invoke_agent")]
    assert len(agents) == len(records)  # every run's spans reached the receiver
    assert {s["trace_id"] for s in spans} == {batch["trace_id"]}  # the runs' children too
    assert {s["parent_span_id"] for s in agents} == {batch["span_id"]}
    assert {r["trace_id"] for r in records} == {batch["trace_id"]}


def check_rerun_skips_all(cmd: list[str], out: Path, n: int) -> None:
    before = out.read_bytes()
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert out.read_bytes() == before
    assert f"(0 now, {n} from before)" in again.stderr


def kill_halfway(cmd: list[str], out: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Run the batch of 200 tasks ``cmd`` (each LLM call 20 ms) until ``out`` holds at least 60 results,
    SIGKILL it, and return the results written by then."""
    proc = subprocess.Popen(cmd, env=env(BATCH_LATENCY_S="0.02"), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 60:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the batch ended before it could be killed halfway"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    first = lines(out)
    assert 60 <= len(first) < 200
    return first


def test_200_tasks_once_each_one_trace_then_a_rerun_skips_them_all(tmp_path: Path) -> None:
    tasks, out, traces = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl", tmp_path / "traces"
    ids = write_tasks(tasks, 200)
    receiver = HttpReceiver()
    cmd = batch_cmd(str(tasks), "--agent", AGENT, "--out", str(out), "--concurrency", "8")
    try:
        done = subprocess.run(
            [*cmd, "--trace-dir", str(traces), "--otlp", receiver.url],
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.wait_for(lambda s: sum(x["name"].startswith("invoke") for x in s) >= 200, timeout=30)
    finally:
        receiver.close()

    records = check_results(out, ids, traces)
    check_one_trace(spans, records, "local")
    assert "200/200 tasks have a result (200 now, 0 from before), 0 failed" in done.stderr
    assert "by stop reason: done 200" in done.stderr
    assert "cost $0.01080" in done.stderr  # 200 runs x (200 in + 40 out tokens of gpt-4o-mini)
    check_rerun_skips_all(cmd, out, 200)


def test_killed_halfway_then_rerun_every_task_once(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 200)
    cmd = batch_cmd(str(tasks), "--agent", AGENT, "--out", str(out), "--concurrency", "4", "--quiet")
    first = kill_halfway(cmd, out, 120)
    with out.open("ab") as f:  # what a kill in the middle of a write leaves: a line cut short
        f.write(b'{"id":"task-199","status":"ok","stop_rea')

    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = lines(out)
    assert sorted(r["id"] for r in records) == ids
    assert records[: len(first)] == first  # nothing written before the kill was lost or rewritten
    assert f"({200 - len(first)} now, {len(first)} from before)" in done.stderr


def test_metrics_add_up_to_the_results_file(tmp_path: Path) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    import socket

    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 40)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = prometheus_client.CollectorRegistry()
    scraped: list[str] = []

    def scrape() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not scraped:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                time.sleep(0.02)
                continue
            if "looplet_batch_runs_total" in text:
                scraped.append(text)

    t = threading.Thread(target=scrape)
    t.start()
    os.environ["BATCH_LATENCY_S"] = "0.01"
    try:
        summary = run_batch(
            str(tasks), AGENT, str(out), concurrency=4, registry=registry, metrics_port=port, progress=False
        )
    finally:
        os.environ.pop("BATCH_LATENCY_S")
        t.join()
    assert scraped, "/metrics was never served during the batch"
    assert 'looplet_batch_tasks{state="total"} 40.0' in scraped[0]

    records = lines(out)
    value = registry.get_sample_value
    assert value("looplet_batch_runs_total", {"stop_reason": "done"}) == len(records) == 40
    assert value("looplet_batch_tokens_total", {"model": "gpt-4o-mini", "type": "input"}) == sum(
        r["usage"]["input_tokens"] for r in records
    )
    cost = value("looplet_batch_cost_usd_total", {"model": "gpt-4o-mini"})
    assert cost == pytest.approx(sum(r["cost_usd"] for r in records))
    assert value("looplet_batch_run_duration_seconds_count", {}) == 40
    assert value("looplet_batch_tasks", {"state": "done"}) == 40
    assert summary.cost_usd == pytest.approx(cost) and summary.done == 40 and summary.failed == 0


def test_evals_in_every_line_and_looplet_eval_reads_the_trace_dir(tmp_path: Path) -> None:
    tasks, out, traces = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl", tmp_path / "traces"
    write_tasks(tasks, 6)
    evals = tmp_path / "my_evals.py"
    evals.write_text(
        "def eval_answer_is_ok(ctx):\n    assert ctx.final_output == 'ok'\n\n"
        "def eval_goal_is_even(ctx):\n    assert int(ctx.task['goal'][-1]) % 2 == 0, 'odd task'\n"
    )
    cmd = batch_cmd(
        str(tasks), "--agent", AGENT, "--out", str(out), "--trace-dir", str(traces), "--eval", str(evals)
    )
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for r in lines(out):
        outcomes = {e["name"]: e["outcome"] for e in r["evals"]}
        even = int(r["id"][-1]) % 2 == 0
        assert outcomes == {"eval_answer_is_ok": "pass", "eval_goal_is_even": "pass" if even else "fail"}
    assert "eval eval_answer_is_ok: 6/6 passed" in done.stderr
    assert "eval eval_goal_is_even: 3/6 passed, 3 failed" in done.stderr

    ev = subprocess.run(
        [sys.executable, "-m", "looplet", "eval", str(traces), "--evals", str(evals)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ev.returncode == 1, ev.stdout + ev.stderr  # the odd tasks fail eval_goal_is_even
    assert "2 evals on 6 runs: 9 passed, 3 failed, 0 errors" in ev.stdout


def test_a_failed_run_is_written_as_failed_retried_on_demand_and_a_bad_factory_stops_the_batch(
    tmp_path: Path,
) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 3)
    module = tmp_path / "strict_agent.py"
    module.write_text(
        "from looplet import LoopConfig, MockLLMBackend, tools_from\n"
        "class Boom:\n"
        "    def pre_prompt(self, state, log, context, step):\n"
        "        raise RuntimeError('hook failed')\n"
        "def build():\n"
        '    return {\'llm\': MockLLMBackend([\'{"tool": "done", "args": {"answer": "x"}}\']),\n'
        "            'tools': tools_from([]), 'hooks': [Boom()], 'config': LoopConfig(strict_hooks=True)}\n"
        "def broken():\n"
        "    raise ValueError('no key')\n"
    )
    summary = run_batch(str(tasks), f"{module}:build", str(out), progress=False)
    records = lines(out)
    assert len(records) == 3 and summary.failed == 3
    assert all(r["error"] for r in records)

    # fixed: --retry-failed runs exactly those again, and each task still has one line
    again = subprocess.run(
        batch_cmd(str(tasks), "--agent", AGENT, "--out", str(out), "--retry-failed"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "3 failed result(s) removed and run again" in again.stderr
    assert [r["status"] for r in lines(out)] == ["ok"] * 3 and {r["id"] for r in lines(out)} == set(ids)

    with pytest.raises(BatchError, match="no key"):
        run_batch(str(tasks), f"{module}:broken", str(tmp_path / "other.jsonl"), progress=False)
    assert not read_results(str(tmp_path / "other.jsonl")).records  # nothing written for a bad factory


def test_a_second_batch_on_the_same_results_file_is_refused(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 400)
    cmd = batch_cmd(str(tasks), "--agent", AGENT, "--out", str(out), "--concurrency", "2", "--quiet")
    proc = subprocess.Popen(cmd, env=env(BATCH_LATENCY_S="0.02"), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
            time.sleep(0.02)
        second = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "being written by another looplet batch" in second.stderr
    finally:
        proc.kill()
        proc.wait(30)


async def test_arun_batch_from_async_code_runs_an_async_only_agent(tmp_path: Path) -> None:
    from looplet.batch import arun_batch

    tasks = [{"id": f"a{i}", "task": {"goal": f"echo a{i}"}} for i in range(12)]
    out = tmp_path / "results.jsonl"
    target = f"{ROOT / 'tests' / 'integration' / '_batch_agent.py'}:async_only"
    summary = await arun_batch(tasks, target, out, concurrency=4, progress=False)
    assert summary.done == 12 and summary.failed == 0 and summary.by_stop_reason == {"done": 12}
    check_results(out, sorted(f"a{i}" for i in range(12)))
    again = await arun_batch(tasks, target, out, progress=False)
    assert again.ran == 0 and again.skipped == 12


class OtlpHttpReceiver(HttpReceiver):
    """``POST /v1/traces`` and ``/v1/metrics`` (OTLP/HTTP protobuf) on 127.0.0.1: spans as HttpReceiver keeps
    them, and the histogram points received."""

    def __init__(self) -> None:
        self.points: list[tuple[str, dict[str, Any], tuple[int, int], float, int]] = []
        super().__init__()

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        if path != "/v1/metrics":
            return super().answer(path, headers, body)
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        req = metrics_service_pb2.ExportMetricsServiceRequest()
        req.ParseFromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for dp in m.histogram.data_points:
                        attrs = {a.key: a.value.string_value for a in dp.attributes}
                        at = (dp.start_time_unix_nano, dp.time_unix_nano)
                        self.points.append((m.name, attrs, at, dp.sum, dp.count))
        return otlp_ok(metrics_service_pb2.ExportMetricsServiceResponse())

    def latest(self, name: str, **match: str) -> tuple[float, int]:
        """Sum and count of the last point of every series of ``name`` whose attributes match (a series: its
        attributes and its start time, which differs between processes: cumulative points of each)."""
        last: dict[tuple[Any, ...], tuple[int, float, int]] = {}
        for metric, attrs, (start, at), total, count in self.points:
            if metric == name and all(attrs.get(k) == v for k, v in match.items()):
                key = (start, *sorted(attrs.items()))
                if key not in last or at >= last[key][0]:
                    last[key] = (at, total, count)
        return sum(v[1] for v in last.values()), sum(v[2] for v in last.values())


def test_otlp_metrics_push_the_genai_client_metrics_of_every_run(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 20)
    receiver = OtlpHttpReceiver()
    try:
        cmd = batch_cmd(
            str(tasks), "--agent", AGENT, "--out", str(out), "--otlp", receiver.url, "--otlp-metrics"
        )
        done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        receiver.close()
    records = lines(out)
    total, count = receiver.latest("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    assert total == sum(r["usage"]["input_tokens"] for r in records) == 20 * 200
    assert count == sum(r["llm_calls"] for r in records) == 40
