"""The loop's decisions, written once for the sync and the async loop.

The engine is a plain generator that never does I/O itself: it yields *effects* (call a hook, call the
LLM, run tools, sleep, hand a Step to the caller) and receives their outcome. ``loop.py`` and
``async_loop.py`` are thin drivers that perform effects synchronously or with ``await``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import json
import logging
import random
import time
from collections.abc import Generator
from typing import Any

from looplet._chain import replayed
from looplet.config import DEFAULT_SYSTEM_PROMPT, LoopConfig
from looplet.errors import HookError, LLMError
from looplet.hooks import HookDecision, ResolvedHooks, Run
from looplet.tools import BaseToolRegistry
from looplet.types import LLMCall, LLMResponse, RunResult, Step, ToolCall, ToolResult, Usage

log = logging.getLogger("looplet")

#: ``LLMResponse.provider`` of an answer a hook gives back instead of calling the model (a CheckpointHook
#: replaying calls proposed before a pause or a crash): it is not counted as an LLM call.
REPLAYED = "looplet.replay"

# effect kinds
CALL, LLM, TOOLS, STEP, SLEEP = range(5)
CLOSED = object()  # sent back for STEP when the caller closed the generator


class Raised:
    """An exception raised while performing an effect (hook, LLM, tool)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Interrupted(Raised):
    """A BaseException (KeyboardInterrupt, CancelledError, an exception thrown in by the caller):
    the run ends as ``cancelled`` and the exception is re-raised afterwards."""


Effect = tuple[Any, ...]
Engine = Generator[Effect, Any, RunResult]

#: Set by ``looplet.subagents`` around a sub-agent tool: every run that starts inside it appends its
#: RunResult here when it ends, so the tool can roll the child's steps, tokens and cost up into its Step.
RUN_RESULTS: contextvars.ContextVar[list[RunResult] | None] = contextvars.ContextVar(
    "looplet_run_results", default=None
)


class _Totals:
    __slots__ = ("usage", "cost", "llm_calls", "llm_errors")

    def __init__(self, state: Any) -> None:
        usage = getattr(state, "usage", None)
        self.usage = usage if isinstance(usage, Usage) else Usage()
        self.cost = getattr(state, "cost_usd", None)
        self.llm_calls = 0
        self.llm_errors = 0


