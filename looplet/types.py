"""The data the loop produces: tool calls, results, usage, steps and the run's result.

Everything here is plain data with ``__slots__``; ``to_dict()`` gives a JSON-safe copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from looplet.compat import (
    TOOL_CALL_KEYWORDS,
    TOOL_RESULT_KEYWORDS,
    LegacyRunResult,
    LegacyStep,
    LegacyToolCall,
    LegacyToolResult,
    module_getattr,
    set_old_keywords,
)

__all__ = ["Usage", "ToolCall", "ToolResult", "LLMResponse", "LLMCall", "Step", "RunResult", "STOP_REASONS"]

#: Every run ends with exactly one of these (``hook_stop`` carries ``:<reason>``). ``timeout``: the run
#: outlived ``LoopConfig.run_timeout_s``. ``error``: a bug (in looplet or in code it calls outside the
#: guarded paths); the run is torn down, then the exception is raised with its traceback.
STOP_REASONS = (
    "done",
    "max_steps",
    "hook_stop",
    "cancelled",
    "llm_error",
    "awaiting_approval",
    "hook_error",
    "timeout",
    "error",
)


@dataclass(slots=True)
class Usage:
    """Token counts of one LLM call, or totals over several."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage | None) -> Usage:
        if other is None:
            return Usage(
                self.input_tokens, self.output_tokens, self.cached_input_tokens, self.reasoning_tokens
            )
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def add(self, other: Usage | None) -> None:
        """Add ``other`` into this object in place."""
        if other is not None:
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.cached_input_tokens += other.cached_input_tokens
            self.reasoning_tokens += other.reasoning_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Usage | None:
        if d is None:
            return None
        return cls(
            int(d.get("input_tokens", 0)),
            int(d.get("output_tokens", 0)),
            int(d.get("cached_input_tokens", 0)),
            int(d.get("reasoning_tokens", 0)),
        )


@dataclass(slots=True, init=False)
class ToolCall(LegacyToolCall):
    """A tool call proposed by the model."""

    tool: str
    args: dict[str, Any]
    id: str
    reasoning: str | None

    # Written out (not the dataclass's) so that 0.4.1's keywords (call_id=, metadata=: looplet.compat)
    # cost a record the loop builds every step nothing: a wrapper around __init__ cost ~4k instructions.
    def __init__(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        id: str = "",
        reasoning: str | None = None,
        **old: Any,
    ) -> None:
        self.tool = tool
        self.args = {} if args is None else args
        self.id = id
        self.reasoning = reasoning
        if old:
            set_old_keywords(self, "ToolCall", TOOL_CALL_KEYWORDS, old)

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": _json_safe(self.args), "id": self.id, "reasoning": self.reasoning}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(d["tool"], dict(d.get("args") or {}), d.get("id", ""), d.get("reasoning"))


