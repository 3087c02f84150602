"""Names of looplet 0.4.1, kept so code written for it keeps running while it moves to 0.5.

Everything here is deprecated and goes away in looplet :data:`REMOVAL`. An old name either still works
(with one ``DeprecationWarning`` per use that names the 0.5 spelling) or raises
:class:`RemovedAPIError`, whose message says what to write instead. ``looplet``'s package
``__getattr__`` and the shim modules (``looplet.testing``, ``looplet.compact``, ...) look names up here
with :func:`old_name`; nothing else in looplet depends on this module. docs/migration.md has the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["REMOVAL", "RemovedAPIError", "warn_renamed", "old_name"]

#: The looplet version that removes the names of this module.
REMOVAL = "0.7"


class RemovedAPIError(ImportError):
    """A looplet 0.4.1 name that has no working counterpart in 0.5; the message says what to use.

    An ``ImportError`` so that ``from looplet import X`` shows this message, not "cannot import name".
    """


def warn_renamed(old: str, new: str, *, stacklevel: int = 2) -> None:
    """The one ``DeprecationWarning`` an old spelling emits when it is used."""
    warnings.warn(
        f"{old} is deprecated since looplet 0.5 and will be removed in {REMOVAL}; use {new} "
        "(see docs/migration.md)",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def _removed(old: str, advice: str) -> RemovedAPIError:
    return RemovedAPIError(f"{old} was removed in looplet 0.5: {advice} (see docs/migration.md)")


# ---------------------------------------------------------------- decisions (0.4.1's hook_decision)


def Block(reason: str) -> Any:
    """0.4.1's ``Block(reason)``: deny a call in ``pre_dispatch``, reject ``done`` in ``check_done``."""
    from looplet.hooks import HookDecision

    warn_renamed("Block(reason)", "Deny(reason) in pre_dispatch, or return the reason string from check_done")
    return HookDecision(block=reason)


def Continue(additional_context: str | None = None) -> Any:
    """0.4.1's explicit no-op, optionally carrying text for the next prompt."""
    from looplet.hooks import HookDecision

    warn_renamed("Continue()", "None (no opinion) or InjectContext(text)")
    return HookDecision(additional_context=additional_context)


# ---------------------------------------------------------------- compaction (renamed classes)


def _compactor(old: str, new: str, keep_default: int) -> Callable[..., Any]:
    def make(*args: Any, keep_recent: int = keep_default, **kwargs: Any) -> Any:
        import looplet.context as ctx

        warn_renamed(f"{old}(keep_recent=...)", f"looplet.{new}(keep_last=...)")
        if new == "Summarize":
            for gone in ("summary_prompt", "summary_max_chars", "summary_temperature"):
                kwargs.pop(gone, None)
            if "summary_max_tokens" in kwargs:
                kwargs["max_tokens"] = kwargs.pop("summary_max_tokens")
        return getattr(ctx, new)(*args, keep_last=keep_recent, **kwargs)

    make.__name__ = make.__qualname__ = old
    make.__doc__ = f"0.4.1's ``{old}``; now ``looplet.{new}`` (``keep_recent`` is ``keep_last``)."
    return make


TruncateCompact = _compactor("TruncateCompact", "Truncate", 2)
SummarizeCompact = _compactor("SummarizeCompact", "Summarize", 2)
PruneToolResults = _compactor("PruneToolResults", "Prune", 5)


# ---------------------------------------------------------------- protocols and small helpers


@runtime_checkable
class LLMBackend(Protocol):
    """0.4.1's backend protocol, for ``isinstance`` checks: anything with ``generate``."""

    def generate(self, *args: Any, **kwargs: Any) -> Any: ...


class LoopHook:
    """0.4.1's hook base class. Hooks are plain objects now: the loop calls only the methods a hook
    has, so subclassing anything is unnecessary."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        warn_renamed(f"subclassing LoopHook ({cls.__name__})", "a plain class with the hook methods")


def register_done_tool(registry: Any, *, done_tool: str = "done") -> Any:
    """0.4.1's ``register_done_tool(registry)``: add the ``done(answer)`` tool to a registry."""
    from looplet.tools import tools_from

    warn_renamed("register_done_tool(registry)", "tools_from([...], include_done=True)")
    done = tools_from([], include_done=True).get("done")
    if done is not None and done_tool not in registry:
        registry.register(done)
    return registry


