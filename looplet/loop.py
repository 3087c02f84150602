"""``composable_loop``: the synchronous driver of the engine, and the argument checks both loops share."""

from __future__ import annotations

import contextvars
import inspect
import os
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from looplet import compat, shutdown
from looplet._chain import ToolTerminal, llm_chain, tool_chain
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
) -> Prepared:
    """Check every argument once, with a message that names it and the fix."""
    _check_task(task)
    registry = _check_tools(tools)
    _check_llm(llm, async_mode)
    llm = old_backend(llm)  # a backend written for looplet 0.4.1 (generate(prompt) -> str): looplet.compat
    config = _check_config(config, system_prompt)
    state = _check_state(state, config, max_steps)
    limit = _step_limit(max_steps, config, state)
    if hooks is None:
        hooks = []
    elif not isinstance(hooks, (list, tuple)):
        raise TypeError(f"hooks must be a list of hook objects, got {type(hooks).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError("cancel must be a CancelToken or threading.Event")
    bind = None
    if (
        type(config) is not LoopConfig or compat.OLD_RUN_FEATURES
    ):  # looplet 0.4.1 settings: looplet._compat_loop
        from looplet._compat_loop import old_run

        hooks, limit, bind = old_run(config, list(hooks), state, limit, registry)
    resolved = ResolvedHooks(list(hooks), async_mode=async_mode, tools=registry)
    run = Run(os.urandom(16).hex(), config.agent_name, state, config, task)
    run.model = getattr(llm, "model", None)
    run.provider = getattr(llm, "provider", None)
    run.parent = parent
    run.hooks = resolved
    run._events = tuple(fn for _h, fn in resolved.on_event)
    p = Prepared(
        run, llm, registry, resolved, config, state, {} if context is None else context, limit, cancel
    )
    if bind is not None:
        bind(p)
    return p


def _check_task(task: Any) -> None:
    if task is not None and not isinstance(task, dict):
        if isinstance(task, str):
            raise TypeError(f"task must be a dict, got a str; write task={{'goal': {task[:40]!r}}}")
        raise TypeError(f"task must be a dict like {{'goal': '...'}}, got {type(task).__name__}")


def _check_tools(tools: Any) -> BaseToolRegistry:
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
    return tools


def _check_llm(llm: Any, async_mode: bool) -> None:
    has_sync = callable(getattr(llm, "generate", None))
    if not (has_sync or (async_mode and callable(getattr(llm, "agenerate", None)))):
        need = "generate() or agenerate()" if async_mode else "generate()"
        raise TypeError(
            f"llm must be a backend with {need} (OpenAIBackend, AnthropicBackend, MockLLMBackend), "
            f"got {type(llm).__name__}"
        )


def _check_config(config: Any, system_prompt: Any) -> LoopConfig:
    if config is None:
        config = LoopConfig()
    elif not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}")
    checked: LoopConfig = config
    if system_prompt is not None:
        from dataclasses import replace

        checked = replace(checked, system_prompt=system_prompt)
    return checked


def _check_state(state: Any, config: LoopConfig, max_steps: Any) -> Any:
    if state is None:
        return DefaultState(max_steps=config.max_steps if max_steps is None else max_steps)
    if not (hasattr(state, "record") or isinstance(getattr(state, "steps", None), list)):
        raise TypeError(
            f"state must have a `steps` list or a record(step) method (use DefaultState()), "
            f"got {type(state).__name__}"
        )
    return state


def _step_limit(max_steps: Any, config: LoopConfig, state: Any) -> int:
    if max_steps is not None:
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        return max_steps
    limit = config.max_steps
    own = getattr(state, "max_steps", None)
    if isinstance(own, int) and own >= 1:
        limit = min(limit, own)
    return limit


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
        async_mode=False,
        parent=parent,
    )
    return _drive(p)


