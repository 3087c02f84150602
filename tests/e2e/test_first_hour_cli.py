"""The first hour of a new user (issue 18), with the commands a user types, run as real subprocesses.

Each test names the item it covers. The rule behind them: nothing is lost silently (an unwritable output
stops the command before the first step), the same mistake gets the same exit code and hint in every
command, a plain mistake never shows a traceback, and simulated numbers say so.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeserver import FakeLLMServer, tool_call, usage

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "OTEL_", "LOOPLET_", "TRACEPARENT"))
    }
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp), COLUMNS="120", LOOPLET_PROGRESS="off")
    env.update(extra)
    return env


def run(
    args: list[str], tmp: Path, *, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` in ``tmp`` (the temp folder too), as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=_env(tmp, **env),
        cwd=tmp,
        timeout=TIMEOUT_S,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], prog: str) -> str:
    """Exit code 2, no traceback, one line on stderr starting with ``PROG: error:``; returns it."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    assert "#1 " not in proc.stdout  # stopped before the first step
    return lines[0]


@pytest.fixture()
def blocked(tmp_path: Path) -> Path:
    """A path that cannot be a folder: its parent is a file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "out"


@pytest.fixture()
def demo_trace(tmp_path: Path) -> Path:
    proc = run(["looplet", "demo", "--latency", "0", "--trace-dir", "traces"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "traces"  # one run: its files in --trace-dir itself


# 1. an unwritable output fails before the first step, in every command ----------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["looplet", "demo", "--trace-dir", "{bad}"], "--trace-dir"),
        (["looplet", "demo", "--json-logs", "{bad}/log.jsonl"], "--json-logs"),
        (["looplet", "demo", "--log-file", "{bad}/log.jsonl"], "--json-logs"),
        (["looplet", "run", "looplet.demo:build", "a task", "--trace-dir", "{bad}"], "--trace-dir"),
        (["looplet", "run", "looplet.demo:build", "a task", "--log-file", "{bad}/log.jsonl"], "--log-file"),
        (["looplet", "show", "{trace}", "--html", "{bad}/run.html"], "--html"),
    ],
)
def test_1_unwritable_output_stops_before_the_first_step(
    tmp_path: Path, blocked: Path, demo_trace: Path, argv: list[str], flag: str
) -> None:
    args = [a.format(bad=blocked, trace=demo_trace) for a in argv]
    line = one_line_error(run(args, tmp_path), f"looplet {args[1]}")
    assert f"{flag} {blocked}" in line and "cannot write there (Not a directory)" in line
    assert "choose a" in line and "you can write to" in line
    assert "Step" not in line


def test_1_demo_into_proc_fails_before_the_first_step(tmp_path: Path) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    line = one_line_error(run(["looplet", "demo", "--trace-dir", "/proc/nope"], tmp_path), "looplet demo")
    assert "--trace-dir /proc/nope: cannot write there" in line


def test_1_examples_refuse_an_unwritable_trace_folder_with_the_same_message(
    tmp_path: Path, blocked: Path
) -> None:
    proc = run(["looplet.examples.data_agent", "--scripted", "--dir", "d", "--trace", str(blocked)], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--trace {blocked}: cannot write there (Not a directory)" in proc.stderr
    assert "#1 " not in proc.stdout


# 2. the data example tells the truth about a refused delete ----------------------------------------------------


def _orders(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT COUNT(*) FROM orders").fetchone()[0])


def test_2_data_agent_ask_answered_no_keeps_the_rows_and_says_so(tmp_path: Path) -> None:
    proc = run(["looplet.examples.data_agent", "--scripted", "--ask", "--dir", "shop"], tmp_path, stdin="n\n")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    answer = next(line for line in proc.stdout.splitlines() if line.startswith("answer: "))
    assert "the delete was refused" in answer and "Removed" not in answer
    assert "? approval refused: delete_rows" in proc.stdout
    assert _orders(tmp_path / "shop" / "shop.db") == 90


def test_2_data_agent_ask_answered_yes_deletes_and_says_so(tmp_path: Path) -> None:
    proc = run(["looplet.examples.data_agent", "--scripted", "--ask", "--dir", "shop"], tmp_path, stdin="y\n")
    assert proc.returncode == 0, proc.stderr
    assert "answer: Removed the test orders" in proc.stdout
    assert _orders(tmp_path / "shop" / "shop.db") == 78


# 3. a new task is a new run ---------------------------------------------------------------------------------------


def test_3_looplet_run_with_a_new_task_never_resumes_an_old_paused_run(tmp_path: Path) -> None:
    # a paused run of the example's own task, in the folder a user might share between runs
    paused = run(["looplet.examples.data_agent", "--scripted", "--dir", "shared"], tmp_path)
    assert paused.returncode == 3, paused.stderr
    with FakeLLMServer() as server:
        server.script(*[tool_call("done", {"answer": "8 customers"}, usage=usage(50, 5)) for _ in range(4)])
        model = dict(OPENAI_BASE_URL=server.openai_url, OPENAI_API_KEY="k", OPENAI_MODEL="gpt-4o-mini")
        target = ["looplet", "run", "looplet.examples.data_agent:agent", "Count the customers"]
        # the folder named explicitly: a different task there is a new run, the old checkpoint is kept
        proc = run(target, tmp_path, LOOPLET_DATA_DIR=str(tmp_path / "shared"), **model)
        assert proc.returncode == 0, proc.stderr
        assert "resumed from the checkpoint" not in proc.stdout
        assert "held a checkpoint of another task" in proc.stderr
        assert list((tmp_path / "shared" / "checkpoint").glob("checkpoint-other-task-*.json"))
        # no folder named: each run gets its own new folder
        first = run(target, tmp_path, **model)
        second = run(target, tmp_path, **model)
        bodies = server.bodies()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    folders = [re.search(r"a new run in (\S+)", p.stderr).group(1) for p in (first, second)]  # type: ignore[union-attr]
    assert folders[0] != folders[1]
    assert all(b["messages"][1] == {"role": "user", "content": "Count the customers"} for b in bodies)


# 4. replaying the unchanged demo finds no difference --------------------------------------------------------------


def test_4_replay_of_the_demo_with_its_own_factory_is_the_same(tmp_path: Path, demo_trace: Path) -> None:
    proc = run(["looplet", "replay", str(demo_trace), "--tools", "looplet.demo:build"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "same results at every step" in proc.stdout
    assert "ERROR: Denied: link-local" in proc.stdout  # the permission hook took part


# 5. plain mistakes: one line, exit 2, the same in every command ---------------------------------------------------


@pytest.mark.parametrize("cmd", [["demo"], ["run", "looplet.demo:build", "a task"]])
def test_5_metrics_port_out_of_range(tmp_path: Path, cmd: list[str]) -> None:
    line = one_line_error(run(["looplet", *cmd, "--metrics-port", "99999"], tmp_path), f"looplet {cmd[0]}")
    assert "--metrics-port: 99999 is not a port: use 0-65535" in line


def test_5_a_busy_port_gets_the_same_code_and_hint_in_demo_and_run(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        lines = [
            one_line_error(run(["looplet", *cmd, "--metrics-port", str(port)], tmp_path), f"looplet {cmd[0]}")
            for cmd in (["demo"], ["run", "looplet.demo:build", "a task"])
        ]
    hint = f"--metrics-port {port}: the port is already in use; pick a free one (or --metrics-port 0 for any free port)"
    assert [line.split(": error: ", 1)[1] for line in lines] == [hint, hint]


@pytest.mark.parametrize(
    "where, keys",
    [
        ("trajectory.json", ["duration_ms"]),
        ("trajectory.json", ["usage", "input_tokens"]),
        ("trajectory.json", ["llm_calls"]),
        ("steps/step_01.json", ["llm_ms"]),
        ("steps/step_01.json", ["usage", "input_tokens"]),
    ],
)
@pytest.mark.parametrize("cmd", ["show", "eval"])
def test_5_a_hand_edited_number_never_crashes_show_or_eval(
    tmp_path: Path, demo_trace: Path, where: str, keys: list[str], cmd: str
) -> None:
    path = demo_trace / where
    data = json.loads(path.read_text())
    holder = data
    for k in keys[:-1]:
        holder = holder[k]
    holder[keys[-1]] = f"{holder[keys[-1]]}ms"
    path.write_text(json.dumps(data))
    line = one_line_error(run(["looplet", cmd, str(demo_trace)], tmp_path), f"looplet {cmd}")
    assert where in line and "ms'" in line


def test_5_a_number_written_as_a_string_is_read(tmp_path: Path, demo_trace: Path) -> None:
    path = demo_trace / "trajectory.json"
    data = json.loads(path.read_text())
    data["duration_ms"] = str(data["duration_ms"])
    path.write_text(json.dumps(data))
    for cmd in ("show", "eval"):
        proc = run(["looplet", cmd, str(demo_trace)], tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_5_looplet_run_never_suggests_a_flag_it_does_not_have(tmp_path: Path) -> None:
    proc = run(["looplet", "run", "looplet.examples.hello_world:agent", "Greet Grace"], tmp_path)
    line = one_line_error(proc, "looplet run")
    assert "OPENAI_MODEL is not set" in line or "OPENAI_API_KEY is not set" in line
    assert "--scripted" not in proc.stderr
    helptext = run(["looplet", "run", "--help"], tmp_path).stdout
    assert "--scripted" not in helptext


# 6. --otlp is checked -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, problem",
    [
        ("localhost:4318", "a scheme is missing"),
        ("htp://127.0.0.1:4318", "unknown scheme 'htp'"),
        ("http://:4318", "no host"),
        ("http://127.0.0.1:99999", "the port is not a number in 0-65535"),
        ("grpc://127.0.0.1", "give the port"),
    ],
)
@pytest.mark.parametrize("cmd", [["demo"], ["run", "looplet.demo:build", "a task"]])
def test_6_a_mistyped_otlp_endpoint_is_refused_with_the_expected_form(
    tmp_path: Path, cmd: list[str], url: str, problem: str
) -> None:
    line = one_line_error(run(["looplet", *cmd, "--otlp", url], tmp_path), f"looplet {cmd[0]}")
    assert f"--otlp {url}: {problem}" in line
    assert "expected http://HOST:PORT (4318, OTLP/HTTP) or grpc://HOST:PORT (4317)" in line


def test_6_a_dead_otlp_endpoint_costs_no_retry_lines_and_keeps_the_trajectory(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed below: nothing listens there
    traces = tmp_path / "traces"
    proc = run(
        [
            "looplet",
            "demo",
            "--latency",
            "0",
            "--otlp",
            f"http://127.0.0.1:{port}",
            "--trace-dir",
            str(traces),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Transient error" not in proc.stderr and "Failed to export" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    spans = next(line for line in proc.stdout.splitlines() if line.startswith("  spans "))
    assert f"http://127.0.0.1:{port}/v1/traces" in spans and "NOT delivered" in spans
    assert (traces / "trajectory.json").is_file()  # the dead collector does not hold the trajectory back


# 7. the demo's terminal ------------------------------------------------------------------------------------------


def test_7_demo_prints_steps_summary_and_where_each_signal_went(tmp_path: Path) -> None:
    proc = run(["looplet", "demo", "--latency", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the JSON logs went to a file
    out = proc.stdout
    steps = [line for line in out.splitlines() if re.match(r"#\d+ [✓✗] ", line)]
    assert len(steps) == 9
    assert "the model is simulated" in out and "tokens (simulated), cost $" in out and "(simulated)," in out
    assert "trace_id" not in out and "trace " not in out  # nothing exported: no id that points nowhere
    where = out[out.index("where the telemetry went:") :]
    assert "spans       not exported" in where and "metrics     not served" in where
    logs = Path(re.search(r"logs +(\S+) \(JSON lines\)", where).group(1))  # type: ignore[union-attr]
    events = [json.loads(line)["event"] for line in logs.read_text().splitlines()]
    assert "run.start" in events and "run.end" in events
    folder = re.search(r"read it: looplet show (\S+)", where).group(1)  # type: ignore[union-attr]
    assert (Path(folder) / "trajectory.json").is_file()
    assert len(out.splitlines()) <= 40  # fits one screen


def test_7_json_logs_dash_sends_them_to_stderr(tmp_path: Path) -> None:
    proc = run(["looplet", "demo", "--latency", "0", "--json-logs", "-"], tmp_path)
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines() if line.startswith("{")]
    assert events.count("run.start") == 1 and events.count("run.end") == 1
    assert "logs        stderr" in proc.stdout


@pytest.mark.parametrize("n", [1, 2, 5, 9, 10, 20])
def test_7_steps_n_gives_exactly_n_steps(tmp_path: Path, n: int) -> None:
    proc = run(["looplet", "demo", "--latency", "0", "--steps", str(n)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if re.match(r"#\d+ [✓✗] ", line)]
    assert len(steps) == n and steps[-1].startswith(f"#{n} ✓ done(")
    assert f"done: {n} steps" in proc.stdout


@pytest.mark.parametrize("n", ["0", "-3", "many"])
def test_7_steps_out_of_range_is_a_clear_error(tmp_path: Path, n: str) -> None:
    line = one_line_error(run(["looplet", "demo", f"--steps={n}"], tmp_path), "looplet demo")
    assert "--steps" in line and "1 to 100000" in line or "1-100000" in line


def test_7_stream_shows_the_time_to_first_token_on_each_llm_step(tmp_path: Path) -> None:
    proc = run(["looplet", "demo", "--latency", "0.01", "--stream"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if re.match(r"#\d+ [✓✗] ", line)]
    with_ttft = [line for line in steps if re.search(r"  ttft \d+ms  Σ", line)]
    assert len(with_ttft) == 8  # one per LLM call: step 5 came in the same answer as step 4


def _output_blocks(doc: Path) -> list[tuple[str, list[str]]]:
    """``(command, expected lines)`` for each ```text block right after an ``<!-- output-of: CMD -->``."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"<!--\s*output-of:\s*(.+?)\s*-->$", line.strip())
        if m:
            assert lines[i + 1] == "```text", f"{doc}:{i + 2}: an output-of marker must precede a text block"
            end = lines.index("```", i + 2)
            out.append((m.group(1), lines[i + 2 : end]))
    return out


