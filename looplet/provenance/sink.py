"""ProvenanceSink: an OpenTelemetry span exporter that writes each run as a trajectory folder.

Three ways in, one builder (:func:`looplet.provenance.spans.build`): spans from any ``TracerProvider``
(``BatchSpanProcessor(ProvenanceSink(dir))``), ``sink.trajectory_hook()`` and ``sink.wrap_llm(llm)``. The
last two are thin adapters making the span records ``TracingHook`` would (content on), so every route
writes the same folder; their ids are the run's trace and step span ids when a ``TracingHook`` runs
before the hook (``run.trace_id``, ``Step.span_id``), otherwise made up, and then not written.

Where a run goes: the first run the sink writes goes in ``dir`` itself when ``dir`` holds no run yet;
every other run goes in ``dir/<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>/``. ``ProvenanceSink`` is made on
first use: with the ``otel`` extra it subclasses ``opentelemetry.sdk.trace.export.SpanExporter``;
``import looplet.provenance`` imports no OpenTelemetry.
"""

from __future__ import annotations

import collections
import contextvars
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looplet.hooks import current_run
from looplet.provenance import format as F
from looplet.provenance import spans as S
from looplet.telemetry import messages as semconv
from looplet.telemetry import names as N
from looplet.types import LLMCall, LLMResponse, Step, ToolCall, ToolResult

__all__ = ["ProvenanceSink", "TrajectoryHook", "RecordingLLM"]

log = logging.getLogger("looplet.provenance")
Rec = S.SpanRec
# (sink, trace id, span id) of the tool record whose tool is running: a run started in it is a sub-agent
_TOOL: contextvars.ContextVar[tuple[Any, int, int] | None] = contextvars.ContextVar("prov_tool", default=None)


def _rid() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


def tool_record(tc: ToolCall, res: Any, t: tuple[int, int], ran: bool = True, sid: int | None = None) -> Rec:
    """An ``execute_tool`` record; ``ran=False`` for a call that never ran (denied, answered by a hook)."""
    a: dict[str, Any] = {S.TOOL_NAME: tc.tool, S.TOOL_ARGS: F.dumps(tc.args)}
    a.update({S.CALL_ID: tc.id} if tc.id else {})
    a.update({S.TOOL_EXECUTED: False} if not ran else {})
    rec = Rec(f"execute_tool {tc.tool}", 0, sid or _rid(), None, t[0], t[1], a, real=False)
    if isinstance(res, BaseException):
        rec.error, rec.status = True, f"{type(res).__name__}: {res}"
    elif isinstance(res, ToolResult):
        if res.error is not None:
            a[N.TOOL_ERROR_KIND], rec.error, rec.status = res.error_kind or "tool_error", True, res.error
        if ran:
            a[S.TOOL_RESULT] = F.dumps(res.text if res.text is not None else res.error or res.data)
    return rec


def _around(call_next: Callable[[Any], Any], arg: Any, done: Callable[[Any, Any], None]) -> Any:
    """``call_next(arg)``, then ``done(result, exception)`` (awaited first when async)."""
    try:
        out = call_next(arg)
    except BaseException as exc:
        done(None, exc)
        raise
    if not inspect.isawaitable(out):
        done(out, None)
        return out

    async def wait() -> Any:
        try:
            res = await out
        except BaseException as exc:
            done(None, exc)
            raise
        done(res, None)
        return res

    return wait()


