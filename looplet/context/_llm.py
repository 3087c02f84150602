"""LLM calls a hook makes on its own (a summary): sent through the run's ``wrap_llm_call`` hooks so they
are traced and measured like the loop's calls (the same innermost link writes their facts on the
``LLMCall``), reported to ``on_llm_call`` observers, and added to the run's usage, cost and call count.

``drive`` / ``adrive`` run a compaction plan (a generator yielding ``(llm, LLMCall)``) synchronously or
with ``await``; the plan itself is written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

from looplet._chain import async_llm_chain, llm_chain
from looplet._engine import side_call_done
from looplet.hooks import current_run
from looplet.types import LLMCall, LLMResponse

Plan = Generator[tuple[Any, LLMCall], Any, Any]


def drive(plan: Plan) -> Any:
    """Run a plan, calling the LLM with ``generate``."""
    return start(plan, async_mode=False)


async def adrive(plan: Plan) -> Any:
    """Run a plan, calling the LLM with ``agenerate`` (or ``generate`` in a thread)."""
    out = start(plan, async_mode=True)
    return await out if inspect.iscoroutine(out) else out


def start(plan: Plan, async_mode: bool) -> Any:
    """Run a plan synchronously until it first needs the LLM. In async mode the rest is returned as a
    coroutine (for the async loop to await); otherwise the plan's result is returned."""
    try:
        request = next(plan)
    except StopIteration as stop:
        return stop.value
    if not async_mode:
        return _continue(plan, request)
    return _finish_async(plan, request)


def _continue(plan: Plan, request: tuple[Any, LLMCall]) -> Any:
    try:
        while True:
            try:
                send: Any = call(*request)
            except Exception as exc:
                send = exc
            request = plan.send(send)
    except StopIteration as stop:
        return stop.value


async def _finish_async(plan: Plan, request: tuple[Any, LLMCall]) -> Any:
    try:
        while True:
            try:
                send: Any = await acall(*request)
            except Exception as exc:
                send = exc
            request = plan.send(send)
    except StopIteration as stop:
        return stop.value


def call(llm: Any, c: LLMCall) -> LLMResponse:
    """One LLM call through the current run's ``wrap_llm_call`` chain (sync loop)."""
    run = current_run()
    if c.step == 0 and run is not None:
        c.step = len(getattr(run.state, "steps", ())) + 1
    chain = llm_chain(_wraps(run), llm, _strict(run))
    try:
        out = chain(c)
    except BaseException as exc:
        side_call_done(run, chain.last or c, chain.drain(), exc)
        raise
    side_call_done(run, chain.last or c, chain.drain(), None)
    return _checked(out)


async def acall(llm: Any, c: LLMCall) -> LLMResponse:
    """One LLM call through the current run's wrap chain (async loop: ``awrap_llm_call`` where present)."""
    run = current_run()
    if c.step == 0 and run is not None:
        c.step = len(getattr(run.state, "steps", ())) + 1
    chain = async_llm_chain(_wraps(run), llm, _strict(run))
    error: BaseException | None = None
    try:
        out = chain(c)
        while inspect.isawaitable(out):
            out = await out
    except BaseException as exc:
        error = exc
        raise
    finally:
        for awaitable in side_call_done(run, chain.last or c, chain.drain(), error):
            await awaitable
    return _checked(out)


def _wraps(run: Any) -> tuple[Any, ...]:
    hooks = getattr(run, "hooks", None)
    return tuple(hooks.wrap_llm_call) if hooks is not None else ()


def _strict(run: Any) -> bool:
    return bool(getattr(getattr(run, "config", None), "strict_hooks", False))


def _checked(response: Any) -> LLMResponse:
    if not isinstance(response, LLMResponse):
        raise TypeError(f"the backend returned {type(response).__name__}, not an LLMResponse")
    return response
