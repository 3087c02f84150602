"""``async_composable_loop``: the same engine driven with ``await``."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from looplet import shutdown
from looplet._chain import AsyncToolTerminal, async_llm_chain, async_tool_chain
from looplet._engine import (
    CLOSED,
    CallHook,
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
from looplet.types import LLMCall, LLMResponse, Step

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
    handlers = perform.handlers()
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
                    send = await handlers[type(eff)](eff)
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
        perform.close()
        eng.close()


class _Performer:
    """Performs the engine's effects with ``await``: ``handlers[type(effect)](effect)``, one method per
    kind. Every failure comes back as a value (Raised/Interrupted)."""

    __slots__ = ("llm", "tools", "terminal", "p", "done")

    def __init__(self, p: Prepared) -> None:
        self.p = p
        strict = p.config.strict_hooks
        self.llm = async_llm_chain(p.hooks.wrap_llm_call, p.llm, strict)
        self.terminal = AsyncToolTerminal(p.registry, p.config.max_tool_output_chars)
        self.tools = async_tool_chain(p.hooks.wrap_tool, self.terminal, strict)
        self.done = LLMDone.new()

    def handlers(self) -> dict[type, Callable[[Any], Awaitable[Any]]]:
        """The method that performs each kind of effect (a dict the driver holds, not this object: its
        bound methods would make a cycle that keeps the run's records for the garbage collector)."""
        return {
            CallHook: self.call_hook,
            LLMCall: self.call_llm,
            RunTools: self.run_tools,
            Sleep: self.sleep,
        }

    async def call_hook(self, eff: CallHook) -> Any:
        try:
            out = eff.fn(*eff.args)
            return await out if inspect.isawaitable(out) else out
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
            return Interrupted(exc)

    async def call_llm(self, call: LLMCall) -> LLMDone:
        """One attempt through the chain, bounded by what is left of the run's time."""
        chain, done, deadline = self.llm, self.done, self.p.deadline
        chain.last = None
        try:
            work = _resolve(chain.fn(call))
            if deadline is None:
                done.value = await work
            else:
                done.value = await asyncio.wait_for(work, max(0.0, deadline - time.perf_counter()))
        except Exception as exc:  # a run timeout is a TimeoutError here: the engine sees the deadline passed
            done.value = Raised(exc)
        except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
            done.value = Interrupted(exc)
        done.record = chain.last or call
        done.faults = chain.drain() if chain.faults else ()
        return done

    async def run_tools(self, eff: RunTools) -> Any:
        calls, chain, terminal = eff.calls, self.tools, self.terminal
        try:
            terminal.timeout = eff.timeout_s
            if len(calls) == 1:
                eff.results.append(await chain.fn(calls[0]))
            else:
                worker, terminal.worker = terminal.worker, None  # parallel calls: a thread each
                try:
                    eff.results = list(await asyncio.gather(*(chain.fn(c) for c in calls)))
                finally:
                    terminal.worker = worker
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:
            return Interrupted(exc)
        if chain.faults:
            eff.faults = chain.drain()
        return eff

    async def sleep(self, eff: Sleep) -> Any:
        try:
            await asyncio.sleep(eff.seconds)
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:
            return Interrupted(exc)
        return None

    def close(self) -> None:
        self.terminal.close()
        self.llm.close()
        self.tools.close()


async def _resolve(value: Any) -> Any:
    """What a chain gives back, awaited until it is a value (a hook may hand back an awaitable of one)."""
    while type(value) is not LLMResponse and inspect.isawaitable(value):
        value = await value
    return value


# looplet 0.4.1's names from this module (async_llm_call): looplet.compat
__getattr__ = module_getattr("looplet.async_loop")
