"""looplet 0.4.1's names that its own examples (``coding_agent.py``, ``data_agent.py``) are built on, kept
working, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

- ``StaticMemorySource(text)`` and ``LoopConfig(memory_sources=[...])``: the sources' text is added to every
  prompt (a ``pre_prompt`` hook, :class:`PromptExtras`), so it survives compaction as in 0.4.1.
- ``DomainAdapter(build_briefing=fn, extract_entities=fn)`` and ``LoopConfig(domain=...)``: the briefing is
  added to every prompt the same way; entities go through ``looplet._compat_loop.EntityExtractor``.
- ``ContextBudget(context_window, warning_at, error_at, compact_buffer)`` and
  ``ThresholdCompactHook(budget, fire_tier=...)``: 0.5's ``ThresholdCompactHook`` with the tier's token
  count as ``max_tokens``, keeping ``fired_at``; with ``LoopConfig(compact_service=...)`` it compacts with
  that service's strategy (:func:`looplet._compat_loop.old_run`).
- A ``@tool`` function with a ``ctx: ToolContext`` parameter: the parameter is left out of the schema and
  the tool gets a :class:`ToolContext` whose ``approve(prompt, options)`` asks
  ``LoopConfig(approval_handler=...)``.
- ``ApprovalHook()`` in a run with ``LoopConfig(approval_handler=...)``: 0.4.1's meaning, a tool result whose
  data says ``needs_approval`` stops the run (:class:`NeedsApprovalHook`).

A run configured only with 0.5 names never loads this module.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from looplet.compat import warn_renamed
from looplet.context import ThresholdCompactHook

__all__ = [
    "ApprovalRequest",
    "ContextBudget",
    "DomainAdapter",
    "NeedsApprovalHook",
    "OldThresholdCompactHook",
    "PromptExtras",
    "StaticMemorySource",
    "ToolContext",
    "example_hooks",
    "tool_with_context",
]


# ---------------------------------------------------------------- memory sources and domain adapters


class StaticMemorySource:
    """0.4.1's constant text for every prompt (``LoopConfig(memory_sources=[...])``)."""

    def __init__(self, text: str) -> None:
        warn_renamed(
            "StaticMemorySource(text)",
            "the text in LoopConfig(system_prompt=...), or a pre_prompt hook returning it",
        )
        if not isinstance(text, str):
            raise TypeError(f"StaticMemorySource(text) takes a string, got {type(text).__name__}")
        self.text = text

    def load(self, state: Any) -> str:
        return self.text


#: DomainAdapter fields of 0.4.1 that have no adapter here, with what to write instead.
_DOMAIN_REFUSED = {
    "build_trace": "read the run's RunResult (composable_loop's return value) or a hook's on_loop_end",
    "build_prompt": "a pre_prompt hook (strings it returns are added to the prompt)",
    "extract_step_metadata": "a post_dispatch hook",
    "checkpoint_state": "CheckpointHook(dir) (it saves the whole run)",
    "restore_checkpoint_state": "resume(dir, ...)",
}


class DomainAdapter:
    """0.4.1's bundle of domain callables for ``LoopConfig(domain=...)``: ``build_briefing(state,
    session_log, context) -> str`` (added to every prompt) and ``extract_entities`` (as
    ``LoopConfig(extract_entities=...)``)."""

    def __init__(
        self,
        *,
        build_briefing: Callable[..., str] | None = None,
        extract_entities: Callable[..., Any] | None = None,
        **others: Any,
    ) -> None:
        for key, value in others.items():
            if key not in _DOMAIN_REFUSED:
                raise TypeError(f"DomainAdapter.__init__() got an unexpected keyword argument {key!r}")
            if value is not None:
                raise TypeError(
                    f"DomainAdapter({key}=...) was removed in looplet 0.5: {_DOMAIN_REFUSED[key]} "
                    "(see docs/migration.md)"
                )
        warn_renamed(
            "DomainAdapter(build_briefing=fn)",
            "a hook whose pre_prompt(state, session_log, context, step_num) returns the briefing",
        )
        self.build_briefing = build_briefing
        self.extract_entities = extract_entities


class PromptExtras:
    """The hook ``LoopConfig(memory_sources=..., domain=...)`` adds: before each prompt, the sources'
    text and the domain's briefing, as extra context for that prompt."""

    def __init__(self, sources: list[Any], briefing: Callable[..., str] | None) -> None:
        self.sources, self.briefing = list(sources), briefing

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> str | None:
        parts = [source.load(state) for source in self.sources]
        if self.briefing is not None:
            parts.append(self.briefing(state, session_log, context))
        text = "\n\n".join(p for p in parts if p)
        return text or None


