"""``TracingHook``: OpenTelemetry spans for every phase of a run, following the GenAI semantic conventions.

Span tree of one run::

    invoke_agent {agent}            INTERNAL  on_loop_start … on_loop_end (explicit parent, never attached)
    ├── looplet.step                INTERNAL  its first LLM call (or pre_dispatch) … on_step (explicit parent)
    │   ├── chat {model}            CLIENT    wrap_llm_call: the current span while the backend runs
    │   └── execute_tool {tool}     INTERNAL  wrap_tool: the current span while the tool runs
    └── looplet.step …

Context rules. Only ``chat`` and ``execute_tool`` are ever made current, and each is attached and detached
in the same frame, around ``call_next`` (``finally``), so spans made by an HTTP client inside the backend
or by a tool's own code nest under them, and nothing stays attached across the loop's ``yield``: the
caller's current span is untouched between steps. The run and step spans are passed as explicit parents.
Tools run in threads (``parallel_tools``) or tasks get the right parent because the parent is looked up by
tool-call id, not taken from the thread's context.

Parent of the run span: ``parent=`` of the loop (a W3C ``traceparent`` string, an OpenTelemetry
``Context``, a ``Span`` or a ``SpanContext``); else the caller's current span; else, when no span is
current, the ``TRACEPARENT``/``TRACESTATE`` environment variables (set by a parent process or a CI job;
turn off with ``TracingHook(use_env_traceparent=False)``); else a new trace.

Content (messages, tool arguments and results, the task and the final answer) is recorded only when
``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true``,
``SPAN_ONLY`` or ``SPAN_AND_EVENT``; it always goes through the redactor and each attribute is cut to
``max_content_chars`` with its JSON kept valid. Error messages are not content and are always kept, but
they too pass through the redactor. A chat span's prompt is the call's whole transcript, kept converted,
redacted and encoded from one call to the next (:class:`_Capture`): a message dict changed in place, rather
than replaced, is not seen.

Needs ``opentelemetry-api`` (no-op without an SDK) and ``opentelemetry-semantic-conventions``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable
from typing import Any

from looplet.errors import require
from looplet.hooks import current_run
from looplet.telemetry import messages as semconv
from looplet.telemetry import names as N
from looplet.telemetry.redact import Redactor, secrets_version
from looplet.types import LLMResponse, ToolResult

require("opentelemetry.trace", "otel")
require("opentelemetry.semconv._incubating.attributes.gen_ai_attributes", "otel")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY  # noqa: E402
from opentelemetry.trace import Link, SpanKind, Status, StatusCode  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

__all__ = [
    "TracingHook",
    "capture_content_from_env",
    "cap_json",
    "trace_ids",
    "trace_fields",
    "current_ids",
    "current_fields",
]

log = logging.getLogger("looplet")

_CLOSED_BY_CALLER = "the caller closed the loop"  # RunResult.error when the caller closed the generator
_ERROR_STOPS = ("llm_error", "hook_error")
_CAPTURE_ON = ("true", "span_only", "span_and_event")
_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY = otel_context.Context()
_INTERNAL = SpanKind.INTERNAL
_CLIENT = SpanKind.CLIENT
_MAX_ERROR_CHARS = 1000
_MAX_NAMES = 1000  # cached tool names per hook (the model can invent unboundedly many)

# attribute keys, resolved once from the semantic conventions (through the names table)
_OP = N.GEN_AI_OPERATION_NAME
_PROVIDER = N.GEN_AI_PROVIDER_NAME
_REQ_MODEL = N.GEN_AI_REQUEST_MODEL
_RESP_MODEL = N.GEN_AI_RESPONSE_MODEL
_RESP_ID = N.GEN_AI_RESPONSE_ID
_FINISH = N.GEN_AI_RESPONSE_FINISH_REASONS
_IN_TOK = N.GEN_AI_USAGE_INPUT_TOKENS
_OUT_TOK = N.GEN_AI_USAGE_OUTPUT_TOKENS
_CACHED_TOK = N.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_REASONING_TOK = N.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
_AGENT = N.GEN_AI_AGENT_NAME
_CONVERSATION = N.GEN_AI_CONVERSATION_ID
_TOOL = N.GEN_AI_TOOL_NAME
_CALL_ID = N.GEN_AI_TOOL_CALL_ID
_TOOL_TYPE = N.GEN_AI_TOOL_TYPE
_TOOL_DESCRIPTION = N.GEN_AI_TOOL_DESCRIPTION
_TOOL_ARGS = N.GEN_AI_TOOL_CALL_ARGUMENTS
_TOOL_RESULT = N.GEN_AI_TOOL_CALL_RESULT
_INPUT = N.GEN_AI_INPUT_MESSAGES
_OUTPUT = N.GEN_AI_OUTPUT_MESSAGES
_SYSTEM = N.GEN_AI_SYSTEM_INSTRUCTIONS
_TEMPERATURE = N.GEN_AI_REQUEST_TEMPERATURE
_MAX_TOKENS = N.GEN_AI_REQUEST_MAX_TOKENS
_STREAM = N.GEN_AI_REQUEST_STREAM
_TTFC = N.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
_ERROR_TYPE = N.ERROR_TYPE
_SERVER = N.SERVER_ADDRESS
_PORT = N.SERVER_PORT
_EXC_TYPE = N.EXCEPTION_TYPE
_EXC_MESSAGE = N.EXCEPTION_MESSAGE
_CHAT = N.GenAiOperationNameValues.CHAT.value
_EXECUTE_TOOL = N.GenAiOperationNameValues.EXECUTE_TOOL.value
_INVOKE_AGENT = N.GenAiOperationNameValues.INVOKE_AGENT.value
_STACKTRACE = "exception.stacktrace"


def capture_content_from_env() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for content on spans."""
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() in _CAPTURE_ON


class _Step:
    __slots__ = ("span", "ctx", "tool_started", "span_id")

    def __init__(self, span: Any, recording: bool) -> None:
        self.span = span
        self.ctx = trace.set_span_in_context(span, _EMPTY)
        self.tool_started = False
        self.span_id = format(span.get_span_context().span_id, "016x") if recording else None


class _RunSpans:
    """One run's open spans (kept in ``run.scratch[hook]``)."""

    __slots__ = (
        "span",
        "ctx",
        "recording",
        "steps",
        "by_call",
        "prompt",
        "lock",
        "conversation",
        "described",
        "ids",
        "fields",
        "trace_int",
        "last_chat",
        "last_chat_fields",
        "tool_spans",
        "tool_fields",
        "chat_attrs",
        "live",
        "ended",
        "capture",
    )

    def __init__(self, span: Any, conversation: str) -> None:
        self.span = span
        self.ctx = trace.set_span_in_context(span, _EMPTY)
        self.recording = span.is_recording()
        self.steps: dict[int, _Step] = {}
        self.by_call: dict[str, int] = {}
        self.prompt: int | None = None  # step number whose span was opened by pre_prompt
        self.lock = threading.Lock()
        self.conversation = conversation
        self.described: dict[str, str] | None = None  # tool name -> description, from the first LLM call
        sc = span.get_span_context()
        self.trace_int = sc.trace_id
        self.ids = (format(sc.trace_id, "032x"), format(sc.span_id, "016x")) if self.recording else None
        # the ids as a log line's fields and an exemplar's labels (shared, never changed)
        self.fields = {"trace_id": self.ids[0], "span_id": self.ids[1]} if self.ids else None
        self.last_chat: Any = None  # the latest chat span (read by trace_ids for that attempt's log line)
        self.last_chat_fields: dict[str, str] | None = None
        self.tool_spans: dict[str, Any] = {}  # tool-call id -> execute_tool span, for the latest response
        self.tool_fields: dict[str, dict[str, str]] = {}  # tool-call id -> its span's ids, once formatted
        self.chat_attrs: dict[
            Any, dict[str, Any]
        ] = {}  # (model, provider) -> a plain chat span's start attributes
        self.live = 0  # chat/execute_tool spans of this run attached right now (in some thread)
        self.ended = False  # the run span has ended; its ids stay readable, nothing reopens it
        self.capture: dict[str, _Capture] = {}  # call purpose -> its prompts' content, kept encoded


