"""Checkpoints: a run's state on disk after every step, and the hook that resumes from it.

``CheckpointHook(dir)`` writes ``dir/checkpoint.json`` after every step and at the end of the run,
atomically (write a temporary file, fsync, rename over the old one, fsync the directory), so a crash or a
``kill -9`` leaves either the previous checkpoint or the new one, never half of one. Running the same code
again with the same ``CheckpointHook(dir)`` resumes: ``on_loop_start`` loads the checkpoint into the
(empty) state — steps, transcript, usage, cost, metadata — and the loop continues at the next step.

Calls the model had proposed but that never ran (the rest of a multi-call answer when the process died,
a call waiting for approval, calls left when the run stopped) are not lost: the first LLM call of the
resumed run is answered with those calls again instead of asking the model, so they run (or are refused)
exactly there. No step that was written is run again. A ``not_run`` step (the run stopped before its
call ran, e.g. to wait for approval) stays in the record; the call then runs as the next step.

A finished run stays finished: running the same code again after the final ``done`` was saved (a crash
between that save and the exit) returns the finished run's result (stop reason ``done``, its steps and
answer) without calling the model or any tool. A new run over the same folder is an explicit choice:
``CheckpointHook(dir, fresh=True)`` (the old checkpoint is kept beside it as
``checkpoint-<first run id>.json``).

Large values (a string, or a tool result's JSON, over ``blob_bytes``, 64 KiB by default) are stored once
each, by SHA-256 of their content, in ``dir/blobs/``, and the checkpoint holds a reference: a step's
write is that step's new data plus the small checkpoint, not every earlier output again. Blobs are
written (temporary file, fsync, rename) before the checkpoint that names them.

A checkpoint that cannot be read raises :class:`CheckpointError` naming the file (``resume``), or stops
the run with ``hook_stop:checkpoint_error`` without touching it (``CheckpointHook``). Temporary files are
written in the same folder and renamed; one left by a killed process is removed when the next run starts.

A call that paused the run for approval runs only with an explicit decision for its own call id (given
to ``resume(..., approvals=...)`` or ``CheckpointHook(dir, approvals=...)``), whatever other hooks the
resuming code passes: without one the run pauses again at once (``awaiting_approval``); a refusal
becomes an error step the model sees.

Trace continuity: the checkpoint keeps the trace id and span id of the first run; a resumed run gets
``run.parent`` (unless the caller gave one) and ``run.links`` set to that W3C traceparent, so a tracing
hook listed *after* this hook puts the resumed spans in the same trace, linked to the first run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet._engine import REPLAYED
from looplet.hooks import Deny, HookDecision, current_run, emit_event
from looplet.types import LLMCall, LLMResponse, Step, ToolCall, Usage, _json_safe

__all__ = ["Checkpoint", "CheckpointHook", "CheckpointError", "PENDING_APPROVAL", "APPROVALS", "FILENAME"]

log = logging.getLogger("looplet")

FILENAME = "checkpoint.json"
VERSION = 1
BLOBS = "blobs"  # dir/blobs/<sha256>: large values, stored once
BLOB_BYTES = 64 * 1024
BLOB_KEY = "$looplet_blob"
TMP_PREFIX = ".checkpoint."
TMP_SUFFIX = ".tmp"
PENDING_APPROVAL = "looplet.approval"  # state.metadata: the call waiting for a human (ApprovalHook)
APPROVALS = "looplet.approvals"  # state.metadata: decisions given to resume(), {call_id: bool}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: truncated, not JSON, a newer version, a missing blob."""