def _normal(line: str, tmp: Path) -> str:
    """What may differ between two runs of the same command: times, dates, ids and the temp folder."""
    line = line.replace(str(tmp), "/tmp")
    line = re.sub(r"\d+(\.\d+)? ?ms\b", "N ms", line)
    line = re.sub(r"\d{8}-\d{6}", "DATE", line)
    return re.sub(r"\b[0-9a-f]{8,32}\b", "ID", line)


def _same(doc_line: str, real: str) -> bool:
    """Equal, or equal but for where a shortened value was cut: a line's room depends on how many digits
    its duration has (``[9ms]`` or ``[57ms]``), so each piece before a ``…`` may end up to 3 characters
    earlier or later."""
    if doc_line == real:
        return True
    a, b = doc_line.split("…"), real.split("…")
    if len(a) != len(b) or a[-1] != b[-1]:
        return False
    for x, y in zip(a[:-1], b[:-1], strict=True):
        short, long = sorted((x, y), key=len)
        if not long.startswith(short) or len(long) - len(short) > 3:
            return False
    return True


def _contains(got: list[str], want: list[str]) -> bool:
    return any(
        all(_same(w, g) for w, g in zip(want, got[i : i + len(want)], strict=True))
        for i in range(len(got) - len(want) + 1)
    )


