"""The ten mistakes a newcomer is most likely to make in the first hour. Each must end in a message that says
what happened and what to do, and Ctrl-C must leave a consistent trajectory and checkpoint on disk."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from looplet import (
    DefaultState,
    LoopConfig,
    MockLLMBackend,
    OpenAIBackend,
    ProvenanceSink,
    async_composable_loop,
    composable_loop,
    tool,
    tools_from,
)
from tests.fakeserver import FakeLLMServer, text
from tests.integration._otlp_receiver import refused_url, reset_global_telemetry
from tests.unit._harness import MODES, run

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_", "TRACEPARENT"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# 1. a missing extra ---------------------------------------------------------------------------------------------

HIDE = textwrap.dedent("""
    import sys
    HIDDEN = set(sys.argv[1].split(","))
    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Hide())
    from looplet import MissingExtra
    def attempt(label, fn):
        try:
            fn()
        except MissingExtra as exc:
            print(f"{label}: {exc} [extra={exc.extra}]")
        else:
            print(f"{label}: no error")
    import looplet
    attempt("TracingHook", lambda: looplet.TracingHook())
    attempt("MetricsHook", lambda: looplet.MetricsHook())
    attempt("LoggingHook", lambda: looplet.LoggingHook())
    attempt("OpenAIBackend", lambda: looplet.OpenAIBackend(model="m", api_key="k"))
    attempt("AnthropicBackend", lambda: looplet.AnthropicBackend(model="m", api_key="k"))
    from looplet.telemetry import configure
    attempt("configure", lambda: configure(json_logs=False))
