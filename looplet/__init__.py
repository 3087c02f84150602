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
        ContextPressureHook as ContextPressureHook,
    )
    from looplet.context import (
        Prune as Prune,
    )
    from looplet.context import (
        Summarize as Summarize,
    )
    from looplet.context import (
        ThresholdCompactHook as ThresholdCompactHook,
    )
    from looplet.context import (
        Truncate as Truncate,
    )
    from looplet.context import (
        compact_chain as compact_chain,
    )
    from looplet.control import (
        ApprovalHook as ApprovalHook,
    )
    from looplet.control import (
        BudgetHook as BudgetHook,
    )
    from looplet.control import (
        CheckpointHook as CheckpointHook,
    )
    from looplet.control import (
        PermissionHook as PermissionHook,
    )
    from looplet.control import (
        StagnationHook as StagnationHook,
    )
    from looplet.control.resume import resume as resume
    from looplet.errors import (
        HookError as HookError,
    )
    from looplet.errors import (
        LLMError as LLMError,
    )
    from looplet.errors import (
        LLMResponsesExhausted as LLMResponsesExhausted,
    )
    from looplet.errors import (
        MissingExtra as MissingExtra,
    )
    from looplet.evals import (
        EvalContext as EvalContext,
    )
    from looplet.evals import (
        EvalHook as EvalHook,
    )
    from looplet.evals import (
        eval_mark as eval_mark,
    )
    from looplet.hooks import (
        Allow as Allow,
    )
    from looplet.hooks import (
        Deny as Deny,
    )
    from looplet.hooks import (
        HookDecision as HookDecision,
    )
    from looplet.hooks import (
        InjectContext as InjectContext,
    )
    from looplet.hooks import (
        Stop as Stop,
    )
    from looplet.hooks import (
        current_run as current_run,
    )
    from looplet.hooks import (
        emit_event as emit_event,
    )
    from looplet.loop import (
        CancelToken as CancelToken,
    )
    from looplet.loop import (
        composable_loop as composable_loop,
    )
    from looplet.loop import (
        run_loop as run_loop,
    )
    from looplet.mcp import (
        MCPClient as MCPClient,
    )
    from looplet.provenance import (
        ProvenanceSink as ProvenanceSink,
    )
    from looplet.provenance import (
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
    )
    from looplet.tools import (
        ToolSpec as ToolSpec,
    )
    from looplet.tools import (
        tool as tool,
    )
    from looplet.tools import (
        tools_from as tools_from,
    )
    from looplet.types import (
        LLMCall as LLMCall,
    )
    from looplet.types import (
        LLMResponse as LLMResponse,
    )
    from looplet.types import (
        RunResult as RunResult,
    )
    from looplet.types import (
        Step as Step,
    )
    from looplet.types import (
        ToolCall as ToolCall,
    )
    from looplet.types import (
        ToolResult as ToolResult,
    )
    from looplet.types import (
        Usage as Usage,
    )