def engine(
    run: Run,
    llm: Any,
    registry: BaseToolRegistry,
    hooks: ResolvedHooks,
    config: LoopConfig,
    state: Any,
    context: Any,
    task: Any,
    max_steps: int,
    cancel: Any,
) -> Engine:
    started = time.perf_counter()
    sink = RUN_RESULTS.get()
    H = hooks
    session_log: list[dict[str, Any]] = _transcript(state, config, registry, task)
    totals = run._totals = _Totals(state)
    stop: str | None = None
    error: str | None = None
    final: Any = None
    interrupt: BaseException | None = None
    fatal: BaseException | None = None
    step_num = len(state.steps)
    schemas = registry.schemas()
    done_tool = config.done_tool
    strict = config.strict_hooks
    options = config.llm_options()
    if H.on_llm_chunk:
        options["on_chunk"] = _ChunkCallback(H, state, strict)
    dangling: list[ToolCall] = []
    text_mode = False

    def hook_call(hook: Any, method: str, fn: Any, args: tuple[Any, ...]) -> Generator[Effect, Any, Any]:
        out = yield (CALL, fn, args)
        if type(out) is Raised:
            yield from _report(hook, method, out.exc)
            return None
        if isinstance(out, Interrupted):
            raise _Stop(out)
        return out

    def _report(hook: Any, method: str, exc: BaseException) -> Generator[Effect, Any, None]:
        log.warning("hook %s.%s raised %s: %s", type(hook).__name__, method, type(exc).__name__, exc)
        for _h, fn in H.on_hook_error:
            out = yield (CALL, fn, (hook, method, exc))
            if isinstance(out, Raised):
                log.warning("on_hook_error hook raised %r", out.exc)
        if strict:
            raise _Fatal(
                HookError(f"hook {type(hook).__name__}.{method} raised {type(exc).__name__}: {exc}"), exc
            )

    def decided(
        hook: Any, decision: str, reason: str | None, tool: str | None = None
    ) -> Generator[Effect, Any, None]:
        """Tell ``on_event`` hooks that a hook decision took effect (deny, stop, inject, update, reject_done)."""
        attrs = {
            "hook": type(hook).__name__,
            "decision": decision,
            "reason": reason or "",
            "tool": tool or "",
        }
        for fn in run._events:
            out = yield (CALL, fn, ("hook.decision", attrs))
            if isinstance(out, Raised) and not isinstance(out, Interrupted):
                log.warning("on_event hook raised %r", out.exc)

    def wrong_type(hook: Any, method: str, value: Any, expected: str) -> Generator[Effect, Any, None]:
        yield from _report(
            hook,
            method,
            TypeError(f"{type(hook).__name__}.{method} returned {type(value).__name__}; expected {expected}"),
        )

    try:
        for hook, fn in H.on_loop_start:
            yield from hook_call(hook, "on_loop_start", fn, (state, session_log, context))
        # an on_loop_start hook may have restored the state (CheckpointHook): count on from it
        totals, step_num = _Totals(state), len(state.steps)
        run._totals = totals
        last = state.steps[-1] if state.steps else None
        if last is not None and last.tool_call.tool == done_tool and last.tool_result.error is None:
            # a restored state that already ended with an accepted `done` (a crash after that step was
            # saved): the run is finished; do not ask the model again
            stop, final = "done", last.tool_call.args.get("answer", last.tool_result.data)

        malformed = 0
        while stop is None:
            if cancel is not None and cancel.is_set():
                stop = "cancelled"
                break
            if step_num >= max_steps:
                stop = "max_steps"
                break

            # PROMPT -------------------------------------------------------------------------------
            extra: list[str] = []
            for hook, fn in H.pre_prompt:
                r = yield from hook_call(hook, "pre_prompt", fn, (state, session_log, context, step_num + 1))
                if r is None:
                    continue
                if isinstance(r, str):
                    extra.append(r)
                    yield from decided(hook, "inject", None)
                elif isinstance(r, HookDecision):
                    if r.additional_context:
                        extra.append(r.additional_context)
                        yield from decided(hook, "inject", None)
                    if r.stop:
                        stop = _stop_reason(r.stop)
                        yield from decided(hook, "stop", r.stop)
                        break
                else:
                    yield from wrong_type(hook, "pre_prompt", r, "None, str or HookDecision")
            if stop is not None:
                break
            messages = session_log
            if extra:
                messages = session_log + [{"role": "user", "content": "\n\n".join(extra)}]
            call = LLMCall(messages, schemas, step_num + 1, run.model, run.provider, dict(options))
            if "on_chunk" in options:
                options["on_chunk"].step = step_num + 1

            response: LLMResponse | None = None
            record = call
            for attempt in range(1, config.llm_retries + 2):
                r = yield (LLM, dataclasses.replace(call, attempt=attempt, options=dict(options)))
                record, r, faults = r
                for fault in faults:
                    yield from _report(*fault)
                if record.outcome == "pending":  # the call never reached the terminal link
                    r = _unsent(record, r)
                _account(totals, state, record)
                for hook, fn in H.on_llm_call:  # every attempt, answered or failed
                    yield from hook_call(hook, "on_llm_call", fn, (state, record))
                if isinstance(r, Interrupted):
                    raise _Stop(r)
                if not isinstance(r, Raised):
                    response = r
                    break
                exc = r.exc
                hook_error = exc if isinstance(exc, HookError) else getattr(exc, "__cause__", None)
                if isinstance(hook_error, HookError):  # a strict on_llm_chunk hook failed mid-stream
                    raise _Fatal(hook_error, hook_error.__cause__ or hook_error)
                if isinstance(exc, LLMError) and exc.retryable and attempt <= config.llm_retries:
                    delay = _backoff(config.llm_backoff_s, attempt - 1, exc.retry_after)
                    for hook, fn in H.on_llm_retry:
                        yield from hook_call(hook, "on_llm_retry", fn, (state, attempt, exc, delay))
                    slept = yield (SLEEP, delay)
                    if isinstance(slept, Interrupted):
                        raise _Stop(slept)
                    continue
                stop, error = "llm_error", f"{type(exc).__name__}: {exc}"
                break
            if response is None:
                break
            run.model = record.response_model or run.model

            calls = response.tool_calls
            text_mode = False
            if not calls:
                calls = parse_text_tool_calls(response.text, registry)
                text_mode = bool(calls)
            if not calls:
                malformed += 1
                session_log.append({"role": "assistant", "content": response.text or ""})
                if malformed > config.max_malformed:
                    stop = "llm_error"
                    error = (
                        f"the model answered {malformed} times without calling a tool "
                        f"(last answer: {(response.text or '')[:200]!r}); it may not support tool calls: "
                        "use a model with tool/function calling (e.g. gpt-4o-mini, qwen2.5, llama3.1) "
                        "or enable the server's tool-call parser"
                    )
                    break
                session_log.append(
                    {
                        "role": "user",
                        "content": (
                            "ERROR: your reply did not call a tool. Reply with a tool call "
                            f"(tools: {', '.join(registry.tool_names())}); call `{done_tool}` when the task is complete."
                        ),
                    }
                )
                continue
            malformed = 0
            if text_mode:
                session_log.append({"role": "assistant", "content": response.text or ""})
            else:
                session_log.append(_assistant_message(response.text, calls))
            if cancel is not None and cancel.is_set():
                dangling = list(calls)
                stop = "cancelled"
                break

            # DISPATCH -----------------------------------------------------------------------------
            first = True
            i, n = 0, len(calls)
            while i < n and stop is None:
                j = i + 1
                if config.parallel_tools and _safe(registry, calls[i]):
                    while j < n and _safe(registry, calls[j]):
                        j += 1
                prepared: list[list[Any]] = []  # [number, tool_call, preset_result, done_ok]
                for tc in calls[i:j]:
                    if step_num >= max_steps:
                        stop = "max_steps"
                        break
                    step_num += 1
                    preset: ToolResult | None = None
                    for hook, fn in H.pre_dispatch:
                        r = yield from hook_call(hook, "pre_dispatch", fn, (state, session_log, tc, step_num))
                        if r is None:
                            continue
                        if isinstance(r, ToolResult):
                            preset = r
                            yield from decided(hook, "replace", None, tc.tool)
                        elif isinstance(r, HookDecision):
                            if r.updated_args is not None:
                                tc = ToolCall(tc.tool, dict(r.updated_args), tc.id, tc.reasoning)
                                yield from decided(hook, "update", None, tc.tool)
                            if r.block is not None:
                                hint = (
                                    " You may retry with different arguments."
                                    if r.retry
                                    else " Do not retry this call."
                                )
                                preset = _err(f"Denied: {r.block}.{hint}", "denied")
                                yield from decided(hook, "deny", r.block, tc.tool)
                            if r.stop:
                                stop = _stop_reason(r.stop)
                                preset = preset or _err(
                                    f"Not run: the run was stopped ({r.stop}).", "not_run"
                                )
                                yield from decided(hook, "stop", r.stop, tc.tool)
                        else:
                            yield from wrong_type(hook, "pre_dispatch", r, "None, HookDecision or ToolResult")
                            continue
                        if preset is not None:
                            break
                    done_ok = False
                    if tc.tool == done_tool and preset is None:
                        done_ok = True
                        for hook, fn in H.check_done:
                            r = yield from hook_call(
                                hook, "check_done", fn, (state, session_log, context, step_num)
                            )
                            reason = r.block if isinstance(r, HookDecision) else r
                            if reason:
                                preset = _err(f"Not done yet: {reason}", "done_rejected")
                                done_ok = False
                                yield from decided(hook, "reject_done", str(reason), tc.tool)
                                break
                    prepared.append([step_num, tc, preset, done_ok])
                    if stop is not None:
                        break
                dangling = list(calls[i + len(prepared) :])
                i = j

                to_run = [p[1] for p in prepared if p[2] is None]
                if to_run:
                    results = yield (TOOLS, to_run)
                    if isinstance(results, Interrupted):
                        raise _Stop(results)
                    it = iter(results)
                    for p in prepared:
                        if p[2] is None:
                            p[2] = next(it)

                for number, tc, result, done_ok in prepared:
                    notes: list[str] = []
                    for hook, fn in H.post_dispatch:
                        r = yield from hook_call(
                            hook, "post_dispatch", fn, (state, session_log, tc, result, number)
                        )
                        if r is None:
                            continue
                        if isinstance(r, str):
                            notes.append(r)
                        elif isinstance(r, HookDecision):
                            if r.updated_result is not None:
                                result = _as_result(r.updated_result, result, registry)
                            if r.additional_context:
                                notes.append(r.additional_context)
                            if r.stop and stop is None:
                                stop = _stop_reason(r.stop)
                                yield from decided(hook, "stop", r.stop, tc.tool)
                        else:
                            yield from wrong_type(hook, "post_dispatch", r, "None, str or HookDecision")
                    text = (
                        result.text
                        if result.text is not None
                        else (f"ERROR: {result.error}" if result.error else str(result.data))
                    )
                    if notes:
                        text = text + "\n\n" + "\n".join(notes)
                    if text_mode:
                        session_log.append({"role": "user", "content": f"Result of {tc.tool}: {text}"})
                    else:
                        session_log.append({"role": "tool", "tool_call_id": tc.id, "content": text})
                    step = _step(number, tc, result, record if first else None, run)
                    if result.children or result.usage is not None or result.cost_usd is not None:
                        _roll_up(step, result, totals, state)
                    first = False
                    state.record(step) if hasattr(state, "record") else state.steps.append(step)
                    for hook, fn in H.on_step:
                        yield from hook_call(hook, "on_step", fn, (state, step))
                    for hook, fn in H.should_stop:
                        r = yield from hook_call(hook, "should_stop", fn, (state, number, (step,)))
                        if not r:
                            continue
                        if stop is None:
                            if r is True:
                                stop = f"hook_stop:{type(hook).__name__}"
                            elif isinstance(r, HookDecision) and r.stop:
                                stop = _stop_reason(r.stop)
                            elif isinstance(r, str):
                                stop = f"hook_stop:{r}"
                            if stop is not None:
                                yield from decided(hook, "stop", stop.partition(":")[2], tc.tool)
                    if done_ok and result.error is None:
                        final = tc.args.get("answer", result.data)
                        if stop is None:
                            stop = "done"
                    sent = yield (STEP, step)
                    if sent is CLOSED:
                        stop, error = "cancelled", "the caller closed the loop"
                        dangling = []
                        break
                    if isinstance(sent, Interrupted):
                        raise _Stop(sent)
    except _Stop as s:
        interrupt = s.raised.exc
        stop = "cancelled"
        error = f"{type(interrupt).__name__}: {interrupt}".rstrip(": ")
    except _Fatal as f:
        fatal = f.error
        stop, error = "hook_error", str(f.error)
        fatal.__cause__ = f.cause

    # END ------------------------------------------------------------------------------------------
    if dangling and not text_mode:
        for tc in dangling:  # keep the transcript valid for a resume: every call gets an answer
            session_log.append(
                {"role": "tool", "tool_call_id": tc.id, "content": f"Not run: the run stopped ({stop})."}
            )
    totals.cost = getattr(state, "cost_usd", totals.cost)
    result = RunResult(
        stop_reason=stop or "cancelled",
        steps=list(state.steps),
        usage=totals.usage,
        cost_usd=totals.cost,
        duration_ms=(time.perf_counter() - started) * 1000.0,
        final_output=final,
        error=error,
        run_id=run.run_id,
        trace_id=run.trace_id,
        llm_calls=totals.llm_calls,
        llm_errors=totals.llm_errors,
    )
    if hasattr(state, "result"):
        state.result = result
    if sink is not None:
        sink.append(result)
    for hook, fn in reversed(H.on_loop_end):  # teardown in reverse: the outermost hook sees the rest finish
        out = yield (CALL, fn, (state, session_log, context, result))
        if isinstance(out, Raised) and not isinstance(out, Interrupted):
            log.warning("hook %s.on_loop_end raised %r", type(hook).__name__, out.exc)
            for _h, efn in H.on_hook_error:
                yield (CALL, efn, (hook, "on_loop_end", out.exc))
    if interrupt is not None:
        raise interrupt
    if fatal is not None:
        raise fatal
    return result