""")


def test_a_missing_extra_names_the_pip_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HIDE, "opentelemetry,prometheus_client,structlog,openai,anthropic"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines())
    expected = {
        "TracingHook": "otel",
        "MetricsHook": "prometheus",
        "LoggingHook": "logs",
        "OpenAIBackend": "openai",
        "AnthropicBackend": "anthropic",
        "configure": "otel",
    }
    for label, extra in expected.items():
        assert f"install it with: pip install 'looplet[{extra}]' [extra={extra}]" in lines[label], lines[
            label
        ]
    assert "import looplet" not in proc.stderr  # the core itself never needed them


# 2. no API key ---------------------------------------------------------------------------------------------------


def test_no_api_key_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    with pytest.raises(ValueError, match=r"OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-\.\.\."):
        OpenAIBackend.from_env()
    monkeypatch.delenv("OPENAI_MODEL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with pytest.raises(ValueError, match="OPENAI_MODEL is not set: export OPENAI_MODEL="):
        OpenAIBackend.from_env()


# 3. a wrong base URL ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_wrong_base_url_ends_the_run_with_the_url_and_the_fix(mode: str) -> None:
    url = refused_url() + "/v1"
    llm = OpenAIBackend(base_url=url, api_key="k", model="gpt-4o-mini")
    steps, result = run(
        mode,
        llm=llm,
        tools=tools_from([]),
        task={"goal": "x"},
        config=LoopConfig(llm_retries=1, llm_backoff_s=0.01),
    )
    assert steps == [] and result.stop_reason == "llm_error"
    assert f"connection to openai at {url}" in result.error and "failed" in result.error
    assert "check base_url and that the server is up" in result.error


# 4. a model without tool calling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_model_that_never_calls_tools_is_named_as_the_problem(mode: str) -> None:
    with FakeLLMServer() as server:
        server.script(*[text("I would search the docs for that, then answer.") for _ in range(4)])
        llm = OpenAIBackend(base_url=server.openai_url, api_key="k", model="tinyllama")
        steps, result = run(mode, llm=llm, tools=tools_from([]), task={"goal": "x"})
        asked = len(server.requests)
    assert steps == [] and result.stop_reason == "llm_error" and asked == 2  # fed back once, then given up
    assert "without calling a tool" in result.error and "I would search the docs" in result.error
    assert "may not support tool calls" in result.error and "use a model with tool" in result.error


# 5. a tool returning something that is not JSON ------------------------------------------------------------------


class Thing:
    pass


@tool(description="Return a Python object the model cannot read.")
def make_thing(kind: str) -> Any:
    return {"set": {1, 2}, "object": Thing(), "bytes": b"\x00\x01"}[kind]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["set", "object", "bytes"])
def test_a_tool_returning_a_non_json_object_is_explained_to_model_and_user(mode: str, kind: str) -> None:
    llm = MockLLMBackend(
        [
            json.dumps({"tool": "make_thing", "args": {"kind": kind}}),
            '{"tool": "done", "args": {"answer": "recovered"}}',
        ]
    )
    state = DefaultState()
    steps, result = run(mode, llm=llm, tools=tools_from([make_thing]), task={"goal": "x"}, state=state)
    res = steps[0].tool_result
    assert res.error_kind == "unserializable_result"
    assert "cannot be sent to the model" in res.error
    assert "Tools should return str, numbers, lists or dicts of those" in res.error
    tool_msg = next(m for m in state.transcript if m["role"] == "tool")
    assert tool_msg["content"].startswith("ERROR: ") and "cannot be sent to the model" in tool_msg["content"]
    assert result.stop_reason == "done"  # the run goes on; the model saw the error


# 6. a hook with a wrong signature ----------------------------------------------------------------------------------


class ForgotTheState:
    def pre_dispatch(self, tool_call):
        return None


class WrongWrap:
    def wrap_tool(self, tool_call):
        return None


@pytest.mark.parametrize("mode", MODES)
def test_a_hook_with_a_wrong_signature_fails_before_the_run_with_the_fix(mode: str) -> None:
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "a"}}'])
    with pytest.raises(TypeError) as info:
        if mode == "sync":
            composable_loop(llm=llm, tools=tools_from([]), task={"goal": "x"}, hooks=[ForgotTheState()])
        else:
            async_composable_loop(llm=llm, tools=tools_from([]), task={"goal": "x"}, hooks=[ForgotTheState()])
    msg = str(info.value)
    assert "hook ForgotTheState.pre_dispatch(tool_call) cannot take the arguments the loop passes" in msg
    assert "Change it to `def pre_dispatch(self, state, session_log, tool_call, step_num)`" in msg
    assert llm.calls == 0
    with pytest.raises(TypeError, match=r"WrongWrap\.wrap_tool.*\(call, call_next\)"):
        composable_loop(llm=llm, tools=tools_from([]), task={"goal": "x"}, hooks=[WrongWrap()])


# 7. telemetry configured twice --------------------------------------------------------------------------------------


def test_configuring_telemetry_twice_keeps_the_first_and_says_how_to_change_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looplet.telemetry import configure

    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_global_telemetry()
    try:
        first = configure(service_name="agent-a", json_logs=False)
        with caplog.at_level(logging.WARNING, logger="looplet"):
            again = configure(service_name="agent-a", json_logs=False)  # the same call: silent
            assert again is first and not caplog.records
            second = configure(service_name="agent-b", json_logs=False)
        assert second is first
        assert [type(h).__name__ for h in second.hooks] == [type(h).__name__ for h in first.hooks]
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert "configure() was called again with other arguments; the first set-up stays in force" in warning
        assert "call shutdown() first to change it" in warning
        first.shutdown()
        third = configure(service_name="agent-b", json_logs=False)
        assert third is not first  # after shutdown() a new set-up is made
    finally:
        reset_global_telemetry()


# 8. a port in use ---------------------------------------------------------------------------------------------------


def test_a_metrics_port_in_use_names_the_port_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from looplet.telemetry import configure, serve_metrics

    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_global_telemetry()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            with pytest.raises(OSError) as info:
                serve_metrics(port)
            assert f"cannot serve metrics on 127.0.0.1:{port}" in str(info.value)
            assert f"is another process using port {port}? pick another" in str(info.value)
            with pytest.raises(OSError, match="pick another with metrics_port="):
                configure(metrics_port=port, json_logs=False)
        session = configure(metrics_port=0, json_logs=False)  # nothing was left half set up
        assert session.metrics_port and session.metrics_port != port
    finally:
        reset_global_telemetry()


# 9. an unwritable trace folder --------------------------------------------------------------------------------------


def test_an_unwritable_trace_dir_is_refused_up_front_by_the_commands(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "traces")
    for argv in (
        [
            "-m",
            "looplet.examples.coding_agent",
            "--scripted",
            "--workspace",
            str(tmp_path / "w"),
            "--trace",
            bad,
        ],
        ["-m", "looplet.examples.data_agent", "--scripted", "--dir", str(tmp_path / "d"), "--trace", bad],
        ["-m", "looplet", "run", "looplet.examples.hello_world:agent", "hi", "--trace-dir", bad],
    ):
        env = _env(OPENAI_API_KEY="k", OPENAI_MODEL="m", OPENAI_BASE_URL=refused_url() + "/v1")
        proc = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        assert f"{bad}: cannot write there (Not a directory)" in proc.stderr
        assert "choose a folder you can write to" in proc.stderr
        assert "#1" not in proc.stdout  # refused before the first step
    assert not (tmp_path / "w" / "hello.py").exists()


def test_an_unwritable_trace_dir_never_breaks_a_library_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sink = ProvenanceSink(blocker / "traces")
    with caplog.at_level(logging.ERROR, logger="looplet.provenance"):
        steps, result = run(
            "sync",
            llm=MockLLMBackend(['{"tool": "done", "args": {"answer": "a"}}']),
            tools=tools_from([]),
            task={"goal": "x"},
            hooks=[sink.trajectory_hook()],
        )
    assert result.stop_reason == "done"
    logged = " ".join(r.getMessage() + str(r.exc_info[1] if r.exc_info else "") for r in caplog.records)
    assert str(blocker / "traces") in logged and "Not a directory" in logged


# 10. Ctrl-C mid-run ---------------------------------------------------------------------------------------------------


def _interrupt_after(argv: list[str], marker: str, **popen: Any) -> tuple[int, str, str]:
    """Start ``python argv``, send SIGINT once a stdout line starts with ``marker``; (code, stdout, stderr).

    No timing is assumed: the child's stdin is a pipe left open, so a child that asks on the terminal
    (``--ask``) waits there however late the signal comes; the deadlines only bound a hung child."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
        **popen,
    )
    assert proc.stdout is not None and proc.stdin is not None
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(marker):
                proc.send_signal(signal.SIGINT)
                break
        proc.wait(timeout=120)  # stdin stays open until the child is gone (communicate() would close it)
        out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    return proc.returncode, "".join(seen) + out, err


