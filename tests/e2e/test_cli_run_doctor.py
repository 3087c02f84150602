"""``looplet run``, ``looplet doctor`` and the progress output, end to end: real factories on disk, the real
openai client against a fake server, real telemetry (OTLP receiver, /metrics, log file, trajectory)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from looplet import cli_run, doctor
from looplet.progress import StepPrinter, bar, format_cost
from looplet.types import RunResult, Step, ToolCall, ToolResult, Usage
from tests.fakeserver import FakeLLMServer, tool_call
from tests.integration._otlp_receiver import HttpReceiver, refused_url, reset_global_telemetry

ROOT = Path(__file__).resolve().parents[2]
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

AGENT = textwrap.dedent("""
    import json, urllib.request
    from types import SimpleNamespace
    from looplet import LoopConfig, MockLLMBackend, tool

    SEEN = {}

    @tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    @tool(description="Read this process's own /metrics while the run is going.")
    def scrape() -> str:
        from looplet.telemetry.setup import current_session
        port = current_session().metrics_port
        SEEN["metrics"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return "ok"

    def _llm(*script):
        return MockLLMBackend(list(script), model="gpt-4o-mini", usage="estimate")

    def build():
        return {"llm": _llm('{"tool": "add", "args": {"a": 2, "b": 3}}', '{"tool": "done", "args": {"answer": "5"}}'),
                "tools": [add], "config": LoopConfig(agent_name="adder")}

    def with_metrics():
        return {"llm": _llm('{"tool": "scrape", "args": {}}', '{"tool": "done", "args": {"answer": "ok"}}'),
                "tools": [scrape], "config": LoopConfig(agent_name="scraper")}

    def as_object():
        return SimpleNamespace(llm=_llm('{"tool": "done", "args": {"answer": "obj"}}'), tools=[add])

    def endless():
        return {"llm": MockLLMBackend(['{"tool": "add", "args": {"a": 1, "b": 1}}'], cycle=True), "tools": [add]}

    def async_only():
        inner = _llm('{"tool": "add", "args": {"a": 1, "b": 2}}', '{"tool": "done", "args": {"answer": "3"}}')
        class AsyncOnly:
            model = "gpt-4o-mini"
            async def agenerate(self, messages, *, tools=None, **options):
                return await inner.agenerate(messages, tools=tools, **options)
        return {"llm": AsyncOnly(), "tools": [add]}

    def no_tools():
        return {"llm": _llm("{}")}

    def broken():
        raise RuntimeError("database is down")

    def needs_arg(path):
        return {}

    NOT_CALLABLE = 3
""")


@pytest.fixture
def agent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "my_agent.py").write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "TRACEPARENT"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    sys.modules.pop("my_agent", None)
    reset_global_telemetry()


def test_run_a_factory_module_prints_steps_totals_and_result(
    agent_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_run.main(["my_agent:build", "add 2 and 3", "--json"]) == 0
    out = capsys.readouterr().out
    assert "#1 ✓ add(a=2, b=3) → 5" in out and "Σ " in out and " tok $" in out
    assert "done: 2 steps, 2 LLM calls" in out and "answer: 5" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stop_reason"] == "done" and result["final_output"] == "5" and result["steps"] == 2


def test_run_by_file_path_with_an_object_factory(
    agent_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)  # the file is found by its path, not on sys.path
    assert cli_run.main([f"{agent_dir / 'my_agent.py'}:as_object", '{"goal": "x", "limit": 3}']) == 0
    assert "answer: obj" in capsys.readouterr().out


def test_run_an_async_only_backend_on_the_async_loop(
    agent_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_run.main(["my_agent:async_only", "add"]) == 0
    assert "#1 ✓ add(a=1, b=2) → 3" in capsys.readouterr().out


def test_run_exits_1_when_the_run_does_not_finish(
    agent_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_run.main(["my_agent:endless", "loop", "--max-steps", "3", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "max_steps: 3 steps" in out and "#1" not in out  # --quiet: the summary only


def test_run_an_example_on_the_real_client_against_a_local_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeLLMServer() as server:
        server.script(tool_call("greet", {"name": "Grace"}), tool_call("done", {"answer": "Hello, Grace!"}))
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
        assert cli_run.main(["looplet.examples.hello_world:agent", "Greet Grace"]) == 0
        first = server.bodies()[0]
    assert first["messages"][1] == {"role": "user", "content": "Greet Grace"}
    assert "answer: Hello, Grace!" in capsys.readouterr().out


def test_run_with_telemetry_flags(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    receiver = HttpReceiver()
    try:
        code = cli_run.main(
            [
                "my_agent:with_metrics",
                "scrape yourself",
                "--otlp",
                receiver.url,
                "--metrics-port",
                "0",
                "--log-file",
                str(agent_dir / "logs" / "run.jsonl"),
                "--trace-dir",
                str(agent_dir / "traces"),
                "--traceparent",
                TP,
            ]
        )
        assert code == 0
        spans = receiver.wait_for(lambda s: any(x["name"].startswith("invoke_agent") for x in s))
    finally:
        receiver.close()
    captured = capsys.readouterr()
    assert (
        "telemetry: spans → http/protobuf" in captured.err
        and "/metrics (while the run lasts)" in captured.err
    )
    trace_id = TP.split("-")[1]
    assert spans and {s["trace_id"] for s in spans} == {trace_id}  # the run continues the caller's trace
    root = next(s for s in spans if s["name"].startswith("invoke_agent"))
    assert root["parent_span_id"] == TP.split("-")[2]
    assert {"chat gpt-4o-mini", "execute_tool scrape"} <= {s["name"] for s in spans}
    metrics = sys.modules["my_agent"].SEEN["metrics"]  # scraped by the tool while the run was going
    assert "looplet_" in metrics
    lines = [json.loads(ln) for ln in (agent_dir / "logs" / "run.jsonl").read_text().splitlines()]
    assert lines and all(ln.get("trace_id") == trace_id for ln in lines if "run_id" in ln)
    folder = agent_dir / "traces"  # one run: its files in --trace-dir itself
    assert f"trajectory: {folder}" in captured.out
    traj = json.loads((folder / "trajectory.json").read_text())
    assert traj["trace_id"] == trace_id and traj["stop_reason"] == "done"


def test_run_reads_traceparent_from_the_environment(
    agent_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACEPARENT", TP)
    assert cli_run.main(["my_agent:build", "x", "--trace-dir", str(agent_dir / "t"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trace_id"] == TP.split("-")[1]


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


@pytest.mark.parametrize(
    "argv, message",
    [
        (["my_agent", "x"], "expected MODULE:FACTORY"),
        (["nope_agent:build", "x"], "cannot import 'nope_agent': no such module"),
        (["my_agent:bild", "x"], "my_agent has no 'bild'; it defines: as_object, async_only, broken, build"),
        (["my_agent:NOT_CALLABLE", "x"], "is a int, not a function"),
        (["my_agent:no_tools", "x"], "returned dict without tools"),
        (["my_agent:broken", "x"], "my_agent:broken() raised RuntimeError: database is down"),
        (
            ["my_agent:needs_arg", "x"],
            "The factory is called with no arguments; give its parameters defaults",
        ),
        (["missing/agent.py:build", "x"], "no such file: missing/agent.py"),
        (["my_agent:build", "   "], "the task is empty"),
        (["my_agent:build", "{not json"], "the task looks like JSON but is not valid"),
        (["my_agent:build", "x", "--traceparent", "abc"], "--traceparent 'abc' is not a W3C traceparent"),
        (
            ["my_agent:build", "x", "--trace-dir", "my_agent.py/traces"],
            "--trace-dir my_agent.py/traces: cannot write there",
        ),
    ],
)
def test_run_usage_errors_say_what_to_do(
    agent_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli_run.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("looplet run: ") and message in err


def test_run_metrics_port_in_use(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _busy_port() as s:
        port = s.getsockname()[1]
        assert cli_run.main(["my_agent:build", "x", "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert (
        f"--metrics-port {port}: the port is already in use; pick a free one (or --metrics-port 0 for any free port)"
        in err
    )


def test_looplet_command_routes_run_and_doctor() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "looplet", "run", "looplet.examples.hello_world:agent", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "OPENAI_MODEL is not set" in proc.stderr
    assert "--scripted" not in proc.stderr  # a flag of the examples' own command line, not of `looplet run`
    proc = subprocess.run(
        [sys.executable, "-m", "looplet", "doctor", "--offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "extras:" in proc.stdout and "telemetry goes to:" in proc.stdout


# --- doctor -------------------------------------------------------------------------------------------------


def test_doctor_reports_extras_reachability_and_destinations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = refused_url()
    with _busy_port() as listening:
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{listening.getsockname()[1]}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-1234")
        monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", dead)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        code = doctor.main(["--timeout", "0.5"])
    out = capsys.readouterr().out
    assert code == 1  # an endpoint the environment names is down
    assert "✓ openai     openai " in out and "✓ otel " in out
    assert "OpenAI-compatible backend: http://127.0.0.1:" in out and "✓ reachable" in out
    assert f"OTLP span exporter: {dead} [OTEL_EXPORTER_OTLP_ENDPOINT] ✗ UNREACHABLE" in out
    assert "a local collector listens on 4317 (gRPC) / 4318 (HTTP)" in out
    assert f"spans            OTLP http/protobuf to {dead}" in out
    assert "key set; model gpt-4o-mini" in out
    assert "sk-secret-value-1234" not in out  # secrets are never printed


def test_doctor_names_the_pip_command_for_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Hide:
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name == "structlog" or name.startswith("structlog."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    monkeypatch.setattr(sys, "meta_path", [Hide(), *sys.meta_path])
    for name in [m for m in sys.modules if m == "structlog" or m.startswith("structlog.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert doctor.main(["--offline"]) == 0
    out = capsys.readouterr().out
    assert "✗ logs       structlog missing" in out
    assert "for JSON logs (LoggingHook): pip install 'looplet[logs]'" in out
    assert "to install everything missing: pip install 'looplet[logs]'" in out
    assert "spans            not exported: set OTEL_EXPORTER_OTLP_ENDPOINT" in out
    assert "not checked" in out  # --offline: nothing was contacted
    assert doctor.main(["--offline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["extras"]["logs"]["ok"] is False and data["install"] == ["pip install 'looplet[logs]'"]
    assert data["extras"]["otel"]["packages"]["opentelemetry-sdk"]


def test_doctor_grpc_protocol_guess_matches_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert dict(doctor.destinations())["spans"].startswith("OTLP grpc to http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert dict(doctor.destinations())["spans"].startswith("OTLP http/protobuf")


# --- progress -----------------------------------------------------------------------------------------------


def _step(n: int, usage: Usage | None, cost: float | None, error: str | None = None) -> Step:
    return Step(
        n,
        ToolCall("search", {"q": "x"}, f"c{n}"),
        ToolResult(data=None if error else {"hits": [1, 2]}, error=error),
        usage,
        10.0,
        2.0,
        cost,
    )


def test_step_printer_keeps_running_totals_and_never_invents_a_cost() -> None:
    out = io.StringIO()
    p = StepPrinter(out, width=100)
    p.step(_step(1, Usage(100, 20), 0.001))
    p.step(_step(2, None, None))  # a second call of the same answer: no usage of its own
    p.step(_step(3, Usage(50, 5), None, error="boom"))  # tokens of a model without a price
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("Σ 120 tok $0.00100") and lines[1].endswith("Σ 120 tok $0.00100")
    assert lines[2].endswith("Σ 175 tok $?") and "✗ search" in lines[2] and "ERROR: boom" in lines[2]
    assert all(len(ln) <= 100 for ln in lines)
    assert (p.steps, p.errors) == (3, 1)
    result = RunResult(
        "done", [], Usage(150, 25), None, 12.0, final_output="42", trace_id="ab" * 16, llm_calls=2
    )
    text = p.summary(result)
    assert "cost unknown (model not priced)" in text and "answer: 42" in text and "trace_id: abab" in text
    assert format_cost(1.5) == "$1.50" and format_cost(None) == "$?"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPLET_PROGRESS", raising=False)
    out = io.StringIO()
    assert list(bar(range(1000), label="bench", out=out, interval_s=0)) == list(range(1000))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("bench 100/1000 (10%)") and lines[-1].startswith("bench 1000/1000 (100%)")
    assert lines[-1].endswith(" done") and len(lines) == 10  # one line per 10%, then the last one


def test_bar_redraws_one_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPLET_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = _Tty()
    list(bar(iter(range(50)), total=50, label="evals", out=out, interval_s=0))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, redrawn with \r, ended once
    frames = text.split("\r")[1:]
    assert frames[0].startswith("evals [") and " 0/50 " in frames[0]
    assert frames[-1].startswith("evals [" + "#" * 10) and " 50/50 100%" in frames[-1]


def test_bar_without_total_and_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert sum(bar((i for i in range(5)), label="gen", out=out, interval_s=0)) == 10
    assert out.getvalue().splitlines()[-1].startswith("gen 5 done")
    monkeypatch.setenv("LOOPLET_PROGRESS", "off")
    silent = io.StringIO()
    assert list(bar(range(3), out=silent)) == [0, 1, 2] and silent.getvalue() == ""


def test_bar_stops_cleanly_when_the_consumer_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPLET_PROGRESS", raising=False)
    out = io.StringIO()
    for i in bar(range(100), label="x", out=out, interval_s=60):
        if i == 4:
            break
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("x 4/100 (4%)") and last.endswith(
        " stopped"
    )  # how far it got, and that it stopped