class TracingHook:
    """OpenTelemetry spans per phase of a run. Pass it in ``hooks=[...]`` of either loop.

    tracer_provider: where spans go; the global provider (``trace.get_tracer_provider()``) when None.
        looplet never sets a global provider itself (only ``looplet.telemetry.configure()`` does).
    capture_content: record messages, tool arguments/results, task and answer; None reads
        ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true``/``SPAN_ONLY``/``SPAN_AND_EVENT``).
    redact: a ``str -> str`` callable applied to every captured string and error message
        (default: ``looplet.telemetry.redact.Redactor()``). A run's messages are redacted once each, when
        first sent (again after ``add_secret``), so it should give the same text for the same string.
    max_content_chars: size cap of each content attribute (JSON kept valid). A call's prompt costs its new
        messages and at most this much of the old ones, whatever the transcript's length.
    suppress_provider_spans: while the LLM call runs, set OpenTelemetry's suppress-instrumentation flag
        so auto-instrumentations that honour it (``opentelemetry-instrumentation-openai-v2``, httpx,
        requests, ...) add no span of their own: the ``chat`` span is then the only span of the call.
        Off by default, so such spans nest under ``chat``. The anthropic client's built-in spans do not
        read the flag; ``AnthropicBackend`` turns them off with the client's ``open_telemetry=False``.
    use_env_traceparent: continue the trace in ``TRACEPARENT`` when the run has no other parent.
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        capture_content: bool | None = None,
        redact: Callable[[str], str] | None = None,
        max_content_chars: int = 32_000,
        *,
        suppress_provider_spans: bool = False,
        use_env_traceparent: bool = True,
    ) -> None:
        from looplet import __version__ as version

        if max_content_chars < 256:
            raise ValueError(f"TracingHook(max_content_chars={max_content_chars}): use at least 256")
        self._tracer = trace.get_tracer(N.TRACER_SCOPE, version, tracer_provider=tracer_provider)
        self.capture_content = (
            capture_content_from_env() if capture_content is None else bool(capture_content)
        )
        self._redact = redact if redact is not None else Redactor()
        self.max_content_chars = max_content_chars
        self.suppress_provider_spans = suppress_provider_spans
        self.use_env_traceparent = use_env_traceparent
        self._chat_names: dict[Any, str] = {}
        self._tool_names: dict[str, str] = {}
        self._chat_attrs: dict[Any, dict[str, Any]] = {}
        self._tool_attrs: dict[str, dict[str, Any]] = {}
        self._safe_names: dict[str, str] = {}
        self._warned: set[str] = set()

    # -- run ----------------------------------------------------------------------------------------

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        run = current_run()
        if run is None:
            return
        rs = self._open_run(run)
        if rs is None or not rs.recording:
            return
        attrs: dict[str, Any] = {}
        resumed = len(getattr(state, "steps", ()) or ())
        if resumed:
            attrs[N.RUN_RESUMED_STEPS] = resumed
        if self.capture_content:
            system = next((m.get("content") for m in session_log or () if m.get("role") == "system"), None)
            if system:
                attrs[_SYSTEM] = self._content([{"type": "text", "content": system}])
        if attrs:
            rs.span.set_attributes(attrs)

    def _open_run(self, run: Any) -> _RunSpans | None:
        """The run's ``invoke_agent`` span, started by the first caller: this hook's ``on_loop_start`` or
        another telemetry hook asking for the run's trace context (:func:`trace_ids`) before it, so any
        order of the hooks gives the same spans and the same ids in every line."""
        rs = run.scratch.get(self)
        if rs is not None:
            return rs if not rs.ended else None
        parent = self._parent(run.parent)
        attrs: dict[str, Any] = {_OP: _INVOKE_AGENT, _AGENT: run.agent_name, N.RUN_ID: run.run_id}
        metadata = getattr(run.state, "metadata", None)
        conversation = metadata.get("conversation_id") if isinstance(metadata, dict) else None
        conversation_id = str(conversation)[:256] if conversation else run.run_id
        attrs[_CONVERSATION] = conversation_id
        if run.provider:
            attrs[_PROVIDER] = run.provider
        if run.model:
            attrs[_REQ_MODEL] = run.model
        if self.capture_content and run.task is not None:
            attrs[N.TASK] = self._content(run.task)  # the task as given (read back by provenance)
            attrs[_INPUT] = self._content([_message("user", _task_text(run.task))])
            attrs[N.OI_INPUT_VALUE] = self._content(_task_text(run.task))
        span = self._tracer.start_span(
            f"invoke_agent {run.agent_name}",
            context=parent,
            kind=_INTERNAL,
            attributes=attrs,
            links=self._links(run.links),
        )
        rs = _RunSpans(span, conversation_id)
        run.scratch[self] = rs
        if rs.ids is not None:  # for the Step and RunResult records the user reads
            run.trace_id, run.span_id = rs.ids
        return rs

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        rs = self._rs(run)
        if rs is None or run is None:
            return
        rs.ended = True
        rs.capture = {}  # the run's encoded prompts: nothing reads them any more
        stop = result.stop_reason
        error_type: str | None = None
        if stop in _ERROR_STOPS:
            error_type = stop
        elif stop == "cancelled" and result.error and result.error != _CLOSED_BY_CALLER:
            error_type = result.error.partition(":")[0].strip() or "cancelled"
        description = self._error_text(result.error) if error_type else None
        # Steps still open: an LLM call that failed, a stop before the tool ran, a cancelled run.
        for number in sorted(rs.steps):
            step = rs.steps.pop(number)
            sp = step.span
            if rs.recording:
                sp.set_attribute(N.STOP_REASON, stop)
                if error_type:
                    sp.set_attribute(_ERROR_TYPE, error_type)
                    sp.set_status(Status(StatusCode.ERROR, description))
            sp.end()
        span = rs.span
        if rs.recording:
            usage = result.usage
            attrs: dict[str, Any] = {
                N.STOP_REASON: stop,
                N.RUN_STEPS: len(result.steps),
                N.RUN_LLM_CALLS: result.llm_calls,
                N.RUN_INPUT_TOKENS: usage.input_tokens,
                N.RUN_OUTPUT_TOKENS: usage.output_tokens,
                N.RUN_CACHED_TOKENS: usage.cached_input_tokens,
                N.RUN_REASONING_TOKENS: usage.reasoning_tokens,
            }
            if result.cost_usd is not None:
                attrs[N.COST_USD] = result.cost_usd
            # no gen_ai.response.model here: it describes one chat call (Phoenix shows it as the agent's output)
            if self.capture_content and result.final_output is not None:
                final = result.final_output
                attrs[N.FINAL_OUTPUT] = self._content(final)
                text = final if isinstance(final, str) else _dumps(final)
                attrs[_OUTPUT] = self._content([_message("assistant", text, "stop")])
                attrs[N.OI_OUTPUT_VALUE] = self._content(text)
            if error_type:
                attrs[_ERROR_TYPE] = error_type
                span.set_status(Status(StatusCode.ERROR, description))
            span.set_attributes(attrs)
        span.end()

    def _fields(self, run: Any, kind: str, step: Any) -> dict[str, str] | None:
        rs = run.scratch.get(self)
        if rs is None:
            rs = self._open_run(run)
        if not isinstance(rs, _RunSpans):
            return None
        if rs.ended or rs.fields is None:
            return rs.fields
        if kind == "chat" and rs.last_chat is not None:
            fields = rs.last_chat_fields
            if fields is None:
                fields = rs.last_chat_fields = _fields_of(rs.last_chat, rs)
            return fields
        if kind == "tool" and step is not None:
            fields = self._tool_fields(rs, step)
            if fields is not None:
                return fields
        if kind == "line" and rs.live:
            return current_fields() or rs.fields
        return rs.fields

    def _tool_fields(self, rs: _RunSpans, step: Any) -> dict[str, str] | None:
        call_id = step.tool_call.id
        fields = rs.tool_fields.get(call_id) if call_id else None
        if fields is None:
            span = self._tool_span(rs, step)
            fields = _fields_of(span, rs) if span is not None else None
            if fields is not None and call_id:
                rs.tool_fields[call_id] = fields
        return fields

    def _rs(self, run: Any) -> _RunSpans | None:
        rs = run.scratch.get(self) if run is not None else None
        return rs if isinstance(rs, _RunSpans) and not rs.ended else None

    # -- steps --------------------------------------------------------------------------------------

    # The step span opens with the step's first LLM call (wrap_llm_call, whose ``call.step`` names it) or,
    # for the later tool calls of one response, at pre_dispatch; it ends at on_step.

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> None:
        run = current_run()
        rs = self._rs(run)
        if rs is None or run is None:
            return
        step = rs.steps.get(step_num)
        if step is None:
            step = self._open_step(rs, step_num)
        run.span_id = step.span_id or run.span_id
        rs.prompt = None
        rs.by_call[tool_call.id] = step_num

    def on_step(self, state: Any, step: Any) -> None:
        run = current_run()
        rs = self._rs(run)
        if rs is None:
            return
        # its pre_dispatch may never have reached us (a hook before this one denied the call)
        open_step = rs.steps.get(step.number) or self._open_step(rs, step.number)
        if not open_step.tool_started:  # denied, or answered by a hook: the tool never ran
            self._tool_span(rs, step)
        del rs.steps[step.number]
        if open_step.span_id is not None and step.span_id != open_step.span_id:
            step.span_id = open_step.span_id  # parallel calls: each Step names its own step span
        span = open_step.span
        if rs.recording:
            result = step.tool_result
            attrs: dict[str, Any] = {N.STEP_TOOL: self._tool_name(step.tool_call.tool)}
            if result.error is not None:
                attrs[N.TOOL_ERROR_KIND] = result.error_kind or "error"
            span.set_attributes(attrs)
        span.end()
        if rs.by_call:
            rs.by_call.pop(step.tool_call.id, None)

    def _tool_span(self, rs: _RunSpans, step: Any) -> Any:
        """The ``execute_tool`` span of ``step``'s call; for a call that never ran, made now, once (by
        ``on_step`` or by :func:`trace_ids`, whichever asks first)."""
        tc = step.tool_call
        span = rs.tool_spans.get(tc.id) if tc.id else None
        if span is not None:
            return span
        open_step = rs.steps.get(step.number) or self._open_step(rs, step.number)
        if open_step.tool_started:
            return None  # it ran, under an id we cannot match
        open_step.tool_started = True
        span = self._not_run_span(rs, open_step, step)
        if tc.id:
            rs.tool_spans[tc.id] = span
        return span

    def _not_run_span(self, rs: _RunSpans, open_step: _Step, step: Any) -> Any:
        """An ``execute_tool`` span for a call that never ran (a hook denied it or answered it), so every
        trace UI shows the call; ``looplet.tool.executed=false`` says it did not run."""
        tc = step.tool_call
        attrs = self._tool_span_attrs(rs, tc)
        attrs[N.TOOL_EXECUTED] = False
        if self.capture_content:  # what was asked, though it never ran (provenance records it)
            attrs[_TOOL_ARGS] = self._content(tc.args)
        span = self._tracer.start_span(
            self._tool_names.get(tc.tool) or f"execute_tool {attrs[_TOOL]}",
            context=open_step.ctx,
            kind=_INTERNAL,
            attributes=attrs,
        )
        result = step.tool_result
        if span.is_recording() and result.error is not None:
            kind = result.error_kind or "tool_error"
            span.set_attributes({_ERROR_TYPE: kind, N.TOOL_ERROR_KIND: kind})
            span.set_status(Status(StatusCode.ERROR, self._error_text(result.error)))
        span.end()
        return span

    def _open_step(self, rs: _RunSpans, number: int) -> _Step:
        span = self._tracer.start_span(
            N.STEP_SPAN, context=rs.ctx, kind=_INTERNAL, attributes={N.STEP_NUMBER: number}
        )
        step = _Step(span, rs.recording)
        rs.steps[number] = step
        return step

    # -- LLM calls ----------------------------------------------------------------------------------

    def wrap_llm_call(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        return self._around(self._start_chat, self._chat_failed, self._chat_done, call_next, call)

    async def awrap_llm_call(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        return await self._aaround(self._start_chat, self._chat_failed, self._chat_done, call_next, call)

    # The span is current exactly while ``call_next`` runs, attached and detached in this one frame. A
    # fault in ``start`` (before anything is attached) or after ``call_next`` returned propagates to the
    # loop's chain, which keeps the call's result, skips or reports this hook and counts the fault.
    # ``start(arg)`` returns (span, token, the run's spans with ``live`` counted up, or None);
    # ``failed(span, arg, exc)`` and ``done(span, arg, out)`` finish the span's attributes.
    def _around(self, start: Any, failed: Any, done: Any, call_next: Any, arg: Any) -> Any:
        span, token, rs = start(arg)
        try:
            out = call_next(arg)
        except BaseException as exc:
            failed(span, arg, exc)
            raise
        else:
            done(span, arg, out)
            return out
        finally:
            if rs is not None:
                rs.live -= 1
            otel_context.detach(token)
            span.end()

    async def _aaround(self, start: Any, failed: Any, done: Any, call_next: Any, arg: Any) -> Any:
        span, token, rs = start(arg)
        try:
            out = await call_next(arg)
        except BaseException as exc:
            failed(span, arg, exc)
            raise
        else:
            done(span, arg, out)
            return out
        finally:
            if rs is not None:
                rs.live -= 1
            otel_context.detach(token)
            span.end()

    def _start_chat(self, call: Any) -> tuple[Any, Any, _RunSpans | None]:
        run = current_run()
        rs = self._rs(run)
        parent = self._chat_parent(run, rs, call) if rs is not None else None
        model = call.model or (run.model if run is not None else None)
        provider = call.provider or (run.provider if run is not None else None)
        name, attrs = self._chat_start_attrs(model, provider)
        if rs is not None and not call.options and call.purpose == "step":
            plain = rs.chat_attrs.get((model, provider))  # the same for every plain call of the run
            if plain is None:
                plain = _request_attrs(attrs, call, rs.conversation)
                if len(rs.chat_attrs) < 16:
                    rs.chat_attrs[(model, provider)] = plain
            attrs = plain
        elif call.options or call.purpose != "step" or rs is not None:
            attrs = _request_attrs(attrs, call, rs.conversation if rs is not None else None)
        span = self._tracer.start_span(name, context=parent, kind=_CLIENT, attributes=attrs)
        if rs is not None:
            rs.last_chat, rs.last_chat_fields = span, None
        if self.capture_content and span.is_recording():
            self._request_content(span, call, rs)
        ctx = trace.set_span_in_context(span)
        if self.suppress_provider_spans:
            ctx = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, ctx)
        token = otel_context.attach(ctx)
        if rs is not None:
            rs.live += 1
        return span, token, rs

    def _chat_parent(self, run: Any, rs: _RunSpans, call: Any) -> Any:
        """The chat span's parent: the step the call is for (opened here), or for a side call (a
        compaction summary) the open step, else the run."""
        if rs.described is None:
            rs.described = _descriptions(call.tools)
        if call.purpose != "step":
            step = rs.steps.get(rs.prompt) if rs.prompt is not None else None
            return step.ctx if step is not None else rs.ctx
        rs.tool_spans.clear()  # a new response: the previous one's tool calls are all done
        rs.tool_fields.clear()
        step = rs.steps.get(call.step)
        if step is None:
            step = self._open_step(rs, call.step)
            if step.span_id:
                run.span_id = step.span_id
        rs.prompt = call.step
        return step.ctx

    def _chat_start_attrs(self, model: str | None, provider: str | None) -> tuple[str, dict[str, Any]]:
        """The span name and the attributes every chat span of this model and provider starts with
        (cached, for a bounded number of names: a backend may send any model name)."""
        key = (model, provider)
        attrs = self._chat_attrs.get(key)
        if attrs is not None:
            return self._chat_names[key], attrs
        attrs = {_OP: _CHAT}
        if provider:
            attrs[_PROVIDER] = provider
        if model:
            attrs[_REQ_MODEL] = model
        name = f"chat {model}" if model else "chat"
        if len(self._chat_attrs) < _MAX_NAMES:
            self._chat_attrs[key] = attrs
            self._chat_names[key] = name
        return name, attrs

    def _request_content(self, span: Any, call: Any, rs: _RunSpans | None) -> None:
        system, messages = self._prompt_content(call, rs)
        if system is not None:
            span.set_attribute(_SYSTEM, system)
        span.set_attribute(_INPUT, messages)
        if call.tools:
            span.set_attribute(
                N.GEN_AI_TOOL_DEFINITIONS, self._content([{"type": "function", **t} for t in call.tools])
            )

    def _prompt_content(self, call: Any, rs: _RunSpans | None) -> tuple[str | None, str]:
        """The call's system instructions (None: it has none) and input messages, as attribute values. In
        a run, each message is converted, redacted and encoded once (:class:`_Capture`); the value is what
        converting the whole transcript would give."""
        capture = rs.capture.get(call.purpose) if rs is not None else None
        if capture is None and rs is not None and len(rs.capture) < 8:  # purposes: a handful per run
            capture = rs.capture[call.purpose] = _Capture()
        if capture is not None:
            with capture.lock:
                out = capture.texts(call.messages, self._redact, self.max_content_chars)
            if out is not None:
                return out
        system, messages = semconv.messages(call.messages)
        return (self._content(system) if system else None), self._content(messages)

    def _chat_done(self, span: Any, call: Any, response: Any) -> None:
        if not span.is_recording():
            return
        if not isinstance(response, LLMResponse):
            span.set_attribute(_ERROR_TYPE, "invalid_response")
            span.set_status(Status(StatusCode.ERROR, f"the backend returned {type(response).__name__}"))
            return
        attrs: dict[str, Any] = {}
        if response.model:  # the server's text: through the (cached) redactor, like a tool name
            attrs[_RESP_MODEL] = self._tool_name(response.model)
        if response.response_id:
            attrs[_RESP_ID] = response.response_id
        if response.finish_reason:
            attrs[_FINISH] = (response.finish_reason,)
        usage = call.usage  # the facts the loop wrote on the call (nothing is computed here)
        if usage is not None:
            attrs[_IN_TOK] = usage.input_tokens
            attrs[_OUT_TOK] = usage.output_tokens
            if usage.cached_input_tokens:
                attrs[_CACHED_TOK] = usage.cached_input_tokens
            if usage.reasoning_tokens:
                attrs[_REASONING_TOK] = usage.reasoning_tokens
        if call.cost_usd is not None:
            attrs[N.COST_USD] = call.cost_usd  # this call's own cost (summable over chat spans)
        if call.attempt > 1:
            attrs[N.LLM_ATTEMPT] = call.attempt
        if response.provider and response.provider != call.provider:
            attrs[_PROVIDER] = response.provider
        if response.server_address:
            attrs[_SERVER] = response.server_address
            if response.server_port:
                attrs[_PORT] = response.server_port
        if call.ttfc_ms is not None:
            attrs[_TTFC] = call.ttfc_ms / 1000.0
        if self.capture_content:
            attrs[_OUTPUT] = self._content([semconv.output(response)])
        span.set_attributes(attrs)

    def _chat_failed(self, span: Any, call: Any, exc: BaseException) -> None:
        if not span.is_recording():
            return
        error_type = call.error_type
        if not error_type:  # not a fact of the call (a hook between us and the model raised)
            kind = getattr(exc, "kind", None)
            error_type = kind if isinstance(kind, str) and kind else _qualified(exc)
        attrs: dict[str, Any] = {_ERROR_TYPE: error_type}
        if call.attempt > 1:
            attrs[N.LLM_ATTEMPT] = call.attempt
        span.set_attributes(attrs)
        self._record_exception(span, exc)
        span.set_status(Status(StatusCode.ERROR, self._error_text(f"{type(exc).__name__}: {exc}")))

    # -- tools --------------------------------------------------------------------------------------

    def wrap_tool(self, tool_call: Any, call_next: Callable[[Any], Any]) -> Any:
        return self._around(self._start_tool, self._tool_failed, self._tool_done, call_next, tool_call)

    async def awrap_tool(self, tool_call: Any, call_next: Callable[[Any], Any]) -> Any:
        return await self._aaround(self._start_tool, self._tool_failed, self._tool_done, call_next, tool_call)

    def _start_tool(self, tool_call: Any) -> tuple[Any, Any, _RunSpans | None]:
        run = current_run()
        rs = self._rs(run)
        parent = None
        if rs is not None:
            step = self._step_for(rs, tool_call)
            parent = step.ctx if step is not None else rs.ctx
        attrs = self._tool_span_attrs(rs, tool_call)
        span_name = self._tool_names.get(tool_call.tool) or f"execute_tool {attrs[_TOOL]}"
        span = self._tracer.start_span(span_name, context=parent, kind=_INTERNAL, attributes=attrs)
        if rs is not None and tool_call.id:
            rs.tool_spans[tool_call.id] = span
        if self.capture_content and span.is_recording():
            span.set_attribute(_TOOL_ARGS, self._content(tool_call.args))
        token = otel_context.attach(trace.set_span_in_context(span))
        if rs is not None:
            rs.live += 1
        return span, token, rs

    def _tool_span_attrs(self, rs: _RunSpans | None, tool_call: Any) -> dict[str, Any]:
        """The attributes an ``execute_tool`` span starts with (a fresh dict)."""
        name = tool_call.tool
        attrs = self._tool_attrs.get(name)
        if attrs is None:
            safe = self._tool_name(name)
            attrs = {_OP: _EXECUTE_TOOL, _TOOL: safe, _TOOL_TYPE: "function"}
            if len(self._tool_attrs) < _MAX_NAMES:
                self._tool_attrs[name] = attrs
                self._tool_names[name] = f"execute_tool {safe}"
        attrs = dict(attrs)
        if tool_call.id:
            attrs[_CALL_ID] = tool_call.id
        description = rs.described.get(name) if rs is not None and rs.described else None
        if description:
            attrs[_TOOL_DESCRIPTION] = description
        return attrs

    def _tool_name(self, name: str) -> str:
        """A tool name as telemetry writes it: through the redactor (the model may invent any name)."""
        safe = self._safe_names.get(name)
        if safe is None:
            safe = self._redact(name)[:256]
            if len(self._safe_names) < _MAX_NAMES:
                self._safe_names[name] = safe
        return safe

    @staticmethod
    def _step_for(rs: _RunSpans, tool_call: Any) -> _Step | None:
        number = rs.by_call.pop(tool_call.id, None)
        step = rs.steps.get(number) if number is not None else None
        if step is None or step.tool_started:
            with rs.lock:  # no id match (duplicate or empty ids): the oldest step without a tool yet
                step = next((s for _n, s in sorted(rs.steps.items()) if not s.tool_started), None)
        if step is not None:
            step.tool_started = True
        return step

    def _tool_done(self, span: Any, tool_call: Any, result: Any) -> None:
        if not span.is_recording():
            return
        error = getattr(result, "error", None)
        if error is not None:
            kind = result.error_kind or "tool_error"
            if kind == "unknown_tool":  # a name the model made up: keep span names low-cardinality
                span.update_name("execute_tool")
            span.set_attributes({_ERROR_TYPE: kind, N.TOOL_ERROR_KIND: kind})
            span.set_status(Status(StatusCode.ERROR, self._error_text(error)))
        elif not isinstance(result, ToolResult):
            span.set_attribute(_ERROR_TYPE, "invalid_result")
            span.set_status(Status(StatusCode.ERROR, f"a wrap_tool hook returned {type(result).__name__}"))
            return
        if self.capture_content:
            text = result.text if result.text is not None else (error if error is not None else result.data)
            span.set_attribute(_TOOL_RESULT, self._content(text))

    def _tool_failed(self, span: Any, tool_call: Any, exc: BaseException) -> None:
        if not span.is_recording():
            return
        span.set_attribute(_ERROR_TYPE, _qualified(exc))
        self._record_exception(span, exc)
        span.set_status(Status(StatusCode.ERROR, self._error_text(f"{type(exc).__name__}: {exc}")))

    # -- events -------------------------------------------------------------------------------------

    def on_llm_retry(self, state: Any, attempt: int, error: BaseException, delay_s: float) -> None:
        target = self._event_target()
        if target is None:
            return
        kind = getattr(error, "kind", None)
        target.add_event(
            N.EV_RETRY,
            {
                N.RETRY_ATTEMPT: attempt,
                N.RETRY_DELAY_S: float(delay_s),
                _ERROR_TYPE: kind if isinstance(kind, str) and kind else _qualified(error),
                _EXC_MESSAGE: self._error_text(str(error)),
            },
        )

    def on_hook_error(self, hook: Any, method: str, error: BaseException) -> None:
        target = self._event_target()
        if target is None:
            return
        target.add_event(
            N.EV_HOOK_ERROR,
            {
                N.HOOK: type(hook).__name__,
                N.HOOK_METHOD: method,
                _EXC_TYPE: _qualified(error),
                _EXC_MESSAGE: self._error_text(str(error)),
            },
        )

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        target = self._event_target(prefer_current=True)
        if target is None:
            return
        if name == "hook.decision":
            attrs = {N.HOOK: str(attributes.get("hook", "")), N.DECISION: str(attributes.get("decision", ""))}
            reason = attributes.get("reason")
            if reason:
                attrs[N.REASON] = self._error_text(str(reason))
            tool = attributes.get("tool")
            if tool:
                attrs[_TOOL] = str(tool)
            target.add_event(N.EV_HOOK_DECISION, attrs)
            return
        event = name if name.startswith("looplet.") else f"looplet.{name}"
        target.add_event(
            event,
            {
                (k if "." in k else f"{event}.{k}"): _attr_value(v, self._redact)
                for k, v in (attributes or {}).items()
            },
        )

    def _event_target(self, prefer_current: bool = False) -> Any:
        run = current_run()
        rs = self._rs(run)
        if rs is None or not rs.recording:
            return None
        if prefer_current:  # an event emitted from inside a tool or LLM call lands on that span
            current = trace.get_current_span()
            sc = current.get_span_context()
            if current.is_recording() and sc.trace_id == rs.span.get_span_context().trace_id:
                return current
        if rs.prompt is not None and rs.prompt in rs.steps:
            return rs.steps[rs.prompt].span
        if rs.steps:
            return rs.steps[max(rs.steps)].span
        return rs.span

    # -- helpers ------------------------------------------------------------------------------------

    def _parent(self, parent: Any) -> Any:
        if parent is None:
            if self.use_env_traceparent and not trace.get_current_span().get_span_context().is_valid:
                tp = os.environ.get("TRACEPARENT")
                if tp:
                    carrier = {"traceparent": tp}
                    ts = os.environ.get("TRACESTATE")
                    if ts:
                        carrier["tracestate"] = ts
                    return self._extract(carrier, "TRACEPARENT")
            return None  # the caller's current context
        if isinstance(parent, otel_context.Context):
            return parent
        if isinstance(parent, str):
            return self._extract({"traceparent": parent}, "parent")
        if isinstance(parent, trace.SpanContext):
            return trace.set_span_in_context(trace.NonRecordingSpan(parent), _EMPTY)
        if isinstance(parent, trace.Span):
            return trace.set_span_in_context(parent, _EMPTY)
        if isinstance(parent, dict):  # a carrier: {"traceparent": ..., "tracestate": ...}
            return self._extract(parent, "parent")
        self._warn_once(
            "parent",
            TypeError(
                f"parent must be a traceparent string or an OpenTelemetry Context, "
                f"got {type(parent).__name__}; starting a new trace"
            ),
        )
        return _EMPTY

    def _extract(self, carrier: dict[str, str], what: str) -> Any:
        ctx = _PROPAGATOR.extract(carrier, context=_EMPTY)
        if not trace.get_current_span(ctx).get_span_context().is_valid:
            self._warn_once(
                what,
                ValueError(
                    f"{what} {carrier.get('traceparent')!r} is not a valid W3C "
                    "traceparent; starting a new trace"
                ),
            )
            return _EMPTY
        return ctx

    def _links(self, links: Any) -> list[Any]:
        out = []
        for item in links or ():
            ctx = self._parent(item) if item is not None else None
            sc = trace.get_current_span(ctx).get_span_context() if ctx is not None else None
            if sc is not None and sc.is_valid:
                out.append(Link(sc))
        return out

    def _content(self, value: Any) -> str:
        """Redacted JSON of ``value``, cut to ``max_content_chars`` (strings are kept as they are, cut)."""
        if isinstance(value, str):
            text = self._redact(value)
            if len(text) > self.max_content_chars:
                text = _clip(text, self.max_content_chars - 32)
            return text
        data = _redact_json(value, self._redact)
        return cap_json(data, self.max_content_chars)

    def _error_text(self, text: str | None) -> str:
        if not text:
            return ""
        text = self._redact(text)
        return text if len(text) <= _MAX_ERROR_CHARS else _clip(text, _MAX_ERROR_CHARS)

    def _record_exception(self, span: Any, exc: BaseException) -> None:
        try:
            stack = "".join(traceback.format_exception(exc))
        except Exception:
            stack = ""
        span.record_exception(
            exc,
            attributes={_EXC_MESSAGE: self._error_text(str(exc)), _STACKTRACE: self._redact(stack)},
            escaped=True,
        )

    def _warn_once(self, what: str, exc: BaseException) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("TracingHook: %s (%s); this is reported once", exc, what)


# -- trace context for the other telemetry hooks ---------------------------------------------------


def trace_fields(run: Any, kind: str = "line", step: Any = None) -> dict[str, str] | None:
    """``{"trace_id": ..., "span_id": ...}`` in hex for a log line or an exemplar about ``run``, or None.
    The dict may be shared by several lines and exemplars: read it, never change it.

    kind: ``"chat"`` (the latest LLM attempt's chat span), ``"tool"`` (the execute_tool span of
    ``step``'s call, made now if the call never ran), ``"run"`` (the invoke_agent span), ``"line"`` (the
    current span while one of the run's LLM calls or tools is running, else the run's span).
    The spans are those of the run's ``TracingHook``; the run span is started by whoever asks first, so
    the answer does not depend on the order of the hooks. Without a ``TracingHook`` in the run: the
    current OpenTelemetry span, if any (one the application made)."""
    hook = _tracing_hook(run)
    if hook is None:
        return current_fields()
    try:
        return hook._fields(run, kind, step)
    except Exception:  # a fault of the TracingHook (its redactor, a span processor): it reports it itself
        return None


def trace_ids(run: Any, kind: str = "line", step: Any = None) -> tuple[str, str] | None:
    """:func:`trace_fields` as ``(trace_id, span_id)``."""
    fields = trace_fields(run, kind, step)
    return (fields["trace_id"], fields["span_id"]) if fields else None


def current_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry span's ``(trace_id, span_id)`` in hex, or None."""
    sc = trace.get_current_span().get_span_context()
    return (format(sc.trace_id, "032x"), format(sc.span_id, "016x")) if sc.is_valid else None


