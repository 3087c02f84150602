"""looplet 0.4.1's loop settings that still work, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

``LoopConfig(checkpoint_dir=..., run_envelope=...)`` makes an :func:`old_loop_config` instance (a
``LoopConfig`` subclass that carries the two fields); the loop's ``prepare`` hands it to :func:`old_run`
once per run, which resumes the step budget of the folder's latest 0.4.1 checkpoint and adds the hook
that writes them (``looplet._compat_checkpoint.DirectoryCheckpoints``). A run with a plain
``LoopConfig`` never loads this module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from looplet.compat import LOOP_CONFIG_KEYWORDS, old_keywords, warn_renamed

__all__ = ["old_loop_config", "old_run", "set_budget"]


@functools.cache
def old_loop_config() -> type:
    """``LoopConfig`` with 0.4.1's ``checkpoint_dir`` and ``run_envelope`` (``LoopConfig.__new__`` makes
    it when one of them is given)."""
    from looplet.config import LoopConfig

    @old_keywords(LOOP_CONFIG_KEYWORDS, what="LoopConfig")
    @dataclass(slots=True)
    class OldLoopConfig(LoopConfig):
        checkpoint_dir: str | None = None
        run_envelope: Any = None
        extract_entities: Callable[..., Any] | None = None
        compact_service: Any = None
        approval_handler: Callable[[str, list[str] | None], str | None] | None = None
        domain: Any = None
        memory_sources: list[Any] | None = None

        def __post_init__(self) -> None:
            LoopConfig.__post_init__(self)
            _warn_example_fields(self)
            if self.compact_service is not None:
                from looplet._compat_compact import as_strategy

                as_strategy(self.compact_service)  # a service that is no 0.5 strategy: TypeError
                warn_renamed(
                    "LoopConfig(compact_service=...)",
                    "hooks=[ThresholdCompactHook(strategy=compact_chain(Prune(), Summarize(llm), Truncate()))]",
                )
            if self.extract_entities is not None:
                warn_renamed(
                    "LoopConfig(extract_entities=...)",
                    "a post_dispatch(state, session_log, tool_call, tool_result, step_num) hook",
                )
            if self.checkpoint_dir is not None:
                warn_renamed(
                    "LoopConfig(checkpoint_dir=...)", "hooks=[CheckpointHook(dir)] and resume(dir, ...)"
                )
            if self.run_envelope is not None:
                warn_renamed(
                    "LoopConfig(run_envelope=...)", "looplet.current_run().run_id (each run has its own)"
                )

    OldLoopConfig.__qualname__ = OldLoopConfig.__name__ = "LoopConfig"
    return OldLoopConfig


def _warn_example_fields(config: Any) -> None:
    """The fields of 0.4.1's examples (looplet._compat_examples): what each is now."""
    if config.approval_handler is not None:
        warn_renamed(
            "LoopConfig(approval_handler=...)",
            "hooks=[ApprovalHook(tools=[...], handler=...)] (it asks before the call runs)",
        )
    if config.domain is not None:
        warn_renamed("LoopConfig(domain=...)", "hooks whose pre_prompt returns the briefing")
    if config.memory_sources:
        warn_renamed(
            "LoopConfig(memory_sources=[...])", "the text in system_prompt=..., or a pre_prompt hook"
        )


Bind = Callable[[Any], None]


