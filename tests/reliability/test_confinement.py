"""The coding example's workspace against the escapes the issue found, with real files and processes.

A hard link to an outside file, a FIFO, a socket and a device are refused by every file tool (and skipped
by grep); a background process started from ``bash`` dies when the call ends; a glob that the shell
expands to ``..`` and a path through an outward symlink are refused; a catastrophic ``grep`` pattern is
killed at its timeout (the tool runs in a child process).
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from looplet import ToolCall
from looplet.examples.coding_agent import Workspace, WorkspaceError, workspace_tools
from tests.reliability._wait import alive, wait_until


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("TOP SECRET\n")
    return Workspace(tmp_path / "ws", timeout_s=4.0, output_cap=2000)


def test_a_hard_link_to_an_outside_file_is_neither_read_nor_written(ws: Workspace, tmp_path: Path):
    secret = tmp_path / "outside" / "secret.txt"
    os.link(secret, ws.root / "alias.txt")
    with pytest.raises(WorkspaceError, match="hard links"):
        ws.read("alias.txt")
    with pytest.raises(WorkspaceError, match="hard links"):
        ws.write("alias.txt", "overwritten")
    with pytest.raises(WorkspaceError, match="hard links"):
        ws.edit("alias.txt", "TOP", "NO")
    assert secret.read_text() == "TOP SECRET\n"  # not truncated by the refused write
    assert ws.grep("SECRET") == "no matches"


def test_a_fifo_neither_hangs_read_nor_grep(ws: Workspace):
    os.mkfifo(ws.root / "pipe")
    (ws.root / "ok.txt").write_text("needle\n")
    started = time.monotonic()
    with pytest.raises(WorkspaceError, match="FIFO"):
        ws.read("pipe")
    with pytest.raises(WorkspaceError, match="FIFO"):
        ws.write("pipe", "x")
    assert ws.grep("needle") == "ok.txt:1: needle"
    assert time.monotonic() - started < 5.0  # an open() of a FIFO without a writer would block forever


def test_a_socket_and_a_device_are_refused(ws: Workspace):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(ws.root / "sock"))
        with pytest.raises(WorkspaceError, match="socket"):
            ws.read("sock")
    try:
        os.mknod(ws.root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(WorkspaceError, match="device"):
        ws.read("null")


def test_a_background_process_started_by_bash_dies_when_the_call_ends(ws: Workspace):
    tools = workspace_tools(ws)
    ws.write("bg.sh", "sleep 120 &\necho $! > pid.txt\necho started\n")
    result = tools.dispatch(ToolCall("bash", {"command": "sh bg.sh"}, "c1"))
    assert result.error is None and "started" in result.data and "exit status 0" in result.data
    pid = int((ws.root / "pid.txt").read_text())
    assert wait_until(lambda: not alive(pid)), "the background sleep outlived the bash call"


@pytest.mark.parametrize(
    "command", ["cd .? && cat outside/secret.txt", "ls .*", "cat .?/outside/secret.txt", "ls [.].", "cd ./.?"]
)
def test_globs_that_the_shell_expands_to_the_parent_are_refused(ws: Workspace, command: str):
    with pytest.raises(WorkspaceError, match="expand to '..'|absolute"):
        ws.check_command(command)


def test_ordinary_globs_still_work(ws: Workspace):
    ws.write("a.py", "print(1)\n")
    ws.check_command("ls *.py")
    ws.check_command("cat ./*")
    assert "a.py" in ws.bash("ls *")


def test_a_path_through_an_outward_symlink_is_refused_in_commands(ws: Workspace, tmp_path: Path):
    (ws.root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.check_command("cat link/secret.txt")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.check_command("cd link")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.check_command("grep --file=link/secret.txt x")


def test_a_catastrophic_grep_pattern_is_killed_at_its_timeout(tmp_path: Path):
    ws = Workspace(tmp_path / "ws", timeout_s=1.0)
    ws.write("a.txt", "a" * 64 + "!\n")
    tools = workspace_tools(ws)
    started = time.monotonic()
    result = tools.dispatch(ToolCall("grep", {"pattern": "(a+)+$"}, "c1"))
    assert result.error_kind == "timeout" and "within 1s" in result.error
    assert time.monotonic() - started < 8.0