def current_fields() -> dict[str, str] | None:
    """The current OpenTelemetry span's ids as ``{"trace_id": ..., "span_id": ...}``, or None."""
    sc = trace.get_current_span().get_span_context()
    return (
        {"trace_id": format(sc.trace_id, "032x"), "span_id": format(sc.span_id, "016x")}
        if sc.is_valid
        else None
    )


def _fields_of(span: Any, rs: _RunSpans) -> dict[str, str] | None:
    """A span's ids as fields; the trace id formatted once per run (a span of the run is in its trace)."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    trace_id = (
        rs.ids[0] if rs.ids is not None and sc.trace_id == rs.trace_int else format(sc.trace_id, "032x")
    )
    return {"trace_id": trace_id, "span_id": format(sc.span_id, "016x")}


_FOUND = object()  # run.scratch key: the run's TracingHook (or None), looked up once per run


def _tracing_hook(run: Any) -> TracingHook | None:
    if run is None:
        return None
    cached = run.scratch.get(_FOUND, _FOUND)
    if cached is not _FOUND:
        return cached if isinstance(cached, TracingHook) else None
    found: TracingHook | None = None
    for hook in getattr(getattr(run, "hooks", None), "hooks", ()) or ():
        if isinstance(hook, TracingHook):
            found = hook
            break
    run.scratch[_FOUND] = found
    return found


# -- content helpers ------------------------------------------------------------------------------


def _qualified(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


def _clip(text: str, n: int) -> str:
    n = max(n, 0)
    return f"{text[:n]}…[+{len(text) - n} chars]" if len(text) > n else text


def _redact_json(value: Any, redact: Callable[[str], str]) -> Any:
    fn = getattr(redact, "redact_json", None)
    if fn is not None:
        return fn(value)
    return _walk(value, redact, 0)


def _walk(value: Any, redact: Callable[[str], str], depth: int) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth > 64:
        return "…"
    if isinstance(value, dict):
        return {str(k): _walk(v, redact, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, redact, depth + 1) for v in value]
    if hasattr(value, "to_dict"):
        return _walk(value.to_dict(), redact, depth + 1)
    return redact(repr(value))


# json.dumps(value, ensure_ascii=False, default=repr, separators=(",", ":")), without a new encoder per call
_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, default=repr, separators=(",", ":")
).encode
_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # what _dumps makes of a str


def _clip_strings(value: Any, n: int) -> Any:
    if isinstance(value, str):
        return _clip(value, n)
    if isinstance(value, dict):
        return {k: _clip_strings(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_strings(v, n) for v in value]
    return value


def _longest(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((_longest(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest(v) for v in value), default=0)
    return 0


def cap_json(value: Any, limit: int) -> str:
    """JSON of ``value`` in at most ``limit`` characters, still valid JSON: long strings are cut first
    (``…[+N chars]``); if that is not enough, the oldest items of a top-level list are dropped and a
    ``{"truncated": N}`` marker takes their place."""
    text = _dumps(value)
    if len(text) <= limit:
        return text
    lo, hi = 0, _longest(value)
    best: str | None = None
    while lo <= hi:  # the longest per-string length that fits
        mid = (lo + hi) // 2
        candidate = _dumps(_clip_strings(value, mid))
        if len(candidate) <= limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if best is not None and lo > 64:
        return best
    if isinstance(value, list) and value:
        items = _clip_strings(value, 256)
        lo, hi, fit = 1, len(items), None
        while lo <= hi:  # the fewest oldest items to drop (a search: one encoding per try, not per item)
            drop = (lo + hi) // 2
            candidate = _dumps([{"truncated": drop}] + items[drop:])
            if len(candidate) <= limit:
                fit, hi = candidate, drop - 1
            else:
                lo = drop + 1
        if fit is not None:
            return fit
    if best is not None:
        return best
    return _dumps({"truncated": len(text)}) if limit >= 24 else "{}"


_LONG = 64  # strings longer than this are kept aside per item, to measure it cut without encoding it


def _stats(value: Any, longs: list[tuple[int, int, str]]) -> tuple[int, int]:
    """(the fewest characters ``_dumps(_clip_strings(value, n))`` can have for any ``n``, ``_longest(value)``);
    the strings ``_clip_strings`` would cut that are longer than ``_LONG`` go in ``longs`` as (length,
    encoded length, string). A string cut to ``n`` is ``n`` characters and ``…[+k chars]`` (11 or more)
    in quotes, so a string is at least ``min(len + 2, 13)``; keys are never cut."""
    if isinstance(value, str):
        n = len(value)
        if n > _LONG:
            longs.append((n, len(_encode_str(value)), value))
        return min(n + 2, 13), n
    if isinstance(value, dict):
        floor, longest = 1 + max(len(value), 1), 0  # braces and commas
        for k, v in value.items():
            f, g = _stats(v, longs)
            floor += f + 1 + (len(k) + 2 if isinstance(k, str) else 2)
            longest = max(longest, g)
        return floor, longest
    if isinstance(value, list):
        floor, longest = 1 + max(len(value), 1), 0
        for v in value:
            f, g = _stats(v, longs)
            floor += f
            longest = max(longest, g)
        return floor, longest
    return len(_dumps(value)), 0  # left as it is by _clip_strings (a number, None, a tuple, ...)


class _Capped:
    """A list of redacted JSON values (a prompt's messages or system parts) that grows at its end, with
    :meth:`text` equal to ``cap_json(items, limit)`` at a cost set by the limit and the new items, not by
    the list's length. ``cap_json`` searches for the longest per-string length ``n`` that fits, then for the
    fewest oldest items to drop (their strings cut to 256): it encodes the whole list for every try. Here
    each item is encoded once; a try sums the items' lengths with their strings cut to ``n`` (measured
    from their long strings, kept per ``n`` as sums over the first items from one call to the next) and
    stops as soon as the sum passes the limit, the items not measured yet counted at the fewest characters
    they can have. Only the answer is encoded. The searches are ``cap_json``'s own, step by step."""

    __slots__ = ("items", "enc", "floor", "longest", "longs", "pe", "pf", "pm", "sums", "texts", "shapes")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.enc: list[str] = []  # _dumps of each item
        self.floor: list[int] = []  # its fewest characters, its strings cut to any length (_stats)
        self.longest: list[int] = []  # its longest string
        self.longs: list[list[tuple[int, int, str]]] = []  # its strings longer than _LONG, longest first
        self.pe = [0]  # sums over the first i items of: their encoded lengths,
        self.pf = [0]  # their floors,
        self.pm = [0]  # and the longest string among them
        self.sums: dict[int, list[int]] = {}  # n -> sums over the first items of len(cut to n) + 1
        self.texts: dict[int, list[str]] = {}  # n -> the first items encoded cut to n
        self.shapes: dict[int, tuple[list[str], list[str]] | None] = {}  # item -> _shape(item)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` items."""
        for a in (self.items, self.enc, self.floor, self.longest, self.longs):
            del a[n:]
        for p in (self.pe, self.pf, self.pm, *self.sums.values()):
            del p[n + 1 :]
        for t in self.texts.values():
            del t[n:]
        for i in [i for i in self.shapes if i >= n]:
            del self.shapes[i]

    def add(self, items: list[Any]) -> None:
        for item in items:  # each item measured whole before it is kept
            e = _dumps(item)
            longs: list[tuple[int, int, str]] = []
            f, g = _stats(item, longs)
            longs.sort(key=lambda x: -x[0])
            self.items.append(item)
            self.enc.append(e)
            self.floor.append(f)
            self.longest.append(g)
            self.longs.append(longs)
            self.pe.append(self.pe[-1] + len(e))
            self.pf.append(self.pf[-1] + f)
            self.pm.append(max(self.pm[-1], g))

    def text(self, limit: int) -> str:
        """``cap_json(self.items, limit)``."""
        n = len(self.items)
        total = self.pe[n] + n + 1 if n else 2  # len(_dumps(items))
        if total <= limit:
            return "[" + ",".join(self.enc) + "]"
        if len(self.sums) > 64:  # lengths tried by earlier calls, no longer tried: forget them
            self.sums = {}
        lo, hi = 0, self.pm[n]
        best: int | None = None
        # the longest per-string length that fits; once under 64 it cannot be the answer (``lo > 64``)
        while lo <= hi and (hi >= 64 or not n):
            mid = (lo + hi) // 2
            if self._fits(mid, limit):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is not None and lo > 64:
            return "[" + ",".join(self._texts(best)) + "]"
        if n:  # (always found: dropping every item leaves the marker, which fits)
            drop = self._drop(limit)
            if drop is not None:
                return ",".join([f"[{_dumps({'truncated': drop})}", *self._texts(256)[drop:]]) + "]"
        if best is not None:
            return "[" + ",".join(self._texts(best)) + "]"
        return _dumps({"truncated": total}) if limit >= 24 else "{}"

    def _fits(self, mid: int, limit: int) -> bool:
        """Whether ``_dumps(_clip_strings(items, mid))`` has at most ``limit`` characters."""
        n = len(self.items)
        if mid < self.pm[n] and n + 1 + mid + 13 > limit:  # a string cut to mid is too long by itself
            return False
        if n + 1 + self.pf[n] > limit:  # even with every item at its fewest characters
            return False
        sums = self._measure(mid, limit)
        return len(sums) > n and 1 + sums[n] <= limit

    def _measure(self, cut: int, limit: int | None = None) -> list[int]:
        """Sums over the first items of their lengths + 1, their strings cut to ``cut``: up to the end, or
        (``limit``) until the list is sure to be longer than ``limit``."""
        sums = self.sums.get(cut)
        if sums is None:
            sums = self.sums[cut] = [0]
        n, pf, enc, longest = len(self.items), self.pf, self.enc, self.longest
        # the list is 1 + its items' lengths + 1 each, the items not measured yet at their fewest characters:
        # sums[i] + pf[n] - pf[i] + n - i + 1, more than limit once sums[i] - pf[i] - i is more than bound
        bound = limit - pf[n] - n - 1 if limit is not None else None
        for i in range(len(sums) - 1, n):
            if bound is not None and sums[i] - pf[i] - i > bound:
                break
            sums.append(sums[i] + (len(enc[i]) if longest[i] <= cut else self._cut_size(i, cut)) + 1)
        return sums

    def _cut_size(self, i: int, cut: int) -> int:
        """``len(_dumps(_clip_strings(items[i], cut)))``."""
        if cut < _LONG:  # strings not kept aside are cut too
            return len(_dumps(_clip_strings(self.items[i], cut)))
        size = len(self.enc[i])
        for n, width, s in self.longs[i]:
            if n <= cut:
                break
            head = cut + 2 if width == n + 2 else len(_encode_str(s[:cut]))  # nothing escaped: no encoding
            size += head + 10 + len(str(n - cut)) - width  # "…[+" n - cut " chars]"
        return size

    def _texts(self, cut: int) -> list[str]:
        """The items encoded with their strings cut to ``cut``."""
        texts = self.texts.get(cut)
        if texts is None:  # the latest answer and the 256 cut: an earlier answer is not needed again
            self.texts = {k: v for k, v in self.texts.items() if k == 256}
            texts = self.texts[cut] = []
        items, enc, longest = self.items, self.enc, self.longest
        for i in range(len(texts), len(items)):
            texts.append(enc[i] if longest[i] <= cut else self._cut_text(i, cut))
        return texts

    def _cut_text(self, i: int, cut: int) -> str:
        """``_dumps(_clip_strings(items[i], cut))``, from the item's encoding cut at its long strings."""
        shape = None
        if cut >= _LONG:  # shorter strings are cut too
            shape = self.shapes[i] if i in self.shapes else _shape(self.items[i], self.longs[i])
            self.shapes[i] = shape
        if shape is None:
            return _dumps(_clip_strings(self.items[i], cut))
        chunks, strings = shape
        out = [chunks[0]]
        for s, chunk in zip(strings, chunks[1:], strict=True):
            out.append(_encode_str(_clip(s, cut)) if len(s) > cut else _encode_str(s))
            out.append(chunk)
        return "".join(out)

    def _drop(self, limit: int) -> int | None:
        """The fewest oldest items to drop for the rest, cut to 256 characters a string, and a
        ``{"truncated": N}`` marker to fit (``cap_json``'s search, on summed lengths)."""
        n = len(self.items)
        pc = self._measure(256)
        lo, hi, fit = 1, n, None
        while lo <= hi:
            drop = (lo + hi) // 2
            if len(f'{{"truncated":{drop}}}') + 2 + pc[n] - pc[drop] <= limit:  # the marker, [], the rest
                fit, hi = drop, drop - 1
            else:
                lo = drop + 1
        return fit