@dataclass(frozen=True)
class PermissionRule:
    """0.4.1's ``PermissionRule(tool, decision, reason=...)``; now ``looplet.control.Rule(action, tool)``."""

    tool: str
    decision: Any
    arg_matcher: Any = None
    reason: str = ""

    def __post_init__(self) -> None:
        warn_renamed("PermissionRule(tool, decision)", "looplet.control.Rule(action, tool, args=...)")
        if self.arg_matcher is not None:
            raise _removed(
                "PermissionRule(arg_matcher=...)", "give Rule(action, tool, args={'name': 'glob or re.Pattern'})"
            )

    def to_rule(self) -> Any:
        from looplet.control import Rule

        action = getattr(self.decision, "value", self.decision)
        return Rule(str(action), self.tool, reason=self.reason or None)


class PermissionEngine:
    """0.4.1's rule list; ``PermissionHook(PermissionEngine(rules=...))`` still works. Use
    ``PermissionHook(rules, default=...)``."""

    def __init__(self, rules: list[Any] | None = None, default: Any = "allow", **_: Any) -> None:
        warn_renamed("PermissionEngine(rules=...)", "PermissionHook(rules, default=...)")
        self.rules = list(rules or [])
        self.default = str(getattr(default, "value", default))

    def __iter__(self) -> Iterator[Any]:
        return (r.to_rule() if isinstance(r, PermissionRule) else r for r in self.rules)


# ---------------------------------------------------------------- the table


def _alias(module: str, name: str, new: str | None = None) -> Callable[[str], Any]:
    def get(old: str) -> Any:
        import importlib

        warn_renamed(old, new or f"{module}.{name}", stacklevel=4)
        return getattr(importlib.import_module(module), name)

    return get


def _here(name: str) -> Callable[[str], Any]:
    """Names defined in this module that warn when called or subclassed, not when imported."""
    return lambda old: globals()[name]


_TO_DO_INSTEAD = {
    "ContextBudget": "give LoopConfig(context_window=...) and use ContextPressureHook or "
    "ThresholdCompactHook(max_tokens=..., strategy=compact_chain(Prune(), Summarize(llm), Truncate()))",
    "FileCheckpointStore": "use CheckpointHook(dir) in hooks=[...]; resume(dir, ...) continues a saved run",
    "LoopContext": "hooks receive (state, session_log, context, ...) as arguments; looplet.current_run() "
    "gives the run in progress (ids, config, per-hook scratch)",
    "RewriteThread": "compaction strategies return the new transcript (looplet.context); change "
    "state.metadata directly from a hook",
    "SessionLog": "session_log is now the run's list of chat messages (role/content dicts)",
    "Tracer": "use looplet.TracingHook (OpenTelemetry spans)",
    "MetricsCollector": "use looplet.MetricsHook (Prometheus metrics)",
    "StreamingHook": "use LoopConfig(stream=True) and a hook with on_llm_chunk(state, chunk, step_num)",
    "ResilientBackend": "use LoopConfig(llm_retries=..., llm_backoff_s=...)",
    "RetryExhausted": "a failed LLM call raises looplet.LLMError; the run stops with llm_error",
    "run_sub_loop": "use looplet.agent_tool(...) to run a sub-agent as a tool",
    "BudgetWarningHook": "use looplet.BudgetHook(max_cost_usd=..., max_tokens=...)",
    "PerToolLimitHook": "use looplet.PermissionHook rules or a pre_dispatch hook returning Deny(...)",
    "ToolContext": "tools receive only their arguments; looplet.current_run() gives the run in progress",
    "eval_run": "run evals with looplet.evals.run_evals(evals, contexts) or `python -m looplet eval DIR`",
    "EvalCase": "save runs with ProvenanceSink and turn them into tests with looplet.evals.eval_cases(dir)",
    "save_eval_run": "ProvenanceSink(dir) writes the run; `python -m looplet eval DIR` grades it",
    "load_eval_run": "looplet.evals.EvalContext.from_trajectory(looplet.provenance.load(dir))",
    "eval_discover": "looplet.evals.discover(path_or_module)",
    "async_replay_loop": "replay_loop(trace_dir, tools=...) (sync); run it in a thread from async code",
}

