"""Run either loop the same way, so one test covers both."""

from __future__ import annotations

import asyncio
from typing import Any

from looplet import async_composable_loop, composable_loop


def run(mode: str, **kwargs: Any) -> tuple[list[Any], Any]:
    """Run the loop to the end in ``mode`` ("sync" or "async"); return (steps, RunResult)."""
    if mode == "sync":
        gen = composable_loop(**kwargs)
        steps = []
        while True:
            try:
                steps.append(next(gen))
            except StopIteration as stop:
                return steps, stop.value

    async def main() -> tuple[list[Any], Any]:
        state = kwargs.get("state")
        if state is None:
            from looplet import DefaultState

            kwargs["state"] = state = DefaultState(max_steps=kwargs.pop("_state_max", 15))
        steps = [s async for s in async_composable_loop(**kwargs)]
        return steps, state.result

    return asyncio.run(main())


MODES = ["sync", "async"]


def run_demo(hooks: list[Any], steps: int | None = None) -> tuple[list[Any], Any]:
    """The demo agent (no latency, ``steps`` tool calls long) run on the sync loop with ``hooks``."""
    from looplet import demo

    llm, tools, config = demo.build(latency_s=0.0, steps=steps)
    return run("sync", llm=llm, tools=tools, task=demo.TASK, config=config, hooks=hooks)
