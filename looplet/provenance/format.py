"""The trajectory folder (``trajectory.json``, ``steps/step_NN.json``, ``call_NN_prompt.txt``,
``call_NN_response.txt``, ``manifest.jsonl``; see docs/provenance.md): how a run is rendered into it,
written and read back. JSON files hold one value per line with every object's keys sorted, so two runs
diff cleanly. ``trajectory.json`` is put in place last: a folder holding it is complete. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet.errors import LoopletError
from looplet.types import Step, Usage, _json_safe

__all__ = ["SCHEMA_VERSION", "TrajectoryError", "RunRecord", "Trajectory", "render_files", "write_folder"]
__all__ += ["load_trajectory", "find_trajectories", "load_files", "folder_name", "run_folders"]

#: Bumped when a reader of the previous version could misread a folder.
SCHEMA_VERSION = 1
TRAJECTORY_FILE = "trajectory.json"
#: the first line of a prompt file that holds only what the call added to an earlier call's prompt
PROMPT_AFTER = "[… the prompt of call {0} (call_{0:02d}_prompt.txt), then …]"
Redact = Callable[[str], str]


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
class RunRecord:
    """One run as its spans tell it, before it is rendered into files: ``data`` is ``trajectory.json``
    (its ``steps`` and ``calls`` filled in when rendered; strings not redacted yet), ``calls`` each LLM
    call attempt's entry with its prompt (None without content), ``step_calls`` step -> call number."""

    run_id: str
    agent: str
    started_at: float  # epoch seconds
    data: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    calls: list[tuple[dict[str, Any], Prompt | None]] = field(default_factory=list)
    step_calls: dict[int, int] = field(default_factory=dict)


# -- rendering ---------------------------------------------------------------------------------------------

#: JSON as the files hold it: every object's keys sorted (the user's data and looplet's nested objects),
#: so equal data is equal text whatever order it was built in.
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


def _value(v: Any) -> str:
    """One JSON value; ints, plain strings and finite floats without the encoder (most of a step file)."""
    kind = type(v)
    if kind is int:
        return str(v)
    if v is None or kind is bool:
        return "null" if v is None else "true" if v else "false"
    if kind is str and v.isprintable() and '"' not in v and "\\" not in v:
        return f'"{v}"'
    return repr(v) if kind is float and math.isfinite(v) else _encode(v)


def _lines(d: Mapping[str, Any]) -> str:
    """An object with one key per line (looplet's keys: plain ASCII), a list one item per line. A list of
    objects is encoded at once and cut where one object ends and the next begins: ``}, {"`` occurs
    nowhere else in a list of flat objects (a quote inside a string is always escaped); in an object
    that holds a list of objects it only adds a line break."""
    out = []
    for k, v in d.items():
        if type(v) is list and v:
            if type(v[0]) is dict:
                items = _encode(v)[1:-1].replace('}, {"', '},\n    {"')
            else:
                items = ",\n    ".join(map(_value, v))
            out.append(f'  "{k}": [\n    {items}\n  ]')
        else:
            out.append(f'  "{k}": {_value(v)}')
    return "{\n" + ",\n".join(out) + "\n}\n"


def _args_text(args: Any) -> str:
    args = loads(args)
    return args if isinstance(args, str) else _encode(_json_safe(args))