class Blobs:
    """Replaces large values with references to files in ``dir/blobs/`` named by content hash.

    Each value is encoded once per object (a step's result is not re-serialised at every save: a step is
    saved as it was when first saved) and each blob written once per folder."""

    def __init__(self, over: int = BLOB_BYTES) -> None:
        self.over = over
        self.new: dict[str, bytes] = {}  # blobs to write before the checkpoint
        self.stored: set[str] = set()  # blobs known to be on disk
        self._memo: dict[int, tuple[Any, Any]] = {}  # id(obj) -> (obj, encoded): obj kept alive

    def _ref(self, text: str, is_json: bool = False) -> dict[str, Any]:
        data = text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.stored:
            self.new[digest] = data
        return {BLOB_KEY: digest, "json": True} if is_json else {BLOB_KEY: digest}

    def value(self, value: Any) -> Any:
        """``value`` with every string longer than ``over`` characters replaced by a reference."""
        if isinstance(value, str):
            if len(value) <= self.over:
                return value
            hit = self._memo.get(id(value))
            if hit is None or hit[0] is not value:
                ref: dict[str, Any] = self._ref(value)
                self._memo[id(value)] = (value, ref)
            else:
                ref = hit[1]
                if ref[BLOB_KEY] not in self.stored:  # a write that failed: bring it again
                    self.new[ref[BLOB_KEY]] = value.encode("utf-8", "surrogatepass")
            return ref
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def step(self, step: Step) -> dict[str, Any]:
        """``step.to_dict()``, its result's data as one blob when its JSON is large (encoded once)."""
        hit = self._memo.get(id(step))
        if hit is not None and hit[0] is step and all(r in self.stored for r in _refs(hit[1])):
            out: dict[str, Any] = hit[1]
            return out
        d = step.to_dict()
        data = d.get("tool_result", {}).get("data")
        if data is not None and not isinstance(data, str):
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            if len(text) > self.over:
                d["tool_result"]["data"] = self._ref(text, is_json=True)
        encoded: dict[str, Any] = self.value(d)
        self._memo[id(step)] = (step, encoded)
        return encoded

    def write(self, directory: Path) -> int:
        """Write the new blobs (atomically, each once); returns the bytes written."""
        if not self.new:
            return 0
        folder = directory / BLOBS
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for digest, data in self.new.items():
            target = folder / digest
            if not target.exists():
                _atomic_write(folder, target, data)
                written += len(data)
            self.stored.add(digest)
        self.new.clear()
        return written


