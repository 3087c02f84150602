"""The trajectory folder: what a run looks like on disk, how it is written and how it is read back.

One run::

    trajectory.json        the run: task, agent, models, stop reason, trace id, totals, steps, calls, timeline
    steps/step_01.json     one file per step: call, result, usage, cost, durations, span ids
    call_01_prompt.txt     what LLM call 1 added to the prompt (capped by max_chars_per_call)
    call_01_response.txt   what it answered
    manifest.jsonl         one line per file: path, bytes, sha256

JSON files hold one value per line, looplet's keys in a fixed order and the user's data with sorted keys,
so two runs diff cleanly. ``trajectory.json`` is put in place last: a folder holding it is complete.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet.errors import LoopletError
from looplet.types import Step, ToolCall, Usage, _json_safe

__all__ = ["SCHEMA_VERSION", "TrajectoryError", "RunRecord", "CallRecord", "Trajectory", "render_files"]
__all__ += [
    "write_folder",
    "load_trajectory",
    "find_trajectories",
    "load_files",
    "folder_name",
    "run_folders",
]

#: Bumped when a reader of the previous version could misread a folder.
SCHEMA_VERSION = 1
TRAJECTORY_FILE = "trajectory.json"
Redact = Callable[[str], str]
_compact = json.JSONEncoder(ensure_ascii=False).encode  # one encoder, made once


class TrajectoryError(LoopletError, ValueError):
    """A trajectory folder (or span file) that cannot be read; the message names the file and the problem."""

    def __init__(self, path: Any, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def loads(value: Any) -> Any:
    """A content value: JSON text parsed (text that is not JSON as it is), a tuple as a list."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return list(value) if isinstance(value, tuple) else value


def dumps(value: Any) -> Any:
    """A content value as spans carry it: a string as it is, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(_json_safe(value), ensure_ascii=False)


def shown(result: Any) -> Any:
    """A tool result as a trajectory records it: what the model was shown, parsed back when it is JSON."""
    return loads(dumps(result.text if result.text is not None else result.data))


class Prompt:
    """A call's prompt: ``system`` parts and the first ``n`` of ``messages`` (GenAI semantic-convention
    messages). A run's calls share one growing list, so a call costs its own messages only."""

    __slots__ = ("system", "messages", "n")

    def __init__(self, system: list[Any], messages: list[Any], n: int) -> None:
        self.system, self.messages, self.n = system, messages, n


@dataclass(slots=True)
class CallRecord:
    """One LLM call (one attempt), as its ``chat`` span tells it."""

    number: int
    step: int = 0
    purpose: str = "step"
    model: str | None = None
    provider: str | None = None
    messages: Prompt | None = None  # None without content
    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    cost_usd: float | None = None
    start_ms: float = 0.0
    duration_ms: float = 0.0
    finish_reason: str | None = None
    response_id: str | None = None
    error: str | None = None
    ttfc_ms: float | None = None
    answered: bool = True  # False when the answer is not known (content off, or the call failed)


@dataclass(slots=True)
class RunRecord:
    """One run, as built from its spans, before it is rendered into files."""

    run_id: str
    agent: str = "looplet"
    task: Any = None
    trace_id: str | None = None
    started_at: float = 0.0  # epoch seconds
    duration_ms: float = 0.0
    stop_reason: str | None = None
    error: str | None = None
    final_output: Any = None
    usage: Usage | None = None
    cost_usd: float | None = None
    llm_calls: int | None = None
    provider: str | None = None
    tools: list[dict[str, Any]] | None = None
    steps: list[Step] = field(default_factory=list)
    step_calls: dict[int, int] = field(default_factory=dict)  # step number -> call number
    calls: list[CallRecord] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    content: bool = False


# -- rendering ---------------------------------------------------------------------------------------------


def _canon(value: Any) -> Any:
    """User data with its keys sorted, so equal data is equal text."""
    if isinstance(value, dict):
        return {str(k): _canon(value[k]) for k in sorted(value, key=str)}
    return [_canon(v) for v in value] if isinstance(value, list) else value


