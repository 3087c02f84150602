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
    "EvalContext": "looplet.evals",
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


__getattr__ = lazy_getattr("looplet", globals(), _LAZY, old_names=True)  # 0.4.1's names: looplet.compat


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs: explicit re-exports (`X as X`)
    from looplet.async_loop import (
        async_composable_loop as async_composable_loop,
    )
    from looplet.backends.anthropic import (
        AnthropicBackend as AnthropicBackend,
    )
    from looplet.backends.mock import (
        MockLLMBackend as MockLLMBackend,
    )
    from looplet.backends.openai import (
        OpenAIBackend as OpenAIBackend,
    )
    from looplet.config import (
        LoopConfig as LoopConfig,
    )
    from looplet.context import (
        compact_chain as compact_chain,
        ContextPressureHook as ContextPressureHook,
        Prune as Prune,
        Summarize as Summarize,
        ThresholdCompactHook as ThresholdCompactHook,
        Truncate as Truncate,
    )
    from looplet.control import (
        ApprovalHook as ApprovalHook,
        BudgetHook as BudgetHook,
        CheckpointHook as CheckpointHook,
        PermissionHook as PermissionHook,
        resume as resume,
        StagnationHook as StagnationHook,
    )
    from looplet.errors import (
        HookError as HookError,
        LLMError as LLMError,
        LLMResponsesExhausted as LLMResponsesExhausted,
        MissingExtra as MissingExtra,
    )
    from looplet.evals import (
        eval_mark as eval_mark,
        EvalContext as EvalContext,
        EvalHook as EvalHook,
    )
    from looplet.hooks import (
        Allow as Allow,
        current_run as current_run,
        Deny as Deny,
        emit_event as emit_event,
        HookDecision as HookDecision,
        InjectContext as InjectContext,
        Stop as Stop,
    )
    from looplet.loop import (
        CancelToken as CancelToken,
        composable_loop as composable_loop,
        run_loop as run_loop,
    )
    from looplet.mcp import (
        MCPClient as MCPClient,
    )
    from looplet.provenance import (
        ProvenanceSink as ProvenanceSink,
        replay_loop as replay_loop,
    )
    from looplet.state import (
        DefaultState as DefaultState,
    )
    from looplet.subagents import (
        agent_tool as agent_tool,
    )
    from looplet.telemetry.logging import (
        LoggingHook as LoggingHook,
    )
    from looplet.telemetry.metrics import (
        MetricsHook as MetricsHook,
    )
    from looplet.telemetry.tracing import (
        TracingHook as TracingHook,
    )
    from looplet.tools import (
        BaseToolRegistry as BaseToolRegistry,
        tool as tool,
        tools_from as tools_from,
        ToolSpec as ToolSpec,
    )
    from looplet.types import (
        LLMCall as LLMCall,
        LLMResponse as LLMResponse,
        RunResult as RunResult,
        Step as Step,
        ToolCall as ToolCall,
        ToolResult as ToolResult,
        Usage as Usage,
    )
