"""From OpenTelemetry spans to runs: filing spans by trace, and assembling a run when it ends.

Spans come from an SDK (``ReadableSpan``) or from a file of OTLP JSON. Only looplet's spans are kept
(``invoke_agent``, ``looplet.step``, ``chat``, ``execute_tool``); a run is assembled from the spans under
its ``invoke_agent`` span when that span arrives (it ends after all of its children, so a batch processor
hands it over last). A sub-agent's run is written on its own and also becomes the ``children`` of the step
whose tool ran it. Attribute names come from ``looplet.telemetry.names`` and the GenAI semantic
conventions; content (messages, arguments, results, task) is there only when the tracing hook captured it.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import time
from collections.abc import Container, Iterable
from typing import Any

from looplet.provenance.format import _ENCODE as _encode  # json.dumps(ensure_ascii=False), without its set-up
from looplet.provenance.format import CallRecord, RunRecord, TrajectoryError
from looplet.telemetry import names as N
from looplet.telemetry.cost import cost_of
from looplet.types import Step, ToolCall, ToolResult, Usage

__all__ = ["SpanRec", "SpanBuffer", "read_otlp_json", "records_from_spans"]

_ERROR_TYPE = N.ERROR_TYPE  # the GenAI names resolve from opentelemetry-semantic-conventions (otel extra)

AGENT_PREFIX = "invoke_agent"
CHAT_PREFIX = "chat"
TOOL_PREFIX = "execute_tool"
_KEEP = (AGENT_PREFIX, CHAT_PREFIX, TOOL_PREFIX, "looplet.")


class SpanRec:
    """The parts of a finished span a trajectory needs (ids as ints, times in ns since the epoch)."""

    __slots__ = (
        "name",
        "trace_id",
        "span_id",
        "parent_id",
        "start_ns",
        "end_ns",
        "attrs",
        "error",
        "status_message",
        "events",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        start_ns: int,
        end_ns: int,
        attrs: Any,
        error: bool = False,
        status_message: str | None = None,
        events: list[tuple[str, int, Any]] | None = None,
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attrs = attrs
        self.error = error
        self.status_message = status_message
        self.events = events or []

    @classmethod
    def from_sdk(cls, span: Any) -> SpanRec:
        ctx = span.context
        parent = span.parent
        status = span.status
        # A finished span's attributes never change: read the SDK's dict behind its read-only view when it
        # is there (each lookup through the view costs a Python-level call), else copy the view once.
        attrs = getattr(getattr(span, "_attributes", None), "_dict", None)
        if not isinstance(attrs, dict):
            attrs = dict(span.attributes or {})
        return cls(
            span.name,
            ctx.trace_id,
            ctx.span_id,
            parent.span_id if parent is not None else None,
            span.start_time or 0,
            span.end_time or span.start_time or 0,
            attrs,
            status.status_code.value == 2,
            status.description,
            _events_of(span),
        )

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return f"SpanRec({self.name!r}, span_id={self.span_id:016x})"


def _events_of(span: Any) -> list[tuple[str, int, Any]] | None:
    raw = getattr(span, "_events", None)
    if raw is not None and not len(raw):  # most spans have none: skip the SDK's locked copy
        return None
    return [(e.name, e.timestamp, e.attributes or {}) for e in span.events] or None


def _keep(name: str) -> bool:
    return name.startswith(_KEEP)


class SpanBuffer:
    """Spans waiting for their run to end, by trace. Traces that never complete a run (spans of other
    instrumentations that happen to share a name prefix) are dropped when idle for ``idle_s`` or when the
    buffer holds more than ``max_spans``."""

    def __init__(self, max_spans: int = 200_000, idle_s: float = 600.0) -> None:
        self.traces: dict[int, list[SpanRec]] = {}
        self.touched: dict[int, float] = {}
        self.count = 0
        self.max_spans = max_spans
        self.idle_s = idle_s
        self.dropped = 0
        self.nested: collections.OrderedDict[tuple[int, int], RunRecord] = collections.OrderedDict()
        self._last_sweep = time.monotonic()

    def add(self, spans: Iterable[Any]) -> list[RunRecord]:
        """File ``spans`` and return the runs they complete."""
        return [self.build(agent) for agent in self.file(spans)]

    def file(self, spans: Iterable[Any]) -> list[SpanRec]:
        """File ``spans`` by trace; returns the ``invoke_agent`` spans among them, each of which completes
        a run for :meth:`build` (in this order: a sub-agent's run ends, and is built, before its parent's)."""
        agents: list[SpanRec] = []
        now = time.monotonic()
        traces = self.traces
        for s in spans:
            name = s.name
            if not name.startswith(_KEEP):
                continue
            rec = s if type(s) is SpanRec else SpanRec.from_sdk(s)
            bucket = traces.get(rec.trace_id)
            if bucket is None:
                bucket = traces[rec.trace_id] = []
            bucket.append(rec)
            self.touched[rec.trace_id] = now
            self.count += 1
            if name.startswith(AGENT_PREFIX):
                agents.append(rec)
        if self.count > self.max_spans or now - self._last_sweep > 60.0:
            self._sweep(now, keep={a.trace_id for a in agents})
        return agents

    def build(self, agent: SpanRec) -> RunRecord:
        """The run ``agent`` ends, from the spans filed under it (which are taken out of the buffer)."""
        record = build_record(agent, self._take(agent), self.nested)
        if agent.parent_id is not None:  # maybe a sub-agent: keep it for the run whose tool started it
            self.nested[(agent.trace_id, agent.parent_id)] = record
            while len(self.nested) > 256:
                self.nested.popitem(last=False)
        return record

    def _take(self, agent: SpanRec) -> list[SpanRec]:
        """Remove and return the spans under ``agent`` (not descending into sub-agents, already taken)."""
        bucket = self.traces.get(agent.trace_id, [])
        children: dict[int | None, list[SpanRec]] = collections.defaultdict(list)
        for s in bucket:
            children[s.parent_id].append(s)
        taken: list[SpanRec] = []
        todo = [agent.span_id]
        while todo:
            sid = todo.pop()
            for c in children.get(sid, ()):
                if c.name.startswith(AGENT_PREFIX):
                    continue
                taken.append(c)
                todo.append(c.span_id)
        gone = {id(s) for s in taken}
        gone.add(id(agent))
        rest = [s for s in bucket if id(s) not in gone]
        self.count -= len(bucket) - len(rest)
        if rest:
            self.traces[agent.trace_id] = rest
        else:
            self.traces.pop(agent.trace_id, None)
            self.touched.pop(agent.trace_id, None)
        return taken

    def _sweep(self, now: float, keep: Container[int] = ()) -> None:
        self._last_sweep = now
        for tid, t in sorted(self.touched.items(), key=lambda kv: kv[1]):
            if self.count <= self.max_spans and now - t <= self.idle_s:
                break
            if tid in keep:  # a run about to be built
                continue
            n = len(self.traces.pop(tid, ()))
            self.touched.pop(tid, None)
            self.count -= n
            self.dropped += n


# ------------------------------------------------------------------------------------------------------
# Building a run
# ------------------------------------------------------------------------------------------------------


def _json_attr(value: Any) -> Any:
    """Content attributes hold JSON text; anything else is taken as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, tuple):
        return list(value)
    return value


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:0{width}x}"


