"""Spans in, runs out: the one place a run's record is built.

Every route feeds span records: the exporter converts OpenTelemetry ``ReadableSpan`` objects (public API
only), :func:`read_otlp_json` reads the Collector's file format, and the hook and wrapped-backend routes
(:mod:`looplet.provenance.sink`) make the records ``TracingHook`` would. A run is built when its
``invoke_agent`` span arrives (it ends after all of its children): :func:`build`. Attribute names are the
GenAI semantic conventions' (spelled here: this module imports no OpenTelemetry) and looplet's own.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from looplet.provenance.format import SCHEMA_VERSION, Prompt, RunRecord, TrajectoryError, loads
from looplet.telemetry import names as N
from looplet.types import Step, ToolCall, ToolResult, Usage

__all__ = ["SpanRec", "SpanBuffer", "build", "read_otlp_json", "records_from_spans"]

OP, AGENT_NAME, CONVERSATION = "gen_ai.operation.name", "gen_ai.agent.name", "gen_ai.conversation.id"
REQ_MODEL, RESP_MODEL, PROVIDER = "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name"
RESP_ID, FINISH = "gen_ai.response.id", "gen_ai.response.finish_reasons"
IN_TOK, OUT_TOK = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
CACHED_TOK, REASONING_TOK = "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.reasoning.output_tokens"
TOOL_NAME, CALL_ID = "gen_ai.tool.name", "gen_ai.tool.call.id"
TOOL_ARGS, TOOL_RESULT = "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"
INPUT, OUTPUT, SYSTEM = "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"
TOOL_DEFS, TTFC, ERROR_TYPE = "gen_ai.tool.definitions", "gen_ai.response.time_to_first_chunk", "error.type"
STEP_TOOL = "looplet.tool.name"  # the step span's tool (gen_ai.tool.* stays off step spans)
TOOL_EXECUTED = "looplet.tool.executed"  # False on the execute_tool span of a call that never ran
CHILDREN = "looplet.provenance.children"  # a capture route's tool record: the Steps of a sub-agent it ran
CLOSED = "the caller closed the loop"  # RunResult.error of a run its caller stopped: not a failure
AGENT, CHAT, TOOL = "invoke_agent", "chat", "execute_tool"
_KEEP = (AGENT, CHAT, TOOL, "looplet.")
_NONE: list[Any] = []  # never appended to


@dataclass(slots=True)
class SpanRec:
    """What a trajectory needs of a finished span (ids as ints, times in ns since the epoch). ``real``:
    the ids are OpenTelemetry's (written to the folder); False for ids a capture route made up."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attrs: Mapping[str, Any]
    error: bool = False
    status: str | None = None
    events: list[tuple[str, int, Any]] = field(default_factory=list)  # _NONE: none (one list less per span)
    real: bool = True

    @classmethod
    def from_sdk(cls, s: Any) -> SpanRec:
        """From an OpenTelemetry ``ReadableSpan``, through its public properties."""
        ctx, parent, status, start, events = s.context, s.parent, s.status, s.start_time or 0, s.events
        events = [(e.name, e.timestamp, e.attributes or {}) for e in events] if events else _NONE
        attrs = s.attributes  # a copy as a plain dict: an SDK mapping's lookups are Python calls
        attrs = attrs.copy() if isinstance(attrs, MappingProxyType) else dict(attrs or {})
        error = not (status.is_ok or status.is_unset)
        return cls(s.name, ctx.trace_id, ctx.span_id, parent.span_id if parent else None, start,
                   s.end_time or start, attrs, error, status.description, events)  # fmt: skip

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class SpanBuffer:
    """Spans waiting for their run to end, by trace; :meth:`add` returns the runs they complete.

    A sub-agent's run (its ``invoke_agent`` span has a parent, and its trace still holds spans of the run
    that started it) is held until that run is built, which takes its steps as the calling step's
    ``children``; it is then returned right after that run (so a sink writes the parent first). It is
    released on its own when its trace holds nothing else, or at :meth:`release`. Traces idle for
    ``idle_s`` (runs that never ended) are dropped."""

    def __init__(self, idle_s: float = 600.0) -> None:
        self.traces: dict[int, list[SpanRec]] = {}
        self.touched: dict[int, float] = {}
        self.held: dict[tuple[int, int], RunRecord] = {}  # (trace id, parent span id) -> a sub-agent's run
        self.idle_s = idle_s

    def add(self, spans: Iterable[Any]) -> list[RunRecord]:
        done: list[RunRecord] = []
        now = time.monotonic()
        for s in spans:
            if not s.name.startswith(_KEEP):
                continue
            rec = s if isinstance(s, SpanRec) else SpanRec.from_sdk(s)
            if not rec.name.startswith(AGENT):
                self.traces.setdefault(rec.trace_id, []).append(rec)
                self.touched[rec.trace_id] = now
                continue
            before = dict(self.held)
            run = self._build(rec)
            claimed = [r for k, r in before.items() if k not in self.held]  # its sub-agents: after it
            if rec.parent_id is not None and self.traces.get(rec.trace_id):
                self.held[(rec.trace_id, rec.parent_id)] = run
                self.held.update(((rec.trace_id, id(r)), r) for r in claimed)  # written with it, later
            else:
                done += [run, *claimed]
        done += [self.held.pop(k) for k in list(self.held) if k[0] not in self.traces]
        for tid in [t for t, at in self.touched.items() if now - at > self.idle_s]:
            del self.touched[tid], self.traces[tid]
        return done

    def release(self) -> list[RunRecord]:
        out = list(self.held.values())
        self.held.clear()
        return out

    def _build(self, agent: SpanRec) -> RunRecord:
        bucket = self.traces.get(agent.trace_id, [])
        below: dict[int | None, list[SpanRec]] = defaultdict(list)
        for s in bucket:
            below[s.parent_id].append(s)
        taken: set[int] = set()
        todo = [agent.span_id]
        while todo:
            for c in below.pop(todo.pop(), ()):
                taken.add(id(c))
                todo.append(c.span_id)
        mine = [s for s in bucket if id(s) in taken]  # in the order they ended
        if len(mine) == len(bucket):
            self.traces.pop(agent.trace_id, None)
            self.touched.pop(agent.trace_id, None)
        elif mine:
            self.traces[agent.trace_id] = [s for s in bucket if id(s) not in taken]
        return build(agent, mine, self.held)


