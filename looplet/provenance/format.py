"""The trajectory folder: what a run looks like on disk, how it is written and how it is read back.

One folder per run::

    <dir>/<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>/
        trajectory.json        the run: task, agent, models, stop reason, trace id, totals, steps, calls, timeline
        steps/step_01.json     one file per step: call, result, usage, cost, durations, span ids
        call_01_prompt.txt     the full text the model saw for LLM call 1 (capped by max_chars_per_call)
        call_01_response.txt   what it answered
        manifest.jsonl         one line per file: path, bytes, sha256

Files are JSON with sorted keys and two-space indents, and step files hold no wall-clock times (only
durations), so two runs of the same agent diff cleanly. A folder is written under a temporary name and
renamed into place, so a reader never sees half of one. This module uses only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet.errors import LoopletError
from looplet.types import Step, ToolCall, Usage, _json_safe

__all__ = [
    "SCHEMA_VERSION",
    "TrajectoryError",
    "RunRecord",
    "CallRecord",
    "Trajectory",
    "render_files",
    "write_folder",
    "write_folders_synced",
    "load_trajectory",
    "find_trajectories",
    "render_messages",
    "render_response",
]

#: Bumped when a reader of the previous version could misread a folder.
SCHEMA_VERSION = 1
TRAJECTORY_FILE = "trajectory.json"
MANIFEST_FILE = "manifest.jsonl"

Redact = Callable[[str], str]


class TrajectoryError(LoopletError, ValueError):
    """A trajectory folder (or span file) that cannot be read; the message names the file and the problem."""

    def __init__(self, path: Any, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# --------------------------------------------------------------------------------------------------------
# What the capture paths (hook, wrapped backend, spans) fill in
# --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CallRecord:
    """One LLM call (one attempt): request, answer, usage and timing."""

    number: int
    step: int = 0  # the step number the loop was about to take
    purpose: str = "step"
    model: str | None = None
    provider: str | None = None
    messages: list[dict[str, Any]] | None = None  # OpenAI chat format; None when content was not captured
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
    span_id: str | None = None
    answered: bool = True  # False when only the request is known (content off, or the call failed)


@dataclass(slots=True)
class RunRecord:
    """Everything known about one run, before it is rendered into files."""

    run_id: str
    agent: str = "looplet"
    task: Any = None
    trace_id: str | None = None
    span_id: str | None = None
    started_at: float = 0.0  # epoch seconds
    duration_ms: float = 0.0
    stop_reason: str | None = None
    error: str | None = None
    final_output: Any = None
    usage: Usage | None = None
    cost_usd: float | None = None
    llm_calls: int | None = None
    provider: str | None = None
    done_tool: str = "done"
    max_steps: int | None = None
    tools: list[dict[str, Any]] | None = None
    steps: list[Step] = field(default_factory=list)
    step_calls: dict[int, int] = field(default_factory=dict)  # step number -> call number
    calls: list[CallRecord] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    content: bool = True
    source: str = "hook"
    first_step: int = 1  # steps numbered below it were taken before a resume (no LLM call of this run)

    def models(self) -> list[str]:
        seen: list[str] = []
        for m in [c.model for c in self.calls] + [s.model for s in self.steps]:
            if m and m not in seen:
                seen.append(m)
        return seen

    def link_steps(self) -> None:
        """Fill ``step_calls`` for steps the capture path could not link directly (by tool-call id,
        then by order)."""
        by_id: dict[str, int] = {}
        for c in self.calls:
            for tc in c.tool_calls:
                if tc.id:
                    by_id.setdefault(tc.id, c.number)
        answered = [c for c in self.calls if c.error is None and c.purpose == "step"]
        k = 0
        for s in self.steps:
            if s.number in self.step_calls or s.number < self.first_step:
                continue
            n = by_id.get(s.tool_call.id)
            if n is None and s.usage is not None and k < len(answered):
                n = answered[k].number  # the first step of a response carries its usage
                k += 1
            if n is not None:
                self.step_calls[s.number] = n


# --------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------

_ARGS_CACHE: dict[str, str] = {}  # arguments JSON -> canonical text (prompts repeat every earlier call)


def _canonical_args(arguments: Any) -> str:
    if isinstance(arguments, str):
        hit = _ARGS_CACHE.get(arguments)
        if hit is not None:
            return hit
        text = _canonical_args(_loads_or(arguments))
        if len(arguments) <= 2048:
            if len(_ARGS_CACHE) >= 4096:
                _ARGS_CACHE.clear()
            _ARGS_CACHE[arguments] = text
        return text
    if isinstance(arguments, _Raw):
        return arguments.text
    return _ENCODE_SORTED(_json_safe(arguments))


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _loads_or(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _Raw(text)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("content"), str):
                out.append(part["content"])
            else:
                out.append(json.dumps(_json_safe(part), ensure_ascii=False, sort_keys=True))
        return "\n".join(out)
    return json.dumps(_json_safe(content), ensure_ascii=False, sort_keys=True)


def render_messages(
    messages: Iterable[Mapping[str, Any]], cache: dict[int, str] | None = None, redact: Redact | None = None
) -> str:
    """The chat transcript as plain text: one ``[role]`` block per message, tool calls as
    ``→ name({args}) id=...``, each block through ``redact``. ``cache`` (message id -> block) saves
    re-rendering (and re-redacting) the messages every later prompt of a run repeats; only for messages
    that stay alive and unchanged meanwhile."""
    blocks = []
    for m in messages:
        if cache is not None:
            hit = cache.get(id(m))
            if hit is not None:
                blocks.append(hit)
                continue
        role = m.get("role", "?")
        head = f"[tool {m.get('tool_call_id', '')}]".replace(" ]", "]") if role == "tool" else f"[{role}]"
        lines = [head]
        text = _content_text(m.get("content"))
        if text:
            lines.append(text)
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function") or {}
            lines.append(
                f"→ {fn.get('name', '?')}({_canonical_args(fn.get('arguments', '{}'))}) id={tc.get('id', '')}"
            )
        block = "\n".join(lines)
        if redact is not None:
            block = redact(block)
        if cache is not None:
            cache[id(m)] = block
        blocks.append(block)
    return "\n\n".join(blocks) + "\n"


def render_response(call: CallRecord) -> str:
    if call.error is not None:
        return f"[error]\n{call.error}\n"
    lines = ["[assistant]"]
    if call.text:
        lines.append(call.text)
    for tc in call.tool_calls:
        lines.append(f"→ {tc.tool}({_canonical_args(tc.args)}) id={tc.id}")
    return "\n".join(lines) + "\n"


def _cap(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head (system prompt, task) and the larger tail (the latest turns) of an over-long text."""
    if limit <= 0 or len(text) <= limit:
        return text, False
    head = limit // 4
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[… {cut} characters cut by max_chars_per_call={limit} …]\n{text[-tail:]}", True


