"""``async_composable_loop``: the same engine driven with ``await``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from looplet._chain import Chain, Fault, async_llm_chain
from looplet._engine import CALL, CLOSED, LLM, SLEEP, STEP, TOOLS, Interrupted, Raised, engine
from looplet.compat import old_loop_keywords
from looplet.config import LoopConfig
from looplet.hooks import _CURRENT_RUN, ResolvedHooks, Run
from looplet.loop import CancelToken, _fold, prepare
from looplet.tools import BaseToolRegistry
from looplet.types import LLMCall, Step, ToolCall, ToolResult

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
    args = prepare(
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
    return _drive(*args, cancel)


async def _drive(
    run: Run,
    llm: Any,
    registry: BaseToolRegistry,
    hooks: ResolvedHooks,
    config: LoopConfig,
    state: Any,
    context: Any,
    limit: int,
    cancel: Any,
) -> AsyncGenerator[Step, None]:
    eng = engine(run, llm, registry, hooks, config, state, context, run.task, limit, cancel)
    call_llm = async_llm_chain(hooks.wrap_llm_call, llm, config.strict_hooks)
    run_tool = _tool_chain(hooks.wrap_tool, registry, config.tool_timeout_s, config.max_tool_output_chars)
    send: Any = None
    closed = False
    thrown: BaseException | None = None
    try:
        while True:
            token = _CURRENT_RUN.set(run)
            try:
                while True:
                    eff = eng.send(send)
                    kind = eff[0]
                    if kind is STEP:
                        if closed:
                            send = CLOSED
                            continue
                        break
                    try:
                        if kind is CALL:
                            send = eff[1](*eff[2])
                            if inspect.isawaitable(send):
                                send = await send
                        elif kind is LLM:
                            send = await _call_llm(call_llm, eff[1])
                        elif kind is TOOLS:
                            calls = eff[1]
                            if len(calls) == 1:
                                send = [await run_tool(calls[0])]
                            else:
                                send = list(await asyncio.gather(*(run_tool(c) for c in calls)))
                        elif kind is SLEEP:
                            await asyncio.sleep(eff[1])
                            send = None
                    except Exception as exc:
                        send = Raised(exc)
                    except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
                        send = Interrupted(exc)
            finally:
                _CURRENT_RUN.reset(token)
            try:
                yield eff[1]
                send = None
            except GeneratorExit:
                closed = True
                send = CLOSED
            except BaseException as exc:
                thrown = exc
                send = Interrupted(exc)
    except StopIteration:
        if thrown is not None:
            raise thrown from None
        return
    finally:
        eng.close()


async def _resolve(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value


async def _call_llm(chain: Chain, call: LLMCall) -> tuple[LLMCall, Any, list[Fault]]:
    """One attempt through the chain: (the record that reached the model, its outcome, hook faults)."""
    chain.last = None
    try:
        out: Any = await _resolve(chain(call))
    except Exception as exc:
        out = Raised(exc)
    except BaseException as exc:  # CancelledError, KeyboardInterrupt: end as cancelled
        out = Interrupted(exc)
    return chain.last or call, out, chain.drain()


def _tool_chain(
    wraps: Iterable[tuple[Any, Callable[..., Any]]],
    registry: BaseToolRegistry,
    timeout: float | None,
    max_chars: int | None = None,
) -> Callable[[ToolCall], Any]:
    adispatch = registry.adispatch

    def innermost(tc: ToolCall) -> Any:
        return adispatch(tc, timeout, max_chars)

    chain = _fold(wraps, innermost)

    async def run(tc: ToolCall) -> ToolResult:
        try:
            out = await _resolve(chain(tc))
        except Exception as exc:
            return ToolResult(
                error=f"{type(exc).__name__}: {exc}",
                error_kind="tool_exception",
                text=f"ERROR: {type(exc).__name__}: {exc}",
            )
        if not isinstance(out, ToolResult):
            return ToolResult(
                error=f"a wrap_tool hook returned {type(out).__name__}", error_kind="hook_error"
            )
        return out

    return run