def _num(value: Any, kind: type = int) -> Any:
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None


def _usage(a: Mapping[str, Any], keys: tuple[str, str, str, str]) -> Usage | None:
    return Usage(*[_num(a.get(k)) or 0 for k in keys]) if keys[0] in a or keys[1] in a else None


def _prompt(raw: Any, system: Any) -> Prompt | None:
    """A chat span's input: a capture route's :class:`Prompt` as it is, else parsed from its JSON text."""
    if raw is None or isinstance(raw, Prompt):
        return raw
    messages, parts = loads(raw), loads(system)
    messages = messages if isinstance(messages, list) else []
    return Prompt(parts if isinstance(parts, list) else [], messages, len(messages))


def _call(i: int, s: SpanRec, step: int) -> tuple[dict[str, Any], Prompt | None, Usage | None]:
    """LLM call ``i``'s entry in ``trajectory.json`` (its files aside), its prompt and its usage."""
    a, reasons, ttfc = s.attrs, s.attrs.get(FINISH), _num(s.attrs.get(TTFC), float)
    usage, answered = _usage(a, (IN_TOK, OUT_TOK, CACHED_TOK, REASONING_TOK)), not s.error and OUTPUT in a
    texts, tool_calls = _answer(loads(a[OUTPUT])) if answered else ([], [])
    c = {
        "number": i, "step": step, "purpose": str(a.get(N.LLM_PURPOSE) or "step"),
        "model": a.get(RESP_MODEL) or a.get(REQ_MODEL), "usage": usage.to_dict() if usage else None,
        "cost_usd": _num(a.get(N.COST_USD), float),  # as the loop priced it; never priced again here
        "duration_ms": round(s.ms, 3), "response_id": a.get(RESP_ID),
        "finish_reason": str(reasons[0]) if isinstance(reasons, (list, tuple)) and reasons else None,
        "error": (s.status or str(a.get(ERROR_TYPE) or "error")) if s.error else None,
        "tool_calls": tool_calls, "text": "\n".join(texts) if texts else None, "answered": answered,
    }  # fmt: skip
    if ttfc is not None:
        c["ttfc_ms"] = round(ttfc * 1000.0, 3)
    return c, _prompt(a.get(INPUT), a.get(SYSTEM)), usage