class _ChunkCallback:
    """``options["on_chunk"]``: streaming backends call it with each chunk; it calls the ``on_llm_chunk``
    hooks as ``(state, chunk, step_num)``. It returns an awaitable when a hook is ``async def`` (async
    backends await it). A chunk is a dict: ``{"type": "text", "text": ...}`` or ``{"type": "tool_call",
    "index": i, "id": ..., "name": ..., "arguments": "<delta>"}``."""

    __slots__ = ("hooks", "state", "strict", "step", "async_mode")

    def __init__(self, hooks: ResolvedHooks, state: Any, strict: bool) -> None:
        self.hooks = hooks.on_llm_chunk
        self.async_mode = hooks.async_mode
        self.state = state
        self.strict = strict
        self.step = 0

    def __call__(self, chunk: dict[str, Any]) -> Any:
        pending = []
        for hook, fn in self.hooks:
            try:
                out = fn(self.state, chunk, self.step)
            except Exception as exc:
                self._failed(hook, exc)
                continue
            if out is not None and hasattr(out, "__await__"):
                pending.append((hook, out))
        if not pending:
            return None
        if self.async_mode:
            return self._gather(pending)
        import asyncio  # the sync loop: run an ``async def`` chunk hook to completion here

        asyncio.run(self._gather(pending))
        return None

    async def _gather(self, pending: list[tuple[Any, Any]]) -> None:
        for hook, awaitable in pending:
            try:
                await awaitable
            except Exception as exc:
                self._failed(hook, exc)

    def _failed(self, hook: Any, exc: Exception) -> None:
        if self.strict:  # ends the run as hook_error (the engine looks for HookError from the LLM call)
            raise HookError(
                f"hook {type(hook).__name__}.on_llm_chunk raised {type(exc).__name__}: {exc}"
            ) from exc
        log.warning("hook %s.on_llm_chunk raised %r", type(hook).__name__, exc)