def _args_text(args: Any) -> str:
    args = loads(args)
    return json.dumps(_canon(_json_safe(args)), ensure_ascii=False) if not isinstance(args, str) else args


def _block(m: Mapping[str, Any]) -> str:
    """One semantic-convention message as text: ``[role]``, its text, its tool calls as ``→ name({args})``."""
    role, lines = m.get("role", "?"), []
    for p in m.get("parts") or ():
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "tool_call_response":
            role, r = f"tool {p.get('id') or ''}".strip(), p.get("response")
            lines.append(r if isinstance(r, str) else _args_text(r))
        elif kind == "tool_call":
            lines.append(
                f"→ {p.get('name', '?')}({_args_text(p.get('arguments') or {})}) id={p.get('id') or ''}"
            )
        elif isinstance(p, dict) and "content" in p:
            lines.append(str(p["content"]))
    return "\n".join([f"[{role}]", *(t for t in lines if t)])


def _cap(count: int, block: Callable[[int], str], limit: int) -> tuple[str, bool]:
    """Blocks ``0..count-1`` joined; over ``limit`` characters, the head (system prompt, task) and the
    larger tail (the latest turns) with a note between. Renders only the blocks it keeps."""
    total, i = 0, 0
    while i < count and total <= limit:
        total, i = total + len(block(i)) + 2, i + 1
    if total <= limit:
        return "\n\n".join(block(j) for j in range(count)) + "\n", False
    head, tail, room = (
        "\n\n".join(block(j) for j in range(min(count, 3)))[: limit // 4],
        [],
        limit - limit // 4,
    )
    for j in range(count - 1, -1, -1):
        b = block(j)
        if len(b) + 2 > room:
            tail.append(b[len(b) - room :] if room > 0 else "")
            break
        tail.append(b)
        room -= len(b) + 2
    return f"{head}\n[… cut by max_chars_per_call={limit} …]\n" + "\n\n".join(reversed(tail)) + "\n", True


_PLAIN: dict[type, Callable[[Any], str]] = {
    int: str,
    type(None): lambda _v: "null",
    bool: lambda v: "true" if v else "false",
}


def _lines(d: Mapping[str, Any]) -> str:
    """An object with one key per line (looplet's own keys: plain ASCII), lists one item per line,
    anything deeper on its line."""
    out = []
    for k, v in d.items():
        if isinstance(v, list) and v:
            out.append(f'  "{k}": [\n    ' + ",\n    ".join(map(_compact, v)) + "\n  ]")
        else:
            out.append(f'  "{k}": {_PLAIN.get(type(v), _compact)(v)}')
    return "{\n" + ",\n".join(out) + "\n}\n"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _walk(value: Any, redact: Redact) -> Any:
    """``redact`` on every string of a JSON-like value, keys included (for a redactor without redact_json)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _walk(v, redact) for k, v in value.items()}
    return [_walk(v, redact) for v in value] if isinstance(value, list) else value


class _Render:
    """One run's files. User data (task, arguments, results, answers, events) goes through the redactor's
    ``redact_json`` (so secret-named keys are blanked too); then each file's whole text through the
    redactor (looplet's own fields: names, errors, ...)."""

    #: the first line of a prompt file that holds only what the call added to an earlier call's prompt
    AFTER = "[… the prompt of call {0} (call_{0:02d}_prompt.txt), then …]"

    def __init__(self, redact: Redact | None, limit: int) -> None:
        self.limit, self.files, self.cache = limit, {}, {}  # type: int, dict[str, str], dict[int, Any]
        tree = getattr(redact, "redact_json", None) or (lambda v: _walk(v, redact)) if redact else None
        self.tree: Callable[[Any], Any] = tree or (lambda v: v)

    def user(self, value: Any) -> Any:
        return self.tree(_canon(_json_safe(value)))

    def step(self, s: Step) -> dict[str, Any]:
        d = s.to_dict()
        tc, tr = d["tool_call"], d["tool_result"]
        tc["args"], tc["reasoning"], tr["data"], tr["error"] = self.tree([_canon(tc["args"]), tc["reasoning"], _canon(tr["data"]), tr["error"]])  # fmt: skip
        if s.children:
            d["children"] = [self.step(c) for c in s.children]
        return d

    def call(self, c: CallRecord, prev: tuple[int, Prompt] | None) -> dict[str, Any]:
        text = (
            c.text
            if c.text is None or len(c.text) <= self.limit
            else _cap(1, lambda _i: c.text or "", self.limit)[0]
        )
        tool_calls = [{"id": t.id, "tool": t.tool, "args": _canon(_json_safe(t.args))} for t in c.tool_calls]
        tool_calls, text, error = self.tree([tool_calls, text, c.error])
        e: dict[str, Any] = {
            "number": c.number, "step": c.step, "purpose": c.purpose, "model": c.model,
            "usage": c.usage.to_dict() if c.usage else None, "cost_usd": c.cost_usd,
            "duration_ms": _ms(c.duration_ms), "finish_reason": c.finish_reason, "response_id": c.response_id,
            "error": error, "tool_calls": tool_calls, "text": text, "answered": c.answered,
        }  # fmt: skip
        if c.ttfc_ms is not None:
            e["ttfc_ms"] = _ms(c.ttfc_ms)
        if c.messages is not None:
            e["prompt_file"], e["prompt_after"], e["prompt_truncated"] = self.prompt(
                c.number, c.messages, prev
            )
        if c.answered or c.error is not None:
            e["response_file"] = name = f"call_{c.number:02d}_response.txt"
            lines = (
                [f"[error]\n{c.error}"]
                if c.error is not None
                else ["[assistant]", *([c.text] if c.text else [])]
            )
            lines += [f"→ {t.tool}({_args_text(t.args)}) id={t.id}" for t in c.tool_calls if c.error is None]
            self.files[name], e["response_truncated"] = _cap(1, lambda _i: "\n".join(lines), self.limit)
        return e

    def prompt(self, number: int, p: Prompt, prev: tuple[int, Prompt] | None) -> tuple[str, int | None, bool]:
        """Write call ``number``'s prompt file: only what it adds when it continues the last prompt."""
        first = [{"role": "system", "parts": p.system}] if p.system else []
        start, after, q = 0, None, prev[1] if prev is not None else None
        if q is not None and q.system == p.system and q.n <= p.n:
            if q.messages is p.messages or q.messages[: q.n] == p.messages[: q.n]:
                start, after = len(first) + q.n, prev[0] if prev is not None else None

        def block(i: int) -> str:  # the calls of a capture route share message objects: render each once
            m = first[i + start] if i + start < len(first) else p.messages[i + start - len(first)]
            b = self.cache.get(id(m))
            if b is None or b[0] is not m:
                b = self.cache[id(m)] = (m, _block(m))
            return str(b[1])

        name = f"call_{number:02d}_prompt.txt"
        text, cut = _cap(len(first) + p.n - start, block, self.limit)
        self.files[name] = text if after is None else f"{self.AFTER.format(after)}\n\n{text}"
        return name, after, cut


def render_files(rec: RunRecord, redact: Redact | None = None, limit: int = 200_000) -> dict[str, str]:
    """The folder's files as ``{relative path: text}``, every byte of them through ``redact``."""
    r, entries, calls, prev = _Render(redact, limit), [], [], None
    for s in rec.steps:
        path, d = f"steps/step_{s.number:02d}.json", r.step(s)
        d["llm_call"] = rec.step_calls.get(s.number)
        r.files[path] = _lines(d)
        entry = {
            "number": s.number,
            "tool": s.tool_call.tool,
            "ok": s.ok,
            "error_kind": s.tool_result.error_kind,
        }
        entries.append({**entry, "file": path, "llm_call": d["llm_call"]})
    for c in rec.calls:
        calls.append(r.call(c, prev))
        prev = (c.number, c.messages) if c.messages is not None else prev
    r.files[TRAJECTORY_FILE] = _lines(_trajectory(rec, entries, calls, r))
    return {k: redact(v) for k, v in r.files.items()} if redact is not None else r.files


def _totals(rec: RunRecord) -> tuple[Usage, float | None, int]:
    """The run's usage, cost and LLM calls as its span gives them, else summed over its calls."""
    if rec.usage is not None and rec.llm_calls is not None:
        return rec.usage, rec.cost_usd, rec.llm_calls
    priced = [c.cost_usd for c in rec.calls if c.cost_usd is not None]
    usage = sum((c.usage for c in rec.calls if c.usage), Usage())
    return usage, sum(priced) if priced else None, sum(c.error is None for c in rec.calls)


def _trajectory(rec: RunRecord, entries: list[Any], calls: list[Any], r: _Render) -> dict[str, Any]:
    """``trajectory.json``'s content. Totals are the run's own; summed over its calls only when it has none."""
    usage, cost, llm_calls = _totals(rec)
    models = list(dict.fromkeys(m for m in [c.model for c in rec.calls] + [s.model for s in rec.steps] if m))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.started_at)) if rec.started_at else None
    order = sorted(
        rec.timeline, key=lambda e: (e["start_ms"], e["kind"] != "llm", e.get("call") or 0, e["step"] or 0)
    )
    timeline = [{k: _ms(v) if k in ("start_ms", "duration_ms") else v for k, v in e.items()} for e in order]
    events = [{**e, "attributes": r.user(e.get("attributes"))} for e in rec.events]
    return {
        "schema_version": SCHEMA_VERSION, "run_id": rec.run_id, "agent": rec.agent, "task": r.user(rec.task),
        "models": models, "provider": rec.provider, "stop_reason": rec.stop_reason, "error": rec.error,
        "final_output": r.user(rec.final_output), "trace_id": rec.trace_id, "started_at": started,
        "duration_ms": _ms(rec.duration_ms), "usage": usage.to_dict(), "cost_usd": cost, "llm_calls": llm_calls,
        "step_count": len(rec.steps), "content": rec.content, "steps": entries, "calls": calls,
        "tools": r.user(rec.tools or []), "timeline": [{**e, "error": r.tree(e["error"])} if e.get("error") else e for e in timeline], "events": events,
    }  # fmt: skip