def _assert_transcript_consistent(transcript: list[dict[str, Any]], pending: Any) -> None:
    """Every tool call in the transcript has exactly one result, and every result answers a call."""
    calls = [c["id"] for m in transcript if m.get("role") == "assistant" for c in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in transcript if m.get("role") == "tool"]
    open_ids = {c["id"] for c in (pending or {}).get("calls", ())} if isinstance(pending, dict) else set()
    assert sorted(results) == sorted(c for c in calls if c not in open_ids)
    assert len(set(results)) == len(results)


def test_ctrl_c_leaves_a_consistent_checkpoint_and_trajectory_and_resume_finishes(tmp_path: Path) -> None:
    folder, traces = tmp_path / "run", tmp_path / "traces"
    code, out, err = _interrupt_after(
        [
            "-m",
            "looplet.examples.data_agent",
            "--scripted",
            "--latency",
            "0.25",
            "--dir",
            str(folder),
            "--trace",
            str(traces),
            "--ask",  # the run cannot finish before the signal: it would wait at the approval prompt
        ],
        "#3",
    )
    assert code == 130, err
    assert "Traceback" not in err
    assert "interrupted: the run ended as 'cancelled'" in err and "--resume" in err
    assert "cancelled: " in out  # the summary of what was done is still printed
    printed = [ln.split()[0] for ln in out.splitlines() if ln.startswith("#")]

    cp = json.loads((folder / "checkpoint" / "checkpoint.json").read_text())
    assert cp["stop_reason"] == "cancelled"
    assert [f"#{s['number']}" for s in cp["steps"]] == printed  # every step the user saw, and no other
    _assert_transcript_consistent(cp["transcript"], cp.get("pending"))

    run_dir = traces  # one run: its files in the trace folder itself
    traj = json.loads((run_dir / "trajectory.json").read_text())
    assert traj["stop_reason"] == "cancelled"
    # Ctrl-C inside the loop (the model call) or while the step line was printed (the run is then closed)
    assert "KeyboardInterrupt" in traj["error"] or "the caller closed the loop" in traj["error"]
    assert [s["number"] for s in traj["steps"]] == [s["number"] for s in cp["steps"]]
    for s in traj["steps"]:  # every step file the trajectory lists is on disk and agrees with the checkpoint
        on_disk = json.loads((run_dir / s["file"]).read_text())
        assert on_disk["tool_call"]["id"] == cp["steps"][s["number"] - 1]["tool_call"]["id"]

    proc = subprocess.run(
        [sys.executable, "-m", "looplet.examples.data_agent", "--scripted", "--dir", str(folder), "--resume"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 3, proc.stderr  # it carries on, up to the approval the script asks for
    cp = json.loads((folder / "checkpoint" / "checkpoint.json").read_text())
    ids = [s["tool_call"]["id"] for s in cp["steps"] if s["tool_result"]["error_kind"] != "not_run"]
    assert ids == [f"call_{i:02d}" for i in range(1, 6)]  # nothing redone, nothing skipped


CTRL_C_AGENT = textwrap.dedent("""
    import sys
    from looplet import LoopConfig, MockLLMBackend, tool

    @tool(description="Count.")
    def count(n: int) -> int:
        if n >= 2:
            sys.stdin.readline()  # waits for the test's Ctrl-C, however late it comes (stdin stays open)
        return n + 1

    def build():
        script = [f'{{"tool": "count", "args": {{"n": {i}}}}}' for i in range(50)]
        return {"llm": MockLLMBackend(script, model="gpt-4o-mini", usage="estimate", latency_s=0.2),
                "tools": [count], "config": LoopConfig(max_steps=60, agent_name="counter")}
""")


def test_ctrl_c_in_looplet_run_flushes_the_trajectory_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(CTRL_C_AGENT)
    traces = tmp_path / "traces"
    code, out, err = _interrupt_after(
        [
            "-m",
            "looplet",
            "run",
            f"{tmp_path / 'counter.py'}:build",
            "count",
            "--trace-dir",
            str(traces),
            "--log-file",
            str(tmp_path / "log.jsonl"),
        ],
        "#2",
    )
    assert code == 130, err
    assert "Traceback" not in err and "interrupted (Ctrl-C): the run ended as 'cancelled'" in err
    assert "cancelled: " in out
    printed = len([ln for ln in out.splitlines() if ln.startswith("#")])
    run_dir = traces  # one run: its files in the trace folder itself
    traj = json.loads((run_dir / "trajectory.json").read_text())
    assert traj["stop_reason"] == "cancelled" and len(traj["steps"]) == printed
    ends = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines() if '"run.end"' in ln]
    assert (
        ends and ends[-1].get("stop_reason") == "cancelled"
    )  # the log line of the run's end was flushed too


class _CtrlCAtStep:
    """Raises KeyboardInterrupt in on_step of step ``n``: Ctrl-C landing between two hooks of one step."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step(self, state: Any, step: Any) -> None:
        if step.number == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_between_two_hooks_of_a_step_keeps_trajectory_and_checkpoint_equal(tmp_path: Path) -> None:
    from looplet.control import CheckpointHook

    @tool(description="Count.")
    def count(n: int) -> int:
        return n

    sink = ProvenanceSink(tmp_path / "traces")
    llm = MockLLMBackend([json.dumps({"tool": "count", "args": {"n": i}}) for i in range(10)])
    state = DefaultState()
    with pytest.raises(KeyboardInterrupt):
        for _ in composable_loop(
            llm=llm,
            tools=tools_from([count]),
            task={"goal": "x"},
            state=state,
            hooks=[CheckpointHook(tmp_path / "cp"), _CtrlCAtStep(3), sink.trajectory_hook()],
        ):
            pass
    cp = json.loads((tmp_path / "cp" / "checkpoint.json").read_text())
    run_dir = tmp_path / "traces"  # one run: its files in the sink's folder itself
    traj = json.loads((run_dir / "trajectory.json").read_text())
    assert state.result is not None and len(state.result.steps) == 3
    assert cp["stop_reason"] == traj["stop_reason"] == "cancelled"
    assert len(cp["steps"]) == traj["step_count"] == 3