def _step(number: int, tc: ToolCall, result: ToolResult, record: LLMCall | None, run: Run) -> Step:
    """A Step, its LLM facts read from the record of the call that proposed it (on the first Step of a
    response only, so sums over Steps are exact)."""
    if record is None:
        return Step(
            number, tc, result, None, 0.0, result.duration_ms, None, run.model, run.trace_id, run.span_id
        )
    step = Step(
        number,
        tc,
        result,
        record.usage,
        record.duration_ms,
        result.duration_ms,
        record.cost_usd,
        record.response_model or run.model,
        run.trace_id,
        run.span_id,
    )
    step.ttfc_ms = record.ttfc_ms
    return step


def _account(totals: _Totals, state: Any, record: LLMCall) -> None:
    """The run's totals, from the records of its LLM calls: the one place they are summed."""
    if record.replayed:
        return
    if record.outcome != "ok":
        totals.llm_errors += 1
        return
    totals.llm_calls += 1
    if record.usage is not None:
        totals.usage.add(record.usage)
    if record.cost_usd is not None:  # read the state's total: hooks may add to it (a summarize call)
        totals.cost = (getattr(state, "cost_usd", totals.cost) or 0.0) + record.cost_usd
        if hasattr(state, "cost_usd"):
            state.cost_usd = totals.cost