def _event(name: str, attributes: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """A span event as TracingHook.on_event writes it."""
    g = attributes.get
    if name == "hook.decision":
        d = {N.HOOK: str(g("hook", "")), N.DECISION: str(g("decision", ""))}
        d.update({k: str(v) for k, v in ((N.REASON, g("reason")), (S.TOOL_NAME, g("tool"))) if v})
        return N.EV_HOOK_DECISION, time.time_ns(), d
    ev = name if name.startswith("looplet.") else f"looplet.{name}"
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode
    a = {k if "." in k else f"{ev}.{k}": v if isinstance(v, (bool, int, float, str)) else dump(v) for k, v in attributes.items()}  # fmt: skip
    return ev, time.time_ns(), a


def _answer(a: dict[str, Any], call: LLMCall, r: LLMResponse) -> None:
    """The attributes TracingHook sets on a chat span from an answer and the call's facts."""
    u = call.usage
    finish = (r.finish_reason,) if r.finish_reason else None
    facts = ((S.RESP_MODEL, r.model), (S.RESP_ID, r.response_id), (S.FINISH, finish))
    a.update((k, v) for k, v in facts if v)
    if u is not None:
        a.update({S.IN_TOK: u.input_tokens, S.OUT_TOK: u.output_tokens})
        extra = ((S.CACHED_TOK, u.cached_input_tokens), (S.REASONING_TOK, u.reasoning_tokens))
        a.update((k, v) for k, v in extra if v)
    a.update({N.COST_USD: call.cost_usd} if call.cost_usd is not None else {})
    a.update({S.PROVIDER: r.provider} if r.provider and r.provider != call.provider else {})
    a.update({S.TTFC: call.ttfc_ms / 1000.0} if call.ttfc_ms is not None else {})
    a[S.OUTPUT] = [semconv.output(r)]


class _RunState:
    """One run, as a capture route records it: its records, each with the number of the step it sits
    under (None: under the run)."""

    def __init__(self, run: Any, sink: Any) -> None:
        tool = _TOOL.get()
        tool = tool if tool is not None and tool[0] is sink else None
        self.trace = int(run.trace_id, 16) if run.trace_id else tool[1] if tool else _rid()
        self.parent = tool[2] if tool else None  # the tool record of the run that started this one
        self.start, self.events, self.resumed = time.time_ns(), [], 0  # type: int, list[Any], int
        self.records: list[tuple[Rec, int | None]] = []
        self.by_call: dict[str, int] = {}
        self.first: dict[int, int] = {}  # step number -> when its first LLM call started
        self.tools: dict[int, Rec] = {}  # step number -> its tool record (its tool ran)
        self.stepped: set[int] = set()
        self.transcript = semconv.Transcript()  # the run's prompts, each message converted once

    def chat(self, call: LLMCall, out: Any, t0: int, run: Any) -> None:
        """A ``chat`` record of one LLM call from its facts (``out``: the exception it raised, if any)."""
        if call.replayed:  # an answer a hook gave back (a checkpoint) is not an LLM call
            return
        model, r = call.model or getattr(run, "model", None), call.response
        a = {
            k: v
            for k, v in ((S.REQ_MODEL, model), (S.PROVIDER, call.provider or getattr(run, "provider", None)))
            if v
        }
        t = self.transcript
        t.update(call.messages)
        a[S.INPUT] = F.Prompt(t.system, t.messages, len(t.messages))
        a.update({N.LLM_PURPOSE: call.purpose} if call.purpose != "step" else {})
        a.update({S.TOOL_DEFS: call.tools} if call.tools else {})
        end = t0 + int(call.duration_ms * 1e6)
        rec = Rec(f"chat {model}" if model else "chat", 0, _rid(), None, t0, end, a, real=False)
        self.records.append((rec, call.step))
        if isinstance(out, BaseException) or not isinstance(r, LLMResponse):
            a[S.ERROR_TYPE] = call.error_type or "invalid_response"
            rec.error, rec.status = True, f"{type(out).__name__}: {out}" if out is not None else "no answer"
            return
        _answer(a, call, r)

    def step(self, step: Step, wrapped: bool = False, chat: Rec | None = None) -> None:
        """The ``looplet.step`` record of a Step, with an ``execute_tool`` record when the hook saw no tool
        run for it: one that never ran, or, around a backend (``wrapped``), one made from the Step, right
        after ``chat``, the LLM call that proposed it."""
        if step.number in self.stepped:
            return
        self.stepped.add(step.number)
        now, tool, res = time.time_ns(), self.tools.get(step.number), step.tool_result
        start, end = self.first.get(step.number, now), now
        if wrapped:
            ok = chat is not None and not chat.error
            t = chat.end_ns if chat is not None and ok else self.start
            start, end = chat.start_ns if chat is not None else t, t + int(step.tool_ms * 1e6)
            if chat is not None and ok and step.usage is not None and step.cost_usd is not None:
                chat.attrs[N.COST_USD] = step.cost_usd  # type: ignore[index]  # the loop's price, on its first Step
            if res.error_kind not in ("denied", "not_run"):
                self.tools[step.number] = tool = tool_record(step.tool_call, res, (t, end))
                self.records.append((tool, step.number))
        if step.children and tool is not None:  # a sub-agent this sink did not record: its Steps
            tool.attrs[S.CHILDREN] = step.children  # type: ignore[index]
        a: dict[str, Any] = {N.STEP_NUMBER: step.number, S.STEP_TOOL: step.tool_call.tool}
        a.update({N.TOOL_ERROR_KIND: res.error_kind or "error"} if res.error is not None else {})
        sid = int(step.span_id, 16) if step.span_id else _rid()
        self.records.append((Rec(N.STEP_SPAN, 0, sid, None, start, end, a, real=bool(step.span_id)), None))
        if tool is None:
            self.records.append((tool_record(step.tool_call, res, (end, end), ran=False), step.number))

    def finish(self, run: Any, result: Any, wrapped: bool = False) -> list[Rec]:
        """The run's records with their trace and parents set (a call or tool under its step, the run under
        the tool that started it), its own ``invoke_agent`` record last. ``wrapped``: recorded around its
        backend, so its steps are taken from ``result``."""
        chats = {n: r for r, n in self.records} if wrapped else {}  # the last call under each step
        for step in result.steps[self.resumed :]:  # wrapped, or a step whose on_step never came (Ctrl-C)
            self.step(step, wrapped, chats.get(step.number))
        u, stop, error = result.usage, result.stop_reason, result.error
        a: dict[str, Any] = {S.AGENT_NAME: run.agent_name, N.RUN_ID: run.run_id, N.STOP_REASON: stop}
        a.update({N.RUN_LLM_CALLS: result.llm_calls, N.RUN_INPUT_TOKENS: u.input_tokens})
        a.update({N.RUN_OUTPUT_TOKENS: u.output_tokens, N.RUN_CACHED_TOKENS: u.cached_input_tokens})
        a[N.RUN_REASONING_TOKENS] = u.reasoning_tokens
        content = ((N.TASK, run.task), (N.FINAL_OUTPUT, result.final_output))
        a.update({k: F.dumps(v) for k, v in content if v is not None})
        a.update({N.COST_USD: result.cost_usd} if result.cost_usd is not None else {})
        cancelled = stop == "cancelled" and error not in (None, "", S.CLOSED)  # not by its caller
        failed = stop in ("llm_error", "hook_error") or cancelled
        trace = int(run.trace_id, 16) if run.trace_id else 0
        end = self.start + int(result.duration_ms * 1e6)  # the run's duration as the loop measured it
        agent = Rec(f"invoke_agent {run.agent_name}", trace or self.trace, _rid(), self.parent, self.start, end,
                    a, failed, error, self.events, bool(trace))  # fmt: skip
        steps = {r.attrs[N.STEP_NUMBER]: r.span_id for r, _n in self.records if r.name == N.STEP_SPAN}
        for rec, number in self.records:
            rec.trace_id, rec.real = agent.trace_id, rec.real and agent.real
            if rec.parent_id is None:
                rec.parent_id = steps.get(number, agent.span_id) if number is not None else agent.span_id
        return [*(r for r, _n in self.records), agent]


class TrajectoryHook:
    """Records the run it is part of; the sink writes the run's folder at ``on_loop_end``.
    Put an ``EvalHook`` before it to have eval results in the trajectory's events."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def __repr__(self) -> str:
        return f"TrajectoryHook({str(self.sink.dir)!r})"

    def _st(self) -> _RunState | None:
        run = current_run()
        return run.scratch.get(self) if run is not None else None

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        if (run := current_run()) is not None:
            run.scratch[self] = st = _RunState(run, self.sink)
            st.resumed = len(getattr(state, "steps", ()) or ())  # steps taken before a resume

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> None:
        if (st := self._st()) is not None:
            st.by_call[tool_call.id] = step_num
            st.first.setdefault(step_num, time.time_ns())

    def wrap_llm_call(self, call: LLMCall, call_next: Callable[[LLMCall], Any]) -> Any:
        if (st := self._st()) is None:
            return call_next(call)
        t0, run = time.time_ns(), current_run()
        if call.purpose == "step":
            st.first.setdefault(call.step, t0)
        return _around(call_next, call, lambda _out, exc: st.chat(call, exc, t0, run))

    def wrap_tool(self, tool_call: ToolCall, call_next: Callable[[ToolCall], Any]) -> Any:
        if (st := self._st()) is None:
            return call_next(tool_call)
        t0, sid, number = time.time_ns(), _rid(), st.by_call.get(tool_call.id) or 0
        token = _TOOL.set((self.sink, st.trace, sid))

        def done(out: Any, exc: Any) -> None:
            st.tools[number] = rec = tool_record(tool_call, exc or out, (t0, time.time_ns()), sid=sid)
            st.records.append((rec, number))

        try:
            return _around(call_next, tool_call, done)
        finally:
            _TOOL.reset(token)

    def on_step(self, state: Any, step: Step) -> None:
        if (st := self._st()) is not None:
            st.step(step)

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        if (st := self._st()) is not None:
            st.events.append(_event(name, attributes))

    def on_llm_retry(self, state: Any, attempt: int, error: BaseException, delay_s: float) -> None:
        if (st := self._st()) is not None:
            kind = getattr(error, "kind", None) or type(error).__name__
            a = {N.RETRY_ATTEMPT: attempt, N.RETRY_DELAY_S: float(delay_s), S.ERROR_TYPE: kind}
            st.events.append((N.EV_RETRY, time.time_ns(), {**a, "exception.message": str(error)}))

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        if run is None or (st := run.scratch.pop(self, None)) is None:
            return
        records, kids = st.finish(run, result), self.sink._children
        if st.parent is not None:  # a sub-agent: its records go in with its parent's, before the parent's own
            kids.setdefault(st.trace, []).extend(records)
            return
        paths = self.sink._take(records[:-1] + kids.pop(st.trace, []) + records[-1:])
        if paths and isinstance(getattr(state, "metadata", None), dict):
            state.metadata["trajectory_dir"] = str(paths[-1])


class RecordingLLM:
    """A backend that records each call for the sink, then answers as the wrapped one does. The run's
    steps and outcome are read from the run itself when it is written (at ``flush()``)."""

    def __init__(self, llm: Any, sink: Any) -> None:
        self._llm, self._sink = llm, sink

    def __getattr__(self, name: str) -> Any:
        if name != "agenerate":
            return getattr(self._llm, name)
        inner = self._llm.agenerate  # AttributeError when the backend is sync only
        return lambda messages, *, tools=None, **o: self._record(messages, tools, inner, o)

    def __repr__(self) -> str:
        return f"RecordingLLM({self._llm!r})"

    def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
        return self._record(messages, tools, self._llm.generate, options)

    def _record(self, messages: Any, tools: Any, fn: Callable[..., Any], options: dict[str, Any]) -> Any:
        run = current_run()
        if run is None or any(isinstance(k, TrajectoryHook) and k.sink is self._sink for k in run.scratch):
            return fn(messages, tools=tools, **options)  # outside a run, or a hook of this sink has it
        st, llm = self._sink._pending_run(run), self._llm
        number = len(getattr(run.state, "steps", ()) or ()) + 1
        call = LLMCall(list(messages), list(tools or ()), number, getattr(llm, "model", None), getattr(llm, "provider", None))  # fmt: skip
        t0, started = time.time_ns(), time.perf_counter()

        def done(out: Any, exc: Any) -> None:
            call.duration_ms = (time.perf_counter() - started) * 1000.0
            if isinstance(out, LLMResponse):
                call.response, call.usage, ttfc = out, out.usage, out.time_to_first_chunk_s
                call.ttfc_ms = None if ttfc is None else ttfc * 1000.0
            call.error_type = getattr(exc, "kind", None) or type(exc).__name__ if exc is not None else None
            st.chat(call, exc, t0, run)

        return _around(lambda _a: fn(messages, tools=tools, **options), None, done)


class _Sink:
    """What ProvenanceSink does; see the module docstring.

    dir: the run folder (the first run), and the parent of the folders of later runs.
    redact: True (the default: looplet's redactor, i.e. the built-in patterns for API keys, bearer tokens,
        e-mail addresses, ... and the values of the process's secret environment variables), a callable
        ``str -> str``, or False/None to write content as it is; applied to every string written (JSON
        values through ``redact_json`` when it has one).
    max_chars_per_call: prompt and response files longer than this keep their head and tail.
    fsync: have every file and folder on the disk before a folder is put in place (survives a power cut).
    """

    def __init__(self, dir: str | os.PathLike[str], redact: Any = True, max_chars_per_call: int = 200_000, *, fsync: bool = False) -> None:  # fmt: skip
        if not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"ProvenanceSink(dir=...) must be a path, got {type(dir).__name__}")
        if not isinstance(max_chars_per_call, int) or max_chars_per_call < 1:
            raise ValueError(f"max_chars_per_call must be an int >= 1, got {max_chars_per_call!r}")
        if redact is True or redact == "default":
            from looplet.telemetry.redact import Redactor

            redact = Redactor()
        elif not (redact is None or redact is False or callable(redact)):
            kind = type(redact).__name__
            raise TypeError(f"redact must be None, True, 'default' or a callable str -> str, got {kind}")
        self.dir, self.redact, self.max_chars_per_call, self.fsync = Path(dir), redact or None, max_chars_per_call, fsync  # fmt: skip
        self.written: collections.deque[Path] = collections.deque(maxlen=1000)
        self._lock = threading.RLock()
        self._buffer = S.SpanBuffer()
        self._pending: dict[str, tuple[Any, _RunState]] = {}  # wrap_llm runs by run id
        self._children: dict[int, list[Any]] = {}  # a hook's sub-agent records, waiting for their parent
        self._folders: dict[str, Path] = {}
        self._dir_used = self._closed = False

    def __repr__(self) -> str:
        return f"ProvenanceSink({str(self.dir)!r})"

    def folder_of(self, run_id: str) -> Path | None:
        """Where the run ``run_id`` was written (None: not written, or not among the last 1000)."""
        return self._folders.get(run_id)

    @property
    def last_path(self) -> Path | None:
        """The folder written most recently."""
        return self.written[-1] if self.written else None

    def trajectory_hook(self) -> TrajectoryHook:
        """A hook that records each run it is part of; the folder is written when the run ends."""
        return TrajectoryHook(self)

    def wrap_llm(self, llm: Any) -> RecordingLLM:
        """``llm`` with every call recorded; a run's folder is written at :meth:`flush` once it has ended."""
        if not callable(getattr(llm, "generate", None)) and not callable(getattr(llm, "agenerate", None)):
            kind = type(llm).__name__
            raise TypeError(f"wrap_llm needs a backend with generate() or agenerate(), got {kind}")
        return RecordingLLM(llm, self)

    def load_otlp_json(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the runs in a file of OTLP JSON (the Collector's file exporter)."""
        with self._lock:
            return self._take(S.read_otlp_json(path)) + self.flush()

    def export(self, spans: Sequence[Any]) -> Any:
        """Take a batch of finished spans; write the runs they end (on the span processor's thread)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._closed:
            return SpanExportResult.FAILURE
        try:
            self._take(spans)
        except Exception:
            log.exception("ProvenanceSink could not take a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write the wrapped-backend runs that have ended, and sub-agent runs still waiting for theirs."""
        self.flush()
        return True

    def shutdown(self) -> None:
        self.flush()
        self._closed = True

    def flush(self, timeout_s: float | None = None) -> list[Path]:
        """Write every finished run not written yet; returns their folders. Never gives up on one.
        (``timeout_s`` is accepted for older callers; the work is bounded by the runs, not a clock.)"""
        with self._lock:
            results = {k: getattr(run.state, "result", None) for k, (run, _st) in self._pending.items()}
            records = []
            for k in [k for k, result in results.items() if result is not None]:
                run, st = self._pending.pop(k)
                records += st.finish(run, results[k], wrapped=True)
            return [p for r in self._buffer.add(records) + self._buffer.release() if (p := self._write(r))]

    def _pending_run(self, run: Any) -> _RunState:
        with self._lock:
            if run.run_id not in self._pending:  # a new run: those that have ended meanwhile are written
                self.flush()
                self._pending[run.run_id] = (run, _RunState(run, self))
            return self._pending[run.run_id][1]

    def _take(self, spans: Any) -> list[Path]:
        with self._lock:
            return [p for r in self._buffer.add(spans) if (p := self._write(r)) is not None]

    def _write(self, rec: F.RunRecord) -> Path | None:
        """Write ``rec`` in ``dir`` when it is the sink's first run and ``dir`` holds none yet; else in a
        new folder under ``dir``."""
        try:
            files, target = F.render_files(rec, self.redact, self.max_chars_per_call), self.dir
            if self._dir_used or (self.dir / F.TRAJECTORY_FILE).exists() or (self.dir / "steps").exists():
                target = base = self.dir / F.folder_name(rec, self.redact)
                for n in range(2, 1 << 30):
                    if not target.exists():
                        break
                    target = base.with_name(f"{base.name}-{n}")
            path = F.write_folder(target.parent, target.name, files, fsync=self.fsync)
        except Exception:
            log.exception("could not write the trajectory of run %s under %s", rec.run_id, self.dir)
            return None
        self._dir_used = True  # the first run written (not tried) is the one in dir
        self.written.append(path)
        self._folders[rec.run_id] = path
        while len(self._folders) > 1000:
            del self._folders[next(iter(self._folders))]
        return path


if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    class ProvenanceSink(_Sink, SpanExporter): ...
else:

    def __getattr__(name: str) -> Any:
        if name != "ProvenanceSink":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:  # made on first use: only then is OpenTelemetry imported
            from opentelemetry.sdk.trace.export import SpanExporter

            bases: tuple[type, ...] = (_Sink, SpanExporter)
        except ImportError:
            bases = (_Sink,)
        cls = globals()["ProvenanceSink"] = type("ProvenanceSink", bases, {"__doc__": _Sink.__doc__, "__module__": __name__})  # fmt: skip
        return cls
