"""The async loop's timeout for ``async def`` tools (one timer per run, re-armed as calls come and go):
a call past its timeout is a ``timeout`` error, a call within it is never cut short by a timer armed
for an earlier call, a tool that swallows the cancellation does not end the run, and a cancellation
from outside still ends the run."""

from __future__ import annotations

import asyncio
import json

from looplet import DefaultState, LoopConfig, MockLLMBackend, async_composable_loop, tool, tools_from


@tool(timeout_s=0.2)
async def hangs(x: int) -> int:
    await asyncio.sleep(30)
    return x


@tool(timeout_s=0.05)
async def quick(x: int) -> int:
    return x


@tool(timeout_s=2.0)
async def takes_a_while(x: int) -> int:
    await asyncio.sleep(0.3)  # longer than quick's timeout, well within its own
    return x


@tool(timeout_s=0.2)
async def swallows(x: int) -> int:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return -1
    return x


def _call(name: str, x: int = 1) -> str:
    return json.dumps({"tool": name, "args": {"x": x}})


async def _steps(script: list[str], n: int) -> tuple[list[tuple[str, str | None, object]], str]:
    llm = MockLLMBackend(script)
    tools = tools_from([hangs, quick, takes_a_while, swallows])
    state = DefaultState(max_steps=n)
    out = []
    async for step in async_composable_loop(
        llm=llm, tools=tools, task={"goal": "t"}, config=LoopConfig(max_steps=n), state=state
    ):
        out.append((step.tool_call.tool, step.tool_result.error_kind, step.tool_result.data))
    return out, state.result.stop_reason


def test_a_call_past_its_timeout_is_a_timeout_error_and_the_run_goes_on():
    steps, stop = asyncio.run(_steps([_call("hangs"), _call("quick", 2), _call("hangs")], 3))
    assert steps == [("hangs", "timeout", None), ("quick", None, 2), ("hangs", "timeout", None)]
    assert stop == "max_steps"


def test_a_timer_armed_for_an_earlier_call_does_not_cut_a_later_one_short():
    steps, _ = asyncio.run(_steps([_call("quick"), _call("takes_a_while", 2), _call("quick", 3)], 3))
    assert steps == [("quick", None, 1), ("takes_a_while", None, 2), ("quick", None, 3)]


def test_a_tool_that_swallows_the_cancellation_does_not_end_the_run():
    steps, stop = asyncio.run(_steps([_call("swallows"), _call("quick", 2)], 2))
    assert steps == [("swallows", None, -1), ("quick", None, 2)]
    assert stop == "max_steps"


def test_a_cancellation_from_outside_still_ends_the_run():
    async def main() -> str:
        llm = MockLLMBackend([_call("hangs")], cycle=True)
        state = DefaultState(max_steps=3)

        async def drive() -> None:
            async for _ in async_composable_loop(
                llm=llm,
                tools=tools_from([hangs]),
                task={"goal": "t"},
                config=LoopConfig(max_steps=3),
                state=state,
            ):
                pass

        task = asyncio.create_task(drive())
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return state.result.stop_reason
        return "not cancelled"

    assert asyncio.run(main()) == "cancelled"