_SLOT = f"@@{os.urandom(8).hex()}:"  # a long string's place in an item's encoding (:func:`_shape`)
_SLOTS = re.compile(f'"{_SLOT}(\\d+)@@"')


def _shape(item: Any, longs: list[tuple[int, int, str]]) -> tuple[list[str], list[str]] | None:
    """``item``'s encoding as the text between its strings longer than ``_LONG`` and those strings
    (``chunks[0] + enc(strings[0]) + chunks[1] + ...``), so cutting them costs no walk of the item; None
    when it has none, or when the marks put in their place cannot be told from the item's own text."""
    if not longs:
        return None
    strings: list[str] = []

    def mark(value: Any) -> Any:  # _clip_strings' walk
        if isinstance(value, str):
            if len(value) <= _LONG:
                return value
            strings.append(value)
            return f"{_SLOT}{len(strings) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    parts = _SLOTS.split(_dumps(mark(item)))
    order = [int(x) for x in parts[1::2]]
    if sorted(order) != list(range(len(strings))):  # the item's own text holds a mark: no shortcut
        return None
    return parts[0::2], [strings[k] for k in order]


class _Capture:
    """One run's prompts (of one call purpose) as content attributes: each message converted
    (:class:`looplet.telemetry.messages.Transcript`), redacted and encoded once, while the transcript only
    grows; from the first replaced message on when a hook replaced some; all of it again when a secret was
    added to the redactor's list since (its earlier output may hold it). The redactor is taken to give the
    same text for the same string (looplet's ``Redactor`` does, between two added secrets)."""

    __slots__ = ("transcript", "system", "messages", "version", "lock", "broken")

    def __init__(self) -> None:
        self.transcript = semconv.Transcript()
        self.system = _Capped()
        self.messages = _Capped()
        self.version = secrets_version()
        self.lock = threading.Lock()
        self.broken = False  # a redactor whose redact_json does not map a list item by item

    def texts(self, messages: Any, redact: Callable[[str], str], limit: int) -> tuple[str | None, str] | None:
        """The values of ``gen_ai.system_instructions`` (None: no system part) and ``gen_ai.input.messages``
        for a call with ``messages``; None when they cannot be kept encoded (then convert them whole)."""
        if self.broken:
            return None
        t = self.transcript
        kept_system, kept_messages = t.update(messages)
        version = secrets_version()
        if version != self.version:
            self.version, kept_system, kept_messages = version, 0, 0
        synced = _sync(self.system, t.system, kept_system, redact)
        if not (synced and _sync(self.messages, t.messages, kept_messages, redact)):
            self.broken = True
            return None
        return (self.system.text(limit) if t.system else None), self.messages.text(limit)


