"""The demo and the examples against a real model: SmolLM2-135M served by llama-cpp-python on 127.0.0.1.

Opt-in (``pytest -m real_model``; the default addopts skip it). The server comes from
``LOOPLET_REAL_MODEL_URL`` (e.g. ``http://127.0.0.1:8765/v1``); without it the test starts
``tools/real_model_server.sh serve`` itself when ``bench/.venvs/llama`` is built, and skips otherwise::

    tools/real_model_server.sh install        # once, ~10-40 minutes on 2 cores
    .venv/bin/python -m pytest -m real_model tests/e2e/test_real_model.py -v

A 135M model answers badly and oddly (wrong tools, bad arguments, no tool call at all), and its server
rejects an assistant message whose content is null. So the test checks structure, never wording: every
run ends cleanly with a stop reason that fits what happened, every tool call in the transcript is
answered, and the telemetry is complete (one run span, a chat span per LLM call, a tool span per step,
every span ended, metrics that add up to the run's totals).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.real_model

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tools" / "real_model_server.sh"
VENV = ROOT / "bench" / ".venvs" / "llama"
MODEL = "smollm2-135m"
ALLOWED = {"done", "max_steps", "llm_error"}  # a bad model may do any of these; never hook_error or a crash


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    url = os.environ.get("LOOPLET_REAL_MODEL_URL")
    if url:
        if not _up(url):
            pytest.fail(f"LOOPLET_REAL_MODEL_URL={url} does not answer GET /models")
        yield url
        return
    if not (VENV / "bin" / "python").exists():
        pytest.skip(
            "no real model server: run tools/real_model_server.sh install (builds llama-cpp-python) "
            "or set LOOPLET_REAL_MODEL_URL"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(ROOT / "bench" / ".venvs" / "llama-server.log", "w")
    proc = subprocess.Popen(
        ["bash", str(SERVER), "serve"],
        env={**os.environ, "LOOPLET_REAL_MODEL_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while not _up(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the model server did not come up; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def telemetry():
    """Real OTel SDK (in-memory exporter, every span start/end tracked) and a fresh Prometheus registry."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from looplet.telemetry.metrics import MetricsHook
    from looplet.telemetry.tracing import TracingHook

    class Open(SpanProcessor):
        def __init__(self) -> None:
            self.open: set[int] = set()

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.open.add(span.context.span_id)

        def on_end(self, span: Any) -> None:
            self.open.discard(span.context.span_id)

    exporter, tracker, provider = InMemorySpanExporter(), Open(), TracerProvider()
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    ns = SimpleNamespace(
        exporter=exporter,
        tracker=tracker,
        registry=registry,
        hooks=[TracingHook(provider, capture_content=True), MetricsHook(registry)],
    )
    yield ns
    provider.shutdown()


def backend(url: str, tool_choice: str) -> Any:
    """``"auto"`` is what the examples send (this model then never calls a tool). ``"forced"`` names a tool
    in ``tool_choice`` every turn (the server accepts only "auto" or a named function): the first tool
    twice, then ``done``. The server's grammar then makes a call with schema-shaped arguments, so the tool
    path (steps, tool spans, the done tool, max_steps) is exercised with a real model too."""
    from looplet.backends.openai import OpenAIBackend

    def choice(messages: Any, tools: Any) -> dict[str, Any]:
        if tool_choice == "auto":
            return {}
        names = [t["name"] for t in tools or () if t["name"] != "done"] or ["done"]
        answered = sum(1 for m in messages if m.get("role") == "tool")
        name = names[0] if answered < 2 else "done"
        return {"tool_choice": {"type": "function", "function": {"name": name}}}

    class Backend(OpenAIBackend):
        def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
            return super().generate(messages, tools=tools, **options, **choice(messages, tools))

        async def agenerate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
            return await super().agenerate(messages, tools=tools, **options, **choice(messages, tools))

    return Backend(model=MODEL, base_url=url, api_key="local", timeout=120)


def agents(tmp: Path) -> dict[str, tuple[dict[str, Any], Any]]:
    """name -> (the agent's llm-less parts, its task), built by the demo's and the examples' own factories."""
    from looplet import demo
    from looplet.examples import coding_agent, data_agent, hello_world

    _, demo_tools, demo_config = demo.build(latency_s=0.0)
    coding = coding_agent.agent(scripted=True, workspace=str(tmp / "ws"))
    data = data_agent.agent(scripted=True, folder=str(tmp / "data"))
    return {
        "demo": ({"tools": demo_tools, "config": demo_config}, demo.TASK),
        "hello_world": (hello_world.agent(scripted=True), hello_world.TASK),
        "coding_agent": (coding, {"goal": coding_agent.TASK}),
        "data_agent": (data, data_agent.TASK),
    }


