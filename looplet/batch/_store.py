"""Tasks in, results out: reading ``TASKS.jsonl``, and the append-only ``RESULTS.jsonl`` that makes a batch
resumable.

A result line is written with one ``os.write`` of the whole line on a descriptor opened with ``O_APPEND``,
so a crash (even ``SIGKILL``) leaves every earlier line whole; at worst the line being written is cut short.
Reading tolerates that: a line that is not a JSON object with an ``id`` is skipped (and counted), and
before the first append of a new session a missing final newline is added, so the torn fragment stays a
line of its own. While a batch writes, it holds an exclusive ``flock`` on the file: a second batch on the
same ``--out`` is refused instead of interleaving with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from looplet.errors import LoopletError

__all__ = ["BatchError", "Task", "read_tasks", "read_results", "ResultsFile", "folder_for"]


class BatchError(LoopletError):
    """The batch cannot start or go on (bad tasks file, results file in use, agent factory unusable);
    the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Task:
    """One line of the tasks file: ``id`` (a line without one gets its line number) and ``task``."""

    id: str
    task: dict[str, Any]


def _task_of(obj: Any, where: str) -> dict[str, Any]:
    if "task" in obj:
        task = obj["task"]
        if isinstance(task, str):
            return {"goal": task}
        if not isinstance(task, dict):
            raise BatchError(f"{where}: 'task' must be an object or a string, got {type(task).__name__}")
        return task
    rest = {k: v for k, v in obj.items() if k != "id"}
    if not rest:
        raise BatchError(f'{where}: no task; write {{"id": ..., "task": {{"goal": "..."}}}}')
    return rest  # a line that is the task itself: {"id": 7, "goal": "..."}


def iter_tasks(path: str) -> Iterator[Task]:
    """The tasks of a JSONL file in order; raises :class:`BatchError` naming the line that is wrong."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot read the tasks file {path!r} ({exc.strerror or exc})") from None
    with f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise BatchError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise BatchError(f'{where}: expected an object like {{"id": 1, "task": {{"goal": "..."}}}}')
            raw_id = obj.get("id", number)
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or raw_id == "":
                raise BatchError(f"{where}: 'id' must be a non-empty string or an integer, got {raw_id!r}")
            yield Task(str(raw_id), _task_of(obj, where))


def read_tasks(path: str) -> list[Task]:
    """Every task of the file; duplicate ids are an error (each task must appear in the results once)."""
    tasks: list[Task] = []
    seen: set[str] = set()
    for t in iter_tasks(path):
        if t.id in seen:
            raise BatchError(f"{path}: task id {t.id!r} appears twice; ids must be unique")
        seen.add(t.id)
        tasks.append(t)
    return tasks


@dataclass(slots=True)
class Results:
    """What a results file holds: records by task id (the first one when an id repeats), and the lines
    skipped as unreadable (a torn last line after a crash)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: int = 0


def read_results(path: str) -> Results:
    out = Results()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise BatchError(f"cannot read the results file {path!r} ({exc.strerror or exc})") from None
    with f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                out.unreadable += 1
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                out.unreadable += 1
                continue
            out.records.setdefault(rec["id"], rec)
    return out


class ResultsFile:
    """The results file opened for appending, locked for this batch. ``append(record)`` writes one line."""

    def __init__(self, path: str, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BatchError(f"cannot write the results file {path!r} ({exc.strerror or exc})") from None
        try:
            _lock(self._fd, path)
            self._mend_last_line()
        except BaseException:
            os.close(self._fd)
            raise

    def _mend_last_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            last = f.read(1)
        if last != b"\n":
            os.write(self._fd, b"\n")  # a torn line from a crash stays a line of its own

    def drop(self, unwanted: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the lines whose record is ``unwanted`` (and unreadable ones); returns how many records went.

        The kept lines are written to a new file that replaces this one in one rename, so a crash leaves
        either the old file or the new one; the new file is locked before the old one is let go."""
        kept: list[bytes] = []
        dropped = 0
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict) and unwanted(rec):
                    dropped += 1
                    continue
                kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
        if not dropped:
            return 0
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            _lock(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        return dropped

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
        view = memoryview(data)
        while view:  # one write for a regular file; the loop only guards against a short write
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the lock
            self._fd = -1

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; one batch per results file is then up to the user
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BatchError(
            f"{path!r} is being written by another looplet batch; wait for it, or choose another --out"
        ) from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def folder_for(task_id: str) -> str:
    """The trajectory folder name of a task: its id when that is a safe file name, else the id with unsafe
    characters replaced and a short hash of the id added (so two ids never share a folder)."""
    safe = _UNSAFE.sub("_", task_id)[:80]
    if safe == task_id and safe not in (".", "..") and not safe.startswith("."):
        return safe
    return f"{safe.lstrip('.') or 'task'}-{hashlib.sha1(task_id.encode()).hexdigest()[:10]}"
