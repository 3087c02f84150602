"""Writing trajectory folders on another core: one small helper process per interpreter.

A run's folder holds about one file per span, and on an ordinary disk the kernel takes tens of
microseconds to create each one, time the exporter thread could spend turning the next run's spans into
text. So the exporter renders and this process writes (encoding, hashing, creating, renaming), in
parallel: ``submit`` sends a rendered folder down a pipe and returns; each answer is handed to the
job's ``done`` callback when it is collected (by a later ``submit`` once enough are in flight, or by
``drain``, which waits for all of them).

The helper runs ``looplet.provenance.format.write_folder`` and nothing else; it is started on first use
(again in a forked child, which must not share its parent's pipe), ignores Ctrl-C, and exits when its pipe
closes, so it never outlives the process that started it. If it cannot start, or dies, folders are
written in this process instead: a folder is never lost to the helper, at worst written more slowly.
"""

from __future__ import annotations

import collections
import logging
import marshal
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from looplet.provenance.format import write_folder

__all__ = ["submit", "drain", "writer_pid"]

log = logging.getLogger("looplet.provenance")

#: a folder to write: (root, name, {relative path: text, or JSON left to format}, fsync)
Job = tuple[str, str, dict[str, Any], bool]
#: told the outcome of a job: the folder's path, or the exception that stopped it
Done = Callable[[Job, "Path | BaseException"], None]

_HEADER = struct.Struct("<I")
_VERSION = (*sys.version_info[:2], marshal.version)
_IN_FLIGHT = 16  # folders sent and not yet answered; bounds the pipes' contents, so neither side blocks
_START_TIMEOUT_S = 10.0
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from looplet.provenance._writer import serve; serve()"


class WriterDied(RuntimeError):
    """The helper stopped answering; the folders it had not confirmed are written in-process."""


class _Helper:
    """The parent's side of one helper process: two pipes, held as plain descriptors (no buffered file
    objects, so a forked child can close its copies without flushing anything into them)."""

    def __init__(self) -> None:
        self.waiting: collections.deque[tuple[Job, Done]] = collections.deque()  # sent, not yet answered
        package_parent = str(Path(__file__).resolve().parents[2])
        to_child, self.send_fd = os.pipe()
        self.recv_fd, from_child = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, package_parent],
                stdin=to_child,
                stdout=from_child,
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            for fd in (self.send_fd, self.recv_fd):
                os.close(fd)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        try:
            ready = self._ready()
        except BaseException:
            self.close()
            raise
        if not ready:
            self.close()
            raise WriterDied("the provenance writer process did not start")

    def _ready(self) -> bool:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.recv_fd, selectors.EVENT_READ)
            if not sel.select(_START_TIMEOUT_S):
                return False
        try:
            return self.recv() == ("ready", _VERSION)  # marshal's format is the interpreter version's
        except WriterDied:
            return False

    def send(self, job: Job) -> None:
        body = marshal.dumps(job)
        try:
            _write_all(self.send_fd, _HEADER.pack(len(body)) + body)
        except OSError as exc:  # broken pipe: the helper is gone
            raise WriterDied(f"the provenance writer process is gone ({exc})") from None

    def recv(self) -> tuple[Any, ...]:
        try:
            head = _read_exactly(self.recv_fd, _HEADER.size)
            return marshal.loads(_read_exactly(self.recv_fd, _HEADER.unpack(head)[0]))  # type: ignore[no-any-return]
        except (OSError, ValueError, EOFError) as exc:
            raise WriterDied(f"the provenance writer process is gone ({exc})") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        for fd in (self.send_fd, self.recv_fd):  # end of input: the helper exits
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytes:
    parts = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("no answer")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


_LOCK = threading.Lock()
_helper: _Helper | None = None
_failed_in: int | None = None  # the pid in which the helper could not be started (not retried there)
_closed = False  # the interpreter is exiting: folders written from now on are written in-process
_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    import atexit

    atexit.register(_close_at_exit)
    _atexit_registered = True


