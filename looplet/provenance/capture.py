"""The hook and wrapped-backend routes: thin adapters that make the span records ``TracingHook`` would
(content on), so every route goes through the one builder, :func:`looplet.provenance.spans.build`.

No OpenTelemetry here. Ids are the run's trace and step span ids when a ``TracingHook`` runs before this
hook (``run.trace_id``, ``Step.span_id``); otherwise made up, and then not written to the folder.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import os
import time
from collections.abc import Callable
from typing import Any

from looplet.hooks import current_run
from looplet.provenance import spans as S
from looplet.provenance.format import Prompt
from looplet.telemetry import names as N
from looplet.types import LLMCall, LLMResponse, Step, ToolCall, ToolResult, _json_safe

__all__ = ["TrajectoryHook", "RecordingLLM", "Transcript"]

# (sink, trace id, span id) of the tool record whose tool is running: a run started in it is a sub-agent
_TOOL: contextvars.ContextVar[tuple[Any, int, int] | None] = contextvars.ContextVar(
    "looplet_prov", default=None
)
Rec = S.SpanRec


def _rid() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


def _content(value: Any) -> Any:
    """A content attribute as TracingHook writes it: strings as they are, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(_json_safe(value), ensure_ascii=False)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content if isinstance(content, str) else str(content)


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """A chat message as a GenAI semantic-convention message (as TracingHook converts it)."""
    content = m.get("content")
    if m.get("role") == "tool":
        part = {"type": "tool_call_response", "id": m.get("tool_call_id"), "response": _text(content)}
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = [{"type": "text", "content": _text(content)}] if content else []
    for tc in m.get("tool_calls") or ():
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            pass
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": args})
    return {"role": m.get("role") or "user", "parts": parts}


class Transcript:
    """A run's prompts, each message converted once: a call's messages are the last call's plus new ones
    (at most the last call's one-off extra message dropped), so a call costs its new messages only."""

    def __init__(self) -> None:
        self.first: Any = None
        self.lead = 0  # leading system messages: the system instructions
        self.system: list[Any] = []
        self.src: list[Any] = []
        self.conv: list[Any] = []

    def prompt(self, m: list[Any]) -> Prompt:
        k, lead = len(self.src), self.lead
        same = bool(m) and m[0] is self.first
        if not (same and k and len(m) >= lead + k and m[lead + k - 1] is self.src[-1]):
            if same and k >= 2 and len(m) >= lead + k - 1 and m[lead + k - 2] is self.src[-2]:
                self.src, self.conv = self.src[:-1], self.conv[:-1]  # new lists: earlier prompts keep theirs
            else:
                lead = next((i for i, x in enumerate(m) if x.get("role") != "system"), len(m))
                self.first, self.lead, self.src, self.conv = (m[0] if m else None), lead, [], []
                self.system = [
                    {"type": "text", "content": _text(x["content"])} for x in m[:lead] if x.get("content")
                ]
        new = m[self.lead + len(self.src) :]
        self.src.extend(new)
        self.conv.extend(_message(x) for x in new)
        return Prompt(self.system, self.conv, len(self.conv))


def chat_record(call: LLMCall, out: Any, t0: int, run: Any, transcript: Transcript) -> Rec:
    """A ``chat`` record of one LLM call from its facts (``out``: the exception it raised, if any)."""
    model = call.model or getattr(run, "model", None)
    a: dict[str, Any] = {S.REQ_MODEL: model, S.PROVIDER: call.provider or getattr(run, "provider", None)}
    a = {k: v for k, v in a.items() if v}
    a[S.INPUT] = transcript.prompt(call.messages)
    if call.purpose != "step":
        a[N.LLM_PURPOSE] = call.purpose
    if call.tools:
        a[S.TOOL_DEFS] = call.tools
    rec = Rec(f"chat {model}" if model else "chat", 0, _rid(), None, t0, t0 + int(call.duration_ms * 1e6), a)
    rec.real, r = False, call.response
    if isinstance(out, BaseException) or not isinstance(r, LLMResponse):
        a[S.ERROR_TYPE] = call.error_type or "invalid_response"
        rec.error, rec.status = True, f"{type(out).__name__}: {out}" if out is not None else "no answer"
    else:
        _answer(a, call, r)
    return rec


def _answer(a: dict[str, Any], call: LLMCall, r: LLMResponse) -> None:
    """The attributes TracingHook sets on a chat span from an answer and the call's facts."""
    a.update({k: v for k, v in ((S.RESP_MODEL, r.model), (S.RESP_ID, r.response_id)) if v})
    if r.finish_reason:
        a[S.FINISH] = (r.finish_reason,)
    u = call.usage
    if u is not None:
        a.update({S.IN_TOK: u.input_tokens, S.OUT_TOK: u.output_tokens})
        extra = ((S.CACHED_TOK, u.cached_input_tokens), (S.REASONING_TOK, u.reasoning_tokens))
        a.update({k: v for k, v in extra if v})
    if call.cost_usd is not None:  # the loop's fact (for wrap_llm: read from the Step it proposed)
        a[N.COST_USD] = call.cost_usd
    if r.provider and r.provider != call.provider:
        a[S.PROVIDER] = r.provider
    if call.ttfc_ms is not None:
        a[S.TTFC] = call.ttfc_ms / 1000.0
    parts: list[dict[str, Any]] = [{"type": "text", "content": r.text}] if r.text else []
    parts += [{"type": "tool_call", "id": c.id, "name": c.tool, "arguments": c.args} for c in r.tool_calls]
    a[S.OUTPUT] = [{"role": "assistant", "parts": parts}]