def _answer(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts and tool calls of an answer's ``gen_ai.output.messages``."""
    parts = [p for m in messages or () if isinstance(m, dict) for p in m.get("parts") or () if isinstance(p, dict)]  # fmt: skip
    texts, tool_calls = [str(p.get("content", "")) for p in parts if p.get("type") == "text"], []
    for p in (p for p in parts if p.get("type") == "tool_call"):
        args = loads(p.get("arguments"))
        args = args if isinstance(args, dict) else {}
        tool_calls.append({"id": str(p.get("id") or ""), "tool": str(p.get("name", "")), "args": args})
    return texts, tool_calls


def _step(n: int, ss: SpanRec, ts: SpanRec | None, trace_id: str | None) -> Step:
    a = ss.attrs if ts is None else {**ss.attrs, **ts.attrs}
    kind = a.get(N.TOOL_ERROR_KIND)
    failed = ts.error if ts is not None else kind is not None
    error = ((ts.status if ts is not None else None) or str(kind or a.get(ERROR_TYPE) or "error")) if failed else None  # fmt: skip
    args = loads(a[TOOL_ARGS]) if TOOL_ARGS in a else {}
    tool_ms = ts.ms if ts is not None and a.get(TOOL_EXECUTED) is not False else 0.0
    name = a.get(TOOL_NAME) if ts is not None else a.get(STEP_TOOL) or a.get(TOOL_NAME)
    data = loads(a[TOOL_RESULT]) if not failed and TOOL_RESULT in a else None
    call = ToolCall(str(name or "?"), args if isinstance(args, dict) else {"value": args}, str(a.get(CALL_ID) or ""))  # fmt: skip
    span_id = f"{ss.span_id:016x}" if ss.real else None
    return Step(n, call, ToolResult(data, error, kind, tool_ms), tool_ms=tool_ms, trace_id=trace_id, span_id=span_id)  # fmt: skip


def _run(agent: SpanRec) -> RunRecord:
    """The run's own facts, from its ``invoke_agent`` span: ``trajectory.json`` less what its children add."""
    A, started = agent.attrs, agent.start_ns / 1e9
    run_id = str(A.get(N.RUN_ID) or A.get(CONVERSATION) or f"{agent.span_id:016x}")
    name = str(A.get(AGENT_NAME) or agent.name[len(AGENT) :].strip() or "agent")
    usage = _usage(A, (N.RUN_INPUT_TOKENS, N.RUN_OUTPUT_TOKENS, N.RUN_CACHED_TOKENS, N.RUN_REASONING_TOKENS))
    output = loads(A[N.FINAL_OUTPUT]) if N.FINAL_OUTPUT in A else None  # a string answer as it is
    data = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "agent": name,
        "task": loads(A[N.TASK]) if N.TASK in A else None, "models": [], "provider": None,
        "stop_reason": A.get(N.STOP_REASON) or ("error" if agent.error else None),
        "error": agent.status or (A.get(ERROR_TYPE) if agent.error else None),
        "final_output": output if isinstance(output, (dict, list)) else A.get(N.FINAL_OUTPUT),
        "trace_id": f"{agent.trace_id:032x}" if agent.real else None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)) if started else None,
        "duration_ms": round(agent.ms, 3), "usage": usage.to_dict() if usage else None,
        "cost_usd": _num(A.get(N.COST_USD), float), "llm_calls": _num(A.get(N.RUN_LLM_CALLS)), "step_count": 0,
        "content": False, "steps": [], "calls": [], "tools": [], "timeline": [], "events": [],
    }  # fmt: skip
    return RunRecord(run_id, name, started, data)


def _bar(kind: str, s: SpanRec, t0: int, ms: float, error: str | None, **where: Any) -> dict[str, Any]:
    """A row of the timeline (the waterfall): an LLM or a tool call."""
    start = round((s.start_ns - t0) / 1e6, 3)
    return {"kind": kind, "name": s.name, **where, "start_ms": start, "duration_ms": round(ms, 3), "error": error}  # fmt: skip