DOC_OUTPUTS = [
    (doc, cmd, expected)
    for doc in (ROOT / "README.md", ROOT / "docs" / "examples.md")
    for cmd, expected in _output_blocks(doc)
]


@pytest.mark.parametrize("doc, cmd, expected", DOC_OUTPUTS, ids=[f"{d.name}:{c}" for d, c, _ in DOC_OUTPUTS])
def test_7_9_outputs_shown_in_the_docs_are_what_the_commands_print(
    tmp_path: Path, doc: Path, cmd: str, expected: list[str]
) -> None:
    """README's demo output (one screen) and the examples' outputs are checked against a real run: token
    counts and costs exactly, times, dates and ids as placeholders."""
    words = cmd.replace("/tmp/", f"{tmp_path}/").split()
    assert words[:2] == ["python", "-m"]
    proc = run(words[2:], tmp_path)
    assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr, proc.stderr
    got = [_normal(x, tmp_path) for x in proc.stdout.splitlines()]
    want = [_normal(x, tmp_path) for x in expected]
    assert _contains(got, want), f"{doc.name}: the block for `{cmd}` is not what it prints:\n{proc.stdout}"
    if doc.name == "README.md":
        assert len(want) == len(got) <= 40  # the whole output, on one screen


# 8. truncation keeps the cause ---------------------------------------------------------------------------------


