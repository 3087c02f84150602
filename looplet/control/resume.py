"""``resume``: continue a run from its checkpoint, with decisions for the calls that await approval."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from looplet.config import LoopConfig
from looplet.control.approval import ApprovalHook
from looplet.control.checkpoint import Checkpoint, CheckpointHook
from looplet.state import DefaultState
from looplet.types import RunResult

__all__ = ["resume", "aresume"]


class _FromMemory(CheckpointHook):
    """Restores from a Checkpoint held in memory; writes nothing."""

    def __init__(self, checkpoint: Checkpoint, approvals: dict[str, bool] | None) -> None:
        super().__init__(os.curdir, approvals=approvals, resume_finished=True)
        self._checkpoint = checkpoint

    def _source(self) -> Checkpoint | None:
        return self._checkpoint

    def _write(self) -> bool:
        return False


def _hooks(source: Any, approvals: dict[str, bool] | None, hooks: Any) -> list[Any]:
    hooks = list(hooks or [])
    if isinstance(source, (str, os.PathLike)):
        if Checkpoint.load(source) is None:
            raise FileNotFoundError(
                f"resume({str(source)!r}): no checkpoint there; a CheckpointHook(dir) "
                "writes one after every step"
            )
        same = [
            h for h in hooks if isinstance(h, CheckpointHook) and h.dir.resolve() == Path(source).resolve()
        ]
        hooks = [
            h for h in hooks if h not in same
        ]  # replaced by the restoring hook, which keeps writing there
        given = {k: v for h in same for k, v in h.approvals.items()}
        restorer: CheckpointHook = CheckpointHook(
            source, approvals={**given, **(approvals or {})}, resume_finished=True
        )
    elif isinstance(source, Checkpoint):
        restorer = _FromMemory(source, approvals)
    elif isinstance(getattr(source, "steps", None), list) and isinstance(
        getattr(source, "transcript", None), list
    ):
        restorer = _FromMemory(Checkpoint.from_state(source), approvals)
    else:
        raise TypeError(
            f"resume() takes a checkpoint directory, a Checkpoint or the state of a paused run, "
            f"got {type(source).__name__}"
        )
    if approvals and not any(getattr(h, "handles_approvals", False) for h in hooks):
        ids = frozenset(approvals)
        hooks.append(ApprovalHook(tools=lambda tc: tc.id in ids))
    return [restorer, *hooks]


def _loop_args(
    source: Any,
    llm: Any,
    tools: Any,
    approvals: dict[str, bool] | None,
    hooks: Any,
    config: LoopConfig | None,
    context: Any,
    max_steps: int | None,
) -> dict[str, Any]:
    """The arguments of the loop (sync or async) that continues ``source``: the restoring hook first and
    a new state, into which the checkpoint is restored."""
    return dict(
        llm=llm,
        tools=tools,
        hooks=_hooks(source, approvals, hooks),
        config=config,
        state=DefaultState(max_steps=max_steps or (config or LoopConfig()).max_steps),
        context=context,
        max_steps=max_steps,
    )


def resume(
    source: Any,
    *,
    llm: Any,
    tools: Any,
    approvals: dict[str, bool] | None = None,
    hooks: list[Any] | None = None,
    config: LoopConfig | None = None,
    context: Any = None,
    max_steps: int | None = None,
) -> RunResult:
    """Continue the run saved in ``source`` (a ``CheckpointHook`` directory, a :class:`Checkpoint`, or
    the state of a run that paused in this process) and run it to its end.

    approvals: ``{call_id: True/False}`` for calls waiting for approval: approved calls run, refused
        ones become an error step telling the model so; in both cases the model is not asked again first.
        The call that paused the run runs only with a decision for its own id, whatever ``hooks`` holds:
        without one, the run pauses again (``awaiting_approval``) before any LLM call.
    A checkpoint that cannot be read raises :class:`~looplet.control.checkpoint.CheckpointError` naming
    the file. A run that had finished returns its result again without running anything.
    max_steps: the limit over the whole run, counting the steps already done.
    The restoring hook is put first in ``hooks``; from a directory it keeps writing the checkpoint there.
    """
    from looplet.loop import run_loop

    return run_loop(**_loop_args(source, llm, tools, approvals, hooks, config, context, max_steps))


async def aresume(
    source: Any,
    *,
    llm: Any,
    tools: Any,
    approvals: dict[str, bool] | None = None,
    hooks: list[Any] | None = None,
    config: LoopConfig | None = None,
    context: Any = None,
    max_steps: int | None = None,
) -> RunResult:
    """:func:`resume` on the async loop."""
    from looplet.async_loop import async_composable_loop

    args = _loop_args(source, llm, tools, approvals, hooks, config, context, max_steps)
    async for _step in async_composable_loop(**args):
        pass
    result: RunResult | None = args["state"].result
    assert result is not None
    return result
