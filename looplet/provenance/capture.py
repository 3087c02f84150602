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
from looplet.provenance.format import Prompt, dumps, loads
from looplet.telemetry import names as N
from looplet.types import LLMCall, LLMResponse, Step, ToolCall, ToolResult

__all__ = ["TrajectoryHook", "RecordingLLM", "Transcript"]

# (sink, trace id, span id) of the tool record whose tool is running: a run started in it is a sub-agent
_TOOL: contextvars.ContextVar[tuple[Any, int, int] | None] = contextvars.ContextVar(
    "looplet_prov", default=None
)
Rec = S.SpanRec
Records = list[tuple[Rec, int | None]]  # a record, and the number of the step it sits under


def _rid() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


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
        parsed = loads(args) if isinstance(args, str) else args
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": parsed})
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
        k, lead, same = len(self.src), self.lead, bool(m) and m[0] is self.first
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
    model, r = call.model or getattr(run, "model", None), call.response
    a: dict[str, Any] = {S.REQ_MODEL: model, S.PROVIDER: call.provider or getattr(run, "provider", None)}
    a = {k: v for k, v in a.items() if v}
    a[S.INPUT] = transcript.prompt(call.messages)
    if call.purpose != "step":
        a[N.LLM_PURPOSE] = call.purpose
    if call.tools:
        a[S.TOOL_DEFS] = call.tools
    rec = Rec(f"chat {model}" if model else "chat", 0, _rid(), None, t0, t0 + int(call.duration_ms * 1e6), a)
    rec.real = False
    if isinstance(out, BaseException) or not isinstance(r, LLMResponse):
        a[S.ERROR_TYPE] = call.error_type or "invalid_response"
        rec.error, rec.status = True, f"{type(out).__name__}: {out}" if out is not None else "no answer"
        return rec
    _answer(a, call, r)
    return rec


def _answer(a: dict[str, Any], call: LLMCall, r: LLMResponse) -> None:
    """The attributes TracingHook sets on a chat span from an answer and the call's facts."""
    a.update({k: v for k, v in ((S.RESP_MODEL, r.model), (S.RESP_ID, r.response_id)) if v})
    a.update({S.FINISH: (r.finish_reason,)} if r.finish_reason else {})
    if call.usage is not None:
        u = call.usage
        a.update({S.IN_TOK: u.input_tokens, S.OUT_TOK: u.output_tokens})
        extra = ((S.CACHED_TOK, u.cached_input_tokens), (S.REASONING_TOK, u.reasoning_tokens))
        a.update({k: v for k, v in extra if v})
    a.update({N.COST_USD: call.cost_usd} if call.cost_usd is not None else {})  # wrap_llm: from its Step
    a.update({S.PROVIDER: r.provider} if r.provider and r.provider != call.provider else {})
    a.update({S.TTFC: call.ttfc_ms / 1000.0} if call.ttfc_ms is not None else {})
    parts: list[dict[str, Any]] = [{"type": "text", "content": r.text}] if r.text else []
    parts += [{"type": "tool_call", "id": c.id, "name": c.tool, "arguments": c.args} for c in r.tool_calls]
    a[S.OUTPUT] = [{"role": "assistant", "parts": parts}]


def tool_record(tc: ToolCall, res: Any, t: tuple[int, int], ran: bool = True, sid: int | None = None) -> Rec:
    """An ``execute_tool`` record; ``ran=False`` for a call that never ran (denied, answered by a hook)."""
    a: dict[str, Any] = {
        S.TOOL_NAME: tc.tool,
        S.TOOL_ARGS: dumps(tc.args),
        **({S.CALL_ID: tc.id} if tc.id else {}),
    }
    rec = Rec(f"execute_tool {tc.tool}", 0, sid or _rid(), None, t[0], t[1], a, real=False)
    if not ran:
        a[S.TOOL_EXECUTED] = False
    if isinstance(res, BaseException):
        rec.error, rec.status = True, f"{type(res).__name__}: {res}"
    elif isinstance(res, ToolResult):
        if res.error is not None:
            a[N.TOOL_ERROR_KIND] = res.error_kind or "tool_error"
            rec.error, rec.status = True, res.error
        if ran:
            a[S.TOOL_RESULT] = dumps(res.text if res.text is not None else res.error or res.data)
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


