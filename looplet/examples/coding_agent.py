"""A coding agent: bash, read, write, edit and grep, confined to one workspace folder.

    python -m looplet.examples.coding_agent --scripted                       # no key, no network
    python -m looplet.examples.coding_agent --workspace ./ws --trace ./traces "Write fizzbuzz.py and run it"

Every path the model gives is resolved to its real location (symlinks followed) and refused unless it
lies inside the workspace: absolute paths, ``..`` and symlinks pointing out are errors the model sees.
Files are opened without following a last-moment symlink, and only regular files with one hard link are
read or written (a FIFO would hang the tool, a device or socket is not a file, and a second hard link
may be a file outside the workspace).

``bash`` runs in the workspace with a scrubbed environment, a timeout and an output cap, in its own
process group, which is killed when the call ends (a command left running with ``&`` dies with it).
Commands naming absolute paths, ``..``, ``~``, ``$``/backtick expansions, a glob that can match ``..``
(``.?``, ``.*``) or a path whose real location is outside are refused. ``bash`` and ``grep`` run with
``isolation="process"``: a regular expression that backtracks for hours is killed at the timeout.

What this guard does not promise: it stops a model's mistakes, not an adversary. A program the command
runs (python, awk, make, ...) can compute any path; a symlink made and used in one command is not seen
by the check; a process that leaves the process group (``setsid``, a daemon) survives the call; a
command that fills the disk or the memory is not limited. Run untrusted models in a container or VM.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from looplet.config import LoopConfig
from looplet.examples._common import SetupError, backend, cli, exit_code, fail, parser, run, trajectory_hook
from looplet.loop import composable_loop
from looplet.state import DefaultState
from looplet.tools import tool, tools_from

__all__ = ["Workspace", "WorkspaceError", "workspace_tools", "agent", "main"]


class WorkspaceError(ValueError):
    """A path or command that would leave the workspace; the message is shown to the model."""


class Workspace:
    """A folder the agent's tools cannot leave.

    timeout_s: wall-clock limit of a ``bash`` command. output_cap: characters of command output, file
    text or grep matches shown to the model (the rest is counted, not shown).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, timeout_s: float = 10.0, output_cap: int = 8_000
    ) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        self.timeout_s = timeout_s
        self.output_cap = output_cap

    # -- paths -------------------------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """The real path of ``path`` (relative to the workspace), or :class:`WorkspaceError`."""
        if not isinstance(path, str) or not path.strip():
            raise WorkspaceError("give a path relative to the workspace, e.g. 'src/app.py'")
        if "\x00" in path:
            raise WorkspaceError("the path contains a NUL byte")
        p = Path(path)
        if p.is_absolute():
            raise WorkspaceError(
                f"{path!r} is an absolute path; use a path relative to the workspace, e.g. 'src/app.py'"
            )
        if ".." in p.parts:
            raise WorkspaceError(f"{path!r} uses '..'; paths must stay inside the workspace")
        real = Path(os.path.realpath(self.root / p))
        if real != self.root and not real.is_relative_to(self.root):
            raise WorkspaceError(
                f"{path!r} leads outside the workspace (through a symlink); use files inside it"
            )
        return real

    def rel(self, real: Path) -> str:
        return str(real.relative_to(self.root)) if real != self.root else "."

    def cap(self, text: str) -> str:
        if len(text) <= self.output_cap:
            return text
        return f"{text[: self.output_cap]}\n… [{len(text) - self.output_cap} more characters not shown]"

    # -- files -------------------------------------------------------------------------------------
    def read(self, path: str) -> str:
        real = self.resolve(path)
        if real.is_dir():
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(real))
            return self.cap("\n".join(names) or "(empty folder)")
        fd = self._open(real, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            data = f.read(4 * self.output_cap + 1)
        if b"\x00" in data[:1024]:
            raise WorkspaceError(f"{path!r} is a binary file")
        return self.cap(data.decode("utf-8", errors="replace"))

    def write(self, path: str, content: str) -> str:
        real = self.resolve(path)
        if real == self.root or real.is_dir():
            raise WorkspaceError(f"{path!r} is a folder; give a file path")
        parent = real.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.resolve(self.rel(parent))  # a folder made by a concurrent symlink trick is caught here
        fd = self._open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        return f"wrote {len(content)} characters to {self.rel(real)}"

    def edit(self, path: str, old: str, new: str) -> str:
        real = self.resolve(path)
        if not real.is_file():
            raise WorkspaceError(f"{path!r} does not exist; create it with write_file")
        with os.fdopen(self._open(real, os.O_RDONLY), encoding="utf-8") as f:
            text = f.read()
        count = text.count(old) if old else 0
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise WorkspaceError(
                f"the text to replace was {where} in {path!r}; give an exact snippet that "
                "occurs once (read_file shows the current text)"
            )
        with os.fdopen(self._open(real, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as f:
            f.write(text.replace(old, new, 1))
        return f"edited {self.rel(real)}: replaced {len(old)} characters with {len(new)}"

    def grep(self, pattern: str, path: str = ".") -> str:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise WorkspaceError(f"bad regular expression {pattern!r}: {exc}") from None
        start = self.resolve(path)
        files = (
            [start]
            if start.is_file()
            else sorted(Path(d) / n for d, _dirs, names in os.walk(start) for n in names)
        )  # os.walk does not follow links
        lines: list[str] = []
        total = 0
        for f in files:
            try:
                real = self.resolve(str(f.relative_to(self.root)))
            except WorkspaceError:
                continue  # a symlink pointing out of the workspace: skipped
            try:
                fd = self._open(real, os.O_RDONLY)
            except WorkspaceError:
                continue  # a FIFO, device, socket or hard-linked file: skipped
            try:
                with open(fd, encoding="utf-8", errors="strict") as fh:
                    for n, line in enumerate(fh, 1):
                        if rx.search(line):
                            total += 1
                            if len(lines) < 200:
                                lines.append(f"{self.rel(real)}:{n}: {line.rstrip()[:200]}")
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable
        if not lines:
            return "no matches"
        more = f"\n… {total - len(lines)} more matches" if total > len(lines) else ""
        return self.cap("\n".join(lines) + more)

    @staticmethod
    def _open(real: Path, flags: int) -> int:
        """Open a regular file with one hard link. O_NOFOLLOW: a symlink swapped in after resolve() is
        refused; O_NONBLOCK: a FIFO cannot hang the open; truncation waits until the checks passed."""
        try:
            before = os.lstat(real)
        except FileNotFoundError:
            before = None
        if before is not None:
            _regular_single(real.name, before)
        plain = (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, plain, 0o644)
        except FileNotFoundError:
            raise WorkspaceError(f"{real.name!r} does not exist") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot open {real.name!r}: {exc.strerror}") from None
        try:
            _regular_single(real.name, os.fstat(fd))  # what was opened, not what was looked at
            os.set_blocking(fd, True)
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- commands ----------------------------------------------------------------------------------
    _ABSOLUTE = re.compile(r"(?<![\w.\-])[/~]")
    _PARENT = re.compile(r"(?<![\w.])\.\.(?![\w.])")

    def check_command(self, command: str) -> None:
        """Refuse commands that name places outside the workspace."""
        if not isinstance(command, str) or not command.strip():
            raise WorkspaceError("give a shell command, e.g. 'ls -la'")
        if "$" in command or "`" in command:
            raise WorkspaceError(
                "variable and command substitution ($, backticks) are not allowed; write the values out"
            )
        try:
            tokens = shlex.split(command, comments=False, posix=True)
        except ValueError as exc:
            raise WorkspaceError(f"cannot parse the command: {exc}") from None
        for token in tokens:
            scrubbed = token.replace("/dev/null", "")
            if self._ABSOLUTE.search(scrubbed):
                raise WorkspaceError(
                    f"{token!r} names an absolute or home path; commands run in the workspace, "
                    "use relative paths"
                )
            if self._PARENT.search(token):
                raise WorkspaceError(f"{token!r} uses '..'; commands must stay inside the workspace")
            self._check_token_path(token)

    def _check_token_path(self, token: str) -> None:
        """A token (or the value of ``--opt=value``) taken as a path: a glob part that the shell could
        expand to ``..`` is refused, and so is a path whose real location (symlinks followed) is outside."""
        for candidate in {token, token.partition("=")[2]} - {""}:
            parts = candidate.split("/")
            if any(_glob_reaches_parent(part) for part in parts):
                raise WorkspaceError(
                    f"{token!r} is a pattern the shell can expand to '..'; name the files you mean"
                )
            if candidate.startswith("-"):
                continue
            real = os.path.realpath(self.root / candidate)
            if real != str(self.root) and not Path(real).is_relative_to(self.root):
                raise WorkspaceError(f"{token!r} leads outside the workspace (through a symlink)")

    def bash(self, command: str) -> str:
        self.check_command(command)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        head = bytearray()
        seen = [0]
        flooded = threading.Event()
        limit = self.output_cap
        hard = max(limit, 10_000_000)  # a runaway writer is stopped, not buffered

        def pump() -> None:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 65536):
                seen[0] += len(chunk)
                if len(head) < limit:
                    head.extend(chunk[: limit - len(head)])
                if seen[0] > hard:
                    flooded.set()
                    _kill(proc)
                    break

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            proc.wait()
        finally:  # the whole group, always: a command left running in the background dies with the call
            _kill(proc)
        reader.join(1.0)
        text = head.decode("utf-8", errors="replace")
        if seen[0] > len(head):
            text += f"\n… [{seen[0] - len(head)} more bytes of output not shown]"
        if timed_out:
            return f"{text}\n[killed: the command ran longer than {self.timeout_s:g}s]".lstrip()
        if flooded.is_set():
            return f"{text}\n[killed: the command wrote more than {hard // 1_000_000} MB]".lstrip()
        return f"{text}\n[exit status {proc.returncode}]".lstrip()


def _regular_single(name: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else None
        kind = kind or ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None)
        raise WorkspaceError(
            f"{name!r} is {kind or 'not a regular file'}; only regular files are read or written"
        )
    if st.st_nlink > 1:
        raise WorkspaceError(
            f"{name!r} has {st.st_nlink} hard links (one may be a file outside the workspace); refused"
        )


def _glob_reaches_parent(part: str) -> bool:
    """Whether the shell could expand one path component to ``..``: only a pattern that starts with a
    literal dot or a bracket expression can match a leading dot."""
    if not any(c in part for c in "*?["):
        return False
    return part[:1] in (".", "[") and fnmatch.fnmatchcase("..", part)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def workspace_tools(ws: Workspace) -> Any:
    """The five tools, bound to ``ws``, plus ``done``. ``bash`` and ``grep`` run in a child process
    (``isolation="process"``), killed with everything they started at their timeout; ``bash`` also kills
    its command at ``ws.timeout_s``, so the process limit is only a backstop."""
    bash = tool(
        ws.bash,
        name="bash",
        description="Run a shell command in the workspace folder; returns its output and exit status.",
        isolation="process",
        timeout_s=ws.timeout_s + 5.0,
    )
    grep = tool(
        ws.grep,
        name="grep",
        description="Search workspace files for a regular expression; returns path:line: text.",
        concurrent_safe=True,
        isolation="process",
        timeout_s=ws.timeout_s,
    )

    @tool(description="Read a text file (or list a folder) in the workspace.", concurrent_safe=True)
    def read_file(path: str) -> str:
        return ws.read(path)

    @tool(description="Create or overwrite a text file in the workspace.")
    def write_file(path: str, content: str) -> str:
        return ws.write(path, content)

    @tool(description="Replace one exact, unique snippet `old` with `new` in a workspace file.")
    def edit_file(path: str, old: str, new: str) -> str:
        return ws.edit(path, old, new)

    return tools_from([bash, read_file, write_file, edit_file, grep])


TASK = "Write hello.py that greets the world, run it, make the greeting use a comma, and run it again."
SCRIPT = [
    '{"tool": "write_file", "args": {"path": "hello.py", "content": '
    "\"def greet(name):\\n    return 'Hello ' + name + '!'\\n\\nprint(greet('world'))\\n\"}}",
    '{"tool": "bash", "args": {"command": "python3 hello.py"}}',
    '{"tool": "read_file", "args": {"path": "../../etc/passwd"}}',
    '{"tool": "edit_file", "args": {"path": "hello.py", "old": "\'Hello \'", "new": "\'Hello, \'"}}',
    '{"tool": "grep", "args": {"pattern": "Hello", "path": "."}}',
    '{"tool": "bash", "args": {"command": "python3 hello.py"}}',
    '{"tool": "done", "args": {"answer": "hello.py prints: Hello, world!"}}',
]
SYSTEM = (
    "You are a careful coding agent working in a workspace folder. Use relative paths only. Read before "
    "you edit, run what you write, and call `done` with a short report when the task is complete."
)


def agent(
    scripted: bool = False,
    workspace: str | None = None,
    latency_s: float = 0.0,
    timeout_s: float = 10.0,
    output_cap: int = 8_000,
) -> dict[str, Any]:
    """The agent as a factory: ``looplet run looplet.examples.coding_agent:agent "task"`` (the workspace is
    ``$LOOPLET_WORKSPACE``, else a new temporary folder)."""
    folder = workspace or os.environ.get("LOOPLET_WORKSPACE") or tempfile.mkdtemp(prefix="looplet-ws-")
    ws = Workspace(folder, timeout_s=timeout_s, output_cap=output_cap)
    return {
        "llm": backend(scripted, SCRIPT, latency_s=latency_s),
        "tools": workspace_tools(ws),
        "config": LoopConfig(max_steps=30, system_prompt=SYSTEM, agent_name="coding-agent"),
        "workspace": ws,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m looplet.examples.coding_agent", __doc__)
    p.add_argument("task", nargs="?", default=TASK, help="what to do (default: a small hello.py exercise)")
    p.add_argument(
        "--workspace", default=None, help="the folder the agent works in (default: a new temp folder)"
    )
    p.add_argument("--trace", default=None, metavar="DIR", help="save the trajectory (steps, prompts) to DIR")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a bash command may run")
    p.add_argument("--output-cap", type=int, default=8_000, help="characters of output shown to the model")
    args = p.parse_args(argv)
    try:
        a = agent(args.scripted, args.workspace, args.latency, args.timeout, args.output_cap)
        hook, sink = trajectory_hook(args.trace) if args.trace else (None, None)
    except SetupError as exc:
        return fail(str(exc))
    print(f"workspace: {a['workspace'].root}", file=sys.stderr)
    state = DefaultState(max_steps=args.max_steps or a["config"].max_steps)
    steps = composable_loop(
        llm=a["llm"],
        tools=a["tools"],
        config=a["config"],
        task={"goal": args.task},
        hooks=[hook] if hook else [],
        state=state,
    )
    try:
        result = run(steps, quiet=args.quiet, state=state)
    except KeyboardInterrupt:
        saved = state.metadata.get("trajectory_dir")
        print(
            "\ninterrupted: the run ended as 'cancelled'"
            + (f"; trajectory saved in {saved}" if saved else ""),
            file=sys.stderr,
        )
        return 130
    if sink is not None:
        print(f"trajectory: {state.metadata.get('trajectory_dir') or 'not written (see the log above)'}")
    return exit_code(result)


if __name__ == "__main__":
    raise SystemExit(cli(main))
