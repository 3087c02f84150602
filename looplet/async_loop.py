"""``async_composable_loop``: the same engine driven with ``await``."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator
from typing import Any

from looplet import shutdown
from looplet._chain import AsyncToolTerminal, Chain, async_llm_chain, async_tool_chain
from looplet._engine import (
    CLOSED,
    CallHook,
    Effect,
    Interrupted,
    LLMDone,
    Prepared,
    Raised,
    RunTools,
    Sleep,
    engine,
)
from looplet.compat import module_getattr, old_loop_keywords
from looplet.config import LoopConfig
from looplet.hooks import _CURRENT_RUN
from looplet.loop import CancelToken, prepare
from looplet.tools import BaseToolRegistry
from looplet.types import LLMCall, Step

__all__ = ["async_composable_loop"]


@old_loop_keywords  # looplet 0.4.1's session_log=, stream=, conversation= (looplet.compat)
def async_composable_loop(
    llm: Any,
    task: dict[str, Any] | None = None,
    tools: BaseToolRegistry | None = None,
    hooks: list[Any] | None = None,
    config: LoopConfig | None = None,
    state: Any = None,
    context: Any = None,
    *,
    max_steps: int | None = None,
    system_prompt: str | None = None,
    cancel: CancelToken | None = None,
    parent: Any = None,
) -> AsyncGenerator[Step, None]:
    """The async loop: ``async for step in async_composable_loop(...)``. Hooks may be ``async def``;
    backends are awaited (``agenerate``, else ``generate`` in a thread); ``async def`` tools are awaited.
    The :class:`RunResult` is ``state.result`` once the loop ends (async generators cannot return values)."""
    p = prepare(
        llm,
        task,
        tools,
        hooks,
        config,
        state,
        context,
        max_steps,
        system_prompt,
        cancel,
        async_mode=True,
        parent=parent,
    )
    return _drive(p)


async def _drive(p: Prepared) -> AsyncGenerator[Step, None]:
    """The sync driver's twin: the same engine, effects awaited."""
    eng = engine(p)
    perform = _Performer(p)
    send: Any = None
    closed = False
    thrown: BaseException | None = None
    shutdown.run_started()
    try:
        while True:
            token = _CURRENT_RUN.set(p.run)
            try:
                eff = eng.send(send)
                task = asyncio.current_task()  # the task driving this step (once per step, not per effect)
                while type(eff) is not Step:
                    send = await perform(eff)
                    if task is not None and task.cancelling() and not isinstance(send, Interrupted):
                        # Python 3.11's wait_for can swallow a cancellation that arrives as the work
                        # finishes: the task is still being cancelled, so the run ends as cancelled
                        send = Interrupted(asyncio.CancelledError())
                    eff = eng.send(send)
            finally:
                _CURRENT_RUN.reset(token)
            if closed:
                send = CLOSED
                continue
            try:
                yield eff
                send = None
            except GeneratorExit:
                closed, send = True, CLOSED
            except BaseException as exc:
                thrown, send = exc, Interrupted(exc)
    except StopIteration:
        if thrown is not None:
            raise thrown from None
        return
    finally:
        shutdown.run_ended()
        perform.terminal.close()
        eng.close()


class _Performer:
    """Performs one effect with ``await``; every failure comes back as a value (Raised/Interrupted)."""

    __slots__ = ("llm", "tools", "terminal", "p")

    def __init__(self, p: Prepared) -> None:
        self.p = p
        strict = p.config.strict_hooks
        self.llm = async_llm_chain(p.hooks.wrap_llm_call, p.llm, strict)
        self.terminal = AsyncToolTerminal(p.registry, p.config.max_tool_output_chars)
        self.tools = async_tool_chain(p.hooks.wrap_tool, self.terminal, strict)

    async def __call__(self, eff: Effect) -> Any:
        try:
            kind = type(eff)
            if kind is CallHook:
                out = eff.fn(*eff.args)  # type: ignore[union-attr]
                return await out if inspect.isawaitable(out) else out
            if kind is LLMCall:
                return await _call_llm(self.llm, eff, self.p.deadline)  # type: ignore[arg-type]
            if kind is RunTools:
                return await self.run_tools(eff)  # type: ignore[arg-type]
            if kind is Sleep:
                await asyncio.sleep(eff.seconds)  # type: ignore[union-attr]
            return None
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
            return Interrupted(exc)

    async def run_tools(self, eff: RunTools) -> RunTools:
        self.terminal.timeout = eff.timeout_s
        calls, chain = eff.calls, self.tools
        if len(calls) == 1:
            eff.results.append(await chain.fn(calls[0]))
        else:
            worker, self.terminal.worker = self.terminal.worker, None  # parallel calls: a thread each
            try:
                eff.results = list(await asyncio.gather(*(chain(c) for c in calls)))
            finally:
                self.terminal.worker = worker
        if chain.faults:
            eff.faults = chain.drain()
        return eff


async def _call_llm(chain: Chain, call: LLMCall, deadline: float | None) -> LLMDone:
    """One attempt through the chain, bounded by what is left of the run's time."""
    chain.last = None
    try:
        work = _resolve(chain(call))
        if deadline is None:
            out: Any = await work
        else:
            out = await asyncio.wait_for(work, max(0.0, deadline - time.perf_counter()))
    except Exception as exc:  # a run timeout is a TimeoutError here: the engine sees the deadline passed
        out = Raised(exc)
    except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
        out = Interrupted(exc)
    return LLMDone(chain.last or call, out, chain.drain() if chain.faults else ())


async def _resolve(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value


# looplet 0.4.1's names from this module (async_llm_call): looplet.compat
__getattr__ = module_getattr("looplet.async_loop")