def agent_records(run: Any, result: Any, st: _RunState) -> list[Rec]:
    """The run's records with their trace and parents set (a call or tool under its step, the run under
    the tool that started it), its own ``invoke_agent`` record last."""
    u, stop, error = result.usage, result.stop_reason, result.error
    a: dict[str, Any] = {S.AGENT_NAME: run.agent_name, N.RUN_ID: run.run_id, N.STOP_REASON: stop}
    a.update({N.RUN_LLM_CALLS: result.llm_calls, N.RUN_INPUT_TOKENS: u.input_tokens})
    a.update({N.RUN_OUTPUT_TOKENS: u.output_tokens, N.RUN_CACHED_TOKENS: u.cached_input_tokens})
    a[N.RUN_REASONING_TOKENS] = u.reasoning_tokens
    a.update(
        {k: dumps(v) for k, v in ((N.TASK, run.task), (N.FINAL_OUTPUT, result.final_output)) if v is not None}
    )
    a.update({N.COST_USD: result.cost_usd} if result.cost_usd is not None else {})
    failed = stop in ("llm_error", "hook_error") or (
        stop == "cancelled" and error not in (None, "", S.CLOSED)
    )
    trace = int(run.trace_id, 16) if run.trace_id else 0
    end = st.start + int(result.duration_ms * 1e6)  # the run's duration as the loop measured it
    agent = Rec(f"invoke_agent {run.agent_name}", trace or st.trace, _rid(), st.parent, st.start, end, a,
                failed, error, st.events, bool(trace))  # fmt: skip
    steps = {r.attrs[N.STEP_NUMBER]: r.span_id for r, _n in st.records if r.name == N.STEP_SPAN}
    for rec, number in st.records:
        rec.trace_id, rec.real = agent.trace_id, rec.real and agent.real
        if rec.parent_id is None:
            rec.parent_id = steps.get(number, agent.span_id) if number is not None else agent.span_id
    return [*(r for r, _n in st.records), agent]


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


class _RunState:
    """One run, as a capture route records it."""

    def __init__(self, run: Any, sink: Any) -> None:
        tool = _TOOL.get()
        tool = tool if tool is not None and tool[0] is sink else None
        self.trace = int(run.trace_id, 16) if run.trace_id else tool[1] if tool else _rid()
        self.parent = tool[2] if tool else None  # the tool record of the run that started this one
        self.start, self.records, self.events = time.time_ns(), [], []  # type: int, Records, list[Any]
        self.by_call: dict[str, int] = {}
        self.first: dict[int, int] = {}  # step number -> when its first LLM call started
        self.tools: dict[int, Rec] = {}  # step number -> its tool record (its tool ran)
        self.stepped: set[int] = set()
        self.resumed = 0
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

        def done(_out: Any, exc: Any) -> None:
            if not call.replayed:  # an answer a hook gave back (a checkpoint) is not an LLM call
                st.records.append((chat_record(call, exc, t0, run, st.transcript), call.step))

        return _around(call_next, call, done)

    def wrap_tool(self, tool_call: ToolCall, call_next: Callable[[ToolCall], Any]) -> Any:
        if (st := self._st()) is None:
            return call_next(tool_call)
        t0, sid, number = time.time_ns(), _rid(), st.by_call.get(tool_call.id) or 0
        token = _TOOL.set((self.sink, st.trace, sid))

        def done(out: Any, exc: Any) -> None:
            st.tools[number] = rec = tool_record(tool_call, exc if exc is not None else out, (t0, time.time_ns()), sid=sid)  # fmt: skip
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
            tool.attrs[S.CHILDREN] = step.children  # type: ignore[index]
        recs = step_records(step, (st.first.get(step.number, now), now), tool is not None)
        st.records += [(r, None) for r in recs]

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
        for step in result.steps[st.resumed :]:  # a step whose on_step never reached this hook (Ctrl-C)
            self._step(st, step)
        records, kids = agent_records(run, result, st), self.sink._children
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
            st.records.append((chat_record(call, exc, t0, run, st.transcript), number))

        return _around(lambda _a: fn(messages, tools=tools, **options), None, done)


def wrapped(run: Any, st: _RunState) -> list[Rec]:
    """A run recorded around its backend, completed from the run itself: a step and a tool record per
    Step (its tool bar right after the call that proposed it; a sub-agent's Steps as its children)."""
    result, chats = run.state.result, {n: r for r, n in st.records}
    for step in result.steps:
        c = chats.get(step.number)
        if c is not None and not c.error and step.usage is not None and step.cost_usd is not None:
            c.attrs[N.COST_USD] = step.cost_usd  # type: ignore[index]  # the loop's price, on its first Step
        t = c.end_ns if c is not None and not c.error else st.start
        span = (c.start_ns if c is not None else t, t + int(step.tool_ms * 1e6))
        ran = step.tool_result.error_kind not in ("denied", "not_run")
        recs = step_records(step, span, ran)
        if ran:
            recs.append(tool_record(step.tool_call, step.tool_result, (t, span[1])))
            recs[1].attrs[S.CHILDREN], recs[1].parent_id = step.children, recs[0].span_id  # type: ignore[index]
        st.records += [(r, None) for r in recs]
    return agent_records(run, result, st)