# ---------------------------------------------------------------- context budget and its compaction hook

_TIERS = ("warning", "error")


@dataclass(frozen=True)
class ContextBudget:
    """0.4.1's token tiers of a context window: ``warning_at < error_at < context_window - compact_buffer``."""

    context_window: int = 200_000
    warning_at: int = 120_000
    error_at: int = 160_000
    compact_buffer: int = 13_000

    def __post_init__(self) -> None:
        warn_renamed(
            "ContextBudget(...)",
            "LoopConfig(context_window=...) with ThresholdCompactHook(max_tokens=...) or ContextPressureHook()",
        )
        if self.context_window <= 0:
            raise ValueError(f"ContextBudget(context_window={self.context_window!r}): must be > 0")
        if not 0 <= self.compact_buffer < self.context_window:
            raise ValueError(
                f"ContextBudget(compact_buffer={self.compact_buffer!r}): must be >= 0 and below context_window"
            )
        if not 0 <= self.warning_at < self.error_at < self.blocking_at:
            raise ValueError(
                "ContextBudget: need 0 <= warning_at < error_at < context_window - compact_buffer, got "
                f"{self.warning_at}, {self.error_at}, {self.blocking_at}"
            )

    @property
    def blocking_at(self) -> int:
        return self.context_window - self.compact_buffer

    def classify(self, tokens: int) -> str:
        """``"ok"``, ``"warning"``, ``"error"`` or ``"blocking"`` for a token count."""
        if tokens >= self.blocking_at:
            return "blocking"
        if tokens >= self.error_at:
            return "error"
        return "warning" if tokens >= self.warning_at else "ok"


class OldThresholdCompactHook(ThresholdCompactHook):
    """``ThresholdCompactHook(budget, fire_tier="error" | "warning")`` of 0.4.1: compacts once the transcript
    reaches the tier's token count; ``fired_at`` lists the steps it compacted before."""

    def __init__(
        self, budget: Any = None, strategy: Any = None, *, fire_tier: str = "error", target: float = 0.7
    ) -> None:
        if isinstance(budget, dict):
            budget = ContextBudget(**budget)
        if not isinstance(budget, ContextBudget):
            raise TypeError(
                f"ThresholdCompactHook(budget, fire_tier=...) takes a ContextBudget, got {type(budget).__name__}"
            )
        if fire_tier not in _TIERS:
            raise ValueError(f"ThresholdCompactHook(fire_tier={fire_tier!r}): must be 'warning' or 'error'")
        at = budget.warning_at if fire_tier == "warning" else budget.error_at
        warn_renamed(
            "ThresholdCompactHook(budget, fire_tier=...)",
            f"ThresholdCompactHook(max_tokens={at}, strategy=compact_chain(Prune(), Summarize(llm), Truncate()))",
        )
        super().__init__(
            max(1, at - 1), strategy, target=target
        )  # 0.4.1 fired at the tier, 0.5 above max_tokens
        self.budget, self.fire_tier = budget, fire_tier
        self.strategy_given = strategy is not None
        self._fired: list[int] = []

    @property
    def fired_at(self) -> list[int]:
        return list(self._fired)

    def pre_prompt(self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int) -> Any:
        before = session_log[:]
        out = super().pre_prompt(state, session_log, context, step_num)
        if hasattr(out, "__await__"):
            return self._note_later(out, before, session_log, step_num)
        self._note(before, session_log, step_num)
        return out

    async def _note_later(self, pending: Any, before: list[Any], after: list[Any], step_num: int) -> None:
        await pending
        self._note(before, after, step_num)

    def _note(self, before: list[Any], after: list[Any], step_num: int) -> None:
        if len(before) != len(after) or any(a is not b for a, b in zip(before, after, strict=True)):
            self._fired.append(step_num)


# ---------------------------------------------------------------- tools with ctx: ToolContext, and approvals


@dataclass
class ToolContext:
    """What a 0.4.1 tool with a ``ctx`` parameter receives: the run's id, ``LoopConfig(approval_handler=...)``
    as ``request_approval``, and ``approve(prompt, options)`` asking it (None without a handler)."""

    session_id: str | None = None
    request_approval: Callable[[str, list[str] | None], str | None] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    llm: Any = None

    def approve(self, prompt: str, options: list[str] | None = None) -> str | None:
        if self.request_approval is None:
            return None
        return self.request_approval(prompt, options)


