"""``composable_loop``: the synchronous driver of the engine, and the argument checks both loops share."""

from __future__ import annotations

import contextvars
import inspect
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from looplet._chain import Chain, Fault, llm_chain
from looplet._engine import CALL, CLOSED, LLM, SLEEP, STEP, TOOLS, Interrupted, Raised, engine
from looplet.compat import module_getattr, old_backend, old_loop_keywords
from looplet.config import LoopConfig
from looplet.hooks import _CURRENT_RUN, ResolvedHooks, Run
from looplet.state import DefaultState
from looplet.tools import BaseToolRegistry
from looplet.types import LLMCall, RunResult, Step, ToolCall, ToolResult

__all__ = ["composable_loop", "CancelToken", "run_loop"]


class CancelToken:
    """Stops a run from another thread or task: ``token.cancel()``; the run ends with ``cancelled``
    at its next phase boundary (before an LLM call, after it, or between tool calls)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    cancelled = property(is_set)


def prepare(
    llm: Any,
    task: Any,
    tools: Any,
    hooks: Any,
    config: Any,
    state: Any,
    context: Any,
    max_steps: Any,
    system_prompt: Any,
    cancel: Any,
    *,
    async_mode: bool,
    parent: Any = None,
) -> tuple[Run, Any, BaseToolRegistry, ResolvedHooks, LoopConfig, Any, Any, int]:
    """Check every argument once, with a message that names it and the fix."""
    if task is not None and not isinstance(task, dict):
        if isinstance(task, str):
            raise TypeError(f"task must be a dict, got a str; write task={{'goal': {task[:40]!r}}}")
        raise TypeError(f"task must be a dict like {{'goal': '...'}}, got {type(task).__name__}")
    if tools is None:
        raise ValueError(
            "tools is required: pass tools=tools_from([your_function, ...]) "
            "(it adds the `done` tool the model calls to finish)"
        )
    if not isinstance(tools, BaseToolRegistry):
        if isinstance(tools, (list, tuple)):
            raise TypeError("tools must be a BaseToolRegistry, got a list; wrap it: tools=tools_from([...])")
        raise TypeError(
            f"tools must be a BaseToolRegistry (e.g. tools_from([...])), got {type(tools).__name__}"
        )
    has_sync = callable(getattr(llm, "generate", None))
    if not (has_sync or (async_mode and callable(getattr(llm, "agenerate", None)))):
        need = "generate() or agenerate()" if async_mode else "generate()"
        raise TypeError(
            f"llm must be a backend with {need} (OpenAIBackend, AnthropicBackend, MockLLMBackend), "
            f"got {type(llm).__name__}"
        )
    llm = old_backend(llm)  # a backend written for looplet 0.4.1 (generate(prompt) -> str): looplet.compat
    if config is None:
        config = LoopConfig()
    elif not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}")
    if system_prompt is not None:
        from dataclasses import replace

        config = replace(config, system_prompt=system_prompt)
    if state is None:
        state = DefaultState(max_steps=config.max_steps if max_steps is None else max_steps)
    elif not (hasattr(state, "record") or isinstance(getattr(state, "steps", None), list)):
        raise TypeError(
            f"state must have a `steps` list or a record(step) method (use DefaultState()), "
            f"got {type(state).__name__}"
        )
    if max_steps is not None:
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        limit = max_steps
    else:
        limit = config.max_steps
        own = getattr(state, "max_steps", None)
        if isinstance(own, int) and own >= 1:
            limit = min(limit, own)
    if hooks is None:
        hooks = []
    elif not isinstance(hooks, (list, tuple)):
        raise TypeError(f"hooks must be a list of hook objects, got {type(hooks).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError("cancel must be a CancelToken or threading.Event")
    if context is None:
        context = {}
    resolved = ResolvedHooks(list(hooks), async_mode=async_mode)
    run = Run(os.urandom(16).hex(), config.agent_name, state, config, task)
    run.model = getattr(llm, "model", None)
    run.provider = getattr(llm, "provider", None)
    run.parent = parent
    run.hooks = resolved
    run._events = tuple(fn for _h, fn in resolved.on_event)
    return run, llm, tools, resolved, config, state, context, limit


@old_loop_keywords  # looplet 0.4.1's session_log=, stream=, conversation= (looplet.compat)
def composable_loop(
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
) -> Generator[Step, None, RunResult]:
    """Run an agent: yields one :class:`Step` per tool call; returns a :class:`RunResult`
    (``StopIteration.value``, also ``state.result``).

    ``parent`` continues a trace from elsewhere: a W3C ``traceparent`` string (default: the
    ``TRACEPARENT`` environment variable is read by tracing hooks) or an OpenTelemetry ``Context``.
    """
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
        async_mode=False,
        parent=parent,
    )
    return _drive(*args, cancel)


def run_loop(*args: Any, **kwargs: Any) -> RunResult:
    """Run ``composable_loop`` to the end and return its :class:`RunResult`."""
    gen = composable_loop(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _drive(
    run: Run,
    llm: Any,
    registry: BaseToolRegistry,
    hooks: ResolvedHooks,
    config: LoopConfig,
    state: Any,
    context: Any,
    limit: int,
    cancel: Any,
) -> Generator[Step, None, RunResult]:
    eng = engine(run, llm, registry, hooks, config, state, context, run.task, limit, cancel)
    call_llm = llm_chain(hooks.wrap_llm_call, llm, config.strict_hooks)
    run_tool = _tool_chain(hooks.wrap_tool, registry, config.tool_timeout_s, config.max_tool_output_chars)
    pool: Any = None
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
                                send = _await_sync(send)
                        elif kind is LLM:
                            send = _call_llm(call_llm, eff[1])
                        elif kind is TOOLS:
                            calls = eff[1]
                            if len(calls) == 1:
                                send = [run_tool(calls[0])]
                            else:
                                if pool is None:
                                    from concurrent.futures import ThreadPoolExecutor

                                    pool = ThreadPoolExecutor(
                                        max_workers=8, thread_name_prefix="looplet-tool"
                                    )
                                futures = [
                                    pool.submit(contextvars.copy_context().run, run_tool, c) for c in calls
                                ]
                                send = [f.result() for f in futures]
                        elif kind is SLEEP:
                            time.sleep(eff[1])
                            send = None
                    except Exception as exc:
                        send = Raised(exc)
                    except BaseException as exc:  # KeyboardInterrupt and friends end the run as cancelled
                        send = Interrupted(exc)
            finally:
                _CURRENT_RUN.reset(token)
            try:
                yield eff[1]
                send = None
            except GeneratorExit:
                closed = True
                send = CLOSED
            except BaseException as exc:  # thrown in by the caller: end the run, then re-raise
                thrown = exc
                send = Interrupted(exc)
    except StopIteration as stop:
        if thrown is not None:
            raise thrown from None
        return stop.value
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
        eng.close()


def _await_sync(awaitable: Any) -> Any:
    """Run an ``async def`` hook from the sync loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def wrap() -> Any:
            return await awaitable

        return asyncio.run(wrap())
    raise TypeError(
        "an async hook was called from composable_loop inside a running event loop; "
        "use async_composable_loop there"
    )


