"""``looplet batch --engine ray`` on a real two-node Ray cluster made on this machine
(``ray.cluster_utils.Cluster``: a head and a second node, one CPU each, small object stores), started once
for the module. The drivers are real ``looplet batch`` processes connecting with ``--address``; spans go to
a real OTLP receiver."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from looplet.batch import run_batch
from tests.integration._otlp_receiver import HttpReceiver
from tests.integration.test_batch import (
    AGENT,
    OtlpHttpReceiver,
    batch_cmd,
    check_one_trace,
    check_rerun_skips_all,
    check_results,
    env,
    kill_halfway,
    lines,
    write_tasks,
)

ray = pytest.importorskip("ray")

STORE = 80 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False},
    )
    try:
        c.add_node(num_cpus=1, object_store_memory=STORE)
        c.wait_for_nodes()
        yield str(c.address)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()  # type: ignore[no-untyped-call]


def test_200_tasks_on_two_nodes_once_each_in_one_trace_and_a_rerun_skips_them(
    cluster: str, tmp_path: Path
) -> None:
    tasks, out, traces = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl", tmp_path / "traces"
    ids = write_tasks(tasks, 200)
    receiver = OtlpHttpReceiver()
    cmd = batch_cmd(str(tasks), "--agent", AGENT, "--out", str(out), "--engine", "ray", "--address", cluster)
    try:
        done = subprocess.run(
            [*cmd, "--otlp", receiver.url, "--otlp-metrics", "--trace-dir", str(traces)],
            env=env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        spans = receiver.wait_for(lambda s: sum(x["name"].startswith("invoke") for x in s) >= 200, timeout=60)
    finally:
        receiver.close()

    records = check_results(out, ids, traces)
    nodes = {n["NodeID"] for n in _nodes(cluster)}
    assert len(nodes) == 2
    assert {r["node"] for r in records} == nodes  # both nodes ran tasks
    assert len({r["pid"] for r in records}) >= 2  # in more than one worker process
    check_one_trace(spans, records, "ray")
    # --otlp-metrics: each worker process pushed its runs' GenAI metrics before it could be stopped
    total, count = receiver.latest("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    assert (total, count) == (200 * 200, 400)
    check_rerun_skips_all(cmd, out, 200)


def _nodes(address: str) -> list[dict[str, object]]:
    ray.init(address=address, log_to_driver=False)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


def test_driver_killed_halfway_then_rerun_every_task_once(cluster: str, tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 200)
    cmd = batch_cmd(
        str(tasks), "--agent", AGENT, "--out", str(out), "--engine", "ray", "--address", cluster, "--quiet"
    )
    first = kill_halfway(cmd, out, 300)

    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(out)
    assert sorted(r["id"] for r in records) == ids
    assert records[: len(first)] == first


def test_a_worker_that_dies_is_retried_once_then_written_as_failed(cluster: str, tmp_path: Path) -> None:
    """Task a kills its worker on the first attempt only (Ray retries it and it succeeds); task b kills it
    every time (written as failed, with the reason); task c is unaffected."""
    marker_a, marker_b = tmp_path / "a.died", tmp_path / "b.died"
    tasks = [
        {"id": "a", "task": {"goal": "crash once", "crash": {"marker": str(marker_a), "always": False}}},
        {"id": "b", "task": {"goal": "crash always", "crash": {"marker": str(marker_b), "always": True}}},
        {"id": "c", "task": {"goal": "echo"}},
    ]
    out = tmp_path / "results.jsonl"
    root = str(Path(__file__).resolve().parents[2])
    ray.init(address=cluster, log_to_driver=False)
    try:
        summary = run_batch(
            tasks,
            f"{root}/tests/integration/_batch_agent.py:per_task",
            str(out),
            engine="ray",
            progress=False,
        )
    finally:
        ray.shutdown()
    by_id = {r["id"]: r for r in lines(out)}
    assert sorted(by_id) == ["a", "b", "c"]
    assert by_id["a"]["status"] == "ok" and by_id["a"]["stop_reason"] == "done" and marker_a.exists()
    assert by_id["b"]["status"] == "failed"
    assert "WorkerCrashedError" in by_id["b"]["error"] or "died" in by_id["b"]["error"].lower()
    assert by_id["c"]["status"] == "ok"
    assert summary.failed == 1 and summary.by_stop_reason == {"done": 2, "failed": 1}


def test_without_an_address_a_local_ray_instance_runs_it_and_otel_variables_reach_the_workers(
    tmp_path: Path,
) -> None:
    """No --address: a Ray instance of the driver's own; no --otlp: the standard OTEL_* variable, which the
    workers inherit, is enough for every run's spans to arrive in the batch's trace."""
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 10)
    receiver = HttpReceiver()
    try:
        done = subprocess.run(
            batch_cmd(
                str(tasks), "--agent", AGENT, "--out", str(out), "--engine", "ray", "--cpus-per-run", "0.5"
            ),
            env=env(RAY_ADDRESS="", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        spans = receiver.wait_for(lambda s: sum(x["name"].startswith("invoke") for x in s) >= 10, timeout=60)
    finally:
        receiver.close()
    records = check_results(out, ids)
    check_one_trace(spans, records, "ray")
    assert "engine ray" in done.stderr