_NUMBERS = frozenset({int, float, bool})
_TIMES = ("start_ms", "duration_ms")


class _Redaction:
    """The user's redactor over what a folder holds. looplet's own fields: every string through it (the
    same short strings, tool and model names, repeat a lot, so those are cached) while the keys, being
    looplet's, are not. User data (task, arguments, results, answer, tool schemas, event attributes): the
    whole value through ``redact_json`` when the redactor has one (it also blanks values under keys like
    ``api_key``), else every string and key."""

    #: values looplet or the tracing SDK generate (hex ids, file names, times): nothing to redact in them
    GENERATED = frozenset(
        {"trace_id", "span_id", "run_id", "file", "prompt_file", "response_file", "started_at"}
    )

    def __init__(self, redact: Redact, cache: dict[str, str] | None = None) -> None:
        self.redact = redact
        rj = getattr(redact, "redact_json", None)
        self.user: Callable[[Any], Any] = rj if callable(rj) else (lambda v: _redact_tree(v, redact))
        self.cache: dict[str, str] = {} if cache is None else cache

    def text(self, value: str) -> str:
        out = self.cache.get(value)
        if out is None:
            out = self.redact(value)
            if len(value) <= 256:
                if len(self.cache) >= 8192:
                    self.cache.clear()
                self.cache[value] = out
        return out

    def own(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        # numbers and None are most of the values: kept without a call (this runs for every field written)
        if isinstance(value, dict):
            skip, own, text = self.GENERATED, self.own, self.text
            return {
                k: v
                if k in skip or v is None or type(v) in _NUMBERS
                else text(v)
                if type(v) is str
                else own(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            own = self.own
            return [v if v is None or type(v) in _NUMBERS else own(v) for v in value]
        return value

    def _with(
        self, d: dict[str, Any], user_keys: tuple[str, ...], done: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``d`` with the values under ``user_keys`` through ``user``, those in ``done`` as given, the rest
        through ``own``."""
        out = {}
        skip, own = self.GENERATED, self.own
        for k, v in d.items():
            if done is not None and k in done:
                out[k] = done[k]
            elif k in user_keys:
                out[k] = self.user(v)
            elif k in skip or v is None or type(v) in _NUMBERS:
                out[k] = v
            else:
                out[k] = own(v)
        return out

    def step(self, d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if k == "tool_call":
                out[k] = self._with(v, ("args",))
            elif k == "tool_result":
                out[k] = self._with(v, ("data",))
            elif k == "children":
                out[k] = [self.step(c) for c in v]
            else:
                out[k] = self.own(v)
        return out

    def call(self, d: dict[str, Any]) -> dict[str, Any]:
        calls = [self._with(tc, ("args",)) for tc in d.get("tool_calls", ())]
        return self._with(d, (), {"tool_calls": calls})

    def trajectory(self, d: dict[str, Any], redacted: tuple[str, ...] = ()) -> dict[str, Any]:
        """``d`` redacted; the values under the keys in ``redacted`` already are."""
        events = [self._with(e, ("attributes",)) for e in d.get("events", ())]
        done = {"calls": d.get("calls", []), "events": events, "tools": self.tools(d.get("tools") or [])}
        done.update((k, d[k]) for k in redacted if k in d)
        return self._with(d, ("task", "final_output"), done)

    def tools(self, tools: list[Any]) -> Any:
        """The tool schemas, redacted: the same few schemas come with every run of an agent, so the
        redacted form is kept (as JSON text) under the schemas' own text."""
        if not tools:
            return tools
        key = "\0tools\0" + _ENCODE(tools)
        hit = self.cache.get(key)
        if hit is not None:
            return json.loads(hit)
        redacted = self.user(tools)
        if len(key) <= 65_536:
            if len(self.cache) >= 8192:
                self.cache.clear()
            self.cache[key] = _ENCODE(redacted)
        return redacted


def _redact_tree(value: Any, redact: Redact) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, redact) for v in value]
    return value


def _unserializable(o: Any) -> Any:
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


if json.encoder.c_make_encoder is not None:  # one C encoder, made once (JSONEncoder.encode makes one a call)
    _C_ENCODER = json.encoder.c_make_encoder(
        None, _unserializable, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )

    def _ENCODE(obj: Any) -> str:
        t = type(obj)
        if t is str:
            return json.encoder.encode_basestring(obj)
        if obj is None:
            return "null"
        if t is bool:
            return "true" if obj else "false"
        if t is int:
            return int.__repr__(obj)
        return "".join(_C_ENCODER(obj, 0))

    _C_SORTED = json.encoder.c_make_encoder(
        None, _unserializable, json.encoder.encode_basestring, None, ": ", ", ", True, False, True
    )

    def _ENCODE_SORTED(obj: Any) -> str:
        return "".join(_C_SORTED(obj, 0))
else:  # pragma: no cover - other Pythons
    _ENCODE = json.JSONEncoder(ensure_ascii=False).encode
    _ENCODE_SORTED = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


def _pretty(obj: Any, depth: int, pad: str = "") -> str:
    """JSON with the first ``depth`` levels one item per line (two-space indent) and anything deeper on
    one line: diff-friendly like ``indent=2``, but with scalars inlined and deeper values left to the C
    encoder (``indent`` forces the slow pure-Python one)."""
    if depth <= 0 or not obj or not isinstance(obj, (dict, list)):
        return _ENCODE(obj)
    inner = pad + "  "
    parts: list[str] = []
    add = parts.append
    is_dict = type(obj) is dict
    items = obj.items() if is_dict else ((None, v) for v in obj)
    for k, v in items:
        t = type(v)
        if t is str:
            s = _ENCODE_STR(v)
        elif v is None:
            s = "null"
        elif t is int:
            s = int.__repr__(v)
        elif t is bool:
            s = "true" if v else "false"
        elif t is float and _isfinite(v):
            s = float.__repr__(v)
        elif (t is dict or t is list) and v and depth > 1:
            s = _pretty(v, depth - 1, inner)
        else:
            s = _ENCODE(v)
        add(f"{inner}{s}" if k is None else f"{inner}{_ENCODE_STR(k if type(k) is str else str(k))}: {s}")
    if is_dict:
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    return "[\n" + ",\n".join(parts) + "\n" + pad + "]"


_ENCODE_STR = json.encoder.encode_basestring
_isfinite = math.isfinite


def _dumps(obj: Any, depth: int = 2) -> str:
    return _pretty(obj, depth) + "\n"


#: how deep trajectory.json is spread over lines, per key: a call, a step's index entry, a timeline bar,
#: an event or a tool schema on one line each
_TRAJ_DEPTH = {"calls": 1, "steps": 1, "timeline": 1, "events": 1, "tools": 1}


def _dumps_traj(obj: dict[str, Any]) -> str:
    lines = [f"  {_ENCODE(k)}: {_pretty(v, _TRAJ_DEPTH.get(k, 2), '  ')}" for k, v in obj.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _canon(value: Any) -> Any:
    """User data (task, arguments, results) with its keys sorted, so equal data is equal text; looplet's
    own objects keep a fixed, reader-friendly key order."""
    if isinstance(value, dict):
        return {k: _canon(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def _step_dict(s: Step) -> dict[str, Any]:
    d = s.to_dict()
    d["tool_call"]["args"] = _canon(d["tool_call"]["args"])
    d["tool_result"]["data"] = _canon(d["tool_result"]["data"])
    if s.children:
        d["children"] = [_step_dict(c) for c in s.children]
    return d


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def folder_name(record: RunRecord, redact: Redact | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(record.started_at or time.time()))
    agent = record.agent or "agent"
    if redact is not None:
        agent = redact(agent)
    agent = _UNSAFE.sub("_", agent).strip("._")[:40] or "agent"
    rid = _UNSAFE.sub("", record.run_id)[:8] or "run"
    return f"{stamp}-{agent}-{rid}"


def _num(n: int) -> str:
    return f"{n:02d}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def step_file(number: int) -> str:
    return f"steps/step_{_num(number)}.json"


def render_files(
    record: RunRecord,
    redact: Redact | None = None,
    max_chars_per_call: int = 200_000,
    cache: dict[str, str] | None = None,
    *,
    defer_json: bool = False,
) -> dict[str, Any]:
    """The folder's files as ``{relative path: text}``, every string already through ``redact``
    (``cache``: redacted short strings kept from one run to the next). With ``defer_json`` the JSON files
    are left as ``(kind, value)`` for the writer to format (:func:`file_text`): the writer process then
    does that work on its own core."""
    files: dict[str, str] = {}
    r = redact
    red = _Redaction(r, cache) if r is not None else None
    text = r if r is not None else (lambda s: s)
    record.link_steps()
    red_text = red.text if red is not None else None
    blocks: dict[int, str] = {}  # the hook path's prompts share message objects: render each once

    step_entries = []
    for s in record.steps:
        d = _step_dict(s)
        d["llm_call"] = record.step_calls.get(s.number)
        path = step_file(s.number)
        d = red.step(d) if red else d
        files[path] = ("json", d) if defer_json else _dumps(d)
        tool, error_kind = s.tool_call.tool, s.tool_result.error_kind
        if red is not None:  # redacted here, once, rather than walked again with the whole trajectory
            tool = red.text(tool) if isinstance(tool, str) else tool
            error_kind = red.text(error_kind) if isinstance(error_kind, str) else error_kind
        step_entries.append(
            {
                "number": s.number,
                "tool": tool,
                "ok": s.ok,
                "error_kind": error_kind,
                "file": path,
                "llm_call": record.step_calls.get(s.number),
            }
        )

    call_entries = []
    for c in record.calls:
        entry: dict[str, Any] = {
            "number": c.number,
            "step": c.step,
            "purpose": c.purpose,
            "model": c.model,
            "usage": c.usage.to_dict() if c.usage else None,
            "cost_usd": c.cost_usd,
            "duration_ms": _ms(c.duration_ms),
            "finish_reason": c.finish_reason,
            "response_id": c.response_id,
            "error": c.error,
            "span_id": c.span_id,
            "tool_calls": [
                {"id": tc.id, "tool": tc.tool, "args": _canon(_json_safe(tc.args))} for tc in c.tool_calls
            ],
            "text": c.text,
            "answered": c.answered,
        }
        if c.ttfc_ms is not None:
            entry["ttfc_ms"] = _ms(c.ttfc_ms)
        if c.messages is not None:
            prompt, cut = _cap(render_messages(c.messages, blocks, r), max_chars_per_call)
            name = f"call_{_num(c.number)}_prompt.txt"
            files[name] = prompt
            entry["prompt_file"] = name
            entry["prompt_truncated"] = cut
        if c.answered or c.error is not None:
            response, cut = _cap(text(render_response(c)), max_chars_per_call)
            name = f"call_{_num(c.number)}_response.txt"
            files[name] = response
            entry["response_file"] = name
            entry["response_truncated"] = cut
        if entry.get("text") and len(entry["text"]) > max_chars_per_call:
            entry["text"] = _cap(entry["text"], max_chars_per_call)[0]
        call_entries.append(red.call(entry) if red else entry)

    usage = record.usage
    if usage is None:
        usage = Usage()
        for c in record.calls:
            usage.add(c.usage)
    cost = record.cost_usd
    if cost is None and any(c.cost_usd is not None for c in record.calls):
        cost = sum(c.cost_usd or 0.0 for c in record.calls)
    llm_calls = (
        record.llm_calls if record.llm_calls is not None else sum(1 for c in record.calls if c.error is None)
    )
    traj = {
        "schema_version": SCHEMA_VERSION,
        "run_id": record.run_id,
        "agent": record.agent,
        "task": _canon(_json_safe(record.task)),
        "models": record.models(),
        "provider": record.provider,
        "stop_reason": record.stop_reason,
        "error": record.error,
        "final_output": _canon(_json_safe(record.final_output)),
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.started_at))
        if record.started_at
        else None,
        "duration_ms": _ms(record.duration_ms),
        "usage": usage.to_dict(),
        "cost_usd": cost,
        "llm_calls": llm_calls,
        "step_count": len(record.steps),
        "config": {"done_tool": record.done_tool, "max_steps": record.max_steps},
        "content": record.content,
        "source": record.source,
        "steps": step_entries,
        "calls": call_entries,
        "tools": _canon(_json_safe(record.tools or [])),
        "timeline": [
            {
                k: _ms(v)
                if k in _TIMES
                else red_text(v)
                if red_text is not None and isinstance(v, str)
                else v
                for k, v in e.items()
            }
            for e in sorted(record.timeline, key=lambda e: e.get("start_ms") or 0.0)
        ],  # by start
        "events": [
            {
                "name": e.get("name"),
                "at_ms": e.get("at_ms"),
                "attributes": _canon(_json_safe(e.get("attributes"))),
            }
            for e in record.events
        ],
    }
    traj = red.trajectory(traj, ("steps", "timeline")) if red else traj
    files[TRAJECTORY_FILE] = ("trajectory", traj) if defer_json else _dumps_traj(traj)
    return files


def file_text(value: Any) -> str:
    """A file's text: as rendered, or formatted now when ``render_files`` deferred it."""
    if isinstance(value, str):
        return value
    kind, obj = value
    return _dumps_traj(obj) if kind == "trajectory" else _dumps(obj)


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


def _manifest(files: Mapping[str, bytes]) -> bytes:
    sha256, enc = (
        hashlib.sha256,
        json.encoder.encode_basestring_ascii,
    )  # keys sorted, as json.dumps(sort_keys=True)
    lines = [
        f'{{"bytes": {len(data)}, "path": {enc(path)}, "sha256": "{sha256(data).hexdigest()}"}}'
        for path, data in sorted(files.items())
    ]
    return ("\n".join(lines) + "\n").encode()


def _write_file(path: str, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data) if len(data) < 1 << 30 else _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encoded(files: Mapping[str, Any]) -> dict[str, bytes]:
    """The folder's files as bytes, with the manifest that lists them."""
    data = {path: file_text(text).encode("utf-8") for path, text in files.items()}
    data[MANIFEST_FILE] = _manifest(data)
    return data


def _temp_folder(root: str, name: str) -> str:
    """Where a new folder is written before it is renamed into place (``.<name>.tmp<pid>-...``: a
    writer that died can be told by its pid)."""
    return os.path.join(root, f".{name}.tmp{os.getpid()}-{time.monotonic_ns() % 1_000_000_000}")


def write_folder(
    root: str | os.PathLike[str], name: str, files: Mapping[str, Any], *, fsync: bool = True
) -> Path:
    """Write ``files`` as ``root/name/`` atomically and return the folder's path.

    A new folder is written under a temporary name and renamed into place; an existing one (a run written
    again) is updated file by file, each through a temporary file and a rename. With ``fsync`` every file
    is flushed to disk before the rename, so a power cut leaves either the old state or the new one.
    """
    root_s = os.fspath(root)
    os.makedirs(root_s, exist_ok=True)
    data = _encoded(files)
    final = os.path.join(root_s, name)
    if not os.path.exists(final):
        tmp = _temp_folder(root_s, name)
        try:
            _write_tree(tmp, data, fsync, atomic=False)
            os.rename(tmp, final)
        except OSError:
            _remove_tree(tmp)
            if not os.path.isdir(final):
                raise
            _write_tree(final, data, fsync, atomic=True)  # someone made it meanwhile
        except BaseException:
            _remove_tree(tmp)
            raise
    else:
        _write_tree(final, data, fsync, atomic=True)
    if fsync:
        _fsync_dir(root_s)
    return Path(final)


def write_folders_synced(jobs: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Path | Exception]:
    """Write several new folders as durably as ``write_folder(..., fsync=True)`` does, with one sync of
    each root's file system (Linux ``syncfs``) in place of a disk flush per file: every folder is written
    under its temporary name, the file system is synced, then each is renamed into place and the root
    flushed. A folder that exists already, or a system without ``syncfs``, takes ``write_folder``'s own
    way. Returns, per job, the folder's path or the exception that stopped it."""
    jobs = list(jobs)
    results: list[Path | Exception | None] = [None] * len(jobs)
    sync = _syncfs()
    staged: list[tuple[int, str, str, str]] = []  # job, root, temporary folder, final folder
    for i, (root, name, files) in enumerate(jobs):
        try:
            final = os.path.join(root, name)
            if sync is None or os.path.exists(final):
                results[i] = write_folder(root, name, files, fsync=True)
                continue
            os.makedirs(root, exist_ok=True)
            data = _encoded(files)
            tmp = _temp_folder(root, name)
            try:
                _write_tree(tmp, data, False, atomic=False)
            except BaseException:
                _remove_tree(tmp)
                raise
            staged.append((i, root, tmp, final))
        except Exception as exc:
            results[i] = exc
    roots = {root for _i, root, _tmp, _final in staged}
    failed: dict[str, Exception] = {}
    for root in roots:
        try:
            sync(root)  # type: ignore[misc]
        except OSError as exc:
            failed[root] = exc
    for i, root, tmp, final in staged:
        if root in failed:
            _remove_tree(tmp)
            results[i] = failed[root]
            continue
        try:
            os.rename(tmp, final)
            results[i] = Path(final)
        except OSError:
            _remove_tree(tmp)
            root_, name, files = jobs[i]
            try:  # someone made it meanwhile: update it file by file
                results[i] = write_folder(root_, name, files, fsync=True)
            except Exception as exc:
                results[i] = exc
    for root in roots - set(failed):
        _fsync_dir(root)
    return results  # type: ignore[return-value]


_SYNCFS: Any = None


def _syncfs() -> Callable[[str], None] | None:
    """``syncfs(2)`` on the file system holding a path, where the C library has it (Linux); else None."""
    global _SYNCFS
    if _SYNCFS is None:
        _SYNCFS = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).syncfs
                fn.argtypes = [ctypes.c_int]

                def sync(path: str) -> None:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        if fn(fd) != 0:
                            err = ctypes.get_errno()
                            raise OSError(err, os.strerror(err), path)
                    finally:
                        os.close(fd)

                _SYNCFS = sync
            except (OSError, AttributeError):
                pass
    return _SYNCFS or None


def _write_tree(base: str, data: Mapping[str, bytes], fsync: bool, atomic: bool) -> None:
    # trajectory.json and the manifest go last: a reader that finds them finds every step and call file
    last = [p for p in (TRAJECTORY_FILE, MANIFEST_FILE) if p in data]
    first = [p for p in data if p not in (TRAJECTORY_FILE, MANIFEST_FILE)]
    made = {base} | {f"{base}/{rel.rpartition('/')[0]}" for rel in data if "/" in rel}
    for d in sorted(made):  # parents first
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(d, exist_ok=True)

    abort = threading.Event()  # one writer failed: the others stop at their next file

    def put(rels: list[str]) -> None:
        for rel in rels:
            if abort.is_set():
                return
            path = f"{base}/{rel}"
            if atomic:
                tmp = f"{path}.tmp{os.getpid()}-{threading.get_ident()}"
                try:
                    _write_file(tmp, data[rel], fsync)
                    os.replace(tmp, path)
                except BaseException:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                    raise
            else:
                _write_file(path, data[rel], fsync)

    if fsync and len(first) > 2:
        # an fsync waits for the disk; several in flight at once share its flushes
        futures = []
        error: BaseException | None = None
        for k in range(_FSYNC_THREADS):
            chunk = first[k::_FSYNC_THREADS]
            if not chunk:
                continue
            try:
                futures.append(_pool().submit(_guarded, put, chunk, abort))
            except RuntimeError:  # the interpreter is shutting down (an exporter flushed at exit)
                try:
                    _guarded(put, chunk, abort)
                except BaseException as exc:
                    error = error or exc
        for f in futures:  # wait for every writer before raising, so the caller's clean-up races none
            exc = f.exception()
            if exc is not None and error is None:
                error = exc
                abort.set()
        if error is not None:
            raise error
    else:
        put(first)
    put(last)
    if fsync:
        for d in made:
            _fsync_dir(d)


def _guarded(put: Callable[[list[str]], None], chunk: list[str], abort: threading.Event) -> None:
    try:
        put(chunk)
    except BaseException:
        abort.set()  # the other writers stop at their next file
        raise


_FSYNC_THREADS = 8
_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                from concurrent.futures import ThreadPoolExecutor

                _POOL = ThreadPoolExecutor(
                    max_workers=_FSYNC_THREADS, thread_name_prefix="looplet-provenance"
                )
    return _POOL


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


class Trajectory:
    """A run read back from its folder (or from spans, in memory): what ``show``, evals and replay use.

    ``data`` is ``trajectory.json``; ``steps`` are :class:`looplet.types.Step` objects from the step files.
    """

    def __init__(
        self,
        path: Path | None,
        data: dict[str, Any],
        steps: list[Step],
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.data = data
        self.steps = steps
        self._files = files

    # the run ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.name
        return f"{self.agent}-{self.run_id[:8]}"

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

    @property
    def usage(self) -> Usage:
        return Usage.from_dict(self.data.get("usage")) or Usage()

    def text(self, relpath: str) -> str | None:
        """A call's prompt or response file (None when it was not recorded)."""
        if self._files is not None:
            return self._files.get(relpath)
        if self.path is None:
            return None
        try:
            return (self.path / relpath).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise TrajectoryError(self.path / relpath, f"cannot be read ({exc})") from None

    def prompt(self, call_number: int) -> str | None:
        return self.text(f"call_{_num(call_number)}_prompt.txt")

    def response(self, call_number: int) -> str | None:
        return self.text(f"call_{_num(call_number)}_response.txt")

    def __repr__(self) -> str:
        return f"Trajectory({self.name!r}, stop_reason={self.stop_reason!r}, steps={len(self.steps)})"


def _parse_json(where: Any, raw: str) -> Any:
    if not raw.strip():
        raise TrajectoryError(where, "is empty (truncated write?)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        # a cut-off file fails at its very end (or in a string that runs to the end)
        ends = exc.pos >= len(raw.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        kind = "truncated" if ends else "corrupted"
        raise TrajectoryError(
            where, f"{kind} JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _check_traj(where: Any, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TrajectoryError(
            where, f"not a looplet trajectory (a JSON {type(data).__name__}, expected an object)"
        )
    if "schema_version" not in data:
        raise TrajectoryError(where, "not a looplet trajectory (no schema_version)")
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TrajectoryError(where, f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        from looplet import __version__

        raise TrajectoryError(
            where,
            f"schema version {version} is newer than this looplet ({__version__}) "
            f"reads (up to {SCHEMA_VERSION}); upgrade looplet to read it",
        )
    for key, kind in (("steps", list), ("calls", list), ("timeline", list), ("events", list)):
        if key in data and not isinstance(data[key], kind):
            raise TrajectoryError(
                where, f"field {key!r} must be a {kind.__name__}, got {type(data[key]).__name__}"
            )
    for key in ("usage",):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise TrajectoryError(where, f"field {key!r} must be an object")
    return data


def _step_from(where: Any, raw: Any) -> Step:
    if not isinstance(raw, dict):
        raise TrajectoryError(where, f"a step must be a JSON object, got {type(raw).__name__}")
    try:
        return Step.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise TrajectoryError(where, f"not a step ({type(exc).__name__}: {exc})") from None


def load_files(name: str, files: Mapping[str, str]) -> Trajectory:
    """A trajectory from rendered files kept in memory (``show`` on OTLP JSON uses this)."""
    data = _check_traj(
        f"{name}/{TRAJECTORY_FILE}", _parse_json(f"{name}/{TRAJECTORY_FILE}", files[TRAJECTORY_FILE])
    )
    steps = []
    for entry in data.get("steps", []):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if rel in files:
            steps.append(_step_from(f"{name}/{rel}", _parse_json(f"{name}/{rel}", files[rel])))
    return Trajectory(None, data, steps, files)


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read one run's folder. Raises :class:`TrajectoryError` naming the file and what is wrong."""
    folder = Path(path)
    if not folder.exists():
        raise TrajectoryError(folder, "no such file or directory")
    if folder.is_file():
        if folder.name == TRAJECTORY_FILE:
            folder = folder.parent
        else:
            raise TrajectoryError(
                folder,
                "is a file, not a trajectory folder (expected a folder with "
                f"{TRAJECTORY_FILE}, or an OTLP JSON span file)",
            )
    tfile = folder / TRAJECTORY_FILE
    if not tfile.exists():
        raise TrajectoryError(
            folder,
            f"not a trajectory folder: no {TRAJECTORY_FILE} in it (expected a folder "
            "written by ProvenanceSink)",
        )
    try:
        raw = tfile.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrajectoryError(tfile, "corrupted: not UTF-8 text") from None
    except OSError as exc:
        raise TrajectoryError(tfile, f"cannot be read ({exc.strerror or exc})") from None
    data = _check_traj(tfile, _parse_json(tfile, raw))
    steps: list[Step] = []
    for i, entry in enumerate(data.get("steps", [])):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise TrajectoryError(tfile, f"steps[{i}] has no valid 'file'")
        sfile = folder / rel
        try:
            sraw = sfile.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrajectoryError(sfile, f"missing (listed in {TRAJECTORY_FILE})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TrajectoryError(sfile, f"cannot be read ({exc})") from None
        steps.append(_step_from(sfile, _parse_json(sfile, sraw)))
    return Trajectory(folder, data, steps)


def find_trajectories(paths: Iterable[str | os.PathLike[str]]) -> list[Trajectory]:
    """Every trajectory under ``paths``: a run folder itself, or a folder whose sub-folders are runs
    (sorted by name, which starts with the run's start time)."""
    found: list[Trajectory] = []
    for p in paths:
        folder = Path(p)
        if folder.is_dir() and not (folder / TRAJECTORY_FILE).exists():
            runs = sorted(
                d
                for d in folder.iterdir()
                if d.is_dir() and not d.name.startswith(".") and (d / TRAJECTORY_FILE).exists()
            )
            if not runs:
                raise TrajectoryError(
                    folder,
                    f"not a trajectory folder: no {TRAJECTORY_FILE} in it or in its "
                    "sub-folders (expected a folder written by ProvenanceSink)",
                )
            found.extend(load_trajectory(d) for d in runs)
        else:
            found.append(load_trajectory(folder))
    return found