def _calls(rec: RunRecord, chats: list[SpanRec], number: dict[int, int], t0: int) -> dict[Any, Any]:
    """The run's LLM calls, in order; returns step span id -> (entry, usage) of the last answered call
    made under it. A run without totals of its own gets theirs."""
    data, call_of, usages = rec.data, {}, []
    for i, s in enumerate(chats, 1):
        c, prompt, usage = _call(i, s, number.get(s.parent_id or 0, 0))
        rec.calls.append((c, prompt))
        usages.append(usage)
        data["content"] = data["content"] or prompt is not None
        data["provider"] = data["provider"] or s.attrs.get(PROVIDER)
        if not data["tools"] and TOOL_DEFS in s.attrs and isinstance(defs := loads(s.attrs[TOOL_DEFS]), list):
            data["tools"] = [{k: v for k, v in d.items() if k != "type"} for d in defs if isinstance(d, dict)]
        if c["error"] is None and c["purpose"] == "step":
            call_of[s.parent_id] = (c, usage)
        data["timeline"].append(_bar("llm", s, t0, s.ms, c["error"], call=i, step=c["step"] or None))
    if data["usage"] is None or data["llm_calls"] is None:  # a run without totals of its own: its calls'
        _totals(rec, usages)
    return call_of


def _totals(rec: RunRecord, usages: list[Usage | None]) -> None:
    priced = [c["cost_usd"] for c, _p in rec.calls if c["cost_usd"] is not None]
    rec.data["usage"] = sum((u for u in usages if u), Usage()).to_dict()
    rec.data["cost_usd"] = sum(priced) if priced else None
    rec.data["llm_calls"] = sum(c["error"] is None for c, _p in rec.calls)


def build(agent: SpanRec, spans: list[SpanRec], held: dict[tuple[int, int], RunRecord]) -> RunRecord:
    """The run ``agent`` ends, from the spans under it (in the order they ended); a sub-agent's run in
    ``held`` under one of its tool spans becomes that step's ``children`` (and is taken out of ``held``)."""
    rec, t0 = _run(agent), agent.start_ns
    data, timeline = rec.data, rec.data["timeline"]
    steps: list[tuple[int, int, int, SpanRec]] = []  # (number, start, order, span)
    chats: list[tuple[int, int, SpanRec]] = []  # (start, order, span)
    tools: dict[Any, SpanRec] = {}  # step span id -> its tool span
    for i, s in enumerate(spans):
        if s.name == N.STEP_SPAN:
            steps.append((_num(s.attrs.get(N.STEP_NUMBER)) or 0, s.start_ns, i, s))
        elif s.name.startswith(CHAT) and s.attrs.get(OP, CHAT) == CHAT:
            chats.append((s.start_ns, i, s))
        elif s.name.startswith(TOOL):
            tools.setdefault(s.parent_id, s)  # each step's first
    steps.sort()  # the order they ended breaks ties: spans are never compared
    number = {s.span_id: n for n, _t, _i, s in steps}
    call_of = _calls(rec, [s for *_k, s in sorted(chats)], number, t0)
    _steps(rec, steps, tools, call_of, held, t0)
    timeline.sort(key=lambda e: (e["start_ms"], e["kind"] != "llm", e.get("call") or 0, e["step"] or 0))
    models = [c["model"] for c, _p in rec.calls] + [s.model for s in rec.steps]
    data["models"], data["step_count"] = list(dict.fromkeys(m for m in models if m)), len(rec.steps)
    data["events"] = _events([agent, *spans], t0)
    return rec


def _steps(rec: RunRecord, steps: list[tuple[int, int, int, SpanRec]], tools: dict[Any, SpanRec], call_of: dict[Any, Any],
           held: dict[tuple[int, int], RunRecord], t0: int) -> None:  # fmt: skip
    """The run's Steps, in order, each with the LLM call that proposed it and a sub-agent's as children."""
    data, call = rec.data, None
    for n, _t, _i, ss in steps:
        ts = tools.get(ss.span_id)
        if ts is None and not (ss.attrs.get(STEP_TOOL) or ss.attrs.get(TOOL_NAME)):
            continue  # opened for an LLM call whose answer never became a step (a failure, a Ctrl-C)
        step, first = _step(n, ss, ts, data["trace_id"]), ss.span_id in call_of
        call = call_of.get(ss.span_id, call)  # the later calls of one answer share it
        if call is not None:
            (c, usage), rec.step_calls[n] = call, call[0]["number"]
            step.model = c["model"]
            if first:  # usage, time and cost on the first step of an answer only
                step.usage, step.llm_ms, step.cost_usd, step.ttfc_ms = usage, c["duration_ms"], c["cost_usd"], c.get("ttfc_ms")  # fmt: skip
        if ts is not None:
            data["content"] = data["content"] or TOOL_ARGS in ts.attrs
            child = held.pop((ts.trace_id, ts.span_id), None)
            if child is not None or CHILDREN in ts.attrs:
                step.children = list(child.steps if child is not None else ts.attrs[CHILDREN])
            data["timeline"].append(_bar("tool", ts, t0, step.tool_ms, step.tool_result.error, step=n))
        rec.steps.append(step)