def _sync(capped: _Capped, converted: list[Any], kept: int, redact: Callable[[str], str]) -> bool:
    """``capped`` made the redacted ``converted``, of which the first ``kept`` it holds already."""
    if kept < len(capped.items):
        capped.truncate(kept)
    new = converted[len(capped.items) :]
    if new:
        redacted = _redact_json(new, redact)  # item by item as the whole list would be
        if not isinstance(redacted, list) or len(redacted) != len(new):
            return False
        capped.add(redacted)
    return True


def _request_attrs(base: dict[str, Any], call: Any, conversation: str | None) -> dict[str, Any]:
    """A chat span's start attributes: ``base`` plus this run's conversation and the call's options."""
    attrs = dict(base)
    if conversation is not None:
        attrs[_CONVERSATION] = conversation
    options = call.options
    if options:
        if "temperature" in options:
            attrs[_TEMPERATURE] = options["temperature"]
        if "max_tokens" in options:
            attrs[_MAX_TOKENS] = options["max_tokens"]
        if options.get("stream"):
            attrs[_STREAM] = True
    if call.purpose != "step":
        attrs[N.LLM_PURPOSE] = call.purpose
    return attrs


def _message(role: str, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    """One message in the semantic conventions' shape (``gen_ai.input.messages``/``output.messages``)."""
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        msg["finish_reason"] = finish_reason
    return msg


def _task_text(task: Any) -> str:
    """The task as one user message: its goal, or the task as JSON when it holds more than a goal."""
    if isinstance(task, dict) and set(task) == {"goal"}:
        return str(task["goal"])
    return _dumps(task)


def _descriptions(tools: Any) -> dict[str, str]:
    """Tool name -> description from the tool schemas sent with an LLM call (neutral or OpenAI shape)."""
    out: dict[str, str] = {}
    for schema in tools or ():
        if not isinstance(schema, dict):
            continue
        inner = schema.get("function")
        fn: dict[str, Any] = inner if isinstance(inner, dict) else schema
        name, description = fn.get("name"), fn.get("description")
        if isinstance(name, str) and isinstance(description, str) and description:
            out[name] = description[:1000]
    return out


def _attr_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value)[:_MAX_ERROR_CHARS]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return [redact(v) if isinstance(v, str) else v for v in value]
    return redact(_dumps(value))[:_MAX_ERROR_CHARS]