def run_loop(*args: Any, **kwargs: Any) -> RunResult:
    """Run ``composable_loop`` to the end and return its :class:`RunResult`."""
    gen = composable_loop(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result: RunResult = stop.value
            return result


def _drive(p: Prepared) -> Generator[Step, None, RunResult]:
    """Perform the engine's effects until it hands out a Step; yield it; repeat. A caller that breaks
    out (``GeneratorExit``) or throws in still gets the run torn down (``on_loop_end`` runs)."""
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
                while type(eff) is not Step:
                    send = handlers[type(eff)](eff)
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
            except BaseException as exc:  # thrown in by the caller: end the run, then re-raise
                thrown, send = exc, Interrupted(exc)
    except StopIteration as stop:
        if thrown is not None:
            raise thrown from None
        result: RunResult = stop.value
        return result
    finally:
        shutdown.run_ended()
        perform.close()
        eng.close()


class _Performer:
    """Performs the engine's effects synchronously: ``handlers[type(effect)](effect)``, one method per
    kind. Every failure comes back as a value (Raised/Interrupted)."""

    __slots__ = ("llm", "tools", "terminal", "pool", "done")

    def __init__(self, p: Prepared) -> None:
        strict = p.config.strict_hooks
        self.llm = llm_chain(p.hooks.wrap_llm_call, p.llm, strict)
        self.terminal = ToolTerminal(p.registry, p.config.max_tool_output_chars)
        self.tools = tool_chain(p.hooks.wrap_tool, self.terminal, strict)
        self.pool: Any = None
        self.done = LLMDone.new()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        """The method that performs each kind of effect (a dict the driver holds, not this object: its
        bound methods would make a cycle that keeps the run's records for the garbage collector)."""
        return {
            CallHook: self.call_hook,
            LLMCall: self.call_llm,
            RunTools: self.run_tools,
            Sleep: self.sleep,
        }

    def call_hook(self, eff: CallHook) -> Any:
        try:
            out = eff.fn(*eff.args)
            return _await_sync(out) if inspect.isawaitable(out) else out
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:  # KeyboardInterrupt and friends end the run as cancelled
            return Interrupted(exc)

    def call_llm(self, call: LLMCall) -> LLMDone:
        """One attempt through the chain: the record that reached the model, its outcome, hook faults."""
        chain, done = self.llm, self.done
        chain.last = None
        try:
            done.value = chain.fn(call)
        except Exception as exc:
            done.value = Raised(exc)
        except BaseException as exc:
            done.value = Interrupted(exc)
        done.record = chain.last or call
        done.faults = chain.drain() if chain.faults else ()
        return done

    def run_tools(self, eff: RunTools) -> Any:
        calls, chain = eff.calls, self.tools
        try:
            self.terminal.timeout = eff.timeout_s
            if len(calls) == 1:
                eff.results.append(chain.fn(calls[0]))
            else:
                eff.results = self.run_parallel(calls)
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:
            return Interrupted(exc)
        if chain.faults:
            eff.faults = chain.drain()
        return eff

    def run_parallel(self, calls: list[ToolCall]) -> list[ToolResult]:
        """Parallel calls: a thread each (not the run's worker, which serves one call at a time)."""
        chain, terminal = self.tools, self.terminal
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="looplet-tool")
        worker, terminal.worker = terminal.worker, None
        try:
            futures = [self.pool.submit(contextvars.copy_context().run, chain, c) for c in calls]
            return [f.result() for f in futures]
        finally:
            terminal.worker = worker

    def sleep(self, eff: Sleep) -> Any:
        try:
            time.sleep(eff.seconds)
        except Exception as exc:
            return Raised(exc)
        except BaseException as exc:
            return Interrupted(exc)
        return None

    def close(self) -> None:
        self.terminal.close()
        self.llm.close()
        self.tools.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False)


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


# looplet 0.4.1's names from this module (LoopHook, LoopContext): looplet.compat
__getattr__ = module_getattr("looplet.loop", ("LoopHook", "LoopContext"))