def _close_at_exit() -> None:
    """End the helper's input; it exits after the folder in hand. Bounded: if an exporter thread is still
    sending folders after 5 s, leave it be; the helper sees the end of its input when this process ends."""
    global _helper, _closed
    _closed = True
    if not _LOCK.acquire(timeout=5.0):
        return
    try:
        if _helper is not None:
            try:
                while _helper.waiting:
                    _collect(_helper)
            except WriterDied as exc:
                _redo(_helper, exc)
            if _helper is not None:
                _helper.close()
                _helper = None
    finally:
        _LOCK.release()


def _get_helper() -> _Helper | None:
    """The running helper, started if need be; None where one cannot run. Called with _LOCK held."""
    global _helper, _failed_in
    if _helper is not None and _helper.alive():
        return _helper
    if _helper is not None:  # it died: written in-process from now on, not restarted for every batch
        _redo(_helper, WriterDied(f"the provenance writer process exited ({_helper.proc.returncode})"))
    if _failed_in == os.getpid() or _closed:
        return None
    if os.name != "posix":  # untested elsewhere (and select() there does not take pipes): write in-process
        _failed_in = os.getpid()
        return None
    why = _unsuitable_interpreter()
    if why:
        _failed_in = os.getpid()
        log.warning("provenance folders are written in-process: %s", why)
        return None
    try:
        _helper = _Helper()
        if not _atexit_registered:
            _register_atexit()
    except (OSError, WriterDied, ValueError) as exc:
        _failed_in = os.getpid()
        log.warning("provenance folders are written in-process: the writer process could not start (%s)", exc)
        return None
    return _helper


def _unsuitable_interpreter() -> str | None:
    """Why ``sys.executable`` cannot run the helper, if it cannot: a frozen application, or a server that
    embeds Python (uWSGI, mod_wsgi) where it names the server's own binary, must not be started again."""
    exe = sys.executable
    if getattr(sys, "frozen", False):
        return "a frozen application has no interpreter to start the writer process with"
    if not exe:
        return "sys.executable is not set"
    name = os.path.basename(exe).lower()
    if "python" not in name and "pypy" not in name:
        return f"sys.executable ({exe}) does not look like a Python interpreter"
    return None


def _after_fork_in_child() -> None:
    """A forked child starts its own helper when it needs one; it closes its copies of the parent's pipes
    (so the parent's helper still sees the end of its input when the parent closes them)."""
    global _LOCK, _helper
    _LOCK = threading.Lock()
    if _helper is not None:
        for fd in (_helper.send_fd, _helper.recv_fd):
            try:
                os.close(fd)
            except OSError:
                pass
    _helper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def writer_pid() -> int | None:
    """The helper's process id, if one is running for this process (no lock: a reading for tests and
    diagnostics, safe to take while folders are being written)."""
    h = _helper
    return h.proc.pid if h is not None and h.alive() else None


def submit(job: Job, done: Done) -> None:
    """Have ``job`` written; ``done(job, path or exception)`` is called once it is, from this call or a
    later ``submit``/``drain`` of any thread (so it must be quick and must not call back in here)."""
    with _LOCK:
        helper = _get_helper()
        if helper is not None:
            try:
                helper.send(job)
                helper.waiting.append((job, done))
                while len(helper.waiting) >= _IN_FLIGHT:
                    _collect(helper)
                return
            except WriterDied as exc:
                _redo(helper, exc)
        done(job, _inline(job))


def drain() -> None:
    """Wait until every job submitted so far is written and its ``done`` called."""
    with _LOCK:
        helper = _helper
        if helper is None:
            return
        try:
            while helper.waiting:
                _collect(helper)
        except WriterDied as exc:
            _redo(helper, exc)


def _collect(helper: _Helper) -> None:
    reply = helper.recv()
    job, done = helper.waiting.popleft()
    done(job, _answer(reply))


