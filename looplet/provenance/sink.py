"""ProvenanceSink: turns runs into trajectory folders, from OpenTelemetry spans or straight from the loop.

Three ways in, one folder out:

* as an OpenTelemetry span exporter (``BatchSpanProcessor(ProvenanceSink(dir))`` on any TracerProvider):
  the spans a tracing hook makes (``invoke_agent`` → ``looplet.step`` → ``chat`` / ``execute_tool``) are
  gathered per run and the folder is written when the run's ``invoke_agent`` span arrives;
* ``sink.trajectory_hook()``: a hook that records the run directly, no OpenTelemetry needed;
* ``sink.wrap_llm(llm)``: a backend wrapper that records each call; the folder is written at ``flush()``
  (or as soon as another call notices the run has ended).

Redaction (``redact``) is applied to every string written; the model always sees the original.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from looplet.hooks import current_run
from looplet.provenance.format import CallRecord, RunRecord, folder_name, render_files, write_folder
from looplet.types import LLMCall, LLMResponse, ToolCall, ToolResult, Usage, _json_safe

__all__ = ["ProvenanceSink", "TrajectoryHook"]

log = logging.getLogger("looplet.provenance")


def _resolve_redact(redact: Any) -> Callable[[str], str] | None:
    """None: write as is. True or "default": the built-in secret patterns. A callable: applied to every
    string (a ``Redactor`` is one)."""
    if redact is None or redact is False:
        return None
    if redact is True or redact == "default":
        from looplet.telemetry.redact import Redactor

        return Redactor()
    if callable(redact):
        return redact
    raise TypeError(
        f"redact must be None, True, 'default' or a callable str -> str, got {type(redact).__name__}"
    )


class ProvenanceSink:
    """Writes one trajectory folder per run under ``dir``.

    It implements OpenTelemetry's ``SpanExporter`` interface (``export``, ``force_flush``, ``shutdown``; by
    duck typing, not by subclassing, so the hook path imports no OpenTelemetry at all). Put it behind a
    ``BatchSpanProcessor`` so the loop never waits for the disk: ``export`` files the spans by trace, and a
    run's folder is written when its ``invoke_agent`` span arrives, on the processor's worker thread.

    dir: where run folders go (created when the first run is written).
    redact: None, True (built-in patterns for API keys, bearer tokens, e-mail addresses), or a callable
        ``str -> str`` applied to every string written: prompts, responses, tool schemas, arguments,
        results and the task.
    max_chars_per_call: prompt and response files longer than this keep their head and tail.
    fsync: also have every file on the disk before its folder is renamed into place, so the folder
        survives a power cut too (off by default: a folder is always renamed into place whole, which is
        what a crash or a kill of the process needs). In-process this is a disk flush per file; the writer
        process syncs the file system once for the folders waiting together.
    writer: ``"process"`` (default): folders that come from spans are written by a small helper process,
        on another core, while the exporter turns the next run's spans into text (where the helper cannot
        start, or dies, they are written in-process: nothing is lost); ``"inline"``: always in-process.
        The ``wrap_llm`` path and ``trajectory_hook()`` write in-process, so the folder is there when the
        run ends; ``trajectory_hook(background=True)`` queues it for a background thread instead.
    max_queued_runs: runs a background trajectory hook may have waiting; beyond that a run's folder is
        dropped and counted in ``dropped_runs`` (a stalled disk must not hold up the agent).
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        redact: Any = None,
        max_chars_per_call: int = 200_000,
        *,
        fsync: bool = False,
        writer: str = "process",
        max_buffered_spans: int = 200_000,
        max_queued_runs: int = 256,
    ) -> None:
        if not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"ProvenanceSink(dir=...) must be a path, got {type(dir).__name__}")
        if not isinstance(max_chars_per_call, int) or max_chars_per_call < 1:
            raise ValueError(f"max_chars_per_call must be an int >= 1, got {max_chars_per_call!r}")
        if writer not in ("process", "inline"):
            raise ValueError(f"writer must be 'process' or 'inline', got {writer!r}")
        if not isinstance(max_queued_runs, int) or max_queued_runs < 1:
            raise ValueError(f"max_queued_runs must be an int >= 1, got {max_queued_runs!r}")
        self.dir = Path(dir)
        self.redact = _resolve_redact(redact)
        self.max_chars_per_call = max_chars_per_call
        self.fsync = fsync
        self.writer = writer
        self.written: collections.deque[Path] = collections.deque(maxlen=1000)
        self._lock = threading.RLock()
        self._pending: dict[str, tuple[Any, RunRecord]] = {}  # wrap_llm runs, by run id
        self._spans: Any = None  # spans.SpanBuffer, made on first export
        self._max_buffered = max_buffered_spans
        self._shutdown = False
        self._redacted: dict[str, str] = {}  # short strings already redacted (tool and model names, ...)
        self.max_queued_runs = max_queued_runs
        self.dropped_runs = 0  # runs a background trajectory hook could not queue
        self._queue: collections.deque[tuple[RunRecord, str]] = collections.deque()  # runs and their folders
        self._queue_cond = threading.Condition()
        self._queue_thread: threading.Thread | None = None
        self._queue_pid = os.getpid()

    # ---------------------------------------------------------------- writing
    def write(self, record: RunRecord, name: str | None = None) -> Path:
        """Render and write one run's folder (``name``: the folder's name when already chosen); returns
        its path."""
        files = render_files(record, self.redact, self.max_chars_per_call, self._redacted)
        path = write_folder(self.dir, name or folder_name(record, self.redact), files, fsync=self.fsync)
        self.written.append(path)
        return path

    @property
    def last_path(self) -> Path | None:
        """The folder written most recently."""
        return self.written[-1] if self.written else None

    def _write_safely(self, record: RunRecord, name: str | None = None) -> Path | None:
        try:
            return self.write(record, name)
        except Exception:
            log.exception("could not write the trajectory of run %s under %s", record.run_id, self.dir)
            return None

    # ---------------------------------------------------------------- hook path
    def trajectory_hook(self, *, background: bool = False) -> TrajectoryHook:
        """A hook that records each run it sees and writes its folder when the run ends: on the loop's
        thread (the folder exists when the run has ended), or with ``background=True`` on a background
        thread and the writer process (the run ends at once; ``flush()`` waits for the folders)."""
        return TrajectoryHook(self, background=background)

    # ---------------------------------------------------------------- wrapped backend path
    def wrap_llm(self, llm: Any) -> Any:
        """``llm`` with every call recorded; runs are written at :meth:`flush` (or once they have ended)."""
        if not callable(getattr(llm, "generate", None)) and not callable(getattr(llm, "agenerate", None)):
            raise TypeError(
                f"wrap_llm needs a backend with generate() or agenerate(), got {type(llm).__name__}"
            )
        return _RecordingLLM(llm, self)

    def _record_for(self, run: Any) -> RunRecord | None:
        if run is None:
            return None
        for key in list(run.scratch):  # a trajectory hook of this sink already records this run
            if isinstance(key, TrajectoryHook) and key.sink is self:
                return None
        with self._lock:
            entry = self._pending.get(run.run_id)
            if entry is None:
                rec = _new_record(run, "wrap_llm")
                rec.first_step = len(getattr(run.state, "steps", ()) or ()) + 1
                entry = self._pending[run.run_id] = (run, rec)
                run.scratch[(self, "t0")] = time.perf_counter()
            done = [
                rid
                for rid, (r, _rec) in self._pending.items()
                if rid != run.run_id and getattr(r.state, "result", None) is not None
            ]
        for rid in done:
            self._write_pending(rid)
        return entry[1]

    def _write_pending(self, run_id: str) -> Path | None:
        """Write a wrapped-backend run: for good once it has ended, else as it stands (it stays pending
        and its folder is rewritten later)."""
        with self._lock:
            entry = self._pending.get(run_id)
            if entry is None:
                return None
            run, rec = entry
            result = getattr(run.state, "result", None)
            if result is not None:
                del self._pending[run_id]
            snapshot = dataclasses.replace(
                rec,
                steps=list(getattr(run.state, "steps", []) or []),
                calls=list(rec.calls),
                timeline=list(rec.timeline),
                step_calls=dict(rec.step_calls),
            )
        if result is not None:
            _apply_result(snapshot, result)
        else:
            snapshot.duration_ms = (
                time.perf_counter() - run.scratch.get((self, "t0"), time.perf_counter())
            ) * 1e3
        snapshot.timeline.extend(_tool_bars(snapshot))
        return self._write_safely(snapshot)

    def flush(self, timeout_s: float | None = 30.0) -> list[Path]:
        """Write every run recorded so far that has not been written (wrapped-backend runs, and runs still
        in progress as they stand) and wait, up to ``timeout_s``, for the runs a background trajectory
        hook has queued. Returns the folders written by this call."""
        if self._queue_thread is not None and not self._wait_queue(timeout_s):
            log.warning(
                "flush: %d queued trajectory folder(s) still being written after %s s",
                len(self._queue),
                timeout_s,
            )
        with self._lock:
            ids = list(self._pending)
        out = [p for rid in ids if (p := self._write_pending(rid)) is not None]
        return out

    # ---------------------------------------------------------------- SpanExporter
    def export(self, spans: Any) -> Any:
        """Take a batch of finished spans (SpanExporter API). Spans are filed by trace; when a run's
        ``invoke_agent`` span arrives, its folder is rendered here, on the span processor's worker thread,
        and written by the writer process meanwhile; every folder is in place when this returns (a
        ``TracerProvider.force_flush()`` does not call the exporter's own). Never raises."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            self._take(spans)
        except Exception:
            log.exception("ProvenanceSink could not take a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def add_spans(self, spans: Any) -> list[Path]:
        """File spans (OpenTelemetry ``ReadableSpan`` objects or :mod:`looplet.provenance.spans` records) and
        write every run they complete. Returns the folders written."""
        return self._take(spans)

    def _take(self, spans: Any) -> list[Path]:
        from looplet.provenance.spans import SpanBuffer

        with self._lock:
            if self._spans is None:
                self._spans = SpanBuffer(self._max_buffered)
            agents = self._spans.file(spans)
        return self._write_runs(self._build(agent) for agent in agents) if agents else []

    def _build(self, agent: Any) -> tuple[RunRecord, str] | None:
        """The run ``agent`` ends, and its folder's name."""
        try:
            with self._lock:
                record = self._spans.build(agent)
            return record, folder_name(record, self.redact)
        except Exception:
            log.exception("could not write the trajectory of trace %032x under %s", agent.trace_id, self.dir)
            return None

    def _write_runs(self, runs: Iterable[tuple[RunRecord, str] | None]) -> list[Path]:
        """Write each run into the folder named beside it (consumed lazily: with the writer process, each
        is built and rendered while the process writes the one before). Returns the folders written."""
        out: list[Path] = []
        if self.writer == "inline":
            return [p for run in runs if run is not None and (p := self._write_safely(*run)) is not None]
        from looplet.provenance import _writer

        def done(job: _writer.Job, result: Path | BaseException) -> None:
            if isinstance(result, BaseException):
                log.error("could not write the trajectory %s under %s: %s", job[1], self.dir, result)
            else:  # the helper was given an absolute root: report the path as this sink names it
                path = self.dir / job[1]
                self.written.append(path)
                out.append(path)

        for run in runs:
            if run is None:
                continue
            rec, name = run
            try:
                # with a redactor this thread has the more work of the two: the writer formats the JSON
                # (measured: +8% spans/s with redaction, -8% without; bench/provenance_throughput.py)
                files = render_files(
                    rec,
                    self.redact,
                    self.max_chars_per_call,
                    self._redacted,
                    defer_json=self.redact is not None,
                )
            except Exception:
                log.exception("could not write the trajectory of run %s under %s", rec.run_id, self.dir)
                continue
            # absolute: the helper keeps the working directory it started in, this process may change its own
            root = os.path.abspath(self.dir)
            _writer.submit((root, name, files, self.fsync), done)
        _writer.drain()
        return out

    # ---------------------------------------------------------------- background writing (hook path)
    def _enqueue(self, record: RunRecord) -> Path | None:
        """Queue a finished run for the background writer; its folder's path, or None when the queue is
        full and the run is dropped (counted in ``dropped_runs``)."""
        if (
            self._queue_pid != os.getpid()
        ):  # a forked child: its own queue and thread (its parent's are not here)
            self._queue, self._queue_cond, self._queue_thread = (
                collections.deque(),
                threading.Condition(),
                None,
            )
            self._queue_pid = os.getpid()
        with self._queue_cond:
            if self._queue_thread is None:
                import atexit

                self._queue_thread = threading.Thread(
                    target=self._drain_queue, name="looplet-trajectories", daemon=True
                )
                self._queue_thread.start()
                atexit.register(self._wait_queue, 5.0)  # bounded: never hold up the exit for long
            if len(self._queue) >= self.max_queued_runs:
                self.dropped_runs += 1
                if self.dropped_runs == 1 or self.dropped_runs % 100 == 0:
                    log.warning(
                        "trajectory writer is behind: %d run(s) not written (queue of %d full; slow disk?)",
                        self.dropped_runs,
                        self.max_queued_runs,
                    )
                return None
            name = folder_name(record, self.redact)  # once: the path the run is told is the one written
            self._queue.append((record, name))
            self._queue_cond.notify_all()
        return self.dir / name

    def _drain_queue(self) -> None:
        while True:
            with self._queue_cond:
                while not self._queue:
                    self._queue_cond.wait()
                run = self._queue[0]  # stays queued until written, so a flush waits for it
            try:
                self._write_runs([run])
            except Exception:
                log.exception("could not write the trajectory of run %s under %s", run[0].run_id, self.dir)
            with self._queue_cond:
                self._queue.popleft()
                self._queue_cond.notify_all()

    def _wait_queue(self, timeout_s: float | None) -> bool:
        with self._queue_cond:
            return self._queue_cond.wait_for(lambda: not self._queue, timeout_s)

    def load_otlp_json(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the runs found in a file of OTLP JSON (``ExportTraceServiceRequest`` objects, one per line
        as the OpenTelemetry Collector's file exporter writes them, or a single document)."""
        from looplet.provenance.spans import read_otlp_json

        return self.add_spans(read_otlp_json(path))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """SpanExporter API: every completed run is written as its spans arrive; this writes the
        wrapped-backend runs that have ended."""
        with self._lock:
            ids = [
                rid
                for rid, (r, _rec) in self._pending.items()
                if getattr(r.state, "result", None) is not None
            ]
        for rid in ids:
            self._write_pending(rid)
        return True

    def shutdown(self) -> None:
        """SpanExporter API: write what is pending; later exports fail."""
        self.flush()
        self._shutdown = True

    def __repr__(self) -> str:
        return f"ProvenanceSink({str(self.dir)!r})"


# ------------------------------------------------------------------------------------------------------
# Recording a run from inside the loop
# ------------------------------------------------------------------------------------------------------


def _new_record(run: Any, source: str) -> RunRecord:
    config = getattr(run, "config", None)
    return RunRecord(
        run_id=run.run_id,
        agent=run.agent_name,
        task=_json_safe(run.task),
        started_at=time.time(),
        provider=getattr(run, "provider", None),
        done_tool=getattr(config, "done_tool", "done"),
        max_steps=getattr(getattr(run, "state", None), "max_steps", None)
        or getattr(config, "max_steps", None),
        source=source,
    )


def _apply_result(rec: RunRecord, result: Any) -> None:
    rec.stop_reason = result.stop_reason
    rec.error = result.error
    rec.final_output = _json_safe(result.final_output)
    rec.usage = Usage() + result.usage
    rec.cost_usd = result.cost_usd
    rec.llm_calls = result.llm_calls
    rec.duration_ms = result.duration_ms
    rec.trace_id = rec.trace_id or result.trace_id
    if len(result.steps) >= len(rec.steps):  # a resumed run: the steps from before the resume too
        rec.steps = list(result.steps)


def _call_started(rec: RunRecord, call: LLMCall, start_ms: float, provider: str | None) -> CallRecord:
    if rec.tools is None:
        rec.tools = [dict(t) for t in call.tools or ()]
    c = CallRecord(
        number=len(rec.calls) + 1,
        step=call.step,
        purpose=call.purpose,
        model=call.model,
        provider=call.provider or provider,
        messages=list(call.messages),
        start_ms=start_ms,
    )
    rec.calls.append(c)
    return c


def _call_finished(rec: RunRecord, c: CallRecord, out: Any, ended_ms: float) -> None:
    from looplet.telemetry.cost import cost_of

    c.duration_ms = ended_ms - c.start_ms
    if isinstance(out, BaseException):
        c.error = f"{type(out).__name__}: {out}"
        c.answered = False
    elif isinstance(out, LLMResponse):
        c.text = out.text
        c.tool_calls = [ToolCall(t.tool, _json_safe(t.args), t.id, t.reasoning) for t in out.tool_calls]
        c.usage = out.usage
        c.model = out.model or c.model
        c.provider = out.provider or c.provider
        c.finish_reason = out.finish_reason
        c.response_id = out.response_id
        c.cost_usd = cost_of(c.model, out.usage)
        if out.time_to_first_chunk_s is not None:
            c.ttfc_ms = out.time_to_first_chunk_s * 1000.0
    rec.timeline.append(
        {
            "kind": "llm",
            "name": f"chat {c.model or ''}".strip(),
            "call": c.number,
            "step": c.step,
            "start_ms": c.start_ms,
            "duration_ms": c.duration_ms,
            "error": c.error,
        }
    )


def _tool_bars(rec: RunRecord) -> list[dict[str, Any]]:
    """Tool bars for a run recorded without wrap_tool: each step's tool right after its LLM call."""
    by_call = {c.number: c for c in rec.calls}
    rec.link_steps()
    offset: dict[int, float] = {}
    bars = []
    for s in rec.steps:
        n = rec.step_calls.get(s.number)
        c = by_call.get(n) if n is not None else None
        start = offset.get(n, (c.start_ms + c.duration_ms) if c else 0.0)
        offset[n] = start + s.tool_ms  # type: ignore[index]
        bars.append(
            {
                "kind": "tool",
                "name": f"execute_tool {s.tool_call.tool}",
                "step": s.number,
                "start_ms": start,
                "duration_ms": s.tool_ms,
                "error": s.tool_result.error,
            }
        )
    return bars


class TrajectoryHook:
    """Records each run it is part of and writes its folder at ``on_loop_end``.

    Put an ``EvalHook`` before it in the hook list to have eval results in the trajectory's events.
    """

    def __init__(self, sink: ProvenanceSink, *, background: bool = False) -> None:
        self.sink = sink
        self.background = background

    def __repr__(self) -> str:
        return f"TrajectoryHook({str(self.sink.dir)!r}{', background=True' if self.background else ''})"

    def _rec(self) -> tuple[RunRecord, float] | None:
        run = current_run()
        if run is None:
            return None
        entry = run.scratch.get(self)
        if entry is None:
            entry = run.scratch[self] = (_new_record(run, "hook"), time.perf_counter())
        return entry

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        entry = self._rec()
        if entry is not None:
            entry[0].first_step = len(getattr(state, "steps", ()) or ()) + 1

    def wrap_llm_call(self, call: LLMCall, call_next: Callable[[LLMCall], Any]) -> Any:
        entry = self._rec()
        if entry is None:
            return call_next(call)
        rec, t0 = entry
        run = current_run()
        c = _call_started(rec, call, (time.perf_counter() - t0) * 1000.0, getattr(run, "provider", None))
        try:
            out = call_next(call)
        except BaseException as exc:
            _call_finished(rec, c, exc, (time.perf_counter() - t0) * 1000.0)
            raise
        if inspect.isawaitable(out):
            return _await_llm(out, rec, c, t0)
        _call_finished(rec, c, out, (time.perf_counter() - t0) * 1000.0)
        return out

    def wrap_tool(self, tool_call: ToolCall, call_next: Callable[[ToolCall], Any]) -> Any:
        entry = self._rec()
        if entry is None:
            return call_next(tool_call)
        rec, t0 = entry
        start = (time.perf_counter() - t0) * 1000.0
        out = call_next(tool_call)
        if inspect.isawaitable(out):
            return _await_tool(out, rec, tool_call, start, t0)
        _tool_finished(rec, tool_call, out, start, t0)
        return out

    def on_step(self, state: Any, step: Any) -> None:
        entry = self._rec()
        if entry is None:
            return
        rec = entry[0]
        rec.steps.append(step)
        for c in reversed(rec.calls):
            if c.error is None and c.purpose == "step":
                rec.step_calls[step.number] = c.number
                break

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        entry = self._rec()
        if entry is None:
            return
        rec, t0 = entry
        rec.events.append(
            {
                "name": name,
                "attributes": _json_safe(dict(attributes)),
                "at_ms": round((time.perf_counter() - t0) * 1000.0, 3),
            }
        )

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        if run is None:
            return
        entry = run.scratch.pop(self, None)
        if entry is None:
            return
        rec = entry[0]
        rec.trace_id = run.trace_id
        _apply_result(rec, result)
        numbers = {s.tool_call.id: s.number for s in rec.steps}
        for bar in rec.timeline:
            if "_id" in bar:
                bar["step"] = numbers.get(bar.pop("_id"))
        path = self.sink._enqueue(rec) if self.background else self.sink._write_safely(rec)
        metadata = getattr(state, "metadata", None)
        if path is not None and isinstance(metadata, dict):
            metadata["trajectory_dir"] = str(path)


async def _await_llm(awaitable: Any, rec: RunRecord, c: CallRecord, t0: float) -> Any:
    try:
        out = await awaitable
    except BaseException as exc:
        _call_finished(rec, c, exc, (time.perf_counter() - t0) * 1000.0)
        raise
    _call_finished(rec, c, out, (time.perf_counter() - t0) * 1000.0)
    return out


def _tool_finished(rec: RunRecord, tc: ToolCall, out: Any, start: float, t0: float) -> None:
    err = out.error if isinstance(out, ToolResult) else None
    rec.timeline.append(
        {
            "kind": "tool",
            "name": f"execute_tool {tc.tool}",
            "step": None,
            "_id": tc.id,
            "start_ms": start,
            "duration_ms": (time.perf_counter() - t0) * 1000.0 - start,
            "error": err,
        }
    )


async def _await_tool(awaitable: Any, rec: RunRecord, tc: ToolCall, start: float, t0: float) -> Any:
    out = await awaitable
    _tool_finished(rec, tc, out, start, t0)
    return out


class _RecordingLLM:
    """A backend that records each call into the sink, then answers as the wrapped one does."""

    def __init__(self, llm: Any, sink: ProvenanceSink) -> None:
        self._llm = llm
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        if name == "agenerate":
            inner = self._llm.agenerate  # AttributeError when the backend is sync only
            return self._make_agenerate(inner)
        return getattr(self._llm, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._llm!r})"

    def _begin(self, messages: Any, tools: Any) -> tuple[RunRecord, CallRecord, float] | None:
        run = current_run()
        rec = self._sink._record_for(run)
        if rec is None:
            return None
        t0 = run.scratch[(self._sink, "t0")]
        call = LLMCall(
            list(messages),
            list(tools or ()),
            step=len(getattr(run.state, "steps", ())) + 1,
            model=getattr(self._llm, "model", None),
            provider=getattr(self._llm, "provider", None),
        )
        return rec, _call_started(rec, call, (time.perf_counter() - t0) * 1000.0, call.provider), t0

    @staticmethod
    def _end(began: tuple[RunRecord, CallRecord, float] | None, out: Any) -> None:
        """Record how a call begun by ``_begin`` ended: its answer, or the exception it raised."""
        if began:
            rec, call, t0 = began
            _call_finished(rec, call, out, (time.perf_counter() - t0) * 1000.0)

    def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
        began = self._begin(messages, tools)
        try:
            out = self._llm.generate(messages, tools=tools, **options)
        except BaseException as exc:
            self._end(began, exc)
            raise
        self._end(began, out)
        return out

    def _make_agenerate(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def agenerate(messages: Any, *, tools: Any = None, **options: Any) -> Any:
            began = self._begin(messages, tools)
            try:
                out = await inner(messages, tools=tools, **options)
            except BaseException as exc:
                self._end(began, exc)
                raise
            self._end(began, out)
            return out

        return agenerate