def check_run(steps: list[Any], result: Any, state: Any, t: Any, max_steps: int) -> None:
    from looplet.telemetry import names as N

    # a stop reason that fits what happened
    assert result.stop_reason in ALLOWED or result.stop_reason.startswith(
        ("hook_stop:", "awaiting_approval")
    ), (result.stop_reason, result.error)
    if result.stop_reason == "done":
        assert steps and steps[-1].tool_call.tool == "done" and steps[-1].ok
    elif result.stop_reason == "max_steps":
        assert len(steps) == max_steps
    elif result.stop_reason == "llm_error":
        assert result.error, "an llm_error says why"
    # nothing lost: every call answered, steps in order
    from tests.reliability.test_llm_faults import assert_nothing_lost

    assert_nothing_lost(steps, result, state)
    # complete telemetry
    assert not t.tracker.open, "a span was left open"
    spans = t.exporter.get_finished_spans()
    runs = [s for s in spans if s.name.startswith("invoke_agent")]
    chats = [s for s in spans if s.name.startswith("chat")]
    tools = [s for s in spans if s.name.startswith("execute_tool")]
    assert len(runs) == 1 and runs[0].context.trace_id == int(result.trace_id, 16)
    assert len(chats) >= result.llm_calls >= (1 if steps else 0)
    assert len(tools) == len([s for s in steps if s.tool_result.error_kind != "not_run"])
    ids = {s.context.span_id for s in spans}
    assert all(int(s.span_id, 16) in ids for s in steps if s.span_id)
    assert {c.attributes.get("gen_ai.request.model") for c in chats} == {MODEL}
    ok_chats = [c for c in chats if not c.attributes.get("error.type")]
    assert len(ok_chats) == result.llm_calls
    assert (
        sum(c.attributes.get("gen_ai.usage.input_tokens", 0) for c in ok_chats) == result.usage.input_tokens
    )
    r = t.registry

    def total(metric: str, **labels: str) -> float:
        return sum(
            s.value
            for m in r.collect()
            for s in m.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("looplet_steps_total") == len(steps)
    assert total("looplet_runs_total") == 1
    assert total("looplet_tokens_total", type="input") == result.usage.input_tokens
    assert total("looplet_tokens_total", type="output") == result.usage.output_tokens
    assert total("gen_ai_client_operation_duration_seconds_count") == len(chats)
    assert N  # the names table is where the span and metric names above come from


@pytest.mark.parametrize("name", ["demo", "hello_world", "coding_agent", "data_agent"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("tool_choice", ["auto", "forced"])
def test_the_demo_and_examples_end_cleanly_with_complete_telemetry(
    tool_choice, name, mode, model_url, telemetry, tmp_path
):
    from looplet import DefaultState, LoopConfig
    from tests.unit._harness import run

    parts, task = agents(tmp_path)[name]
    base = parts.get("config") or LoopConfig()
    max_steps = 4
    config = LoopConfig(
        max_steps=max_steps,
        max_tokens=96,
        temperature=0.0,
        system_prompt=base.system_prompt,
        agent_name=base.agent_name,
        llm_retries=1,
        llm_backoff_s=0.1,
        max_malformed=1,
    )
    state = DefaultState(max_steps=max_steps)
    llm = backend(model_url, tool_choice)
    try:
        steps, result = run(
            mode,
            llm=llm,
            tools=parts["tools"],
            task=task,
            config=config,
            state=state,
            hooks=list(parts.get("hooks") or ()) + telemetry.hooks,
        )
    finally:
        llm.close()
    print(
        f"\n{name} [{mode}, tool_choice={tool_choice}]: stop={result.stop_reason} steps={len(steps)} llm_calls={result.llm_calls} "
        f"tools={[s.tool_call.tool for s in steps]} tokens={result.usage.total_tokens} "
        f"{(result.error or '')[:120]}"
    )
    check_run(steps, result, state, telemetry, max_steps)


def test_an_example_cli_against_the_real_model_exits_cleanly(model_url, tmp_path):
    env = {**os.environ, "OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "local", "OPENAI_MODEL": MODEL}
    proc = subprocess.run(
        [sys.executable, "-m", "looplet.examples.hello_world", "--max-steps", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    print(proc.stdout[-600:], proc.stderr[-600:])
    assert proc.returncode in (0, 1), proc.stderr  # 0: done; 1: the run ended otherwise (said in the summary)
    assert "Traceback" not in proc.stderr