def old_run(
    config: Any, hooks: list[Any], state: Any, limit: int, registry: Any
) -> tuple[list[Any], int, Bind | None]:
    """What a run with 0.4.1 settings does before it starts: with ``checkpoint_dir``, continue the step
    budget of the folder's latest checkpoint (a checkpoint of tool calls whose effect is unknown, or
    an unreadable one, raises) and add the hook that writes 0.4.1 checkpoints, first in the list; with
    free tools in the registry, add :class:`FreeSteps`. Returns the hooks, the step limit, and what to
    call with the prepared run."""
    bind: Bind | None = None
    directory = getattr(config, "checkpoint_dir", None)
    if directory is not None:
        from looplet._compat_checkpoint import DirectoryCheckpoints

        writer = DirectoryCheckpoints(str(directory), getattr(config, "run_envelope", None))
        hooks, limit = [writer, *hooks], writer.resume(state, limit)
    if any(getattr(config, k, None) is not None for k in ("approval_handler", "domain", "memory_sources")):
        from looplet._compat_examples import example_hooks

        hooks = example_hooks(config, hooks)
    extractor = getattr(config, "extract_entities", None) or getattr(
        getattr(config, "domain", None), "extract_entities", None
    )
    if extractor is not None:
        hooks = [*hooks, EntityExtractor(extractor, config.done_tool)]
    service = getattr(config, "compact_service", None)
    if service is not None:  # a 0.4.1 service that is also a 0.5 strategy: compact past 80% of context_window
        from looplet._compat_compact import as_strategy
        from looplet.context import ThresholdCompactHook
        from looplet.context.compaction import as_chain

        strategy = as_strategy(service)
        # ThresholdCompactHook(budget) of 0.4.1 without a strategy: the budget says when, the service how
        given = [h for h in hooks if getattr(h, "strategy_given", True) is False]
        for hook in given:
            hook.chain = as_chain(strategy)
        if not given:
            hooks = [*hooks, ThresholdCompactHook(strategy=strategy)]
    free = frozenset(name for name, spec in registry._tools.items() if type(spec) is free_tool_spec())
    if free:
        counter = FreeSteps(free)
        hooks, bind = [counter, *hooks], counter.bind
    return hooks, limit, bind


class EntityExtractor:
    """0.4.1's ``LoopConfig(extract_entities=fn)``: after each tool call but ``done``, ``fn(data)`` (or ``fn(data,
    state=state)`` when it takes ``state`` or ``**kwargs``) with the result's data; the entities it
    returns are added to ``state.metadata["entities"]`` (when the state has a metadata dict)."""

    def __init__(self, fn: Callable[..., Any], done_tool: str) -> None:
        self.fn = fn
        self.done_tool = done_tool
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        self.takes_state = any(p.name == "state" or p.kind is p.VAR_KEYWORD for p in params)

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> None:
        if tool_call.tool == self.done_tool:
            return
        data = tool_result.data
        found = self.fn(data, state=state) if self.takes_state else self.fn(data)
        metadata = getattr(state, "metadata", None)
        if found and isinstance(metadata, dict):
            known = metadata.setdefault("entities", [])
            known.extend(e for e in found if e not in known)


class FreeSteps:
    """0.4.1's free tools: a step that calls one does not count against the run's steps (the run's
    step limit grows by one, and a ``DefaultState`` keeps its ``budget_remaining``)."""

    def __init__(self, free: frozenset[str]) -> None:
        self.free = free
        self.prepared: Any = None

    def bind(self, prepared: Any) -> None:
        self.prepared = prepared

    def on_step(self, state: Any, step: Any) -> None:
        if step.tool_call.tool in self.free and self.prepared is not None:
            self.prepared.max_steps += 1
            if isinstance(getattr(type(state), "budget_remaining", None), property) and hasattr(
                state, "_charged"
            ):
                state._charged -= 1


@functools.cache
def free_tool_spec() -> type:
    """``ToolSpec`` with 0.4.1's ``free`` (``ToolSpec.__new__`` makes it for ``free=True``); a run whose
    tools include one counts its calls with :class:`FreeSteps`."""
    import looplet.compat
    from looplet.compat import TOOL_SPEC_KEYWORDS
    from looplet.tools import ToolSpec

    @old_keywords(TOOL_SPEC_KEYWORDS, what="ToolSpec")
    @dataclass(slots=True)
    class FreeToolSpec(ToolSpec):
        free: bool = True

        def __post_init__(self) -> None:
            ToolSpec.__post_init__(self)
            warn_renamed("ToolSpec(free=True)", "a higher max_steps (every tool call is a step in 0.5)")

    FreeToolSpec.__qualname__ = FreeToolSpec.__name__ = "ToolSpec"
    looplet.compat.OLD_RUN_FEATURES = True
    return FreeToolSpec


def set_budget(state: Any, value: Any) -> None:
    """``state.budget_remaining = n`` of 0.4.1 (restoring a saved budget): the state then counts ``n``
    steps left, never more than its own ``max_steps`` allows."""
    warn_renamed(
        "state.budget_remaining = n", "DefaultState(max_steps=n) (or resume(dir, ...) for a saved run)"
    )
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"budget_remaining must be a nonnegative integer, got {value!r}")
    room = max(0, state.max_steps - len(state.steps))
    state._charged = room - min(value, room)