def test_8_step_lines_show_the_error_message(tmp_path: Path) -> None:
    proc = run(["looplet", "demo", "--latency", "0"], tmp_path)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("#2 "))
    assert "ERROR: LookupError: 404 Not Found" in line


def test_8_show_width_is_used_for_the_arguments(tmp_path: Path, demo_trace: Path) -> None:
    wide = run(["looplet", "show", str(demo_trace), "--width", "200"], tmp_path).stdout
    assert "fetch_page(url='https://docs.example/looplet/hooks')" in wide
    assert "ERROR: LookupError: 404 Not Found: https://docs.example/looplet/hooks" in wide
    narrow = run(["looplet", "show", str(demo_trace), "--width", "80"], tmp_path).stdout
    assert "url='https://docs.example/looplet/hooks'" not in narrow
    assert all(len(x) <= 80 for x in narrow.splitlines() if x.startswith("#"))


# exit codes are documented where a user looks --------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["demo", "run", "show", "eval", "replay", "doctor"])
def test_every_command_lists_the_exit_codes_in_its_help(tmp_path: Path, cmd: str) -> None:
    proc = run(["looplet", cmd, "--help"], tmp_path)
    assert proc.returncode == 0
    assert "exit codes:" in proc.stdout and "130" in proc.stdout and "usage or input error" in proc.stdout