def tool_record(tc: ToolCall, res: Any, t: tuple[int, int], ran: bool = True) -> Rec:
    """An ``execute_tool`` record; ``ran=False`` for a call that never ran (denied, answered by a hook)."""
    a: dict[str, Any] = {S.TOOL_NAME: tc.tool, S.TOOL_ARGS: _content(tc.args)}
    if tc.id:
        a[S.CALL_ID] = tc.id
    rec = Rec(f"execute_tool {tc.tool}", 0, _rid(), None, t[0], t[1], a, real=False)
    if not ran:
        a[S.TOOL_EXECUTED] = False
    if isinstance(res, BaseException):
        rec.error, rec.status = True, f"{type(res).__name__}: {res}"
    elif isinstance(res, ToolResult):
        if res.error is not None:
            a[N.TOOL_ERROR_KIND] = res.error_kind or "tool_error"
            rec.error, rec.status = True, res.error
        if ran:
            a[S.TOOL_RESULT] = _content(res.text if res.text is not None else res.error or res.data)
    return rec


def step_records(step: Step, t: tuple[int, int], ran: bool) -> list[Rec]:
    """The ``looplet.step`` record of a Step, with an ``execute_tool`` record when its call never ran."""
    res = step.tool_result
    a: dict[str, Any] = {N.STEP_NUMBER: step.number, S.STEP_TOOL: step.tool_call.tool}
    if res.error is not None:
        a[N.TOOL_ERROR_KIND] = res.error_kind or "error"
    sid = int(step.span_id, 16) if step.span_id else _rid()
    out = [Rec(N.STEP_SPAN, 0, sid, None, t[0], t[1], a, real=bool(step.span_id))]
    if not ran:
        out.append(tool_record(step.tool_call, res, (t[1], t[1]), ran=False))
        out[1].parent_id = sid
    return out


def agent_record(run: Any, result: Any, start: int, events: list[Any]) -> Rec:
    u = result.usage
    a: dict[str, Any] = {
        S.AGENT_NAME: run.agent_name,
        N.RUN_ID: run.run_id,
        N.STOP_REASON: result.stop_reason,
    }
    a.update({N.RUN_LLM_CALLS: result.llm_calls, N.RUN_INPUT_TOKENS: u.input_tokens})
    a.update({N.RUN_OUTPUT_TOKENS: u.output_tokens, N.RUN_CACHED_TOKENS: u.cached_input_tokens})
    a[N.RUN_REASONING_TOKENS] = u.reasoning_tokens
    for key, value in ((N.TASK, run.task), (N.FINAL_OUTPUT, result.final_output)):
        if value is not None:
            a[key] = _content(value)
    if result.cost_usd is not None:
        a[N.COST_USD] = result.cost_usd
    stop, error = result.stop_reason, result.error
    failed = stop in ("llm_error", "hook_error") or (
        stop == "cancelled" and error not in (None, "", S.CLOSED)
    )
    end = start + int(result.duration_ms * 1e6)  # the run's duration as the loop measured it
    trace = int(run.trace_id, 16) if run.trace_id else 0
    name = f"invoke_agent {run.agent_name}"
    return Rec(name, trace, _rid(), None, start, end, a, failed, error, events, bool(trace))


def link(agent: Rec, trace: int, parent: int | None, records: list[tuple[Rec, int | None]]) -> list[Rec]:
    """The run's records with their trace and parents set (a call or tool under its step, the run under
    the tool that started it), the run's own record last."""
    agent.trace_id, agent.parent_id = agent.trace_id or trace, parent
    steps = {r.attrs[N.STEP_NUMBER]: r.span_id for r, _n in records if r.name == N.STEP_SPAN}
    for rec, number in records:
        rec.trace_id, rec.real = agent.trace_id, rec.real and agent.real
        if rec.parent_id is None:
            rec.parent_id = steps.get(number, agent.span_id) if number is not None else agent.span_id
    return [*(r for r, _n in records), agent]


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
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode
    plain = (bool, int, float, str)
    a: dict[str, Any] = {
        k if "." in k else f"{ev}.{k}": v if isinstance(v, plain) else dumps(v) for k, v in attributes.items()
    }
    return ev, time.time_ns(), a


