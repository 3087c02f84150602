"""configure(provenance_dir=) keeps every run of a loop that outruns the folder writer.

A run's folder is written when its last span arrives, in one go, on the batch processor's thread; a model
that answers at once ends spans faster than that for a while. With the SDK's default queue (2,048 spans)
the processor dropped spans of the later runs, and those runs were never written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import LoopConfig, MockLLMBackend, run_loop, tool, tools_from
from looplet.provenance.format import run_folders
from looplet.telemetry import configure
from looplet.types import Usage
from tests.integration._otlp_receiver import reset_global_telemetry


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return key.upper()


@pytest.fixture(autouse=True)
def _fresh_global_telemetry() -> Iterator[None]:
    """configure() sets the process's TracerProvider: forget it after, as the other configure() tests do."""
    reset_global_telemetry()
    yield
    reset_global_telemetry()


def test_every_run_of_a_fast_loop_is_written(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    session = configure(
        service_name="prov-fast",
        json_logs=False,
        provenance_dir=str(traces),
        span_exporter=InMemorySpanExporter(),
    )
    runs, steps = 10, 100
    try:
        for r in range(runs):
            script = [f'{{"tool": "lookup", "args": {{"key": "k{i}"}}}}' for i in range(steps)]
            llm = MockLLMBackend([*script, '{"tool": "done", "args": {"answer": "ok"}}'], usage=Usage(10, 2))
            config = LoopConfig(max_steps=steps + 1, agent_name=f"fast{r}")
            result = run_loop(
                llm, {"goal": "look up"}, tools_from([lookup]), hooks=session.hooks, config=config
            )
            assert result.stop_reason == "done"
    finally:
        session.shutdown(timeout_s=10)
    folders = run_folders(traces)
    assert len(folders) == runs
    for folder in folders:
        data = json.loads((folder / "trajectory.json").read_text())
        assert data["step_count"] == steps + 1 and len(list((folder / "steps").iterdir())) == steps + 1