def _call_llm(chain: Chain, call: LLMCall) -> tuple[LLMCall, Any, list[Fault]]:
    """One attempt through the chain: (the record that reached the model, its outcome, hook faults)."""
    chain.last = None
    try:
        out: Any = chain(call)
    except Exception as exc:
        out = Raised(exc)
    except BaseException as exc:  # KeyboardInterrupt and friends end the run as cancelled
        out = Interrupted(exc)
    return chain.last or call, out, chain.drain()


def _tool_chain(
    wraps: Iterable[tuple[Any, Callable[..., Any]]],
    registry: BaseToolRegistry,
    timeout: float | None,
    max_chars: int | None = None,
) -> Callable[[ToolCall], ToolResult]:
    dispatch = registry.dispatch

    def innermost(tc: ToolCall) -> ToolResult:
        return dispatch(tc, timeout, max_chars)

    chain = _fold(wraps, innermost)
    if not wraps:
        return chain

    def guarded(tc: ToolCall) -> ToolResult:  # a wrap_tool hook must not turn a tool call into a crash
        try:
            out = chain(tc)
        except Exception as exc:
            return ToolResult(
                error=f"{type(exc).__name__}: {exc}",
                error_kind="tool_exception",
                text=f"ERROR: {type(exc).__name__}: {exc}",
            )
        return (
            out
            if isinstance(out, ToolResult)
            else ToolResult(error=f"a wrap_tool hook returned {type(out).__name__}", error_kind="hook_error")
        )

    return guarded


def _fold(
    wraps: Iterable[tuple[Any, Callable[..., Any]]], innermost: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    fn = innermost
    for _hook, wrap in reversed(tuple(wraps)):
        fn = _link(wrap, fn)
    return fn


def _link(wrap: Callable[..., Any], call_next: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def step(arg: Any) -> Any:
        return wrap(arg, call_next)

    return step


# looplet 0.4.1's names from this module (LoopHook, LoopContext): looplet.compat
__getattr__ = module_getattr("looplet.loop", ("LoopHook", "LoopContext"))