class _RunState:
    """One run, as a capture route records it."""

    def __init__(self, run: Any, sink: Any) -> None:
        tool = _TOOL.get()
        tool = tool if tool is not None and tool[0] is sink else None
        self.trace = int(run.trace_id, 16) if run.trace_id else tool[1] if tool else _rid()
        self.parent = tool[2] if tool else None  # the tool record of the run that started this one
        self.start = time.time_ns()
        self.records: list[tuple[Rec, int | None]] = []  # a record, and the step it sits under
        self.by_call: dict[str, int] = {}
        self.ran: set[int] = set()
        self.first: dict[int, int] = {}  # step number -> when its first LLM call started
        self.tools: dict[int, Rec] = {}  # step number -> its tool record
        self.stepped: set[int] = set()
        self.resumed = 0
        self.events: list[Any] = []
        self.transcript = Transcript()


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
        run = current_run()
        if run is not None:
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

        def done(_out: Any, exc: Any) -> None:
            if not call.replayed:  # an answer a hook gave back (a checkpoint) is not an LLM call
                st.records.append((chat_record(call, exc, t0, run, st.transcript), call.step))

        return _around(call_next, call, done)

    def wrap_tool(self, tool_call: ToolCall, call_next: Callable[[ToolCall], Any]) -> Any:
        if (st := self._st()) is None:
            return call_next(tool_call)
        t0, sid, number = time.time_ns(), _rid(), st.by_call.get(tool_call.id)
        token = _TOOL.set((self.sink, st.trace, sid))

        def done(out: Any, exc: Any) -> None:
            rec = tool_record(tool_call, exc if exc is not None else out, (t0, time.time_ns()))
            rec.span_id = sid
            st.ran.add(number or 0)
            st.tools[number or 0] = rec
            st.records.append((rec, number))

        try:
            return _around(call_next, tool_call, done)
        finally:
            _TOOL.reset(token)

    def on_step(self, state: Any, step: Step) -> None:
        if (st := self._st()) is not None:
            self._step(st, step)

    def _step(self, st: _RunState, step: Step) -> None:
        if step.number in st.stepped:
            return
        st.stepped.add(step.number)
        now, tool = time.time_ns(), st.tools.get(step.number)
        if step.children and tool is not None:  # a sub-agent this sink did not record: its Steps
            tool.attrs[S.CHILDREN] = step.children
        for rec in step_records(step, (st.first.get(step.number, now), now), step.number in st.ran):
            st.records.append((rec, None))

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
        st = run.scratch.pop(self, None) if run is not None else None
        if st is None:
            return
        for step in result.steps[st.resumed :]:  # a step whose on_step never reached this hook (Ctrl-C)
            self._step(st, step)
        records = link(agent_record(run, result, st.start, st.events), st.trace, st.parent, st.records)
        kids = self.sink._children
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
        st = self._sink._pending_run(run)
        llm = self._llm
        number = len(getattr(run.state, "steps", ()) or ()) + 1
        model, provider = getattr(llm, "model", None), getattr(llm, "provider", None)
        call = LLMCall(list(messages), list(tools or ()), number, model, provider)
        t0, started = time.time_ns(), time.perf_counter()

        def done(out: Any, exc: Any) -> None:
            call.duration_ms = (time.perf_counter() - started) * 1000.0
            if isinstance(out, LLMResponse):
                call.response, call.usage = out, out.usage
                ttfc = out.time_to_first_chunk_s
                call.ttfc_ms = None if ttfc is None else ttfc * 1000.0
            call.error_type = getattr(exc, "kind", None) or type(exc).__name__ if exc is not None else None
            st.records.append((chat_record(call, exc, t0, run, st.transcript), number))

        return _around(lambda _a: fn(messages, tools=tools, **options), None, done)


def wrapped_records(run: Any, st: _RunState, parents: dict[int, tuple[int, int]]) -> list[Rec]:
    """A run recorded around its backend, completed from the run itself: a step and a tool record per
    Step (its tool bar right after the call that proposed it). ``parents`` gets ``id(Step)`` -> (trace,
    tool record id) of each step, so a sub-agent's run can hang under the step that ran it."""
    result = run.state.result
    chats = {n: r for r, n in st.records}
    for step in result.steps:
        c = chats.get(step.number)
        if c is not None and not c.error and step.usage is not None and step.cost_usd is not None:
            c.attrs[N.COST_USD] = step.cost_usd  # the loop's price, on the first Step of its answer
        t = c.end_ns if c is not None and not c.error else st.start
        ran = step.tool_result.error_kind not in ("denied", "not_run")
        recs = step_records(step, (c.start_ns if c is not None else t, t + int(step.tool_ms * 1e6)), ran)
        if ran:
            recs.append(tool_record(step.tool_call, step.tool_result, (t, t + int(step.tool_ms * 1e6))))
            recs[1].attrs[S.CHILDREN] = step.children
            recs[1].parent_id = recs[0].span_id
            parents[id(step)] = (st.trace, recs[1].span_id)
        st.records += [(r, None) for r in recs]
    return link(agent_record(run, result, st.start, []), st.trace, None, st.records)