def side_call_done(
    run: Run | None, record: LLMCall, faults: list[Any], error: BaseException | None
) -> list[Any]:
    """An LLM call a hook made on its own (a compaction summary), through the run's chain: its facts join
    the run's totals and reach the ``on_llm_call`` observers like the loop's own calls. Returns the
    awaitables of ``async def`` observers (the async caller awaits them)."""
    if run is None:
        return []
    if record.outcome == "pending":
        _unsent(record, Raised(error) if error is not None else None)
    totals = run._totals
    if isinstance(totals, _Totals):
        _account(totals, run.state, record)
    pending: list[Any] = []
    for hook, method, exc in faults:
        _log_fault(hook, method, exc)
    hooks = run.hooks
    calls = [(h, "on_llm_call", fn, (run.state, record)) for h, fn in hooks.on_llm_call] if hooks else []
    calls += [(h, "on_hook_error", fn, f) for f in faults for h, fn in (hooks.on_hook_error if hooks else ())]
    for hook, method, fn, args in calls:
        try:
            out = fn(*args)
        except Exception as exc:
            _log_fault(hook, method, exc)
            continue
        if inspect.isawaitable(out):
            pending.append(out)
    return pending


def _log_fault(hook: Any, method: str, exc: BaseException) -> None:
    log.warning("hook %s.%s raised %s: %s", type(hook).__name__, method, type(exc).__name__, exc)


def _unsent(record: LLMCall, r: Any) -> Any:
    """Facts of a call that never reached the model: a hook answered it itself (a checkpoint replay,
    also under ``strict_hooks``) or failed it before calling on."""
    if isinstance(r, Raised):
        record.outcome = "error"
        kind = getattr(r.exc, "kind", None)
        record.error_type = kind if isinstance(kind, str) and kind else type(r.exc).__name__
        return r
    replayed(record, r)
    if record.outcome != "ok":
        return Raised(TypeError(f"a wrap_llm_call hook returned {type(r).__name__}, not an LLMResponse"))
    return r