# 5 (backends and checkpoints, built by the hostile engineer): checked here as a user meets them ------------------

ANTHROPIC_AGENT = """
from looplet import AnthropicBackend, tool

@tool(description="Add two numbers.")
def add(a: int, b: int) -> int:
    return a + b

def build():
    return {"llm": AnthropicBackend(model="claude-sonnet-4-5"), "tools": [add]}
"""


def test_5_anthropic_without_a_key_names_the_variable_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "claude_agent.py").write_text(ANTHROPIC_AGENT)
    proc = run(["looplet", "run", "claude_agent.py:build", "2 + 3?"], tmp_path)
    line = one_line_error(proc, "looplet run")
    assert "ANTHROPIC_API_KEY" in line


def test_5_anthropic_open_telemetry_true_as_the_recipes_show(tmp_path: Path) -> None:
    code = (
        "from looplet import AnthropicBackend\n"
        "AnthropicBackend(model='claude-sonnet-4-5', api_key='k', open_telemetry=True)\nprint('built')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "built", proc.stderr


def test_5_a_wrong_base_url_is_named_and_not_reported_as_an_unpriced_model(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    proc = run(
        ["looplet", "run", "looplet.examples.hello_world:agent", "Greet Ada"],
        tmp_path,
        OPENAI_BASE_URL=url,
        OPENAI_API_KEY="k",
        OPENAI_MODEL="gpt-4o-mini",
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "llm_error: 0 steps" in proc.stdout and "check base_url" in proc.stdout and url in proc.stdout
    assert "not priced" not in proc.stdout and "cost none (no LLM call was answered)" in proc.stdout


def test_5_a_truncated_checkpoint_is_named_not_a_json_traceback(tmp_path: Path) -> None:
    paused = run(["looplet.examples.data_agent", "--scripted", "--dir", "d"], tmp_path)
    assert paused.returncode == 3, paused.stderr
    cp = tmp_path / "d" / "checkpoint" / "checkpoint.json"
    cp.write_text(cp.read_text()[:100])
    proc = run(["looplet.examples.data_agent", "--scripted", "--dir", "d", "--resume"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        "checkpoint.json" in proc.stderr
        and "truncated or corrupt" in proc.stderr
        and "--fresh" in proc.stderr
    )
    code = (
        "from looplet import MockLLMBackend, resume, tools_from\n"
        "from looplet.control.checkpoint import CheckpointError\n"
        "try:\n"
        "    resume('d/checkpoint', llm=MockLLMBackend(['x']), tools=tools_from([]))\n"
        "except CheckpointError as exc:\n"
        "    print('CheckpointError:', exc)\n"
    )
    lib = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=TIMEOUT_S,
    )
    assert lib.stdout.startswith("CheckpointError: ") and "checkpoint.json" in lib.stdout, lib.stderr
    assert "JSONDecodeError" not in lib.stderr