@dataclass(slots=True, init=False)
class ToolResult(LegacyToolResult):
    """What a tool gave back. ``error`` is set (and ``data`` is None) when the call failed.

    ``error_kind`` is one of ``unknown_tool``, ``missing_argument``, ``unexpected_argument``,
    ``invalid_argument``, ``tool_exception``, ``timeout``, ``unserializable_result``, ``denied``,
    ``done_rejected``, ``not_run`` (or any string a hook chooses). ``text`` is what the model is shown.

    A tool that made LLM calls of its own (a sub-agent, see ``looplet.subagents``) reports them in
    ``usage``, ``cost_usd`` and ``children`` (its Steps): the loop adds them to the run's totals and the
    Step's cost and hangs the children under the Step.
    """

    data: Any
    error: str | None
    error_kind: str | None
    duration_ms: float
    text: str | None
    usage: Usage | None
    cost_usd: float | None
    children: list[Step]

    # Written out for the reason ToolCall's is (0.4.1's tool=, args_summary=, ...: looplet.compat).
    def __init__(
        self,
        data: Any = None,
        error: str | None = None,
        error_kind: str | None = None,
        duration_ms: float = 0.0,
        text: str | None = None,
        usage: Usage | None = None,
        cost_usd: float | None = None,
        children: list[Step] | None = None,
        **old: Any,
    ) -> None:
        self.data = data
        self.error = error
        self.error_kind = error_kind
        self.duration_ms = duration_ms
        self.text = text
        self.usage = usage
        self.cost_usd = cost_usd
        self.children = [] if children is None else children
        if old:
            set_old_keywords(self, "ToolResult", TOOL_RESULT_KEYWORDS, old)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": _json_safe(self.data),
            "error": self.error,
            "error_kind": self.error_kind,
            "duration_ms": round(self.duration_ms, 3),
            **({"usage": self.usage.to_dict()} if self.usage is not None else {}),
            **({"cost_usd": self.cost_usd} if self.cost_usd is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolResult:
        return cls(
            d.get("data"),
            d.get("error"),
            d.get("error_kind"),
            float(d.get("duration_ms", 0.0)),
            usage=Usage.from_dict(d.get("usage")),
            cost_usd=d.get("cost_usd"),
        )


@dataclass(slots=True)
class LLMResponse:
    """One answer of a backend. ``tool_calls`` are native tool calls; ``text`` any prose."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    provider: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    time_to_first_chunk_s: float | None = None


@dataclass(slots=True)
class LLMCall:
    """One LLM call attempt: the request, and once it has run, the facts about it.

    ``wrap_llm_call`` hooks see it; they may replace ``messages`` or ``options`` before passing the call
    on with ``call_next(call)``.

    The fact fields are written once, by the loop, in the innermost link of the ``wrap_llm_call`` chain
    (the one that calls the backend), before it returns or raises: every around-hook finds them on
    ``call`` right after ``call_next`` returns or raises, and the ``on_llm_call(state, call)`` observers
    get the same object after each attempt. Each attempt (a retry, a failed call) is its own ``LLMCall``.
    Nothing else in looplet computes these numbers; sinks only read them.

    attempt: 1 for the first try of a step's call, 2 for the first retry, ...
    response: the backend's answer (None when the call failed).
    usage, cost_usd: tokens of the answer and their price (None when unknown: never a guess).
    duration_ms: time spent in the backend (0 for a replayed answer).
    ttfc_ms: time to the first streamed chunk (streaming only).
    outcome: ``"pending"`` until the call ran, then ``"ok"`` or ``"error"``.
    error_type: on failure, the error's ``kind`` (``LLMError``: ``http_429``, ...) or its class name.
    response_model: the model the server says answered.
    replayed: the answer was given back by a hook without calling the model (a checkpoint replaying
        calls made before a crash): not an LLM call; sinks do not count it.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    step: int
    model: str | None = None
    provider: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    purpose: str = "step"  # "step" for the loop's own calls, "summarize" for compaction, ...
    attempt: int = 1
    response: LLMResponse | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    duration_ms: float = 0.0
    ttfc_ms: float | None = None
    outcome: str = "pending"
    error_type: str | None = None
    response_model: str | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(slots=True)
class Step(LegacyStep):  # 0.4.1's summary() (looplet.compat)
    """One tool call of a run, with its result and what it cost.

    ``usage``, ``llm_ms`` and ``cost_usd`` belong to the LLM call that proposed the tool call; when one
    response proposes several calls they sit on the first of its Steps only, so sums over steps are exact.
    """

    number: int
    tool_call: ToolCall
    tool_result: ToolResult
    usage: Usage | None = None
    llm_ms: float = 0.0
    tool_ms: float = 0.0
    cost_usd: float | None = None
    model: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    children: list[Step] = field(default_factory=list)
    ttfc_ms: float | None = None  # time to the first streamed chunk of the LLM call (streaming only)

    @property
    def ok(self) -> bool:
        return self.tool_result.error is None

    def pretty(self, width: int = 100) -> str:
        """One line: ``#3 ✓ search(query='x') → results: 2 items [41ms]``.

        Arguments and summary share ``width``; each argument value may use up to half of it (so a wider
        line shows longer arguments). An error is the cause the reader looks for: arguments longer than 24
        characters give way to its message (which keeps at least two thirds of the room), and the
        ``Tool NAME raised`` prefix the line already says is dropped.
        """
        call, res = self.tool_call, self.tool_result
        if res.error is not None:
            message = res.error.removeprefix(f"Tool {call.tool} raised ")
            summary = f"ERROR: {message}"
        else:
            summary = summarize(res.data)
        lead = f"#{self.number} {'✓' if res.error is None else '✗'} {call.tool}("
        tail = f" [{self.llm_ms + self.tool_ms:.0f}ms]"
        budget = max(24, width - len(lead) - len(tail) - 4)  # 4: ") → "
        args = ", ".join(f"{k}={_short(repr(v), max(30, budget // 2))}" for k, v in call.args.items())
        share = max(budget // 3, min(len(args), 24)) if res.error is not None else budget // 2
        args = _short(args, max(10, min(max(share, budget - len(summary)), budget - 12)))  # summary keeps 12
        return f"{lead}{args}) → {_short(summary, budget - len(args))}{tail}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "number": self.number,
            "tool_call": self.tool_call.to_dict(),
            "tool_result": self.tool_result.to_dict(),
            "usage": self.usage.to_dict() if self.usage else None,
            "llm_ms": round(self.llm_ms, 3),
            "tool_ms": round(self.tool_ms, 3),
            "cost_usd": self.cost_usd,
            "model": self.model,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }
        if self.ttfc_ms is not None:
            d["ttfc_ms"] = round(self.ttfc_ms, 3)
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(
            number=int(d["number"]),
            tool_call=ToolCall.from_dict(d["tool_call"]),
            tool_result=ToolResult.from_dict(d["tool_result"]),
            usage=Usage.from_dict(d.get("usage")),
            llm_ms=float(d.get("llm_ms", 0.0)),
            tool_ms=float(d.get("tool_ms", 0.0)),
            cost_usd=d.get("cost_usd"),
            model=d.get("model"),
            trace_id=d.get("trace_id"),
            span_id=d.get("span_id"),
            children=[cls.from_dict(c) for c in d.get("children", ())],
            ttfc_ms=d.get("ttfc_ms"),
        )


@dataclass(slots=True)
class RunResult(LegacyRunResult):
    """How a run ended. ``stop_reason`` is one of :data:`STOP_REASONS` (``hook_stop:<reason>``).

    ``usage``, ``cost_usd``, ``llm_calls`` and ``llm_errors`` are summed from the :class:`LLMCall` records
    of the run (plus what tools that ran LLM calls of their own report on their ``ToolResult``):
    ``llm_calls`` counts answered calls, ``llm_errors`` failed attempts (retried or not); answers a hook
    replayed (``LLMCall.replayed``) are neither. A sink that counts ``on_llm_call`` events with
    ``replayed=False`` gets ``llm_calls + llm_errors``.
    """

    stop_reason: str
    steps: list[Step]
    usage: Usage
    cost_usd: float | None
    duration_ms: float
    final_output: Any = None
    error: str | None = None
    run_id: str = ""
    trace_id: str | None = None
    llm_calls: int = 0
    llm_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop_reason": self.stop_reason,
            "steps": len(self.steps),
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "duration_ms": round(self.duration_ms, 3),
            "final_output": _json_safe(self.final_output),
            "error": self.error,
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "llm_calls": self.llm_calls,
            "llm_errors": self.llm_errors,
        }


def summarize(data: Any) -> str:
    """A short human summary of a tool's result, for step lines."""
    if data is None:
        return "None"
    if isinstance(data, str):
        return data.replace("\n", " ")
    if isinstance(data, dict):
        if len(data) == 1:
            ((k, v),) = data.items()
            if isinstance(v, (list, tuple)):
                return f"{k}: {len(v)} items"
            return f"{k}: {summarize(v)}"
        return ", ".join(f"{k}: {_short(repr(v), 24)}" for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return f"{len(data)} items"
    return repr(data)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "…"


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts (unknown objects become their repr; cycles stop at depth 32)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if depth > 32:
        return "…"
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict(), depth + 1)
    return repr(value)


# looplet 0.4.1's names from this module (LLMBackend, DefaultState, ...): deprecated aliases or an error
# naming the 0.5 spelling (looplet.compat)
__getattr__ = module_getattr("looplet.types")