def _roll_up(step: Step, result: ToolResult, totals: _Totals, state: Any) -> None:
    """A tool that ran LLM calls of its own (a sub-agent) reports them on its ToolResult: its Steps become
    the Step's ``children``, its tokens and cost join the run's totals.

    Counted once: ``Step.usage`` and ``Step.cost_usd`` stay the parent's own LLM call (the fact of the
    call that proposed the Step); the child's spend stays on ``Step.tool_result.usage/cost_usd`` and is
    added to ``RunResult.usage/cost_usd`` here. So ``RunResult.cost_usd`` = the parent's calls + each
    tool's ``cost_usd``, and per-call telemetry counts each token in the run that made the call."""
    if result.children:
        step.children = list(result.children)
    if result.usage is not None:
        totals.usage.add(result.usage)
    if result.cost_usd is not None:
        totals.cost = (getattr(state, "cost_usd", totals.cost) or 0.0) + result.cost_usd
        if hasattr(state, "cost_usd"):
            state.cost_usd = totals.cost


def _stop_reason(reason: str) -> str:
    """``HookDecision(stop=reason)`` ends the run as ``hook_stop:<reason>``; ``awaiting_approval`` (an
    ApprovalHook pausing the run) is a stop reason of its own and is kept as it is."""
    return reason if reason == "awaiting_approval" else f"hook_stop:{reason}"


class _Stop(Exception):
    def __init__(self, raised: Raised) -> None:
        self.raised = raised


class _Fatal(Exception):
    def __init__(self, error: BaseException, cause: BaseException) -> None:
        self.error = error
        self.cause = cause


def _err(message: str, kind: str) -> ToolResult:
    return ToolResult(error=message, error_kind=kind, text=f"ERROR: {message}")


def _safe(registry: BaseToolRegistry, tc: ToolCall) -> bool:
    spec = registry.get(tc.tool)
    return spec is not None and spec.concurrent_safe


def _as_result(value: Any, old: ToolResult, registry: BaseToolRegistry) -> ToolResult:
    if isinstance(value, ToolResult):
        return value
    new = ToolResult(data=value, duration_ms=old.duration_ms)
    try:
        from looplet.tools import _render

        new.text = _render(value, registry.max_output_chars)
    except (TypeError, ValueError):
        new.text = repr(value)
    return new


def _backoff(base: float, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 0.0), 60.0)
    return min(base * (2**attempt) * random.uniform(0.5, 1.5), 20.0)


def _assistant_message(text: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.tool, "arguments": json.dumps(c.args, ensure_ascii=False)},
            }
            for c in calls
        ],
    }


def _transcript(
    state: Any, config: LoopConfig, registry: BaseToolRegistry, task: Any
) -> list[dict[str, Any]]:
    existing = getattr(state, "transcript", None)
    if isinstance(existing, list) and existing:
        return existing  # resuming: the model sees everything it saw before
    system = config.system_prompt or DEFAULT_SYSTEM_PROMPT.format(done=config.done_tool)
    log_ = existing if isinstance(existing, list) else []
    log_.append({"role": "system", "content": system})
    log_.append({"role": "user", "content": render_task(task)})
    return log_


def render_task(task: Any) -> str:
    if task is None:
        return "Begin."
    goal = task.get("goal")
    rest = {k: v for k, v in task.items() if k != "goal"}
    parts = [str(goal)] if goal is not None else []
    for k, v in rest.items():
        parts.append(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=repr)}")
    return "\n".join(parts) or "Begin."


_DECODER = json.JSONDecoder()


def parse_text_tool_calls(text: str | None, registry: BaseToolRegistry) -> list[ToolCall]:
    """Tool calls written as JSON in prose: ``{"tool": ..., "args": {...}}`` (or ``name``/``arguments``),
    possibly inside a code fence, or a list of them. Returns [] when none is found."""
    if not text:
        return []
    found: list[ToolCall] = []
    pos = 0
    while len(found) < 16:
        starts = [k for k in (text.find("{", pos), text.find("[", pos)) if k >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        items = obj if isinstance(obj, list) else [obj]
        for item in items:
            tc = _as_tool_call(item, len(found))
            if tc is not None:
                found.append(tc)
        pos = end
    return found


def _as_tool_call(item: Any, index: int) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    name = item.get("tool") or item.get("name") or item.get("function")
    if isinstance(name, dict):  # {"function": {"name":..., "arguments":...}}
        item, name = name, name.get("name")
    if not isinstance(name, str):
        return None
    args = item.get("args", item.get("arguments", item.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(name, args, f"text_{index}_{random.getrandbits(32):08x}")