def _refs(value: Any) -> list[str]:
    """The blob digests an encoded value names."""
    if isinstance(value, dict):
        digest = value.get(BLOB_KEY)
        if isinstance(digest, str):
            return [digest]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _atomic_write(folder: Path, target: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename over ``target``."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _inline(value: Any, folder: Path, source: Path) -> Any:
    """References to blobs replaced by the blobs' content."""
    if isinstance(value, dict):
        digest = value.get(BLOB_KEY)
        if isinstance(digest, str) and len(value) <= 2:
            blob = folder / BLOBS / digest
            try:
                text = blob.read_bytes().decode("utf-8", "surrogatepass")
            except OSError as exc:
                raise CheckpointError(
                    f"checkpoint {source} names {blob}, which cannot be read ({exc.strerror}); the "
                    "blobs folder must stay beside the checkpoint"
                ) from None
            return json.loads(text) if value.get("json") else text
        return {k: _inline(v, folder, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, folder, source) for v in value]
    return value


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files a killed writer left in ``directory`` (and its blobs folder)."""
    removed = []
    folder = Path(directory)
    for where in (folder, folder / BLOBS):
        if not where.is_dir():
            continue
        for tmp in where.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


@dataclass
class Checkpoint:
    """What a checkpoint holds (JSON on disk). ``steps`` are ``Step.to_dict()`` dicts."""

    steps: list[dict[str, Any]]
    transcript: list[dict[str, Any]]
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    first_run_id: str = ""
    trace_id: str | None = None
    span_id: str | None = None
    stop_reason: str | None = None
    pending: dict[str, Any] | None = None  # {"text", "calls"}: proposed calls not yet answered (mid-answer)
    updated_at: float = 0.0
    version: int = VERSION

    @property
    def step_count(self) -> int:
        return len(self.steps)

    @property
    def traceparent(self) -> str | None:
        """The first run's W3C traceparent, when a tracing hook had set ids."""
        if self.trace_id and self.span_id:
            return f"00-{self.trace_id}-{self.span_id}-01"
        return None

    @classmethod
    def from_state(
        cls,
        state: Any,
        run: Any = None,
        origin: tuple[str, str | None, str | None] | None = None,
        stop_reason: str | None = None,
        steps: list[dict[str, Any]] | None = None,
    ) -> Checkpoint:
        """Capture ``state`` (steps, transcript, usage, cost, metadata). ``origin`` is the first run's
        ``(run_id, trace_id, span_id)``; without it they are taken from ``run``. ``steps``: the steps
        already encoded (else ``Step.to_dict()`` of each)."""
        usage = getattr(state, "usage", None)
        run_id = getattr(run, "run_id", "") or ""
        first_id, trace_id, span_id = origin or (
            run_id,
            getattr(run, "trace_id", None),
            getattr(run, "span_id", None),
        )
        transcript, pending = _answered_only(list(getattr(state, "transcript", None) or ()))
        return cls(
            steps=steps if steps is not None else [s.to_dict() for s in getattr(state, "steps", ())],
            transcript=_json_safe(transcript),
            pending=_json_safe(pending),
            usage=usage.to_dict() if isinstance(usage, Usage) else {},
            cost_usd=getattr(state, "cost_usd", None),
            metadata=_json_safe(dict(getattr(state, "metadata", None) or {})),
            run_id=run_id,
            first_run_id=first_id,
            trace_id=trace_id,
            span_id=span_id,
            stop_reason=stop_reason,
            updated_at=time.time(),
        )

    def to_json(self, blobs: Blobs | None = None, steps: list[dict[str, Any]] | None = None) -> str:
        """The checkpoint as JSON; with ``blobs``, large values become references (written by
        :meth:`save`). ``steps``: the steps already encoded (the hook encodes each step once)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if blobs is not None:
            d["steps"] = steps if steps is not None else [blobs.value(x) for x in self.steps]
            for key in ("transcript", "pending", "metadata"):
                d[key] = blobs.value(d[key])
        d["step_count"] = self.step_count
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, source: Any = "checkpoint") -> Checkpoint:
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(
                f"checkpoint {source} is not valid JSON (truncated or corrupt: {exc}); move it away "
                "to start a new run"
            ) from None
        if not isinstance(d, dict):
            raise CheckpointError(f"checkpoint {source} does not hold a JSON object")
        if d.get("version") != VERSION:
            raise CheckpointError(
                f"checkpoint {source} has version {d.get('version')!r}, which this looplet does not "
                f"read (expected {VERSION})"
            )
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        blobs: Blobs | None = None,
        steps: list[dict[str, Any]] | None = None,
    ) -> int:
        """Write atomically to ``directory/checkpoint.json``, large values first to ``directory/blobs/``;
        returns the bytes written (new blobs included)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        blobs = blobs if blobs is not None else Blobs()
        data = self.to_json(blobs, steps).encode()
        written = blobs.write(path)
        _atomic_write(path, path / FILENAME, data)
        _fsync_dir(path)
        return written + len(data)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Checkpoint | None:
        """The checkpoint in ``directory`` (blobs read back in), or None when there is none. Raises
        :class:`CheckpointError`, naming the file, when it cannot be read."""
        folder = Path(directory)
        source = folder / FILENAME
        try:
            text = source.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {source} cannot be read ({exc})") from None
        cp = cls.from_json(text, source)
        cp.steps = _inline(cp.steps, folder, source)
        cp.transcript = _inline(cp.transcript, folder, source)
        cp.pending = _inline(cp.pending, folder, source)
        cp.metadata = _inline(cp.metadata, folder, source)
        return cp


def _answered_only(transcript: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Split off the calls of the last assistant turn that have no result yet (a checkpoint written between
    two calls of one answer), so the saved transcript is valid on its own: every call has its result."""
    for i in range(len(transcript) - 1, -1, -1):
        m = transcript[i]
        if m.get("role") == "assistant" and m.get("tool_calls"):
            answered = {t.get("tool_call_id") for t in transcript[i + 1 :] if t.get("role") == "tool"}
            calls = m["tool_calls"]
            open_calls = [c for c in calls if c.get("id") not in answered]
            if not open_calls:
                return transcript, None
            done = [c for c in calls if c.get("id") in answered]
            out = list(transcript)
            if done:
                out[i] = {**m, "tool_calls": done}
                return out, {"text": None, "calls": open_calls}
            del out[i]
            return out, {"text": m.get("content"), "calls": open_calls}
        if m.get("role") != "tool":
            return transcript, None
    return transcript, None


class _Replay:
    """Calls proposed before the checkpoint that never ran, to be given back as the next LLM answer."""

    __slots__ = ("text", "calls", "model")

    def __init__(self, text: str | None, calls: list[dict[str, Any]], model: str | None) -> None:
        self.text, self.calls, self.model = text, calls, model


def restore(
    state: Any, session_log: list[dict[str, Any]], cp: Checkpoint, approvals: dict[str, bool] | None = None
) -> _Replay | None:
    """Load ``cp`` into ``state`` and ``session_log`` (in place); return the calls to replay, if any.

    A call counts as run when a step holds it, except a ``not_run`` step (the run stopped before the
    call ran, e.g. to wait for approval): that step stays in the record and the call is replayed."""
    steps = [Step.from_dict(d) for d in cp.steps]
    session_log[:] = cp.transcript
    _load_state(state, steps, cp, approvals)
    ran = {s.tool_call.id for s in steps if s.tool_result.error_kind != "not_run"}
    model = steps[-1].model if steps else None
    text: str | None = None
    pending: list[dict[str, Any]] = []
    for m in reversed(session_log):
        if m.get("role") == "assistant" and m.get("tool_calls"):
            pending = [c for c in m["tool_calls"] if c.get("id") not in ran]
            if len(pending) == len(m["tool_calls"]):
                text = m.get("content")
            break
    if cp.pending:  # calls of the same answer that had not started when the checkpoint was written
        pending += cp.pending.get("calls") or []
        if not pending[: -len(cp.pending.get("calls") or [])]:
            text = cp.pending.get("text")
    return _Replay(text, pending, model) if pending else None


def _load_state(state: Any, steps: list[Step], cp: Checkpoint, approvals: dict[str, bool] | None) -> None:
    """The checkpoint's steps, usage totals, cost and metadata (plus new approvals) into ``state``."""
    if isinstance(getattr(state, "steps", None), list):
        state.steps[:] = steps
    usage = getattr(state, "usage", None)
    saved = Usage.from_dict(cp.usage) or Usage()
    if isinstance(usage, Usage):
        usage.input_tokens, usage.output_tokens = saved.input_tokens, saved.output_tokens
        usage.cached_input_tokens, usage.reasoning_tokens = saved.cached_input_tokens, saved.reasoning_tokens
    if hasattr(state, "cost_usd"):
        state.cost_usd = cp.cost_usd
    metadata = getattr(state, "metadata", None)
    if isinstance(metadata, dict):
        metadata.update(cp.metadata)
        if approvals:
            metadata.setdefault(APPROVALS, {}).update({str(k): bool(v) for k, v in approvals.items()})


class CheckpointHook:
    """Write the run's state to ``dir`` after every step; resume from it when the run starts.

    approvals: decisions for calls waiting for approval, ``{call_id: True/False}``, applied on resume.
    fresh: start a new run even when ``dir`` holds a checkpoint (kept beside it as
        ``checkpoint-<first run id>.json``). By default a run resumes, and a run that had finished
        (``done``) returns its result again without calling the model or any tool.
    resume_finished: False starts a new run only when the checkpoint's run had finished (``done``).
    blob_bytes: values larger than this are stored once, by content hash, in ``dir/blobs/``.

    A checkpoint that cannot be read (corrupt, a newer version) is never overwritten: the run stops with
    ``hook_stop:checkpoint_error`` before its first LLM call, and the error is logged.

    List it before a tracing hook, so the tracing hook sees the first run's trace as ``run.parent``.
    """

    handles_restore = True

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        approvals: dict[str, bool] | None = None,
        fresh: bool = False,
        resume_finished: bool = True,
        blob_bytes: int = BLOB_BYTES,
    ) -> None:
        self.dir = Path(dir)
        self.approvals = dict(approvals or {})
        self.fresh = fresh
        self.resume_finished = resume_finished
        self.blob_bytes = blob_bytes

    # the checkpoint to resume from; resume() gives one loaded elsewhere
    def _source(self) -> Checkpoint | None:
        if self._write():
            for tmp in remove_stale_temporaries(self.dir):
                log.info("removed %s, left by a checkpoint write that was interrupted", tmp)
        return Checkpoint.load(self.dir)

    def _write(self) -> bool:
        return True

    def _set_aside(self, cp: Checkpoint) -> None:
        kept = self.dir / f"checkpoint-{cp.first_run_id or cp.run_id or int(cp.updated_at)}.json"
        os.replace(self.dir / FILENAME, kept)
        log.info("checkpoint in %s kept as %s; starting a new run", self.dir, kept.name)

    def on_loop_start(self, state: Any, session_log: list[dict[str, Any]], context: Any) -> None:
        run = current_run()
        scratch = _scratch(self, run)
        if getattr(state, "steps", None):
            return  # the caller gave a state that already holds a run: nothing to restore
        try:
            cp = self._source()
            if cp is None:
                return
            if self._write() and (self.fresh or (cp.stop_reason == "done" and not self.resume_finished)):
                self._set_aside(cp)
                return
            replay = restore(state, session_log, cp, self.approvals)
        except Exception as exc:
            scratch["broken"] = f"{type(exc).__name__}: {exc}"
            emit_event("checkpoint.error", error=type(exc).__name__)
            log.error(
                "checkpoint in %s could not be restored (%s); the run stops without touching it",
                self.dir,
                scratch["broken"],
            )
            return
        scratch.update(
            origin=(cp.first_run_id or cp.run_id, cp.trace_id, cp.span_id), replay=replay, log=session_log
        )
        scratch["awaiting"] = _awaiting(state, replay)
        if run is not None and cp.traceparent:
            run.links.append(cp.traceparent)
            if run.parent is None:
                run.parent = cp.traceparent
        emit_event(
            "checkpoint.restore",
            steps=len(getattr(state, "steps", ())),
            replayed_calls=len(replay.calls) if replay else 0,
            first_run_id=cp.first_run_id,
        )
        log.info(
            "resuming from checkpoint %s: %d steps done, %d proposed calls to run",
            self.dir,
            len(getattr(state, "steps", ())),
            len(replay.calls) if replay else 0,
        )

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        run = current_run()
        scratch = _scratch(self, run)
        if "broken" in scratch:
            return HookDecision(stop="checkpoint_error")
        waiting = scratch.get("awaiting")
        if waiting is not None and _decision(state, waiting) is None:
            log.info("approval: call %s is still waiting for a decision; the run pauses again", waiting)
            return HookDecision(stop="awaiting_approval")
        if "origin" not in scratch and getattr(run, "trace_id", None):
            # pinned before the first step opens: a tracing hook listed after this one has set the run's
            # own span here, so later runs link to the run span (not to a step span)
            scratch["origin"] = (run.run_id, run.trace_id, run.span_id)  # type: ignore[union-attr]
        return None

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
        """The paused call runs only with an explicit approval for its own id, whatever other hooks the
        run has; an approval hook later in the list still records the decision."""
        waiting = _scratch(self, current_run()).get("awaiting")
        if waiting is None or tool_call.id != waiting:
            return None
        decision = _decision(state, waiting)
        if decision is None:
            return HookDecision(stop="awaiting_approval")
        if decision:
            return None
        _settle(state, tool_call, "refused")
        return Deny("a human refused this call")

    def wrap_llm_call(self, call: LLMCall, call_next: Any) -> Any:
        run = current_run()
        scratch = _scratch(self, run)
        replay = scratch.get("replay")
        if replay is None or call.purpose != "step":
            return call_next(call)
        scratch["replay"] = None
        return _replayed(replay, scratch.get("log"))

    def on_step(self, state: Any, step: Any) -> None:
        scratch = _scratch(self, current_run())
        waiting = scratch.get("awaiting")
        if waiting is not None and step.tool_call.id == waiting and step.tool_result.error_kind != "not_run":
            scratch["awaiting"] = None  # decided: clear the pause if no approval hook took it
            _settle(state, step.tool_call, "approved" if _decision(state, waiting) else "refused")
        self._save(state, None)

    def on_loop_end(self, state: Any, session_log: list[dict[str, Any]], context: Any, result: Any) -> None:
        self._save(state, getattr(result, "stop_reason", None))

    def _save(self, state: Any, stop_reason: str | None) -> None:
        run = current_run()
        scratch = _scratch(self, run)
        if not self._write() or "broken" in scratch:
            return
        if run is not None and "origin" not in scratch and run.trace_id:
            scratch["origin"] = (run.run_id, run.trace_id, run.span_id)
        blobs = scratch.get("blobs")
        if blobs is None:
            blobs = scratch["blobs"] = Blobs(self.blob_bytes)
        t = time.perf_counter()
        steps = [blobs.step(step) for step in getattr(state, "steps", ())]
        cp = Checkpoint.from_state(state, run, scratch.get("origin"), stop_reason, steps=steps)
        n = cp.save(self.dir, blobs=blobs, steps=steps)
        ms = (time.perf_counter() - t) * 1000.0
        emit_event("checkpoint", steps=len(steps), bytes=n, duration_ms=round(ms, 3))
        log.debug("checkpoint written to %s: %d steps, %d bytes, %.1f ms", self.dir, len(steps), n, ms)


def _awaiting(state: Any, replay: _Replay | None) -> str | None:
    """The id of the restored call that paused the run for approval, if it is still to run."""
    pending = (getattr(state, "metadata", None) or {}).get(PENDING_APPROVAL)
    if not isinstance(pending, dict) or replay is None:
        return None
    call_id = pending.get("call_id")
    return str(call_id) if any(c.get("id") == call_id for c in replay.calls) else None


def _decision(state: Any, call_id: str) -> bool | None:
    decisions = (getattr(state, "metadata", None) or {}).get(APPROVALS) or {}
    value = decisions.get(call_id)
    return None if value is None else bool(value)


def _settle(state: Any, tc: ToolCall, decision: str) -> None:
    """Clear a decided pause that no approval hook took (and tell the approval metrics so)."""
    meta = getattr(state, "metadata", None)
    if not isinstance(meta, dict):
        return
    pending = meta.get(PENDING_APPROVAL)
    if not isinstance(pending, dict) or pending.get("call_id") != tc.id:
        return  # an approval hook already recorded it
    meta.pop(PENDING_APPROVAL, None)
    decisions = meta.get(APPROVALS)
    if isinstance(decisions, dict):
        decisions.pop(tc.id, None)
        if not decisions:
            meta.pop(APPROVALS, None)
    waited = max(0.0, time.time() - float(pending.get("requested_at", time.time())))
    emit_event(
        "approval", tool=tc.tool, decision=decision, call_id=tc.id, pending=-1, wait_s=round(waited, 6)
    )


def _scratch(hook: Any, run: Any) -> dict[str, Any]:
    if run is None:
        return {}
    scratch: dict[str, Any] = run.scratch.setdefault(hook, {})
    return scratch


def _replayed(replay: _Replay, session_log: list[dict[str, Any]] | None) -> LLMResponse:
    """Take the replayed calls out of the transcript (their "not run" results, and their place in the
    assistant turn, which the loop appends again for this answer) and give them back as an answer that
    the loop does not count as an LLM call: its tokens were counted when the model proposed the calls."""
    ids = {c["id"] for c in replay.calls}
    if session_log is not None:
        kept = [m for m in session_log if not (m.get("role") == "tool" and m.get("tool_call_id") in ids)]
        for i in range(len(kept) - 1, -1, -1):
            m = kept[i]
            if m.get("role") == "assistant" and any(c.get("id") in ids for c in m.get("tool_calls") or ()):
                rest = [c for c in m["tool_calls"] if c.get("id") not in ids]
                if rest:
                    kept[i] = {**m, "tool_calls": rest}
                else:
                    del kept[i]
                break
        session_log[:] = kept
    calls = [
        ToolCall(c["function"]["name"], _args(c["function"].get("arguments")), c["id"]) for c in replay.calls
    ]
    return LLMResponse(replay.text, calls, None, replay.model, None, "tool_calls", REPLAYED)


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