def _events(spans: Iterable[SpanRec], t0: int) -> list[dict[str, Any]]:
    """Span events, as an ``on_event`` hook sees them: ``looplet.eval`` -> ``eval``, keys unprefixed."""
    out = []
    for s in spans:
        for name, ts, attrs in s.events:
            short = name.removeprefix("looplet.")
            a = {"tool" if k == TOOL_NAME else k.removeprefix("looplet.").removeprefix(short + "."): loads(v) if isinstance(v, tuple) else v
                 for k, v in attrs.items()}  # fmt: skip
            if name != "exception":
                out.append({"name": short, "attributes": a, "at_ms": round((ts - t0) / 1e6, 3)})
    out.sort(key=lambda e: (e["at_ms"], e["name"], json.dumps(e["attributes"], sort_keys=True, default=str)))
    return out


def records_from_spans(spans: Iterable[Any]) -> list[RunRecord]:
    """Every complete run in ``spans`` (nothing written)."""
    buf = SpanBuffer()
    return buf.add(spans) + buf.release()


# -- OTLP JSON (the Collector's file exporter) -------------------------------------------------------------


def _id(value: Any) -> int | None:
    s = str(value or "")
    if len(s) in (16, 32) and all(ch in "0123456789abcdefABCDEF" for ch in s):
        return int(s, 16)
    return int.from_bytes(base64.b64decode(s), "big") if s else None  # protobuf's JSON mapping: base64


def _value(v: dict[str, Any]) -> Any:
    for key, conv in (("stringValue", str), ("intValue", int), ("doubleValue", float), ("boolValue", bool)):
        if key in v:
            return conv(v[key])
    if "arrayValue" in v:
        return tuple(_value(x) for x in (v["arrayValue"] or {}).get("values", []))
    return _attrs((v["kvlistValue"] or {}).get("values", [])) if "kvlistValue" in v else v.get("bytesValue")


def _attrs(items: Any) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value") or {}) for kv in items or ()}


def _spans_of(doc: dict[str, Any]) -> Iterable[SpanRec]:
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or ():
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
            for s in ss.get("spans") or ():
                status = s.get("status") or {}
                events = [(e.get("name", ""), int(e.get("timeUnixNano") or 0), _attrs(e.get("attributes"))) for e in s.get("events") or ()]  # fmt: skip
                ids = (_id(s["traceId"]) or 0, _id(s["spanId"]) or 0, _id(s.get("parentSpanId")))
                times = (int(s.get("startTimeUnixNano") or 0), int(s.get("endTimeUnixNano") or 0))
                error = status.get("code") in (2, "STATUS_CODE_ERROR")
                yield SpanRec(s["name"], *ids, *times, _attrs(s.get("attributes")), error, status.get("message"), events)  # fmt: skip


def read_otlp_json(path: str | os.PathLike[str]) -> list[SpanRec]:
    """Spans from a file of OTLP JSON: one ``ExportTraceServiceRequest`` per line (the Collector's file
    exporter) or a single document. Raises :class:`TrajectoryError` naming the file, line and problem."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except FileNotFoundError:
        raise TrajectoryError(path, "no such file or directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrajectoryError(path, f"cannot be read ({exc})") from None
    try:
        docs = [(1, json.loads(raw))]
    except ValueError:
        docs = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            try:
                docs += [(lineno, json.loads(line))] if line.strip() else []
            except ValueError as exc:
                why = f"line {lineno}: not JSON ({exc}); expected OTLP JSON, one ExportTraceServiceRequest per line"
                raise TrajectoryError(path, why) from None
    out: list[SpanRec] = []
    for lineno, doc in docs:
        if not isinstance(doc, dict) or not ("resourceSpans" in doc or "resource_spans" in doc):
            raise TrajectoryError(path, f"line {lineno}: not OTLP JSON traces (no resourceSpans)")
        try:
            out.extend(s for s in _spans_of(doc) if s.name.startswith(_KEEP))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrajectoryError(
                path, f"line {lineno}: malformed span ({type(exc).__name__}: {exc})"
            ) from None
    return out
