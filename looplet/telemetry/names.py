"""One table of every name looplet's telemetry uses: spans, attributes, events, metrics, log keys.

GenAI names come from ``opentelemetry-semantic-conventions`` (imported here, never retyped); looplet's own
keys live under ``looplet.*``. Aggregates over a run (token totals, cost) use looplet's keys on the
``invoke_agent`` span so backends that sum ``gen_ai.usage.*`` over a trace do not count them twice.
This module needs the ``otel`` extra; the metrics and logging modules use only its plain-string part.
"""

from __future__ import annotations

from typing import Any

# --- looplet's own span names and attribute keys (plain strings; no third-party import) -------------
STEP_SPAN = "looplet.step"
STEP_NUMBER = "looplet.step.number"
RUN_ID = "looplet.run.id"
STOP_REASON = "looplet.stop_reason"
RUN_STEPS = "looplet.run.steps"
RUN_LLM_CALLS = "looplet.run.llm_calls"
RUN_INPUT_TOKENS = "looplet.usage.input_tokens"
RUN_OUTPUT_TOKENS = "looplet.usage.output_tokens"
RUN_CACHED_TOKENS = "looplet.usage.cached_input_tokens"
RUN_REASONING_TOKENS = "looplet.usage.reasoning_tokens"
COST_USD = "looplet.cost_usd"  # on chat spans: that call; on invoke_agent: the run's total
TOOL_ERROR_KIND = "looplet.tool.error_kind"
STEP_TOOL = "looplet.tool.name"  # on step spans (GenAI-aware UIs read gen_ai.tool.* as a tool span)
TOOL_EXECUTED = "looplet.tool.executed"  # False on the execute_tool span of a call that never ran (denied)
TOOL_DURATION_MS = "looplet.tool.duration_ms"
TASK = "looplet.task"  # content: only with capture on, redacted
FINAL_OUTPUT = "looplet.final_output"  # content: only with capture on, redacted
# OpenInference's input/output of a span: Arize Phoenix fills its Input/Output columns from these only
# (it maps gen_ai.input/output.messages to its message view). On the agent span, with capture on, redacted.
OI_INPUT_VALUE = "input.value"
OI_OUTPUT_VALUE = "output.value"
LLM_ATTEMPT = "looplet.llm.attempt"  # on chat spans of a retry: 2 for the first retry, ...
LLM_PURPOSE = "looplet.llm.purpose"  # "step" or "summarize" (compaction)
SCHEMA_VERSION = "looplet.schema_version"

# span events
EV_HOOK_DECISION = "looplet.hook.decision"  # attrs: looplet.hook, looplet.decision (deny|stop|inject|update)
EV_HOOK_ERROR = "looplet.hook.error"
EV_RETRY = "looplet.llm.retry"  # attrs: looplet.retry.attempt, looplet.retry.delay_s, error.type
EV_COMPACTION = "looplet.compaction"  # attrs: looplet.compaction.strategy, .tokens_before, .tokens_after
EV_APPROVAL = "looplet.approval"
EV_EVAL = "looplet.eval"
HOOK = "looplet.hook"
DECISION = "looplet.decision"
REASON = "looplet.reason"

# --- Prometheus metric names (prometheus_client adds _total/_bucket/... as usual) ---------------------
# Label sets are fixed and bounded: no run, session or user ids, no free text.
METRICS = {
    # name: (type, help, labels)
    "looplet_runs": (
        "counter",
        "Agent runs finished, by outcome (the stop reason's kind).",
        ("agent", "outcome"),
    ),
    "looplet_active_runs": ("gauge", "Agent runs in progress.", ("agent",)),
    "looplet_steps": (
        "counter",
        "Steps (tool calls) finished, by tool and status.",
        ("agent", "tool", "status"),
    ),
    "looplet_llm_requests": (
        "counter",
        "LLM calls, by model and status.",
        ("agent", "provider", "model", "status"),
    ),
    "looplet_tokens": ("counter", "Tokens used, by model and type.", ("agent", "model", "type")),
    "looplet_cost_usd": ("counter", "Spend in US dollars, by model.", ("agent", "model")),
    "looplet_unpriced_llm_requests": (
        "counter",
        "LLM calls whose model has no known price (cost left empty).",
        ("agent", "model"),
    ),
    "looplet_llm_duration_seconds": ("histogram", "LLM call latency.", ("agent", "model")),
    "looplet_tool_duration_seconds": ("histogram", "Tool call latency.", ("agent", "tool")),
    "looplet_step_duration_seconds": (
        "histogram",
        "Step latency (its LLM share plus its tool call).",
        ("agent",),
    ),
    "looplet_tool_errors": ("counter", "Tool calls that failed, by error kind.", ("agent", "tool", "kind")),
    "looplet_hook_denials": ("counter", "Tool calls denied by a hook.", ("agent", "tool", "hook")),
    "looplet_hook_errors": ("counter", "Exceptions raised by hooks (isolated).", ("agent", "hook", "method")),
    "looplet_llm_retries": ("counter", "LLM call retries after a retryable error.", ("agent", "model")),
    "looplet_compactions": ("counter", "Transcript compactions, by strategy.", ("agent", "strategy")),
    "looplet_approvals_pending": ("gauge", "Tool calls waiting for approval.", ("agent",)),
    "looplet_approval_wait_seconds": (
        "histogram",
        "Time a tool call waited for approval.",
        ("agent", "tool"),
    ),
    "looplet_evals": ("counter", "Eval results, by eval and outcome.", ("agent", "eval", "outcome")),
    "looplet_telemetry_errors": (
        "counter",
        "Faults caught in telemetry and observer code (a hook, a redactor, a span processor), by component;"
        " the run goes on unchanged.",
        ("component",),
    ),
    # GenAI semantic-convention client metrics, as Prometheus renders them
    "gen_ai_client_token_usage": (
        "histogram",
        "Tokens used per LLM call (GenAI semconv).",
        (
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_token_type",
            "error_type",
        ),
    ),
    "gen_ai_client_operation_duration_seconds": (
        "histogram",
        "LLM call duration, failed calls included (GenAI semconv).",
        (
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "error_type",
        ),
    ),
    "gen_ai_client_operation_time_to_first_chunk_seconds": (
        "histogram",
        "Time to the first streamed chunk (GenAI semconv).",
        ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"),
    ),
}