def folder_name(rec: RunRecord, redact: Redact | None = None) -> str:
    """``<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>`` (UTC start time): runs sort by start."""
    unsafe = re.compile(r"[^A-Za-z0-9_.-]+")
    agent = (
        unsafe.sub("_", redact(rec.agent) if redact is not None else rec.agent).strip("._")[:40] or "agent"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(rec.started_at or time.time()))
    return f"{stamp}-{agent}-{unsafe.sub('', rec.run_id)[:8] or 'run'}"


# -- writing -----------------------------------------------------------------------------------------------


def _write_file(path: str, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)  # a regular file takes all of it at once
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder(
    root: str | os.PathLike[str], name: str, files: Mapping[str, str], *, fsync: bool = False
) -> Path:
    """Write ``files`` as the run folder ``root/name``, which must hold no run yet.

    Everything is written under a temporary dotted name first. When ``root/name`` does not exist, that
    folder is renamed to it; else (an empty or user-made folder) its entries are renamed into it, with
    ``trajectory.json`` last. Either way a reader finds a whole run or none; a crash leaves at worst a
    dotted temporary folder. With ``fsync`` the files and folders are on the disk before each rename."""
    final = os.path.join(os.fspath(root), name)
    exists = os.path.isdir(final)
    tmp = os.path.join(
        final if exists else os.fspath(root), f".{name}.tmp{os.getpid()}-{os.urandom(4).hex()}"
    )
    data = {k: v.encode("utf-8") for k, v in files.items()}
    data["manifest.jsonl"] = "".join(
        f'{{"bytes": {len(b)}, "path": {json.dumps(p)}, "sha256": "{hashlib.sha256(b).hexdigest()}"}}\n'
        for p, b in sorted(data.items())
    ).encode()
    try:
        os.makedirs(os.path.join(tmp, "steps"))  # and the parents: an unwritable one fails here
        for rel, b in data.items():
            _write_file(os.path.join(tmp, rel), b, fsync)
        for d in (os.path.join(tmp, "steps"), tmp) if fsync else ():
            _sync_dir(d)
        if not exists:
            os.rename(tmp, final)
        else:
            for rel in sorted(os.listdir(tmp), key=lambda r: r == TRAJECTORY_FILE):
                os.rename(os.path.join(tmp, rel), os.path.join(final, rel))
            os.rmdir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if fsync:
        _sync_dir(final if exists else os.fspath(root))
    return Path(final)