def _block(m: Mapping[str, Any]) -> str:
    """One semantic-convention message as text: ``[role]``, its text, its tool calls as ``→ name({args})``."""
    role, lines = m.get("role", "?"), []
    for p in m.get("parts") or ():
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "tool_call_response":
            role, r = f"tool {p.get('id') or ''}".strip(), p.get("response")
            lines.append(r if isinstance(r, str) else _args_text(r))
        elif kind == "tool_call":
            args = _args_text(p.get("arguments") or {})
            lines.append(f"→ {p.get('name', '?')}({args}) id={p.get('id') or ''}")
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
    head = "\n\n".join(block(j) for j in range(min(count, 3)))[: limit // 4]
    tail, room = [], limit - limit // 4
    for j in range(count - 1, -1, -1):
        b = block(j)
        if len(b) + 2 > room:
            tail.append(b[len(b) - room :] if room > 0 else "")
            break
        tail.append(b)
        room -= len(b) + 2
    return f"{head}\n[… cut by max_chars_per_call={limit} …]\n" + "\n\n".join(reversed(tail)) + "\n", True


def _walk(value: Any, redact: Redact) -> Any:
    """``redact`` on every string of a JSON-like value, keys included (for a redactor without redact_json)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _walk(v, redact) for k, v in value.items()}
    return [_walk(v, redact) for v in value] if isinstance(value, list) else value


class _Render:
    """One run's files, every string in them redacted: the user's data (task, arguments, results, answers,
    events) through the redactor's ``redact_json`` (so secret-named keys are blanked too), looplet's own
    strings (names, kinds, errors) each distinct one once, and the prompt and response files whole."""

    def __init__(self, redact: Redact | None, limit: int) -> None:
        self.redact, self.limit = redact, limit
        self.files: dict[str, str] = {}
        self.blocks: dict[int, tuple[Any, str]] = {}  # id(message) -> (message, its text)
        self.seen: dict[str, str] = {}
        tree = getattr(redact, "redact_json", None) or (lambda v: _walk(v, redact)) if redact else None
        self.tree: Callable[[Any], Any] = tree or (lambda v: v)

    def s(self, text: Any) -> Any:
        """One of looplet's own strings (a name, a kind, an error), redacted; None stays None."""
        if text is None or self.redact is None:
            return text
        out = self.seen.get(text)
        if out is None:
            out = self.seen[text] = self.redact(text)
        return out

    def write(self, name: str, text: str) -> None:
        self.files[name] = self.redact(text) if self.redact is not None else text

    def step(self, s: Step) -> dict[str, Any]:
        d = s.to_dict()
        c, r = d["tool_call"], d["tool_result"]
        for obj, key in ((c, "args"), (c, "reasoning"), (r, "data"), (r, "error")):
            obj[key] = self.tree(obj[key])
        for obj, key in ((c, "tool"), (c, "id"), (r, "error_kind"), (d, "model")):
            obj[key] = self.s(obj[key])
        if s.children:
            d["children"] = [self.step(c) for c in s.children]
        return d

    def call(self, c: dict[str, Any], p: Prompt | None, prev: tuple[int, Prompt] | None) -> dict[str, Any]:
        """Call ``c``'s entry, redacted, with its prompt and response files written."""
        n, error, text = c["number"], c["error"], c["text"]
        text = text if text is None or len(text) <= self.limit else _cap(1, lambda _i: text, self.limit)[0]
        tool_calls, text = self.tree([c["tool_calls"], text])
        own = {k: self.s(c[k]) for k in ("purpose", "model", "finish_reason", "response_id", "error")}
        e = {**c, **own, "tool_calls": tool_calls, "text": text}
        if p is not None:
            e["prompt_file"], e["prompt_after"], e["prompt_truncated"] = self.prompt(n, p, prev)
        if c["answered"] or error is not None:
            e["response_file"] = name = f"call_{n:02d}_response.txt"
            answer = ["[assistant]", *filter(None, [c["text"]])]
            answer += [f"→ {t['tool']}({_args_text(t['args'])}) id={t['id']}" for t in c["tool_calls"]]
            lines = [f"[error]\n{error}"] if error is not None else answer
            text, e["response_truncated"] = _cap(1, lambda _i: "\n".join(lines), self.limit)
            self.write(name, text)
        return e

    def prompt(self, number: int, p: Prompt, prev: tuple[int, Prompt] | None) -> tuple[str, int | None, bool]:
        """Write call ``number``'s prompt file: only what it adds when it continues the last prompt."""
        first = [{"role": "system", "parts": p.system}] if p.system else []
        start, after, q = 0, None, prev[1] if prev is not None else None
        if prev is not None and q is not None and q.system == p.system and q.n <= p.n:
            if q.messages is p.messages or q.messages[: q.n] == p.messages[: q.n]:
                start, after = len(first) + q.n, prev[0]

        def block(i: int) -> str:  # the calls of a run share message objects: each rendered once
            m = first[i + start] if i + start < len(first) else p.messages[i + start - len(first)]
            b = self.blocks.get(id(m))
            if b is None or b[0] is not m:
                b = self.blocks[id(m)] = (m, _block(m))
            return b[1]

        name = f"call_{number:02d}_prompt.txt"
        text, cut = _cap(len(first) + p.n - start, block, self.limit)
        self.write(name, text if after is None else f"{PROMPT_AFTER.format(after)}\n\n{text}")
        return name, after, cut


def _redacted(d: dict[str, Any], redact: Callable[[Any], Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``d`` with the strings under ``keys`` redacted: ``d`` itself when that changes none (no copy)."""
    new = {k: v for k in keys if (v := redact(d[k])) is not d[k]}
    return {**d, **new} if new else d


def render_files(rec: RunRecord, redact: Redact | None = None, limit: int = 200_000) -> dict[str, str]:
    """The folder's files as ``{relative path: text}``, every string in them through ``redact``."""
    r, d, prev = _Render(redact, limit), rec.data, None
    entries, calls = [], []
    for s in rec.steps:
        path, step, llm_call = f"steps/step_{s.number:02d}.json", r.step(s), rec.step_calls.get(s.number)
        step["llm_call"] = llm_call
        r.files[path] = _lines(step)
        tool, kind = step["tool_call"]["tool"], step["tool_result"]["error_kind"]
        entry = {"number": s.number, "tool": tool, "ok": s.ok, "error_kind": kind, "file": path}
        entries.append({**entry, "llm_call": llm_call})
    for c, prompt in rec.calls:
        calls.append(r.call(c, prompt, prev))
        prev = (c["number"], prompt) if prompt is not None else prev
    timeline = [_redacted(e, r.s, ("name", "error")) for e in d["timeline"]]
    events = [{**e, "name": r.s(e["name"]), "attributes": r.tree(e.get("attributes"))} for e in d["events"]]
    texts = {k: r.s(d[k]) for k in ("run_id", "agent", "provider", "stop_reason", "error")}
    users = {k: r.tree(_json_safe(d[k])) for k in ("task", "final_output", "tools")}
    out = {**d, **texts, **users, "models": [r.s(m) for m in d["models"]], "steps": entries, "calls": calls}
    r.files[TRAJECTORY_FILE] = _lines({**out, "timeline": timeline, "events": events})
    return r.files


def folder_name(rec: RunRecord, redact: Redact | None = None) -> str:
    """``<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>`` (UTC start time): runs sort by start."""
    unsafe, agent = re.compile(r"[^A-Za-z0-9_.-]+"), redact(rec.agent) if redact is not None else rec.agent
    agent = unsafe.sub("_", agent).strip("._")[:40] or "agent"
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
        f'{{"bytes": {len(b)}, "path": {_value(p)}, "sha256": "{hashlib.sha256(b).hexdigest()}"}}\n'
        for p, b in sorted(data.items())
    ).encode()
    try:
        os.makedirs(os.path.join(tmp, "steps"))  # and the parents: an unwritable one fails here
        for rel, b in data.items():
            _write_file(f"{tmp}/{rel}", b, fsync)
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
    ``data`` is ``trajectory.json``; ``steps`` are :class:`looplet.types.Step` objects from the step files;
    ``text(relpath)`` is a call's prompt or response file (None when it was not recorded)."""

    def __init__(self, path: Path | None, data: dict[str, Any], steps: list[Step], text: Callable[[str], str | None]) -> None:  # fmt: skip
        self.path, self.data, self.steps, self.text = path, data, steps, text

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
            head = PROMPT_AFTER.format(after.get(n)) + "\n\n" if after.get(n) is not None else ""
            parts.append(text.removeprefix(head).rstrip("\n"))
            n = after.get(n)
        return "\n\n".join(reversed(parts)) + "\n"

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
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(data, dict):
        why = f"not a looplet trajectory (a JSON {type(data).__name__}, expected an object)"
    elif version is None:
        why = "not a looplet trajectory (no schema_version)"
    elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
        why = f"schema_version must be a positive integer, got {version!r}"
    elif version > SCHEMA_VERSION:
        from looplet import __version__

        why = f"schema version {version} is newer than this looplet ({__version__}) reads (up to {SCHEMA_VERSION}); upgrade looplet to read it"  # fmt: skip
    elif bad := [
        k for k in ("steps", "calls", "timeline", "events") if not isinstance(data.get(k, []), list)
    ]:
        why = f"field {bad[0]!r} must be a list, got {type(data[bad[0]]).__name__}"
    elif not isinstance(data.get("usage") or {}, dict):
        why = "field 'usage' must be an object"
    else:
        return data
    raise TrajectoryError(where, why)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise TrajectoryError(path, "corrupted: not UTF-8 text") from None
    except OSError as exc:
        raise TrajectoryError(path, f"cannot be read ({exc.strerror or exc})") from None


def load_files(where: Any, read: Callable[[str], str | None], path: Path | None = None) -> Trajectory:
    """A run from its files, ``read(relative path)`` giving each (None: missing): from a folder, or from
    rendered files kept in memory (``show`` on OTLP JSON)."""
    raw = read(TRAJECTORY_FILE)
    if raw is None:
        why = f"not a trajectory folder: no {TRAJECTORY_FILE} in it (expected a folder written by ProvenanceSink)"
        raise TrajectoryError(where, why)
    data, steps = _check(f"{where}/{TRAJECTORY_FILE}", _parse(f"{where}/{TRAJECTORY_FILE}", raw)), []
    for i, entry in enumerate(data.get("steps", [])):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise TrajectoryError(where, f"steps[{i}] has no valid 'file'")
        if (raw := read(rel)) is None:
            raise TrajectoryError(f"{where}/{rel}", f"missing (listed in {TRAJECTORY_FILE})")
        step = _parse(f"{where}/{rel}", raw)
        try:
            steps.append(Step.from_dict(step))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrajectoryError(f"{where}/{rel}", f"not a step ({type(exc).__name__}: {exc})") from None
    return Trajectory(path, data, steps, read)


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read one run's folder. Raises :class:`TrajectoryError` naming the file and what is wrong."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() and folder.name == TRAJECTORY_FILE else folder
    if not folder.exists():
        raise TrajectoryError(folder, "no such file or directory")
    if folder.is_file():
        why = f"is a file, not a trajectory folder (expected a folder with {TRAJECTORY_FILE}, or an OTLP JSON span file)"
        raise TrajectoryError(folder, why)
    return load_files(folder, lambda rel: _read(folder / rel), folder)


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
            why = f"not a trajectory folder: no {TRAJECTORY_FILE} in it or in its sub-folders (expected a folder written by ProvenanceSink)"  # fmt: skip
            raise TrajectoryError(folder, why)
        found.extend(load_trajectory(d) for d in runs or [folder])
    return found