def _redo(helper: _Helper, exc: WriterDied) -> None:
    """The helper is gone: write here what it had not confirmed, first removing its half-written folder."""
    _lost(helper, exc)
    while helper.waiting:
        job, done = helper.waiting.popleft()
        done(job, _inline(job, helper.proc.pid))


def _lost(helper: _Helper, exc: WriterDied) -> None:
    global _helper, _failed_in
    log.warning("%s; provenance folders are written in-process from now on", exc)
    helper.close()
    _helper, _failed_in = None, os.getpid()


def _answer(reply: tuple[Any, ...]) -> Path | BaseException:
    if reply[0] == "ok":
        return Path(reply[1])
    _, kind, message, errno = reply
    if errno is not None:
        return OSError(errno, f"{kind}: {message}")
    return RuntimeError(f"{kind}: {message}")


def _inline(job: Job, dead_helper: int | None = None) -> Path | BaseException:
    """Write ``job`` here; after the helper died, first remove what it may have left half-written."""
    root, name, files, fsync = job
    if dead_helper is not None:
        import glob
        import shutil

        # format._temp_folder's names: .<name>.tmp<pid>-...
        for tmp in glob.glob(os.path.join(glob.escape(root), f".{glob.escape(name)}.tmp{dead_helper}-*")):
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        return write_folder(root, name, files, fsync=fsync)
    except Exception as exc:
        return exc


# ------------------------------------------------------------------------------------------------------
# The helper's side
# ------------------------------------------------------------------------------------------------------


def serve() -> None:
    """Run as the helper: read folders from stdin, write each, answer on stdout in order; stop at end of
    input. Folders that ask for fsync and are already waiting in the pipe are written together, with one
    file-system sync for all of them (``write_folders_synced``) instead of a disk flush per file."""
    import select
    import signal

    from looplet.provenance.format import write_folders_synced

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the agent; this ends when its pipe closes
    source, out = sys.stdin.fileno(), sys.stdout.fileno()
    buffered = bytearray()

    def frame() -> Job | None:
        """The next whole job already read, if any."""
        if len(buffered) < _HEADER.size:
            return None
        end = _HEADER.size + _HEADER.unpack_from(buffered)[0]
        if len(buffered) < end:
            return None
        job = marshal.loads(bytes(buffered[_HEADER.size : end]))
        del buffered[:end]
        return job  # type: ignore[no-any-return]

    def read(block: bool) -> bool:
        """Read what the pipe holds (waiting for it if ``block``); False when nothing was there."""
        if not block and not select.select([source], [], [], 0)[0]:
            return False
        chunk = os.read(source, 1 << 20)
        if not chunk:
            raise EOFError
        buffered.extend(chunk)
        return True

    def send(reply: tuple[Any, ...]) -> None:
        body = marshal.dumps(reply)
        _write_all(out, _HEADER.pack(len(body)) + body)

    def answer(result: Path | BaseException) -> None:
        send(
            ("ok", str(result))
            if isinstance(result, Path)
            else ("error", type(result).__name__, str(result), getattr(result, "errno", None))
        )

    send(("ready", _VERSION))
    pending: collections.deque[Job] = collections.deque()
    try:
        while True:
            while not pending:
                job = frame()
                if job is None:
                    read(block=True)
                else:
                    pending.append(job)
            if not pending[0][3]:  # no fsync: write it and answer at once
                root, name, files, _fsync = pending.popleft()
                try:
                    answer(write_folder(root, name, files, fsync=False))
                except Exception as exc:
                    answer(exc)
                continue
            batch: list[Job] = []
            while len(batch) < 64:  # the fsync jobs in a row that are already here
                if not pending:
                    job = frame()
                    if job is None and read(block=False):
                        continue
                    if job is None:
                        break
                    pending.append(job)
                if not pending[0][3]:
                    break
                batch.append(pending.popleft())
            for result in write_folders_synced((root, name, files) for root, name, files, _f in batch):
                answer(result)
    except EOFError:
        return
