"""LLM calls a hook makes on its own (a summary): sent through the run's ``wrap_llm_call`` hooks so they
are traced and measured like the loop's calls, and added to the run's usage and cost.

``drive`` / ``adrive`` run a compaction plan (a generator yielding ``(llm, LLMCall)``) synchronously or
with ``await``; the plan itself is written once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from typing import Any

from looplet.hooks import current_run
from looplet.telemetry.cost import cost_of
from looplet.types import LLMCall, LLMResponse, Usage

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

    def innermost(x: LLMCall) -> Any:
        return llm.generate(x.messages, tools=x.tools, **x.options)

    out = _fold(_wraps(run), innermost)(c)
    return _account(run, llm, out)


async def acall(llm: Any, c: LLMCall) -> LLMResponse:
    """One LLM call through the current run's wrap chain (async loop: ``awrap_llm_call`` where present)."""
    run = current_run()
    if c.step == 0 and run is not None:
        c.step = len(getattr(run.state, "steps", ())) + 1
    agenerate = getattr(llm, "agenerate", None)

    def innermost(x: LLMCall) -> Any:
        if callable(agenerate):
            return agenerate(x.messages, tools=x.tools, **x.options)
        return asyncio.to_thread(llm.generate, x.messages, tools=x.tools, **x.options)

    out = _fold(_wraps(run), innermost)(c)
    while inspect.isawaitable(out):
        out = await out
    return _account(run, llm, out)


def _wraps(run: Any) -> tuple[Any, ...]:
    hooks = getattr(run, "hooks", None)
    return tuple(hooks.wrap_llm_call) if hooks is not None else ()


def _fold(wraps: tuple[Any, ...], innermost: Callable[[Any], Any]) -> Callable[[Any], Any]:
    fn = innermost
    for _hook, wrap in reversed(wraps):
        fn = (lambda w, nxt: lambda x: w(x, nxt))(wrap, fn)
    return fn


def _account(run: Any, llm: Any, response: Any) -> LLMResponse:
    """Add the call's tokens and cost to the run's totals (``state.usage``, ``state.cost_usd``)."""
    if not isinstance(response, LLMResponse):
        raise TypeError(f"the backend returned {type(response).__name__}, not an LLMResponse")
    state = getattr(run, "state", None)
    usage = response.usage
    if state is not None and usage is not None:
        total = getattr(state, "usage", None)
        if isinstance(total, Usage):
            total.add(usage)
        cost = cost_of(response.model or getattr(llm, "model", None), usage)
        if cost is not None and hasattr(state, "cost_usd"):
            state.cost_usd = (state.cost_usd or 0.0) + cost
    return response
