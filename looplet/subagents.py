"""Sub-agents: an agent given to another agent as a tool.

An *agent* here is any function that runs ``composable_loop``/``async_composable_loop``; :func:`agent_tool`
turns it into a :class:`~looplet.tools.ToolSpec` whose schema comes from the function's signature, like
``@tool``::

    @agent_tool(description="Research a question with the web tools; returns a short answer.")
    def research(question: str):
        return run_loop(llm, task={"goal": question}, tools=web_tools, hooks=hooks)

    tools = tools_from([research, write_report])

The function may return the child's ``RunResult`` (``run_loop``), the loop itself (a ``composable_loop``
or ``async_composable_loop`` generator, which is run to the end here), or anything else after running the
loop itself (that value is then the tool's result). ``async def`` functions are awaited.

What the parent gets:

* **Result.** The child's final answer is the tool's result. A child that stopped without finishing
  (``max_steps``, ``llm_error``, ...) becomes a tool error with ``error_kind="subagent_incomplete"`` that
  names the stop reason, so the parent model can react and the parent run goes on.
* **One trace.** The child runs inside the tool, so the parent's ``execute_tool`` span is current and
  the child's ``invoke_agent`` span starts under it (``TracingHook`` uses the current span when the run
  has no explicit ``parent``).
* **Roll-up, counted once.** Every loop that finishes inside the tool reports its ``RunResult``; their
  tokens and cost are carried on the ``ToolResult`` (``usage``, ``cost_usd``) and the loop adds them to
  the parent's ``RunResult`` totals. The calling Step's ``usage`` and ``cost_usd`` stay the parent's own
  LLM call (the facts of the call that proposed the Step), so each number is counted once:
  ``RunResult.cost_usd`` = the parent's own calls + each Step's ``tool_result.cost_usd``, and per-call
  telemetry (``chat`` spans, token and cost metrics, ``llm.call`` log lines) counts each token and each
  cent in the run that made the call.
* **Steps.** The child's Steps hang under the calling Step as ``Step.children`` (and in ``to_dict()``).

Only the standard library is used.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, overload

from looplet._engine import RUN_RESULTS
from looplet.tools import ToolSpec, schema_from_function
from looplet.types import RunResult, Step, ToolResult, Usage

__all__ = ["agent_tool"]

_MAX_TEXT = 50_000


@overload
def agent_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
) -> ToolSpec: ...


@overload
def agent_tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def agent_tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
) -> ToolSpec | Callable[[Callable[..., Any]], ToolSpec]:
    """Turn an agent function (sync or ``async def``) into a :class:`ToolSpec` that runs it as a sub-agent.

    ``@agent_tool`` and ``@agent_tool(description=...)`` both work; the description defaults to the
    docstring, the name to the function's name, the parameters to its signature. ``timeout_s`` bounds the
    whole child run (an async child is cancelled and ends as ``cancelled``; a sync child is abandoned in its
    thread, so prefer the child's own ``max_steps``). ``concurrent_safe=True`` lets
    ``LoopConfig(parallel_tools=True)`` run several sub-agents of one response at once.
    """

    def build(f: Callable[..., Any]) -> ToolSpec:
        if not callable(f):
            raise TypeError(f"agent_tool() takes a function that runs an agent, got {type(f).__name__}")
        tool_name = name or getattr(f, "__name__", None) or "agent"
        desc = description or inspect.getdoc(f) or f"Ask the {tool_name} agent."
        params = schema_from_function(f)
        if inspect.iscoroutinefunction(f):

            async def execute(**args: Any) -> ToolResult:
                runs: list[RunResult] = []
                token = RUN_RESULTS.set(runs)
                try:
                    out = await _settle_async(await f(**args))
                finally:
                    RUN_RESULTS.reset(token)
                return _result(tool_name, out, runs)
        else:

            def execute(**args: Any) -> ToolResult:  # type: ignore[misc]
                runs: list[RunResult] = []
                token = RUN_RESULTS.set(runs)
                try:
                    out = _settle_sync(f(**args), tool_name)
                finally:
                    RUN_RESULTS.reset(token)
                return _result(tool_name, out, runs)

        execute.__name__ = tool_name
        execute.__doc__ = desc
        execute.__wrapped__ = f  # type: ignore[attr-defined]
        return ToolSpec(
            tool_name, desc, params, execute, timeout_s=timeout_s, concurrent_safe=concurrent_safe
        )

    return build(fn) if fn is not None else build


class _Ran:
    """Marks a loop this module drove to its end: its RunResult is the agent's answer."""

    __slots__ = ("result",)

    def __init__(self, result: RunResult | None) -> None:
        self.result = result


def _settle_sync(out: Any, tool_name: str) -> Any:
    if inspect.isgenerator(out):
        while True:
            try:
                next(out)
            except StopIteration as stop:
                return _Ran(stop.value if isinstance(stop.value, RunResult) else None)
    if inspect.isasyncgen(out) or inspect.isawaitable(out):
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_settle_async(out))
        raise TypeError(
            f"agent tool {tool_name!r} returned an async loop inside a running event loop; "
            "write the agent as `async def` so it is awaited"
        )
    return out


async def _settle_async(out: Any) -> Any:
    while inspect.isawaitable(out):
        out = await out
    if inspect.isasyncgen(out):
        async for _ in out:
            pass
        return _Ran(None)  # an async loop has no return value; its RunResult arrives through RUN_RESULTS
    if inspect.isgenerator(out):
        return _settle_sync(out, "?")
    return out


def _result(tool_name: str, out: Any, runs: list[RunResult]) -> ToolResult:
    """The ToolResult of one sub-agent call: its answer plus every run that finished inside it."""
    ran: RunResult | None = None
    if isinstance(out, _Ran):
        ran = out.result or (runs[-1] if runs else None)
        if ran is None:
            return ToolResult(
                error=f"The sub-agent {tool_name} ran no loop to its end.",
                error_kind="subagent_incomplete",
                text=f"ERROR: The sub-agent {tool_name} ran no loop to its end.",
            )
    elif isinstance(out, RunResult):
        ran = out
    if ran is not None and not any(r is ran for r in runs):
        runs = runs + [ran]  # a loop run where RUN_RESULTS was not visible (a bare thread): counted once

    usage: Usage | None = None
    cost: float | None = None
    children: list[Step] = []
    for r in runs:
        if r.usage is not None:
            usage = (usage or Usage()) + r.usage
        if r.cost_usd is not None:
            cost = (cost or 0.0) + r.cost_usd
        children.extend(r.steps)

    if ran is None:  # the function returned its own answer
        return ToolResult(data=out, text=_text(out), usage=usage, cost_usd=cost, children=children)
    if ran.stop_reason != "done":
        why = f": {ran.error}" if ran.error else ""
        msg = (
            f"The sub-agent {tool_name} stopped ({ran.stop_reason}) after {len(ran.steps)} steps "
            f"without an answer{why}"
        )
        return ToolResult(
            error=msg,
            error_kind="subagent_incomplete",
            text=f"ERROR: {msg}",
            usage=usage,
            cost_usd=cost,
            children=children,
        )
    data = ran.final_output
    return ToolResult(data=data, text=_text(data), usage=usage, cost_usd=cost, children=children)


def _text(data: Any) -> str:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=repr)
        except (TypeError, ValueError):
            text = repr(data)
    if len(text) > _MAX_TEXT:
        text = f"{text[:_MAX_TEXT]}… [cut: {len(text) - _MAX_TEXT} of {len(text)} characters not shown]"
    return text