#: old name -> how to get it: a function of the old name returning the value, or a string (what to do).
_TABLE: dict[str, Callable[[str], Any] | str] = {
    "Block": _here("Block"),
    "Continue": _here("Continue"),
    "TruncateCompact": _here("TruncateCompact"),
    "SummarizeCompact": _here("SummarizeCompact"),
    "PruneToolResults": _here("PruneToolResults"),
    "LLMBackend": _here("LLMBackend"),
    "LoopHook": _here("LoopHook"),
    "register_done_tool": _here("register_done_tool"),
    "PermissionRule": _here("PermissionRule"),
    "PermissionEngine": _here("PermissionEngine"),
    "AsyncMockLLMBackend": _alias("looplet.testing", "AsyncMockLLMBackend", "looplet.MockLLMBackend"),
    "EvalResult": _alias("looplet.evals", "EvalOutcome", "looplet.evals.EvalOutcome"),
    "EvalContext": _alias("looplet.evals", "EvalContext"),
    "RunStatus": _alias("looplet.compat", "_RunStatus", "RunResult.stop_reason"),
    **_TO_DO_INSTEAD,
}


class _RunStatus:
    """0.4.1's ``RunStatus`` values, as strings compared with ``RunResult.stop_reason``."""

    COMPLETED = "done"
    CANCELLED = "cancelled"


def old_name(module: str, name: str) -> Any:
    """The value of 0.4.1's ``module.name``, or :class:`RemovedAPIError` saying what to write instead.

    An ``AttributeError`` for names 0.4.1 did not have either (and for dunder lookups), so ``hasattr``
    and ``getattr(m, x, default)`` keep working.
    """
    entry = _TABLE.get(name)
    if entry is None or name.startswith("__"):
        if name in OLD_PUBLIC_NAMES:
            raise _removed(
                f"{module}.{name}",
                "it has no counterpart in the 0.5 API (the loop, tools, hooks, backends, telemetry, "
                "provenance and evals remain)",
            )
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if isinstance(entry, str):
        raise _removed(f"{module}.{name}", entry)
    return entry(f"{module}.{name}")


#: The public names of looplet 0.4.1's package (``looplet.__all__``), for the "removed" message.
OLD_PUBLIC_NAMES = frozenset(
    """
    AgentBlueprint AgentPreset AgentRuntime AgentsMdMemorySource ArtifactRef BlueprintComparison
    BundleCard BundleValidation CARTRIDGE_CASES_SUBPATH CARTRIDGE_EVALS_SUBPATH CachePolicy
    CallableMemorySource CapabilityDeniedError Cartridge CartridgeCompatibility CartridgeEvals
    CartridgeLayout CartridgeSerializationError ClaudeSkillCompatibility CloseableResource CompactOutcome
    CompactService ComponentBlueprint ContextPlan ContextProjection ContextSourceDecision
    ContextSourceSelector Conversation DefaultCompactService DomainAdapter ErrorKind EvalReport
    EvalRunRecord EventPayload ExecutionPolicy ExecutionSession FileRunStore FileSkillStore
    InvalidRunTransition LifecycleEvent MCPToolAdapter MemoryRunStore Message ModelGatewayClient
    ModelGatewayHandle ModelGatewayServer NativeToolBackend NativeToolPolicy NativeToolProbeResult
    NativeToolUnsupportedError PermissionDecision PolicyDecision QuestionSpec RPC_PROTOCOL_VERSION
    RunEnvelope RunEvent RunHandle RunPhase RunRecord RunStore ScopedContextSource ShutdownReport Skill
    SkillActivationHook SkillBundle SkillCard SkillManager SkillRuntime SourceBlueprint StateServiceBase
    StateServiceClient StateServiceHandle StaticMemorySource ToolBlueprint ToolError ToolValidationError
    TrajectoryRecorder assert_evals_pass async_llm_call blueprint_from_bundle blueprint_from_preset
    bundled_cartridge_path cartridge_to_preset claude_skill_compatibility coding_agent_preset
    compare_blueprints default_compact_service discover_collectors discover_skill_bundles eval_assess
    eval_cli eval_run_batch event_from_payload excerpt_around_match export_bundle_to_library_code
    install_skills is_rejected_done iter_done_steps last_accepted_done last_rejected_done
    load_cartridge_cases load_cartridge_evals load_cases load_evals load_skill_bundle make_skill_tools
    minimal_preset package_agent_factory_as_bundle parametrize_cases preset_to_cartridge preview_prompt
    probe_native_tool_support promote_to_offline pytest_param_cases research_agent_preset
    resource_ref_for result_size_fingerprint run_cartridge_evals run_compact run_skill_bundle
    save_cartridge_cases save_case save_cases scaffold_cartridge seed_case_workspace serialize_harness
    suggest_similar supports_native_tools tool_call_fingerprint validate_preset_contract
    validate_run_transition validate_skill_bundle wrap_claude_skill_as_bundle
    """.split()
) | frozenset(_TABLE)