# -- reading -----------------------------------------------------------------------------------------------


class Trajectory:
    """A run read back from its folder (or from spans, in memory): what ``show``, evals and replay use.
    ``data`` is ``trajectory.json``; ``steps`` are :class:`looplet.types.Step` objects from the step files."""

    def __init__(self, path: Path | None, data: dict[str, Any], steps: list[Step], files: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.path, self.data, self.steps, self._files = path, data, steps, files

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else f"{self.agent}-{self.run_id[:8]}"

    run_id = property(lambda self: str(self.data.get("run_id") or ""))
    agent = property(lambda self: str(self.data.get("agent") or ""))
    task = property(lambda self: self.data.get("task"))
    stop_reason = property(lambda self: self.data.get("stop_reason"))
    error = property(lambda self: self.data.get("error"))
    final_output = property(lambda self: self.data.get("final_output"))
    trace_id = property(lambda self: self.data.get("trace_id"))
    models = property(lambda self: list(self.data.get("models") or []))
    cost_usd = property(lambda self: self.data.get("cost_usd"))
    duration_ms = property(lambda self: float(self.data.get("duration_ms") or 0.0))
    llm_calls = property(lambda self: int(self.data.get("llm_calls") or 0))
    calls = property(lambda self: list(self.data.get("calls") or []))
    timeline = property(lambda self: list(self.data.get("timeline") or []))
    events = property(lambda self: list(self.data.get("events") or []))
    tools = property(lambda self: list(self.data.get("tools") or []))
    usage = property(lambda self: Usage.from_dict(self.data.get("usage")) or Usage())

    def text(self, relpath: str) -> str | None:
        """A call's prompt or response file (None when it was not recorded)."""
        if self._files is not None:
            return self._files.get(relpath)
        return _read(self.path / relpath) if self.path is not None else None

    def prompt(self, call_number: int) -> str | None:
        """The whole text the model saw for a call (a prompt file that continues an earlier call's
        prompt is joined to it)."""
        after = {c.get("number"): c.get("prompt_after") for c in self.calls if isinstance(c, dict)}
        parts: list[str] = []
        n: Any = call_number
        while n is not None and len(parts) <= len(after):
            text = self.text(f"call_{n:02d}_prompt.txt")
            if text is None:
                return None
            head = _Render.AFTER.format(after.get(n)) + "\n\n" if after.get(n) is not None else ""
            parts.append(text.removeprefix(head).rstrip("\n"))
            n = after.get(n)
        return "\n\n".join(reversed(parts)) + "\n"

    def response(self, call_number: int) -> str | None:
        return self.text(f"call_{call_number:02d}_response.txt")

    def __repr__(self) -> str:
        return f"Trajectory({self.name!r}, stop_reason={self.stop_reason!r}, steps={len(self.steps)})"


def _parse(where: Any, raw: str) -> Any:
    if not raw.strip():
        raise TrajectoryError(where, "is empty (truncated write?)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:  # a cut-off file fails at its very end
        cut = exc.pos >= len(raw.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        why = f"{'truncated' if cut else 'corrupted'} JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise TrajectoryError(where, why) from None


def _check(where: Any, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TrajectoryError(
            where, f"not a looplet trajectory (a JSON {type(data).__name__}, expected an object)"
        )
    version = data.get("schema_version")
    if version is None:
        raise TrajectoryError(where, "not a looplet trajectory (no schema_version)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TrajectoryError(where, f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        from looplet import __version__

        why = f"schema version {version} is newer than this looplet ({__version__}) reads (up to {SCHEMA_VERSION}); upgrade looplet to read it"
        raise TrajectoryError(where, why)
    for key in ("steps", "calls", "timeline", "events"):
        if key in data and not isinstance(data[key], list):
            raise TrajectoryError(where, f"field {key!r} must be a list, got {type(data[key]).__name__}")
    if data.get("usage") is not None and not isinstance(data["usage"], dict):
        raise TrajectoryError(where, "field 'usage' must be an object")
    return data


def _steps(where: Any, data: dict[str, Any], read: Callable[[str], str | None]) -> list[Step]:
    steps = []
    for i, entry in enumerate(data.get("steps", [])):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise TrajectoryError(where, f"steps[{i}] has no valid 'file'")
        raw = read(rel)
        if raw is None:
            raise TrajectoryError(f"{where}/{rel}", f"missing (listed in {TRAJECTORY_FILE})")
        try:
            steps.append(Step.from_dict(_parse(f"{where}/{rel}", raw)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, TrajectoryError):
                raise
            raise TrajectoryError(f"{where}/{rel}", f"not a step ({type(exc).__name__}: {exc})") from None
    return steps


def load_files(name: str, files: Mapping[str, str]) -> Trajectory:
    """A trajectory from rendered files kept in memory (``show`` on OTLP JSON uses this)."""
    data = _check(f"{name}/{TRAJECTORY_FILE}", _parse(f"{name}/{TRAJECTORY_FILE}", files[TRAJECTORY_FILE]))
    return Trajectory(None, data, _steps(name, data, files.get), files)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise TrajectoryError(path, "corrupted: not UTF-8 text") from None
    except OSError as exc:
        raise TrajectoryError(path, f"cannot be read ({exc.strerror or exc})") from None


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read one run's folder. Raises :class:`TrajectoryError` naming the file and what is wrong."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() and folder.name == TRAJECTORY_FILE else folder
    if not folder.exists():
        raise TrajectoryError(folder, "no such file or directory")
    if folder.is_file():
        why = f"is a file, not a trajectory folder (expected a folder with {TRAJECTORY_FILE}, or an OTLP JSON span file)"
        raise TrajectoryError(folder, why)
    raw = _read(folder / TRAJECTORY_FILE)
    if raw is None:
        why = f"not a trajectory folder: no {TRAJECTORY_FILE} in it (expected a folder written by ProvenanceSink)"
        raise TrajectoryError(folder, why)
    data = _check(folder / TRAJECTORY_FILE, _parse(folder / TRAJECTORY_FILE, raw))
    return Trajectory(folder, data, _steps(folder, data, lambda rel: _read(folder / rel)))


def run_folders(folder: Path) -> list[Path]:
    """The runs in ``folder``: itself when it holds a run (a sink's first run), then each sub-folder that
    holds one (the sink's later runs), sorted by name, which starts with the run's start time."""
    subs = sorted(
        d for d in folder.iterdir() if not d.name.startswith(".") and (d / TRAJECTORY_FILE).is_file()
    )
    return ([folder] if (folder / TRAJECTORY_FILE).is_file() else []) + subs


def find_trajectories(paths: Iterable[str | os.PathLike[str]]) -> list[Trajectory]:
    """Every trajectory under ``paths``: each a run folder, a folder of run folders, or both."""
    found: list[Trajectory] = []
    for p in paths:
        folder = Path(p)
        runs = run_folders(folder) if folder.is_dir() else []
        if folder.is_dir() and not runs:
            why = f"not a trajectory folder: no {TRAJECTORY_FILE} in it or in its sub-folders (expected a folder written by ProvenanceSink)"
            raise TrajectoryError(folder, why)
        found.extend(load_trajectory(d) for d in runs or [folder])
    return found
