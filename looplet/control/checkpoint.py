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

Trace continuity: the checkpoint keeps the trace id and span id of the first run; a resumed run gets
``run.parent`` (unless the caller gave one) and ``run.links`` set to that W3C traceparent, so a tracing
hook listed *after* this hook puts the resumed spans in the same trace, linked to the first run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet._engine import REPLAYED
from looplet.hooks import HookDecision, current_run, emit_event
from looplet.types import LLMCall, LLMResponse, Step, ToolCall, Usage, _json_safe

__all__ = ["Checkpoint", "CheckpointHook", "PENDING_APPROVAL", "APPROVALS", "FILENAME"]

log = logging.getLogger("looplet")

FILENAME = "checkpoint.json"
VERSION = 1
PENDING_APPROVAL = "looplet.approval"  # state.metadata: the call waiting for a human (ApprovalHook)
APPROVALS = "looplet.approvals"  # state.metadata: decisions given to resume(), {call_id: bool}


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
    ) -> Checkpoint:
        """Capture ``state`` (steps, transcript, usage, cost, metadata). ``origin`` is the first run's
        ``(run_id, trace_id, span_id)``; without it they are taken from ``run``."""
        usage = getattr(state, "usage", None)
        run_id = getattr(run, "run_id", "") or ""
        first_id, trace_id, span_id = origin or (
            run_id,
            getattr(run, "trace_id", None),
            getattr(run, "span_id", None),
        )
        transcript, pending = _answered_only(list(getattr(state, "transcript", None) or ()))
        return cls(
            steps=[s.to_dict() for s in getattr(state, "steps", ())],
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

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["step_count"] = self.step_count
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        if d.get("version") != VERSION:
            raise ValueError(f"checkpoint version {d.get('version')!r} is not supported (expected {VERSION})")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def save(self, directory: str | os.PathLike[str]) -> int:
        """Write atomically to ``directory/checkpoint.json``; returns the bytes written."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        data = self.to_json().encode()
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path / FILENAME)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return len(data)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Checkpoint | None:
        """The checkpoint in ``directory``, or None when there is none."""
        try:
            text = (Path(directory) / FILENAME).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return cls.from_json(text)


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
    if isinstance(getattr(state, "steps", None), list):
        state.steps[:] = steps
    session_log[:] = cp.transcript
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


class CheckpointHook:
    """Write the run's state to ``dir`` after every step; resume from it when the run starts.

    approvals: decisions for calls waiting for approval, ``{call_id: True/False}``, applied on resume.
    resume_finished: also resume a checkpoint whose run ended with ``done``. By default a new run starts
        and the finished run's checkpoint is kept beside it as ``checkpoint-<first run id>.json``.

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
        resume_finished: bool = False,
    ) -> None:
        self.dir = Path(dir)
        self.approvals = dict(approvals or {})
        self.resume_finished = resume_finished

    # the checkpoint to resume from; resume() gives one loaded elsewhere
    def _source(self) -> Checkpoint | None:
        return Checkpoint.load(self.dir)

    def _write(self) -> bool:
        return True

    def on_loop_start(self, state: Any, session_log: list[dict[str, Any]], context: Any) -> None:
        run = current_run()
        scratch = _scratch(self, run)
        if getattr(state, "steps", None):
            return  # the caller gave a state that already holds a run: nothing to restore
        try:
            cp = self._source()
            if cp is None:
                return
            if cp.stop_reason == "done" and not self.resume_finished:
                kept = self.dir / f"checkpoint-{cp.first_run_id or cp.run_id or int(cp.updated_at)}.json"
                os.replace(self.dir / FILENAME, kept)
                log.info(
                    "checkpoint in %s is of a finished run (kept as %s); starting a new run",
                    self.dir,
                    kept.name,
                )
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
        if "origin" not in scratch and getattr(run, "trace_id", None):
            # pinned before the first step opens: a tracing hook listed after this one has set the run's
            # own span here, so later runs link to the run span (not to a step span)
            scratch["origin"] = (run.run_id, run.trace_id, run.span_id)  # type: ignore[union-attr]

    def wrap_llm_call(self, call: LLMCall, call_next: Any) -> Any:
        run = current_run()
        scratch = _scratch(self, run)
        replay = scratch.get("replay")
        if replay is None or call.purpose != "step":
            return call_next(call)
        scratch["replay"] = None
        return _replayed(replay, scratch.get("log"))

    def on_step(self, state: Any, step: Any) -> None:
        self._save(state, None)

    def on_loop_end(self, state: Any, session_log: list[dict[str, Any]], context: Any, result: Any) -> None:
        self._save(state, getattr(result, "stop_reason", None))

    def _save(self, state: Any, stop_reason: str | None) -> None:
        run = current_run()
        scratch = _scratch(self, run)
        if not self._write() or "broken" in scratch:
            return
        if "origin" not in scratch and getattr(run, "trace_id", None):
            scratch["origin"] = (run.run_id, run.trace_id, run.span_id)
        t = time.perf_counter()
        n = Checkpoint.from_state(state, run, scratch.get("origin"), stop_reason).save(self.dir)
        ms = (time.perf_counter() - t) * 1000.0
        emit_event("checkpoint", steps=len(getattr(state, "steps", ())), bytes=n, duration_ms=round(ms, 3))
        log.debug(
            "checkpoint written to %s: %d steps, %d bytes, %.1f ms",
            self.dir,
            len(getattr(state, "steps", ())),
            n,
            ms,
        )


def _scratch(hook: Any, run: Any) -> dict[str, Any]:
    if run is None:
        return {}
    return run.scratch.setdefault(hook, {})


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
