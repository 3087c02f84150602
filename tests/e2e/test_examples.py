"""The examples: each runs in scripted mode (and against a fake OpenAI server on 127.0.0.1), and the coding
agent's workspace holds against every escape we could think of."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looplet.examples import coding_agent, hello_world
from looplet.examples.coding_agent import Workspace, WorkspaceError
from tests.fakeserver import FakeLLMServer, tool_call

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_", "TRACEPARENT"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# --- hello_world -----------------------------------------------------------------------------------------


def test_hello_world_scripted_prints_steps_with_running_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert hello_world.main(["--scripted"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("#")]
    assert [ln.split()[2].split("(")[0] for ln in lines] == ["greet", "greet", "done"]
    totals = [int(ln.split("Σ ")[1].split(" tok")[0].replace(",", "")) for ln in lines]
    assert totals == sorted(totals) and totals[0] > 0  # a running total, growing
    assert "done: 3 steps" in out and "answer: Hello, Ada! Hello, Alan!" in out


def test_hello_world_runs_as_a_module_without_a_key() -> None:
    proc = subprocess.run(
        [PY, "-m", "looplet.examples.hello_world", "--scripted"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "#1 ✓ greet(name='Ada') → Hello, Ada!" in proc.stdout


def test_hello_world_on_a_real_client_against_a_local_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeLLMServer() as server:
        server.script(tool_call("greet", {"name": "Ada"}), tool_call("done", {"answer": "Hello, Ada!"}))
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
        assert hello_world.main([]) == 0
        body = server.bodies()[0]
    assert body["model"] == "gpt-4o-mini"
    assert {t["function"]["name"] for t in body["tools"]} == {"greet", "done"}
    out = capsys.readouterr().out
    assert "#1 ✓ greet(name='Ada')" in out and "done: 2 steps" in out


def test_examples_without_a_key_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    assert hello_world.main([]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and "--scripted" in err


# --- coding_agent ----------------------------------------------------------------------------------------


def test_coding_agent_scripted_writes_runs_and_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    assert coding_agent.main(["--scripted", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert (ws / "hello.py").read_text().count("'Hello, '") == 1
    assert "Hello world!" in out and "Hello, world!" in out  # ran before and after the edit
    assert "#3 ✗ read_file(path='../../etc/passwd')" in out  # the scripted escape attempt is refused
    assert "done: 7 steps" in out


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("hello notes\n")
    os.symlink(outside / "secret.txt", root / "leak.txt")  # a file symlink pointing out
    os.symlink(outside, root / "out")  # a folder symlink pointing out
    os.symlink("notes.txt", root / "alias.txt")  # a symlink that stays inside: fine
    return Workspace(root, timeout_s=5.0, output_cap=2000)


ESCAPES = [
    "/etc/passwd",
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "leak.txt",
    "out/secret.txt",
    "out",
    "",
    "x\x00y",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_file_tools_refuse_every_escape(ws: Workspace, path: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError):
        ws.read(path)
    with pytest.raises(WorkspaceError):
        ws.write(path, "pwned")
    with pytest.raises(WorkspaceError):
        ws.edit(path, "TOP SECRET", "pwned")
    with pytest.raises(WorkspaceError):
        ws.grep("SECRET", path)
    assert (tmp_path / "outside" / "secret.txt").read_text() == "TOP SECRET\n"
    assert not (tmp_path / "outside" / "pwned").exists()


def test_escape_messages_say_what_to_do(ws: Workspace) -> None:
    with pytest.raises(WorkspaceError, match="absolute path; use a path relative to the workspace"):
        ws.read("/etc/passwd")
    with pytest.raises(WorkspaceError, match=r"uses '\.\.'"):
        ws.read("../outside/secret.txt")
    with pytest.raises(WorkspaceError, match="outside the workspace \\(through a symlink\\)"):
        ws.read("leak.txt")


def test_file_tools_work_inside_and_grep_skips_outward_links(ws: Workspace) -> None:
    assert ws.write("src/app.py", "x = 1\n") == "wrote 6 characters to src/app.py"
    assert ws.read("src/app.py") == "x = 1\n"
    assert ws.read("alias.txt") == "hello notes\n"  # a link that stays inside is followed
    ws.edit("src/app.py", "x = 1", "x = 2")
    assert ws.read("src/app.py") == "x = 2\n"
    with pytest.raises(WorkspaceError, match="found 0 times|not found"):
        ws.edit("src/app.py", "nope", "y")
    found = ws.grep("SECRET|hello|x = ")
    assert "SECRET" not in found  # leak.txt points out: skipped
    assert "notes.txt:1: hello notes" in found and "src/app.py:1: x = 2" in found
    assert "secret.txt" not in ws.read(".")  # the listing shows names only, never followed content


def test_write_through_a_link_swapped_in_after_the_check_is_refused(ws: Workspace, tmp_path: Path) -> None:
    real = ws.resolve("later.txt")  # checked while it did not exist ...
    os.symlink(tmp_path / "outside" / "secret.txt", real)  # ... then a link appears (a race)
    with pytest.raises(WorkspaceError):
        ws._open(real, os.O_WRONLY | os.O_TRUNC)  # O_NOFOLLOW: not followed
    assert (tmp_path / "outside" / "secret.txt").read_text() == "TOP SECRET\n"


BAD_COMMANDS = [
    "cat /etc/passwd",
    "cat ../outside/secret.txt",
    "ls ..",
    "cd .. && ls",
    "cat ~/.bashrc",
    "echo $HOME",
    "cat `echo x`",
    "echo $(pwd)",
    "ln -s / root",
    "ln -s .. up",
    "python3 -c \"print(open('/etc/passwd').read())\"",
    "cat x 2>/tmp/out",
    "cp notes.txt ../x",
    "cat 'unbalanced",
]


@pytest.mark.parametrize("command", BAD_COMMANDS)
def test_bash_refuses_commands_that_name_the_outside(ws: Workspace, command: str) -> None:
    with pytest.raises(WorkspaceError):
        ws.bash(command)


def test_bash_runs_inside_with_a_scrubbed_environment(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    out = ws.bash("pwd; env; ls 2>/dev/null; cat notes.txt")
    assert str(ws.root) in out and "hello notes" in out and "[exit status 0]" in out
    assert "sk-should-not-leak" not in out  # the agent's secrets are not in its commands' environment
    assert "[exit status 3]" in ws.bash("exit 3")


def test_bash_timeout_kills_the_whole_process_group(ws: Workspace) -> None:
    ws.timeout_s = 0.3
    started = time.perf_counter()
    out = ws.bash("sleep 0.8 && touch late.txt & sleep 5")
    assert time.perf_counter() - started < 2.0
    assert "[killed: the command ran longer than 0.3s]" in out
    time.sleep(1.0)
    assert not (ws.root / "late.txt").exists()  # the background child died with the group


def test_bash_output_is_capped_and_a_runaway_writer_is_stopped(ws: Workspace) -> None:
    out = ws.bash("head -c 50000 notes.txt; seq 1 20000")
    assert len(out) < ws.output_cap + 200
    assert "more bytes of output not shown" in out and "[exit status 0]" in out
    ws.timeout_s = 20.0
    started = time.perf_counter()
    out = ws.bash("yes")
    assert time.perf_counter() - started < 10.0  # stopped by the output guard, not the timeout
    assert "more bytes of output not shown" in out and "[killed: the command wrote more than 10 MB]" in out


def test_coding_agent_tools_report_refusals_to_the_model(tmp_path: Path) -> None:
    from looplet import ToolCall

    a = coding_agent.agent(scripted=True, workspace=str(tmp_path / "w"))
    res = a["tools"].dispatch(ToolCall("read_file", {"path": "/etc/passwd"}, "c1"))
    assert res.error_kind == "tool_exception" and "relative to the workspace" in res.error
    res = a["tools"].dispatch(ToolCall("bash", {"command": "cat /etc/passwd"}, "c2"))
    assert "absolute" in res.error


def test_coding_agent_trace_to_an_unwritable_folder_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = coding_agent.main(
        ["--scripted", "--workspace", str(tmp_path / "w"), "--trace", str(blocker / "traces")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "choose a folder you can write to" in err
    assert not (tmp_path / "w" / "hello.py").exists()  # nothing ran


def test_coding_agent_trace_saves_a_trajectory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces"
    assert coding_agent.main(["--scripted", "--workspace", str(tmp_path / "w"), "--trace", str(traces)]) == 0
    out = capsys.readouterr().out
    folders = [traces]  # one run: its files in the --trace folder itself
    assert f"trajectory: {traces}" in out
    traj = json.loads((folders[0] / "trajectory.json").read_text())
    assert traj["stop_reason"] == "done"
    assert len(traj["steps"]) == 7
    assert [s["tool"] for s in traj["steps"]][:3] == ["write_file", "bash", "read_file"]
    refused = json.loads((folders[0] / traj["steps"][2]["file"]).read_text())
    assert "paths must stay inside the workspace" in refused["tool_result"]["error"]


# --- data_agent ------------------------------------------------------------------------------------------


def _orders(folder: Path) -> int:
    import sqlite3

    with sqlite3.connect(folder / "shop.db") as db:
        return db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]


def _checkpoint(folder: Path) -> dict:
    return json.loads((folder / "checkpoint" / "checkpoint.json").read_text())


def test_data_agent_pauses_for_approval_then_resumes_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from looplet.examples import data_agent

    d = tmp_path / "run"
    assert data_agent.main(["--scripted", "--dir", str(d)]) == 3
    out = capsys.readouterr().out
    assert "awaiting_approval: 6 steps" in out and "? approval requested: delete_rows" in out
    assert "⟲ compacted" in out  # the big SELECT * pushed the transcript over --compact-at
    assert "--resume --dir" in out and "--approve" in out and "--refuse" in out
    assert _orders(d) == 90  # nothing deleted yet
    cp = _checkpoint(d)
    assert (
        cp["stop_reason"] == "awaiting_approval"
        and cp["metadata"]["looplet.approval"]["tool"] == "delete_rows"
    )

    assert data_agent.main(["--scripted", "--dir", str(d)]) == 2  # a saved run is not overwritten by accident
    assert "continue it with --resume, or start over with --fresh" in capsys.readouterr().err
    assert data_agent.main(["--scripted", "--dir", str(d), "--resume"]) == 2
    assert "is waiting for approval; resume with --approve or --refuse" in capsys.readouterr().err

    assert data_agent.main(["--scripted", "--dir", str(d), "--resume", "--approve"]) == 0
    out = capsys.readouterr().out
    assert "↻ resumed from the checkpoint" in out and "1 to run" in out
    assert "✓ delete_rows" in out and "deleted: 12" in out
    assert _orders(d) == 78
    cp = _checkpoint(d)
    assert cp["stop_reason"] == "done"
    assert [s["number"] for s in cp["steps"]] == list(range(1, len(cp["steps"]) + 1))
    ran = [s["tool_call"]["id"] for s in cp["steps"] if s["tool_result"]["error_kind"] != "not_run"]
    assert ran == [f"call_{i:02d}" for i in range(1, 9)]  # each call ran once, in order, none skipped


def test_data_agent_refused_delete_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from looplet.examples import data_agent

    d = tmp_path / "run"
    assert data_agent.main(["--scripted", "--dir", str(d), "--quiet"]) == 3
    assert data_agent.main(["--scripted", "--dir", str(d), "--resume", "--refuse"]) == 0
    out = capsys.readouterr().out
    assert "✗ delete_rows" in out and "? approval refused: delete_rows" in out
    assert "the delete was refused" in out
    steps = _checkpoint(d)["steps"]
    refused = [
        s
        for s in steps
        if s["tool_call"]["tool"] == "delete_rows" and s["tool_result"]["error_kind"] == "denied"
    ]
    assert len(refused) == 1 and "a human refused this call" in refused[0]["tool_result"]["error"]
    assert _orders(d) == 90
    assert data_agent.main(["--scripted", "--dir", str(d), "--resume"]) == 2  # finished: nothing to resume
    assert "already finished" in capsys.readouterr().err
    assert data_agent.main(["--scripted", "--dir", str(d), "--quiet"]) == 3  # a new run starts afresh
    assert _orders(d) == 90 and _checkpoint(d)["step_count"] == 6


def test_data_agent_queries_are_read_only(tmp_path: Path) -> None:
    from looplet.examples.data_agent import Shop

    shop = Shop(tmp_path / "shop.db")
    for sql in (
        "DELETE FROM orders",
        "DROP TABLE orders",
        "UPDATE orders SET amount = 0",
        "SELECT 1; DELETE FROM orders",
        "WITH x AS (SELECT 1) DELETE FROM orders",
    ):
        with pytest.raises(ValueError):
            shop.query(sql)
    assert shop.tables() == {"customers": 8, "orders": 90}
    big = shop.query("SELECT a.id FROM orders a, orders b")
    assert len(big["rows"]) == 200 and "only the first 200 rows" in big["note"]


# --- docs/examples.md: every python block and every command runs as written --------------------------------

DOC = ROOT / "docs" / "examples.md"


def _blocks(lang: str) -> list[str]:
    parts = DOC.read_text().split("```")
    return [p[len(lang) + 1 :] for p in parts[1::2] if p.startswith(lang + "\n")]


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_docs_python_blocks_run(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _blocks("python")[index]
    exec(compile(code, f"docs/examples.md[python {index}]", "exec"), {"__name__": f"doc_block_{index}"})


def test_docs_commands_run(tmp_path: Path) -> None:
    commands = [
        ln for block in _blocks("bash") for ln in block.splitlines() if ln.startswith("python -m looplet")
    ]
    assert len(commands) == 7
    env = _env(LOOPLET_DATA_DIR=str(tmp_path / "data"), LOOPLET_PROGRESS="off")
    codes = []
    for line in commands:
        argv = [arg.replace("/tmp/", f"{tmp_path}/") for arg in line.split()[1:]]
        proc = subprocess.run([PY, *argv], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, (line, proc.stderr)
        codes.append(proc.returncode)
    # three examples (data_agent pauses for approval: 3), the traced coding run, pause then approve, doctor
    assert codes == [0, 0, 3, 0, 3, 0, 0]
    assert any((tmp_path / "looplet-traces").iterdir())