def _parts_text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    out = []
    for p in parts or ():
        if isinstance(p, dict) and p.get("type", "text") == "text":
            out.append(str(p.get("content", "")))
    return "\n".join(out)


def semconv_to_chat(messages: Any, system: Any = None) -> list[dict[str, Any]]:
    """GenAI semantic-convention messages (role + parts) as OpenAI chat messages, the form the hook path
    records, so both render the same prompt text (tool-call arguments are left parsed)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _parts_text(system)})
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        role = m.get("role", "user")
        if "parts" not in m:  # already chat format
            if role == "system" and out and out[0].get("role") == "system":
                continue
            out.append(dict(m))
            continue
        parts = m.get("parts") or []
        if role == "system":
            if not (out and out[0].get("role") == "system"):
                out.append({"role": "system", "content": _parts_text(parts)})
            continue
        if role == "tool":
            for p in parts:
                if isinstance(p, dict) and p.get("type") == "tool_call_response":
                    resp = p.get("response")
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": p.get("id", ""),
                            "content": resp if isinstance(resp, str) else _encode(resp),
                        }
                    )
            continue
        msg: dict[str, Any] = {"role": role, "content": _parts_text(parts) or None}
        calls = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"]
        if calls:  # arguments stay parsed: the renderer writes them as canonical JSON either way
            msg["tool_calls"] = [
                {
                    "id": p.get("id", ""),
                    "type": "function",
                    "function": {"name": p.get("name", ""), "arguments": p.get("arguments") or {}},
                }
                for p in calls
            ]
        elif role == "user" and msg["content"] is None:
            msg["content"] = ""
        out.append(msg)
    return out


class _Transcripts:
    """The input messages of a run's successive chat spans, parsed and converted incrementally: each call's
    transcript usually extends the previous one's, so only the new messages are parsed and converted,
    and the earlier message objects are shared (the renderer then renders each of them once)."""

    __slots__ = ("raw", "system", "chat")

    def __init__(self) -> None:
        self.raw: str | None = None
        self.system: Any = None
        self.chat: list[dict[str, Any]] = []

    def messages(self, raw: Any, system: Any) -> list[dict[str, Any]]:
        prev = self.raw
        if (
            isinstance(raw, str)
            and prev is not None
            and system == self.system
            and len(raw) > len(prev)
            and raw[len(prev) - 1] == ","
            and raw.startswith(prev[:-1])
        ):
            try:
                new = json.loads("[" + raw[len(prev) :])
            except ValueError:
                new = None
            if isinstance(new, list):
                self.raw = raw
                self.chat = self.chat + semconv_to_chat(new)
                return self.chat
        parsed = _json_attr(raw)
        self.raw = raw if isinstance(raw, str) and raw.endswith("]") else None
        self.system = system
        self.chat = semconv_to_chat(parsed, _json_attr(system))
        return self.chat


def _output(messages: Any) -> tuple[str | None, list[ToolCall], bool]:
    if not isinstance(messages, list):
        return None, [], False
    text: list[str] = []
    calls: list[ToolCall] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        for p in m.get("parts") or ():
            if not isinstance(p, dict):
                continue
            if p.get("type") == "text":
                text.append(str(p.get("content", "")))
            elif p.get("type") == "tool_call":
                args = _json_attr(p.get("arguments"))
                calls.append(
                    ToolCall(
                        str(p.get("name", "")), args if isinstance(args, dict) else {}, str(p.get("id") or "")
                    )
                )
    return ("\n".join(text) if text else None), calls, True


def _tool_name(s: SpanRec) -> str:
    name = s.attrs.get(N.GEN_AI_TOOL_NAME)
    if name:
        return str(name)
    return s.name[len(TOOL_PREFIX) :].strip() or "?"


def _is_chat(s: SpanRec) -> bool:
    op = s.attrs.get(N.GEN_AI_OPERATION_NAME)
    return op == "chat" if op is not None else s.name.startswith(CHAT_PREFIX + " ") or s.name == CHAT_PREFIX


def _event_list(spans: Iterable[SpanRec], t0: int) -> list[dict[str, Any]]:
    out = []
    for s in spans:
        for name, ts, attrs in s.events:
            if name == "exception":
                continue
            short = name.removeprefix("looplet.")
            # looplet.eval.passed -> passed, looplet.hook -> hook: the keys an on_event hook sees
            out.append(
                {
                    "name": short,
                    "attributes": {
                        str(k).removeprefix("looplet.").removeprefix(short + "."): (
                            list(v) if isinstance(v, tuple) else v
                        )
                        for k, v in dict(attrs).items()
                    },
                    "at_ms": round((ts - t0) / 1e6, 3),
                }
            )
    out.sort(key=lambda e: e["at_ms"])
    return out


def build_record(agent: SpanRec, spans: list[SpanRec], nested: dict[tuple[int, int], RunRecord]) -> RunRecord:
    A = agent.attrs
    t0 = agent.start_ns
    run_id = A.get(N.RUN_ID) or A.get(N.GEN_AI_CONVERSATION_ID) or _hex(agent.span_id, 16)
    name = A.get(N.GEN_AI_AGENT_NAME) or agent.name[len(AGENT_PREFIX) :].strip() or "agent"
    rec = RunRecord(
        run_id=str(run_id),
        agent=str(name),
        trace_id=_hex(agent.trace_id, 32),
        span_id=_hex(agent.span_id, 16),
        started_at=t0 / 1e9,
        duration_ms=agent.duration_ms,
        source="spans",
    )
    rec.stop_reason = A.get(N.STOP_REASON) or ("error" if agent.error else None)
    if agent.error:
        rec.error = agent.status_message or A.get(_ERROR_TYPE)
    if N.TASK in A:
        rec.task = _json_attr(A[N.TASK])
    if N.FINAL_OUTPUT in A:  # a string answer is recorded as it is; other values as JSON
        out = _json_attr(A[N.FINAL_OUTPUT])
        rec.final_output = out if isinstance(out, (dict, list)) else A[N.FINAL_OUTPUT]
    if N.RUN_INPUT_TOKENS in A or N.RUN_OUTPUT_TOKENS in A:
        rec.usage = Usage(
            _int(A.get(N.RUN_INPUT_TOKENS)) or 0,
            _int(A.get(N.RUN_OUTPUT_TOKENS)) or 0,
            _int(A.get(N.RUN_CACHED_TOKENS)) or 0,
            _int(A.get(N.RUN_REASONING_TOKENS)) or 0,
        )
    rec.cost_usd = _float(A.get(N.COST_USD))
    rec.llm_calls = _int(A.get(N.RUN_LLM_CALLS))
    if N.GEN_AI_TOOL_DEFINITIONS in A:
        rec.tools = _tool_defs(A[N.GEN_AI_TOOL_DEFINITIONS])

    by_id = {s.span_id: s for s in spans}
    step_spans = [s for s in spans if s.name == N.STEP_SPAN]
    tool_spans = sorted((s for s in spans if s.name.startswith(TOOL_PREFIX)), key=lambda s: s.start_ns)
    chat_spans = sorted(
        (s for s in spans if s.name.startswith(CHAT_PREFIX) and _is_chat(s)), key=lambda s: s.start_ns
    )

    def step_of(s: SpanRec) -> int | None:
        n = _int(s.attrs.get(N.STEP_NUMBER))
        p = by_id.get(s.parent_id) if s.parent_id is not None else None
        while n is None and p is not None:
            n = _int(p.attrs.get(N.STEP_NUMBER)) if p.name == N.STEP_SPAN else None
            p = by_id.get(p.parent_id) if p.parent_id is not None else None
        return n

    # LLM calls
    content = False
    transcripts = _Transcripts()
    for i, s in enumerate(chat_spans, 1):
        a = s.attrs
        c = CallRecord(
            number=i,
            step=step_of(s) or 0,
            purpose=str(a.get(N.LLM_PURPOSE) or "step"),
            model=a.get(N.GEN_AI_RESPONSE_MODEL) or a.get(N.GEN_AI_REQUEST_MODEL),
            provider=a.get(N.GEN_AI_PROVIDER_NAME),
            start_ms=(s.start_ns - t0) / 1e6,
            duration_ms=s.duration_ms,
            response_id=a.get(N.GEN_AI_RESPONSE_ID),
            span_id=_hex(s.span_id, 16),
        )
        reasons = a.get(N.GEN_AI_RESPONSE_FINISH_REASONS)
        if reasons:
            c.finish_reason = str(reasons[0]) if isinstance(reasons, (list, tuple)) else str(reasons)
        if N.GEN_AI_USAGE_INPUT_TOKENS in a or N.GEN_AI_USAGE_OUTPUT_TOKENS in a:
            c.usage = Usage(
                _int(a.get(N.GEN_AI_USAGE_INPUT_TOKENS)) or 0,
                _int(a.get(N.GEN_AI_USAGE_OUTPUT_TOKENS)) or 0,
                _int(a.get(N.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)) or 0,
                _int(a.get(N.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)) or 0,
            )
        c.cost_usd = _float(a.get(N.COST_USD))
        if c.cost_usd is None and c.usage is not None:  # the same price table the loop used
            c.cost_usd = cost_of(c.model, c.usage)
        ttfc = _float(a.get(N.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK))
        if ttfc is not None:
            c.ttfc_ms = ttfc * 1000.0
        if s.error:
            c.error = s.status_message or str(a.get(_ERROR_TYPE) or "error")
            c.answered = False
        if N.GEN_AI_INPUT_MESSAGES in a:
            content = True
            c.messages = transcripts.messages(a[N.GEN_AI_INPUT_MESSAGES], a.get(N.GEN_AI_SYSTEM_INSTRUCTIONS))
        if rec.tools is None and N.GEN_AI_TOOL_DEFINITIONS in a:
            rec.tools = _tool_defs(a[N.GEN_AI_TOOL_DEFINITIONS])
        if not s.error:
            c.text, c.tool_calls, c.answered = _output(_json_attr(a.get(N.GEN_AI_OUTPUT_MESSAGES)))
        rec.calls.append(c)
        if rec.provider is None:
            rec.provider = c.provider
        rec.timeline.append(
            {
                "kind": "llm",
                "name": s.name,
                "call": i,
                "step": c.step or None,
                "start_ms": c.start_ms,
                "duration_ms": c.duration_ms,
                "error": c.error,
            }
        )

    # steps: one per step span, else one per tool span
    entries: list[tuple[int | None, SpanRec | None, SpanRec | None]] = []
    used: set[int] = set()
    for ss in sorted(step_spans, key=lambda s: (_int(s.attrs.get(N.STEP_NUMBER)) or 0, s.start_ns)):
        tool = next((t for t in tool_spans if t.parent_id == ss.span_id), None)
        if tool is not None:
            used.add(tool.span_id)
        entries.append((_int(ss.attrs.get(N.STEP_NUMBER)), ss, tool))
    for t in tool_spans:
        if t.span_id not in used:
            entries.append((step_of(t), None, t))
    entries.sort(key=lambda e: (e[0] if e[0] is not None else 1 << 30, (e[2] or e[1]).start_ns))  # type: ignore[union-attr]

    answered = [(s, c) for s, c in zip(chat_spans, rec.calls) if c.error is None]
    linked: set[int] = set()
    last_n = 0
    for n, ss, ts in entries:
        n = n if n is not None else last_n + 1
        last_n = n
        anchor = ts or ss
        assert anchor is not None
        a = dict(ss.attrs) if ss is not None else {}
        if ts is not None:
            a.update(ts.attrs)
        tool = _tool_name(ts) if ts is not None else str(a.get(N.GEN_AI_TOOL_NAME) or "?")
        args = _json_attr(a.get(N.GEN_AI_TOOL_CALL_ARGUMENTS)) if N.GEN_AI_TOOL_CALL_ARGUMENTS in a else {}
        if N.GEN_AI_TOOL_CALL_ARGUMENTS in a:
            content = True
        failed = (ts is not None and ts.error) or (ts is None and ss is not None and ss.error)
        err_span = ts if ts is not None and ts.error else ss
        error = None
        if failed:
            error = (err_span.status_message if err_span is not None else None) or str(
                a.get(_ERROR_TYPE) or "error"
            )
        elif ts is None and a.get(N.TOOL_ERROR_KIND):  # denied or skipped before the tool ran
            error = str(a[N.TOOL_ERROR_KIND])
            failed = True
        data = _json_attr(a.get(N.GEN_AI_TOOL_CALL_RESULT)) if not failed else None
        tool_ms = _float(a.get(N.TOOL_DURATION_MS))
        if tool_ms is None:
            tool_ms = ts.duration_ms if ts is not None else 0.0
        result = ToolResult(data, error, a.get(N.TOOL_ERROR_KIND), tool_ms)
        step = Step(
            n,
            ToolCall(
                tool,
                args if isinstance(args, dict) else {"value": args},
                str(a.get(N.GEN_AI_TOOL_CALL_ID) or ""),
            ),
            result,
            tool_ms=tool_ms,
            trace_id=rec.trace_id,
            span_id=_hex((ss or ts).span_id, 16),
        )  # type: ignore[union-attr]
        # the LLM call that proposed it: the latest answered call that ended before the tool started
        ref = anchor.start_ns if ts is not None else anchor.end_ns
        call = None
        for cs, c in answered:
            if cs.end_ns <= ref:
                call = (cs, c)
        if call is not None:
            cs, c = call
            rec.step_calls[n] = c.number
            step.model = c.model
            if c.number not in linked:
                linked.add(c.number)
                step.usage, step.llm_ms, step.cost_usd = c.usage, cs.duration_ms, c.cost_usd
                if c.ttfc_ms is not None:
                    step.ttfc_ms = c.ttfc_ms
        if N.COST_USD in a:  # the Step's own cost, as the loop set it (sub-agent costs included)
            step.cost_usd = _float(a[N.COST_USD])
        if ts is not None:
            child = nested.pop((agent.trace_id, ts.span_id), None)
            if child is not None:
                step.children = list(child.steps)
            rec.timeline.append(
                {
                    "kind": "tool",
                    "name": ts.name,
                    "step": n,
                    "start_ms": (ts.start_ns - t0) / 1e6,
                    "duration_ms": ts.duration_ms,
                    "error": error,
                }
            )
        rec.steps.append(step)
    rec.timeline.sort(key=lambda e: e["start_ms"])
    rec.events = _event_list([agent, *spans], t0)
    rec.content = content
    return rec


def records_from_spans(spans: Iterable[Any]) -> list[RunRecord]:
    """Every complete run in ``spans`` (no writing)."""
    return SpanBuffer(max_spans=1 << 62).add(spans)


# ------------------------------------------------------------------------------------------------------
# OTLP JSON
# ------------------------------------------------------------------------------------------------------


def _id(value: Any) -> int | None:
    if not value:
        return None
    s = str(value)
    try:
        if len(s) in (16, 32):
            return int(s, 16)
    except ValueError:
        pass
    return int.from_bytes(base64.b64decode(s), "big")  # protobuf's JSON mapping writes bytes as base64


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return tuple(_value(x) for x in (v["arrayValue"] or {}).get("values", []))
    if "kvlistValue" in v:
        return {kv["key"]: _value(kv.get("value", {})) for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attrs(items: Any) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value") or {}) for kv in items or ()}


def _spans_of(doc: Any) -> Iterable[SpanRec]:
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or ():
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
            for s in ss.get("spans") or ():
                status = s.get("status") or {}
                code = status.get("code")
                yield SpanRec(
                    s["name"],
                    _id(s["traceId"]) or 0,
                    _id(s["spanId"]) or 0,
                    _id(s.get("parentSpanId")),
                    int(s.get("startTimeUnixNano") or 0),
                    int(s.get("endTimeUnixNano") or 0),
                    _attrs(s.get("attributes")),
                    code in (2, "STATUS_CODE_ERROR"),
                    status.get("message"),
                    [
                        (e.get("name", ""), int(e.get("timeUnixNano") or 0), _attrs(e.get("attributes")))
                        for e in s.get("events") or ()
                    ],
                )


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
    docs: list[tuple[int, Any]] = []
    try:
        docs = [(1, json.loads(raw))]
    except ValueError:
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append((lineno, json.loads(line)))
            except ValueError as exc:
                raise TrajectoryError(
                    path,
                    f"line {lineno}: not JSON ({exc}); expected OTLP JSON, one "
                    "ExportTraceServiceRequest per line",
                ) from None
    out: list[SpanRec] = []
    for lineno, doc in docs:
        if not isinstance(doc, dict) or not ("resourceSpans" in doc or "resource_spans" in doc):
            raise TrajectoryError(path, f"line {lineno}: not OTLP JSON traces (no resourceSpans)")
        try:
            out.extend(s for s in _spans_of(doc) if _keep(s.name))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrajectoryError(
                path, f"line {lineno}: malformed span ({type(exc).__name__}: {exc})"
            ) from None
    return out


def _tool_defs(value: Any) -> Any:
    """``gen_ai.tool.definitions`` in the trajectory's neutral shape (name, description, parameters):
    the span carries the semantic conventions' ``"type": "function"`` as well."""
    defs = _json_attr(value)
    if isinstance(defs, list):
        return [{k: v for k, v in d.items() if k != "type"} if isinstance(d, dict) else d for d in defs]
    return defs