# Histogram buckets. GenAI ones are the semantic conventions' advisory boundaries.
LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120)
TOOL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
GENAI_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)

# --- structured log keys ---------------------------------------------------------------------------
LOG_KEYS = (
    "event",
    "level",
    "timestamp",
    "trace_id",
    "span_id",
    "run_id",
    "agent",
    "step",
    "tool",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "duration_ms",
    "stop_reason",
    "error",
    "error_kind",
)

# --- additions for the tracing / metrics / logging hooks ------------------------------------------
HOOK_METHOD = "looplet.hook.method"
RETRY_ATTEMPT = "looplet.retry.attempt"
RETRY_DELAY_S = "looplet.retry.delay_s"
RUN_RESUMED_STEPS = "looplet.run.resumed_steps"  # steps already in the state when the run started (resume)
CONTENT_TRUNCATED = "looplet.content.truncated"  # a captured content attribute was cut to the size cap
TRACER_SCOPE = "looplet"  # instrumentation scope of every looplet span and OTel metric

# Extra Prometheus metrics (same shape as METRICS).
METRICS["looplet_dropped_spans"] = (
    "counter",
    "Spans that never reached the collector (export failed, queue full).",
    ("reason",),
)

# GenAI / general semantic-convention keys, resolved lazily from ``opentelemetry-semantic-conventions``
# (``from looplet.telemetry.names import GEN_AI_REQUEST_MODEL``) so the plain-string part above imports nothing.
_SEMCONV = {
    "opentelemetry.semconv._incubating.attributes.gen_ai_attributes": (
        "GEN_AI_OPERATION_NAME",
        "GEN_AI_PROVIDER_NAME",
        "GEN_AI_REQUEST_MODEL",
        "GEN_AI_RESPONSE_MODEL",
        "GEN_AI_RESPONSE_ID",
        "GEN_AI_RESPONSE_FINISH_REASONS",
        "GEN_AI_USAGE_INPUT_TOKENS",
        "GEN_AI_USAGE_OUTPUT_TOKENS",
        "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS",
        "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS",
        "GEN_AI_AGENT_NAME",
        "GEN_AI_CONVERSATION_ID",
        "GEN_AI_TOOL_NAME",
        "GEN_AI_TOOL_CALL_ID",
        "GEN_AI_TOOL_TYPE",
        "GEN_AI_TOOL_DESCRIPTION",
        "GEN_AI_TOOL_CALL_ARGUMENTS",
        "GEN_AI_TOOL_CALL_RESULT",
        "GEN_AI_INPUT_MESSAGES",
        "GEN_AI_OUTPUT_MESSAGES",
        "GEN_AI_SYSTEM_INSTRUCTIONS",
        "GEN_AI_TOOL_DEFINITIONS",
        "GEN_AI_REQUEST_TEMPERATURE",
        "GEN_AI_REQUEST_MAX_TOKENS",
        "GEN_AI_REQUEST_STREAM",
        "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK",
        "GEN_AI_TOKEN_TYPE",
        "GenAiOperationNameValues",
        "GenAiTokenTypeValues",
    ),
    "opentelemetry.semconv._incubating.metrics.gen_ai_metrics": (
        "GEN_AI_CLIENT_TOKEN_USAGE",
        "GEN_AI_CLIENT_OPERATION_DURATION",
        "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK",
    ),
    "opentelemetry.semconv.attributes.error_attributes": ("ERROR_TYPE",),
    "opentelemetry.semconv.attributes.server_attributes": ("SERVER_ADDRESS", "SERVER_PORT"),
    "opentelemetry.semconv.attributes.exception_attributes": ("EXCEPTION_TYPE", "EXCEPTION_MESSAGE"),
}
_SEMCONV_INDEX = {name: module for module, names in _SEMCONV.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _SEMCONV_INDEX.get(name)
    if module is None:
        raise AttributeError(f"module 'looplet.telemetry.names' has no attribute {name!r}")
    from looplet.errors import require

    value = getattr(require(module, "otel"), name)
    globals()[name] = value
    return value
