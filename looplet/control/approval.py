"""ApprovalHook: chosen tool calls wait for a human's yes or no.

With a ``handler`` (``def`` or ``async def``, given the ToolCall, returning True/False or a HookDecision)
the question is asked inline. Without one the run stops with stop reason ``awaiting_approval``; the call
is recorded in ``state.metadata["looplet.approval"]`` and kept by the checkpoint, and
``resume(dir, ..., approvals={call_id: True/False})`` continues exactly there: the call runs, or the
model is told it was refused.

Observability: ``emit_event("approval", tool=..., decision="requested"|"approved"|"refused",
pending=+1|-1, wait_s=...)`` (metrics hooks keep the ``looplet_approvals_pending`` gauge from
``pending`` and the ``looplet_approval_wait_seconds`` histogram from ``wait_s``) and a log line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from looplet.control.checkpoint import APPROVALS, PENDING_APPROVAL, Checkpoint
from looplet.hooks import Allow, Deny, HookDecision, current_run, emit_event
from looplet.types import ToolCall

__all__ = ["ApprovalHook"]

log = logging.getLogger("looplet")

REFUSED = "a human refused this call"


class ApprovalHook:
    """Ask before running chosen tool calls.

    tools: tool names, or a predicate ``(tool_call) -> bool``; None asks for every call.
    handler: asks inline; None pauses the run with ``awaiting_approval``.
    checkpoint_dir: when the run pauses, also write a checkpoint there (not needed when a
        ``CheckpointHook`` is in the run; ``resume(state, ...)`` also works from the state in memory).
    """

    handles_approvals = True

    def __init__(
        self,
        tools: Iterable[str] | Callable[[ToolCall], bool] | None = None,
        handler: Callable[[ToolCall], Any] | None = None,
        *,
        checkpoint_dir: Any = None,
    ) -> None:
        self._every_call = tools is None  # a bare ApprovalHook() (looplet._compat_examples reads it)
        if tools is None:
            self._match: Callable[[ToolCall], bool] = lambda tc: True
        elif callable(tools):
            self._match = tools
        elif isinstance(tools, str):
            raise TypeError(
                f"ApprovalHook(tools=...) takes a list of names, got the string {tools!r}; "
                f"write tools=[{tools!r}]"
            )
        else:
            names = frozenset(tools)
            self._match = lambda tc: tc.tool in names
        if handler is not None and not callable(handler):
            raise TypeError(f"ApprovalHook(handler=...) must be callable, got {type(handler).__name__}")
        self.handler = handler
        self.checkpoint_dir = checkpoint_dir

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        return self.still_waiting(state, self._match)

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
        if not self._match(tool_call):
            return None
        return self.decide(state, tool_call, step_num)

    def still_waiting(self, state: Any, matches: Callable[[ToolCall], bool]) -> Any:
        """A run resumed while its paused call has no decision yet (and no handler could give one) stops
        again at once: no LLM call, no new step, the checkpoint unchanged."""
        if self.handler is not None:
            return None
        meta = _metadata(state)
        pending = meta.get(PENDING_APPROVAL)
        if not isinstance(pending, dict) or pending.get("call_id") in (meta.get(APPROVALS) or {}):
            return None
        if not matches(
            ToolCall(str(pending.get("tool")), dict(pending.get("args") or {}), str(pending["call_id"]))
        ):
            return None
        log.info(
            "approval: %s (call %s) is still waiting for a decision", pending.get("tool"), pending["call_id"]
        )
        run = current_run()
        if run is not None:
            run.scratch[self] = True
        return HookDecision(stop="awaiting_approval")

    def decide(self, state: Any, tc: ToolCall, step_num: int) -> Any:
        """The decision for a call that needs approval (also used by PermissionHook's ``ask`` rules)."""
        meta = _metadata(state)
        decisions = meta.get(APPROVALS) or {}
        if tc.id in decisions:
            pending = meta.get(PENDING_APPROVAL)
            waited = None
            if isinstance(pending, dict) and pending.get("call_id") == tc.id:
                meta.pop(PENDING_APPROVAL, None)
                waited = max(0.0, time.time() - float(pending.get("requested_at", time.time())))
            answer = decisions.pop(tc.id)
            if not decisions:
                meta.pop(APPROVALS, None)
            return _answered(tc, answer, waited, resumed=True)
        if self.handler is not None:
            return self._ask(tc)
        return self._pause(meta, tc, step_num)

    def _pause(self, meta: dict[str, Any], tc: ToolCall, step_num: int) -> HookDecision:
        meta[PENDING_APPROVAL] = {
            "call_id": tc.id,
            "tool": tc.tool,
            "args": tc.args,
            "step": step_num,
            "requested_at": time.time(),
        }
        emit_event("approval", tool=tc.tool, decision="requested", pending=1, call_id=tc.id)
        log.info("approval: %s (call %s) needs approval; the run pauses (awaiting_approval)", tc.tool, tc.id)
        run = current_run()
        if run is not None:
            run.scratch[self] = True
        return HookDecision(stop="awaiting_approval")

    def _ask(self, tc: ToolCall) -> Any:
        emit_event("approval", tool=tc.tool, decision="requested", pending=1, call_id=tc.id)
        t0 = time.perf_counter()
        run = current_run()
        async_mode = bool(getattr(getattr(run, "hooks", None), "async_mode", False))
        if async_mode and not inspect.iscoroutinefunction(self.handler):
            return self._ask_in_thread(tc, t0)  # a blocking handler must not stall the event loop
        try:
            answer = self.handler(tc)  # type: ignore[misc]
        except Exception as exc:
            return _handler_failed(tc, exc, t0)
        if inspect.isawaitable(answer):
            return self._await(tc, answer, t0)
        return _answered(tc, answer, time.perf_counter() - t0)

    async def _await(self, tc: ToolCall, answer: Any, t0: float) -> HookDecision:
        try:
            value = await answer
        except Exception as exc:
            return _handler_failed(tc, exc, t0)
        return _answered(tc, value, time.perf_counter() - t0)

    async def _ask_in_thread(self, tc: ToolCall, t0: float) -> HookDecision:
        return await self._await(tc, asyncio.to_thread(self.handler, tc), t0)  # type: ignore[arg-type]

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run = current_run()
        if self.checkpoint_dir is not None and run is not None and run.scratch.get(self):
            Checkpoint.from_state(state, run, stop_reason=getattr(result, "stop_reason", None)).save(
                self.checkpoint_dir
            )


def _metadata(state: Any) -> dict[str, Any]:
    meta = getattr(state, "metadata", None)
    if isinstance(meta, dict):
        return meta
    run = current_run()  # a state without metadata: keep it for this run only
    return run.scratch.setdefault(ApprovalHook, {}) if run is not None else {}


def _answered(tc: ToolCall, answer: Any, waited: float | None, resumed: bool = False) -> HookDecision:
    if isinstance(answer, HookDecision):
        decision = answer
        approved = answer.block is None and not answer.stop
    elif isinstance(answer, str):  # a refusal with its reason
        decision, approved = Deny(f"{REFUSED}: {answer}"), False
    else:
        approved = bool(answer)
        decision = Allow() if approved else Deny(REFUSED)
    attrs: dict[str, Any] = {
        "tool": tc.tool,
        "decision": "approved" if approved else "refused",
        "call_id": tc.id,
    }
    if waited is not None or not resumed:
        attrs["pending"] = -1
    if waited is not None:
        attrs["wait_s"] = round(waited, 6)
    emit_event("approval", **attrs)
    log.info(
        "approval: %s (call %s) %s%s",
        tc.tool,
        tc.id,
        attrs["decision"],
        f" after {waited:.3f}s" if waited is not None else "",
    )
    return decision


def _handler_failed(tc: ToolCall, exc: Exception, t0: float) -> HookDecision:
    log.warning("approval: the handler raised %s: %s; refusing %s", type(exc).__name__, exc, tc.tool)
    return _answered(tc, f"the approval handler failed ({type(exc).__name__})", time.perf_counter() - t0)
