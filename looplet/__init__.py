"""looplet: an observability-first loop for LLM agents that call tools.

``import looplet`` loads only the standard library; every public name is resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from looplet._lazy import lazy_getattr

__version__ = "0.5.0"

_LAZY = {
    "composable_loop": "looplet.loop",
    "run_loop": "looplet.loop",
    "CancelToken": "looplet.loop",
    "async_composable_loop": "looplet.async_loop",
    "LoopConfig": "looplet.config",
    "DefaultState": "looplet.state",
    "Step": "looplet.types",
    "ToolCall": "looplet.types",
    "ToolResult": "looplet.types",
    "Usage": "looplet.types",
    "LLMResponse": "looplet.types",
    "LLMCall": "looplet.types",
    "RunResult": "looplet.types",
    "ToolSpec": "looplet.tools",
    "BaseToolRegistry": "looplet.tools",
    "tool": "looplet.tools",
    "tools_from": "looplet.tools",
    "HookDecision": "looplet.hooks",
    "Deny": "looplet.hooks",
    "Allow": "looplet.hooks",
    "InjectContext": "looplet.hooks",
    "Stop": "looplet.hooks",
    "current_run": "looplet.hooks",
    "emit_event": "looplet.hooks",
    "MockLLMBackend": "looplet.backends.mock",
    "OpenAIBackend": "looplet.backends.openai",
    "AnthropicBackend": "looplet.backends.anthropic",
    "LLMError": "looplet.errors",
    "LLMResponsesExhausted": "looplet.errors",
    "HookError": "looplet.errors",
    "MissingExtra": "looplet.errors",
    "TracingHook": "looplet.telemetry.tracing",
    "MetricsHook": "looplet.telemetry.metrics",
    "LoggingHook": "looplet.telemetry.logging",
    "ProvenanceSink": "looplet.provenance",
    "replay_loop": "looplet.provenance",
    "eval_mark": "looplet.evals",
    "EvalHook": "looplet.evals",
    "compact_chain": "looplet.context",
    "Prune": "looplet.context",
    "Summarize": "looplet.context",
    "Truncate": "looplet.context",
    "ThresholdCompactHook": "looplet.context",
    "ContextPressureHook": "looplet.context",
    "ApprovalHook": "looplet.control",
    "PermissionHook": "looplet.control",
    "CheckpointHook": "looplet.control",
    "BudgetHook": "looplet.control",
    "StagnationHook": "looplet.control",
    "resume": "looplet.control",
    "agent_tool": "looplet.subagents",
    "MCPClient": "looplet.mcp",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr("looplet", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from looplet.async_loop import async_composable_loop
    from looplet.backends.anthropic import AnthropicBackend
    from looplet.backends.mock import MockLLMBackend
    from looplet.backends.openai import OpenAIBackend
    from looplet.config import LoopConfig
    from looplet.hooks import Allow, Deny, HookDecision, InjectContext, Stop, current_run, emit_event
    from looplet.loop import CancelToken, composable_loop, run_loop
    from looplet.state import DefaultState
    from looplet.tools import BaseToolRegistry, ToolSpec, tool, tools_from
    from looplet.types import LLMCall, LLMResponse, RunResult, Step, ToolCall, ToolResult, Usage