def _is_context(annotation: Any) -> bool:
    if annotation is ToolContext:
        return True
    return any(_is_context(a) for a in typing.get_args(annotation))


def takes_tool_context(fn: Callable[..., Any]) -> bool:
    """``fn`` has a parameter ``ctx`` annotated with :class:`ToolContext` (or ``ToolContext | None``)."""
    try:
        params = inspect.signature(fn).parameters
        if "ctx" not in params:
            return False
        hints = typing.get_type_hints(fn)
    except Exception:  # an object @tool does not read this way: not a 0.4.1 context tool
        return False
    return _is_context(hints.get("ctx", params["ctx"].annotation))


def current_context() -> ToolContext:
    """The :class:`ToolContext` of the tool call in progress."""
    from looplet.hooks import current_run

    run = current_run()
    config = getattr(run, "config", None)
    return ToolContext(
        session_id=getattr(run, "run_id", None),
        request_approval=getattr(config, "approval_handler", None),
    )


def tool_with_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` without its ``ctx`` parameter, which it gets as the :class:`ToolContext` of each call."""
    warn_renamed(
        f"a ctx: ToolContext parameter of the tool function {getattr(fn, '__name__', fn)!r}",
        "no ctx parameter (looplet.current_run() gives the run; ApprovalHook(tools, handler=...) asks before a call)",
    )
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, ctx=current_context(), **kwargs)

        wrapper: Callable[..., Any] = call_async
    else:

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, ctx=current_context(), **kwargs)

        wrapper = call
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # the schema is read from the signature below
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in sig.parameters.items() if name != "ctx"]
    )
    wrapper.__annotations__ = {k: v for k, v in hints.items() if k != "ctx"}
    return wrapper


@dataclass(frozen=True)
class ApprovalRequest:
    """The call a :class:`NeedsApprovalHook` stopped the run for."""

    step: int
    tool: str
    description: str = ""
    options: list[str] = field(default_factory=lambda: ["approve", "deny"])


class NeedsApprovalHook:
    """0.4.1's ``ApprovalHook()``: a tool result whose data has ``needs_approval`` stops the run
    (``waiting_for_approval``); ``pending`` is what it waits for."""

    def __init__(self, owner: Any = None) -> None:
        self.owner = (
            owner  # the ApprovalHook() it stands for: its ``pending`` is set too, as 0.4.1 code reads it
        )
        self.pending: ApprovalRequest | None = None

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> Any:
        from looplet.hooks import Stop

        data = getattr(tool_result, "data", None)
        if not isinstance(data, dict) or not data.get("needs_approval"):
            return None
        self.pending = ApprovalRequest(
            step_num,
            tool_call.tool,
            str(data.get("approval_description", "")),
            list(data.get("approval_options") or ["approve", "deny"]),
        )
        if self.owner is not None:
            self.owner.pending = self.pending
        return Stop("waiting_for_approval")


def example_hooks(config: Any, hooks: list[Any]) -> list[Any]:
    """The hooks of ``LoopConfig(memory_sources=, domain=, approval_handler=)`` for one run: a
    :class:`PromptExtras` for the memory and briefing, and 0.4.1's meaning for a bare ``ApprovalHook()``
    given next to an ``approval_handler``."""
    from looplet.control import ApprovalHook

    domain = getattr(config, "domain", None)
    briefing = getattr(domain, "build_briefing", None)
    sources = list(getattr(config, "memory_sources", None) or ())
    if getattr(config, "approval_handler", None) is not None:
        hooks = [NeedsApprovalHook(h) if _asks_every_call(h, ApprovalHook) else h for h in hooks]
    if sources or briefing is not None:
        hooks = [*hooks, PromptExtras(sources, briefing)]
    return hooks


def _asks_every_call(hook: Any, approval_hook: type) -> bool:
    if type(hook) is not approval_hook or getattr(hook, "handler", None) is not None:
        return False
    if not getattr(hook, "_every_call", False):
        return False
    warn_renamed(
        "ApprovalHook() with LoopConfig(approval_handler=...) (stop when a result says needs_approval)",
        "ApprovalHook(tools=[...], handler=...) (asks before the call runs)",
    )
    return True
