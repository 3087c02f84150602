"""The loop's decisions, written once for the sync and the async loop.

The engine is a plain generator that never does I/O itself: it yields small named *effects*
(:class:`CallHook`, an :class:`~looplet.types.LLMCall` to make, :class:`RunTools`, :class:`Sleep`, a
:class:`~looplet.types.Step` to hand out) and receives their outcome. ``loop.py`` and ``async_loop.py``
are thin drivers that perform them synchronously or with ``await``.

One run goes through named phases, each a method of :class:`_Loop`::

    start ─► ┌ boundary ─► build_prompt ─► call_model ─► parse ─► dispatch (prepare ─► run tools ─► record) ┐
             └──────────────────────────────────── until a stop reason ◄────────────────────────────────────┘
    ─► finish (teardown: on_loop_end, the RunResult)

What a bare step costs is kept near what one engine function cost (``bench/loop_instructions.py``):

* A bare turn's effects are yielded from the engine (its LLM call) or from :meth:`_Loop.dispatch` (its
  tools, its Steps), one generator level at most: every level costs each effect passing through it a
  frame resume. The phases around them are plain methods; hooks, faults to report and failed LLM calls
  go through generators of their own (``ask_hooks``, ``record_observed``, ``call_model``) only when
  there are some.
* Making an object costs a bare step about 2%: the records the run keeps anyway are their own effects
  (the LLMCall, the Step), and the rest are the run's, refilled (one :class:`RunTools`, one
  :class:`LLMDone` per driver, the pending tool calls of :meth:`_Loop.numbered`).

Facts are written onto the records where they happen: the LLM call's on its :class:`LLMCall` (by the
innermost link of the wrap chain, ``looplet._chain``), the run's totals from those records in
:func:`_account`, each Step from the record of the call that proposed it in :func:`_step`.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from looplet import shutdown
from looplet._chain import Fault, crashed, replayed
from looplet.config import DEFAULT_SYSTEM_PROMPT, LoopConfig
from looplet.errors import HookError, LLMError
from looplet.hooks import HookDecision, ResolvedHooks, Run
from looplet.tools import BaseToolRegistry
from looplet.types import LLMCall, LLMResponse, RunResult, Step, ToolCall, ToolResult, Usage

log = logging.getLogger("looplet")

#: ``LLMResponse.provider`` of an answer a hook gives back instead of calling the model (a CheckpointHook
#: replaying calls proposed before a pause or a crash): it is not counted as an LLM call.
REPLAYED = "looplet.replay"

#: Deepest bracket nesting accepted in a tool call written as JSON text.
MAX_JSON_DEPTH = 64

#: Set by ``looplet.subagents`` around a sub-agent tool: every run that starts inside it appends its
#: RunResult here when it ends, so the tool can roll the child's steps, tokens and cost up into its Step.
RUN_RESULTS: contextvars.ContextVar[list[RunResult] | None] = contextvars.ContextVar(
    "looplet_run_results", default=None
)

# -- effects and their outcomes ------------------------------------------------------------------------


@dataclass(slots=True)
class CallHook:
    """Call a hook method: ``fn(*args)`` (awaited when it returns an awaitable)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(slots=True)
class RunTools:
    """Run tool calls through the ``wrap_tool`` chain (together when there are several). ``timeout_s``
    bounds each tool that sets no timeout of its own. The driver answers with the same object, its
    ``results`` (one per call, in order) and the ``faults`` of guarded hooks filled in.

    A run makes one and refills it for each batch (making an object costs about 2% of a bare step)."""

    calls: list[ToolCall]
    timeout_s: float | None = None
    results: list[ToolResult] = field(default_factory=list)
    faults: Sequence[Fault] = ()


@dataclass(slots=True)
class Sleep:
    seconds: float


#: The effects: an ``LLMCall`` is one attempt through the ``wrap_llm_call`` chain, answered with an
#: :class:`LLMDone` (bounded, in the async loop, by what is left of ``Prepared.deadline``); a ``Step`` is
#: handed to the caller, answered with None, :data:`CLOSED` or an :class:`Interrupted`.
Effect = CallHook | LLMCall | RunTools | Sleep | Step


@dataclass(slots=True)
class LLMDone:
    """How an attempt ended: the record that reached the model (with its facts), the response or a
    :class:`Raised`, and the faults of guarded hooks on the way.

    A driver makes one per run and refills it for each attempt (the engine reads it before the next)."""

    record: LLMCall
    value: Any
    faults: Sequence[Fault] = ()

    @classmethod
    def new(cls) -> LLMDone:
        """A driver's, before its first attempt."""
        return cls(LLMCall([], [], 0), None)


CLOSED = object()  # sent back for a Step when the caller closed the generator


class Raised:
    """An exception raised while performing an effect (hook, LLM, tool)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Interrupted(Raised):
    """A BaseException (KeyboardInterrupt, CancelledError, an exception thrown in by the caller):
    the run ends as ``cancelled`` and the exception is re-raised afterwards."""


Engine = Generator[Effect, Any, RunResult]
Phase = Generator[Effect, Any, Any]


@dataclass(slots=True)
class Prepared:
    """A run's checked arguments, as ``prepare()`` hands them to a driver."""

    run: Run
    llm: Any
    registry: BaseToolRegistry
    hooks: ResolvedHooks
    config: LoopConfig
    state: Any
    context: Any
    max_steps: int
    cancel: Any = None
    deadline: float | None = None  # ``perf_counter()`` time the run must end by (``run_timeout_s``)


@dataclass(slots=True)
class _Pending:
    """A tool call on its way to becoming a Step."""

    number: int
    call: ToolCall
    result: ToolResult | None
    done_ok: bool


class _Totals:
    __slots__ = ("usage", "cost", "llm_calls", "llm_errors")

    def __init__(self, state: Any) -> None:
        usage = getattr(state, "usage", None)
        self.usage = usage if isinstance(usage, Usage) else Usage()
        self.cost: float | None = getattr(state, "cost_usd", None)
        self.llm_calls = 0
        self.llm_errors = 0


class _Stop(Exception):
    def __init__(self, raised: Raised) -> None:
        self.raised = raised


class _Fatal(Exception):
    def __init__(self, error: BaseException, cause: BaseException) -> None:
        self.error = error
        self.cause = cause


# -- the engine --------------------------------------------------------------------------------------


def engine(p: Prepared) -> Engine:
    """Run one agent loop as a generator of effects; returns its :class:`RunResult`.

    Whatever happens (a stop reason, an interrupt, a strict hook, a bug), the run goes through
    :meth:`_Loop.finish` exactly once; an interrupt or a bug is re-raised after it, with its traceback.
    """
    loop = _Loop(p)
    raised: BaseException | None = None
    try:  # the phases of a run, in order (inline here: see the module's docstring on the cost)
        yield from loop.start()
        while loop.stop is None and not loop.at_boundary():
            messages = (yield from loop.build_prompt()) if loop.h.pre_prompt else loop.session_log
            if loop.stop is not None:
                break
            done = yield loop.llm_call(messages, 1)
            response = loop.answered(done)  # an answer with nothing to report (the bare loop), else None
            if response is None:
                response = yield from loop.call_model(messages, done)  # faults, observers, retries
                if response is None:
                    break
            calls = loop.parse(response)
            if calls:
                yield from loop.dispatch(calls, loop.record_of_answer)
    except _Stop as s:
        raised = s.raised.exc
        loop.stop = "cancelled"
        loop.error = f"{type(raised).__name__}: {raised}".rstrip(": ")
    except _Fatal as f:
        raised = f.error
        raised.__cause__ = f.cause
        loop.stop, loop.error = "hook_error", str(f.error)
    except Exception as bug:  # a genuine bug: tear down first, then let it surface with its traceback
        raised = bug
        loop.stop, loop.error = "error", f"{type(bug).__name__}: {bug}"
    result: RunResult = yield from loop.finish()
    if raised is not None:
        raise raised
    return result


class _Loop:
    """The state of one run in the engine; its methods are the phases."""

    def __init__(self, p: Prepared) -> None:
        self.p = p
        self.run = p.run
        self.h = p.hooks
        self.config = p.config
        self.state = p.state
        self.registry = p.registry
        self.started = time.perf_counter()
        timeout = p.config.run_timeout_s
        self.deadline = p.deadline = self.started + timeout if timeout is not None else None
        self.sink = RUN_RESULTS.get()
        self.session_log: list[dict[str, Any]] = _transcript(p.state, p.config, p.registry, p.run.task)
        self.totals = self.run._totals = _Totals(p.state)
        self.stop: str | None = None
        self.error: str | None = None
        self.final: Any = None
        self.step_num = len(p.state.steps)
        self.schemas = p.registry.schemas()
        self.options = p.config.llm_options()
        self.chunks: _ChunkCallback | None = None
        if self.h.on_llm_chunk:
            self.options["on_chunk"] = self.chunks = _ChunkCallback(self.h, p.state, p.config.strict_hooks)
        self.dangling: list[ToolCall] = []
        self.text_mode = False
        self.malformed = 0
        self.record_of_answer: LLMCall | None = None
        self.asks = bool(self.h.pre_dispatch or self.h.check_done)
        self.tools = RunTools([])  # the run's, refilled for each batch
        self.pending: list[_Pending] = []  # see numbered()
        self.observed = bool(self.h.post_dispatch or self.h.on_step or self.h.should_stop)
        self.logged: set[tuple[int, str]] = set()

    # -- calling hooks ----------------------------------------------------------------------------

    def hook(self, hook: Any, method: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Phase:
        out = yield CallHook(fn, args)
        if type(out) is Raised:
            yield from self.report(hook, method, out.exc)
            return None
        if type(out) is Interrupted:
            raise _Stop(out)
        return out

    def report(self, hook: Any, method: str, exc: BaseException) -> Phase:
        """A hook fault: logged (once per hook and method at warning level), passed to ``on_hook_error``
        hooks (every time: that is what metrics count); fatal under ``strict_hooks``."""
        _log_fault(hook, method, exc, self.logged)
        for _h, fn in self.h.on_hook_error:
            out = yield CallHook(fn, (hook, method, exc))
            if isinstance(out, Raised):
                log.warning("on_hook_error hook raised %r", out.exc)
        if self.config.strict_hooks:
            name = f"{type(hook).__name__}.{method}"
            raise _Fatal(HookError(f"hook {name} raised {type(exc).__name__}: {exc}"), exc)

    def decided(self, hook: Any, decision: str, reason: str | None, tool: str | None = None) -> Phase:
        """Tell ``on_event`` hooks that a hook decision took effect (deny, stop, inject, update, ...)."""
        attrs = {
            "hook": type(hook).__name__,
            "decision": decision,
            "reason": reason or "",
            "tool": tool or "",
        }
        for fn in self.run._events:
            out = yield CallHook(fn, ("hook.decision", attrs))
            if isinstance(out, Raised) and not isinstance(out, Interrupted):
                log.warning("on_event hook raised %r", out.exc)

    def wrong_type(self, hook: Any, method: str, value: Any, expected: str) -> Phase:
        got = type(value).__name__
        yield from self.report(
            hook, method, TypeError(f"{type(hook).__name__}.{method} returned {got}; expected {expected}")
        )

    # -- phases -----------------------------------------------------------------------------------

    def start(self) -> Phase:
        state = self.state
        for hook, fn in self.h.on_loop_start:
            yield from self.hook(hook, "on_loop_start", fn, (state, self.session_log, self.p.context))
        # an on_loop_start hook may have restored the state (CheckpointHook): count on from it
        self.totals = self.run._totals = _Totals(state)
        self.step_num = len(state.steps)
        last = state.steps[-1] if state.steps else None
        done = self.config.done_tool
        if last is not None and last.tool_call.tool == done and last.tool_result.error is None:
            # a restored state that already ended with an accepted `done`: the run is finished
            self.stop, self.final = "done", last.tool_call.args.get("answer", last.tool_result.data)

    def at_boundary(self) -> bool:
        """Between turns: cancelled (the caller's token, or a SIGTERM: ``looplet.shutdown``), out of steps,
        or out of time."""
        cancel = self.p.cancel
        if shutdown._requested or cancel is not None and cancel.is_set():
            self.stop = "cancelled"
        elif self.step_num >= self.p.max_steps:
            self.stop = "max_steps"
        elif self.deadline is not None and self.expired():
            self.stop = "timeout"
        return self.stop is not None

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    def build_prompt(self) -> Phase:
        """``pre_prompt`` hooks: extra context for this prompt only, or a stop."""
        extra: list[str] = []
        ctx = self.p.context
        for hook, fn in self.h.pre_prompt:
            r = yield from self.hook(
                hook, "pre_prompt", fn, (self.state, self.session_log, ctx, self.step_num + 1)
            )
            if r is None:
                continue
            if isinstance(r, str):
                extra.append(r)
                yield from self.decided(hook, "inject", None)
            elif isinstance(r, HookDecision):
                if r.additional_context:
                    extra.append(r.additional_context)
                    yield from self.decided(hook, "inject", None)
                if r.stop:
                    self.stop = _stop_reason(r.stop)
                    yield from self.decided(hook, "stop", r.stop)
                    break
            else:
                yield from self.wrong_type(hook, "pre_prompt", r, "None, str or HookDecision")
        if extra:
            return self.session_log + [{"role": "user", "content": "\n\n".join(extra)}]
        return self.session_log

    def llm_call(self, messages: list[dict[str, Any]], attempt: int) -> LLMCall:
        """The record of one attempt at this turn's LLM call (each attempt its own), as the effect."""
        run, step = self.run, self.step_num + 1
        if self.chunks is not None:
            self.chunks.step = step
        options = dict(self.options)
        return LLMCall(messages, self.schemas, step, run.model, run.provider, options, "step", attempt)

    def answered(self, done: Any) -> LLMResponse | None:
        """The answer of an attempt that went through with no fault to report and no ``on_llm_call``
        observer to tell (a bare loop's every call), counted; None for anything else (:meth:`call_model`)."""
        if type(done) is not LLMDone or done.faults or self.h.on_llm_call:
            return None
        record, value = done.record, done.value
        if record.outcome != "ok" or not isinstance(value, LLMResponse):
            return None
        _account(self.totals, self.state, record)
        return self.answer(record, value)

    def answer(self, record: LLMCall, response: LLMResponse) -> LLMResponse:
        self.record_of_answer = record
        self.run.model = record.response_model or self.run.model
        return response

    def call_model(self, messages: list[dict[str, Any]], done: Any) -> Phase:
        """After an attempt that was not simply answered: report it and tell the observers, then retry
        while the failure is retryable. Returns the answer (its record in ``record_of_answer``), or None
        with a stop reason."""
        attempt = 1
        while True:
            if isinstance(done, Interrupted):
                raise _Stop(done)
            value = yield from self.after_attempt(done)
            if isinstance(value, LLMResponse):
                return self.answer(done.record, value)
            if not isinstance(value, Raised):
                value = Raised(
                    TypeError(f"a wrap_llm_call hook returned {type(value).__name__}, not an LLMResponse")
                )
            delay = self.failed_attempt(value.exc, attempt)
            if delay is None:
                return None
            for hook, fn in self.h.on_llm_retry:
                yield from self.hook(hook, "on_llm_retry", fn, (self.state, attempt, value.exc, delay))
            slept = yield Sleep(delay)
            if isinstance(slept, Interrupted):
                raise _Stop(slept)
            attempt += 1
            done = yield self.llm_call(messages, attempt)

    def after_attempt(self, done: LLMDone) -> Phase:
        """Record one attempt: report hook faults, fill the facts of a call that never reached the
        model, add it to the totals, tell ``on_llm_call`` observers. Returns the response or Raised."""
        record = done.record
        for fault in done.faults:
            yield from self.report(*fault)
        value = done.value
        if record.outcome == "pending":
            value = _unsent(record, value)
        _account(self.totals, self.state, record)
        for hook, fn in self.h.on_llm_call:  # every attempt, answered or failed
            yield from self.hook(hook, "on_llm_call", fn, (self.state, record))
        if isinstance(value, Interrupted):
            raise _Stop(value)
        return value

    def failed_attempt(self, exc: BaseException, attempt: int) -> float | None:
        """After a failed attempt: the delay before the next one, or None with the run's stop reason."""
        cause = exc if isinstance(exc, HookError) else exc.__cause__
        if isinstance(cause, HookError):  # a strict on_llm_chunk hook failed mid-stream
            raise _Fatal(cause, cause.__cause__ or cause)
        if self.expired():
            self.stop, self.error = (
                "timeout",
                f"the run took longer than run_timeout_s={self.config.run_timeout_s}",
            )
            return None
        if isinstance(exc, LLMError) and exc.retryable and attempt <= self.config.llm_retries:
            delay = _backoff(self.config.llm_backoff_s, attempt - 1, exc.retry_after)
            left = self.remaining()
            return delay if left is None else min(delay, left)
        self.stop, self.error = "llm_error", f"{type(exc).__name__}: {exc}"
        return None

    def parse(self, response: LLMResponse) -> list[ToolCall]:
        """The tool calls of an answer (native, else written as JSON in its text). An answer without one
        is fed back as an error once (``max_malformed``), then ends the run as ``llm_error``."""
        calls = response.tool_calls
        problem = None
        self.text_mode = False
        if not calls:
            calls, problem = parse_text(response.text)
            self.text_mode = bool(calls)
        text = response.text or ""
        if not calls:
            self.malformed_answer(text, problem)
            return []
        self.malformed = 0
        if self.text_mode:
            self.session_log.append({"role": "assistant", "content": text})
        else:
            self.session_log.append(_assistant_message(response.text, calls))
        cancel = self.p.cancel
        if shutdown._requested or cancel is not None and cancel.is_set():
            self.dangling = list(calls)
            self.stop = "cancelled"
            return []
        return calls

    def malformed_answer(self, text: str, problem: str | None) -> None:
        self.malformed += 1
        self.session_log.append({"role": "assistant", "content": text})
        if self.malformed > self.config.max_malformed:
            self.stop = "llm_error"
            why = f" ({problem})" if problem else ""
            self.error = (
                f"the model answered {self.malformed} times without calling a tool{why} "
                f"(last answer: {text[:200]!r}); it may not support tool calls: "
                "use a model with tool/function calling (e.g. gpt-4o-mini, qwen2.5, llama3.1) "
                "or enable the server's tool-call parser"
            )
            return
        names = ", ".join(self.registry.tool_names())
        what = (
            f"your reply could not be read as a tool call: {problem}"
            if problem
            else "your reply did not call a tool"
        )
        self.session_log.append(
            {
                "role": "user",
                "content": f"ERROR: {what}. Reply with a tool call (tools: {names}); "
                f"call `{self.config.done_tool}` when the task is complete.",
            }
        )

    def dispatch(self, calls: list[ToolCall], record: LLMCall | None) -> Phase:
        """The tool calls of one answer, in batches (consecutive ``concurrent_safe`` calls run together
        with ``parallel_tools``); each becomes a Step, handed out here.

        The effects of a bare batch (its tools, its Steps) are yielded from here, built and read by plain
        methods; hooks, and faults to report, go through generators of their own only when there are some
        (each generator level costs every effect that passes through it a hop)."""
        first: LLMCall | None = record
        i, n = 0, len(calls)
        while i < n and self.stop is None:
            if self.deadline is not None and self.expired():
                self.stop, self.dangling = "timeout", list(calls[i:])
                break
            j = self.batch_end(calls, i) if self.config.parallel_tools else i + 1
            batch = self.numbered(calls[i:j])
            if self.asks:
                batch = yield from self.ask_hooks(batch)
            self.dangling = calls[i + len(batch) :]
            i = j
            tools = self.tools_to_run(batch)
            if tools is not None:
                faults = self.tools_ran(batch, tools, (yield tools))
                for fault in faults:
                    yield from self.report(*fault)
            for pending in batch:
                if self.observed:
                    step = yield from self.record_observed(pending, first)
                else:
                    step = self.record(pending, pending.result, (), first)
                first = None
                if pending.done_ok and step.tool_result.error is None:
                    self.accept_done(pending.call, step.tool_result)
                sent = yield step
                if sent is not None and self.closed(sent):
                    return

    def batch_end(self, calls: list[ToolCall], i: int) -> int:
        j = i + 1
        if self.config.parallel_tools and _safe(self.registry, calls[i]):
            while j < len(calls) and _safe(self.registry, calls[j]):
                j += 1
        return j

    def numbered(self, calls: list[ToolCall]) -> list[_Pending]:
        """The calls of a batch that fit in ``max_steps``, each with its step number. The pending records
        are the run's, reused from batch to batch (as many as its largest batch): a new object a call
        would cost about 2% of a bare step."""
        pool, done, k = self.pending, self.config.done_tool, 0
        for tc in calls:
            if self.step_num >= self.p.max_steps:
                self.stop = "max_steps"
                break
            self.step_num += 1
            if k == len(pool):
                pool.append(_Pending(0, tc, None, False))
            p = pool[k]
            p.number = self.step_num
            p.call = tc
            p.result = None
            p.done_ok = tc.tool == done
            k += 1
        return pool[:k]

    def ask_hooks(self, batch: list[_Pending]) -> Phase:
        """``pre_dispatch`` (and, for ``done``, ``check_done``) hooks on each call of a batch, in order;
        a stop ends the batch after the call it came on."""
        for k, pending in enumerate(batch):
            if self.h.pre_dispatch:
                yield from self.pre_dispatch(pending)
            if pending.result is not None:  # a hook answered (or denied) it: not an accepted `done`
                pending.done_ok = False
            elif pending.done_ok and self.h.check_done:
                yield from self.check_done(pending)
            if self.stop is not None:
                self.step_num = pending.number
                return batch[: k + 1]
        return batch

    def pre_dispatch(self, p: _Pending) -> Phase:
        for hook, fn in self.h.pre_dispatch:
            r = yield from self.hook(
                hook, "pre_dispatch", fn, (self.state, self.session_log, p.call, p.number)
            )
            if r is None:
                continue
            if isinstance(r, ToolResult):
                p.result = r
                yield from self.decided(hook, "replace", None, p.call.tool)
            elif isinstance(r, HookDecision):
                yield from self.apply_pre_dispatch(hook, r, p)
            else:
                yield from self.wrong_type(hook, "pre_dispatch", r, "None, HookDecision or ToolResult")
            if p.result is not None:
                break
        return p

    def apply_pre_dispatch(self, hook: Any, r: HookDecision, p: _Pending) -> Phase:
        tc = p.call
        if r.updated_args is not None:
            p.call = tc = ToolCall(tc.tool, dict(r.updated_args), tc.id, tc.reasoning)
            yield from self.decided(hook, "update", None, tc.tool)
        if r.block is not None:
            hint = " You may retry with different arguments." if r.retry else " Do not retry this call."
            p.result = _err(f"Denied: {r.block}.{hint}", "denied")
            yield from self.decided(hook, "deny", r.block, tc.tool)
        if r.stop:
            self.stop = _stop_reason(r.stop)
            p.result = p.result or _err(f"Not run: the run was stopped ({r.stop}).", "not_run")
            yield from self.decided(hook, "stop", r.stop, tc.tool)

    def check_done(self, p: _Pending) -> Phase:
        p.done_ok = True
        for hook, fn in self.h.check_done:
            r = yield from self.hook(
                hook, "check_done", fn, (self.state, self.session_log, self.p.context, p.number)
            )
            reason = r.block if isinstance(r, HookDecision) else r
            if reason:
                p.result = _err(f"Not done yet: {reason}", "done_rejected")
                p.done_ok = False
                yield from self.decided(hook, "reject_done", str(reason), p.call.tool)
                return

    def tools_to_run(self, batch: list[_Pending]) -> RunTools | None:
        """The effect that runs the calls of a batch no hook answered, bounded by what is left of the run."""
        to_run = []  # (a loop, not a comprehension: in Python 3.11 that is a function made and called)
        for p in batch:
            if p.result is None:
                to_run.append(p.call)
        if not to_run:
            return None
        timeout = self.config.tool_timeout_s
        if self.deadline is not None:
            left = self.remaining() or 0.0
            timeout = left if timeout is None else min(timeout, left)
        tools = self.tools
        tools.calls, tools.timeout_s, tools.results, tools.faults = to_run, timeout, [], ()
        return tools

    def tools_ran(self, batch: list[_Pending], tools: RunTools, done: Any) -> Sequence[Fault]:
        """Each call's result onto its pending Step; returns the faults of guarded hooks to report."""
        if isinstance(done, Interrupted):
            raise _Stop(done)
        if isinstance(done, Raised):  # the driver itself failed: every call of the batch gets the error
            results, faults = [crashed(done.exc) for _ in tools.calls], ()
        else:
            results, faults = done.results, done.faults
        it = iter(results)
        for p in batch:
            if p.result is None:
                p.result = next(it)
        return faults

    def record_observed(self, p: _Pending, first: LLMCall | None) -> Phase:
        """:meth:`record` with its hooks: ``post_dispatch`` before, ``on_step`` and ``should_stop`` after."""
        assert p.result is not None
        result, notes = p.result, []
        if self.h.post_dispatch:
            result, notes = yield from self.post_dispatch(p, result)
        step = self.record(p, result, notes, first)
        for hook, fn in self.h.on_step:
            yield from self.hook(hook, "on_step", fn, (self.state, step))
        if self.h.should_stop:
            yield from self.decide(step)
        return step

    def record(
        self, p: _Pending, result: ToolResult | None, notes: Sequence[str], first: LLMCall | None
    ) -> Step:
        """The result into the transcript, the Step (its facts, a sub-agent's rolled up) into the state."""
        assert result is not None  # every call of a batch has one once its tools ran
        text = result.text if result.text is not None else _model_text(result)
        if notes:
            text = text + "\n\n" + "\n".join(notes)
        if self.text_mode:
            self.session_log.append({"role": "user", "content": f"Result of {p.call.tool}: {text}"})
        else:
            self.session_log.append({"role": "tool", "tool_call_id": p.call.id, "content": text})
        step = _step(p.number, p.call, result, first, self.run)
        if result.children or result.usage is not None or result.cost_usd is not None:
            _roll_up(step, result, self.totals, self.state)
        state = self.state
        state.record(step) if hasattr(state, "record") else state.steps.append(step)
        return step

    def accept_done(self, call: ToolCall, result: ToolResult) -> None:
        """A ``done`` call that went through: its answer is the run's output (a stop reason already set by
        a hook is kept)."""
        self.final = call.args.get("answer", result.data)
        if self.stop is None:
            self.stop = "done"

    def closed(self, sent: Any) -> bool:
        """What the caller sent back for a Step: True when it closed the loop."""
        if sent is CLOSED:
            self.stop, self.error, self.dangling = "cancelled", "the caller closed the loop", []
            return True
        if isinstance(sent, Interrupted):
            raise _Stop(sent)
        return False

    def post_dispatch(self, p: _Pending, result: ToolResult) -> Phase:
        notes: list[str] = []
        for hook, fn in self.h.post_dispatch:
            args = (self.state, self.session_log, p.call, result, p.number)
            r = yield from self.hook(hook, "post_dispatch", fn, args)
            if r is None:
                continue
            if isinstance(r, str):
                notes.append(r)
            elif isinstance(r, HookDecision):
                if r.updated_result is not None:
                    result = _as_result(r.updated_result, result, self.registry)
                if r.additional_context:
                    notes.append(r.additional_context)
                if r.stop and self.stop is None:
                    self.stop = _stop_reason(r.stop)
                    yield from self.decided(hook, "stop", r.stop, p.call.tool)
            else:
                yield from self.wrong_type(hook, "post_dispatch", r, "None, str or HookDecision")
        return result, notes

    def decide(self, step: Step) -> Phase:
        """``should_stop`` hooks: every hook is asked, the first stop wins."""
        for hook, fn in self.h.should_stop:
            r = yield from self.hook(hook, "should_stop", fn, (self.state, step.number, (step,)))
            if not r or self.stop is not None:
                continue
            if r is True:
                self.stop = f"hook_stop:{type(hook).__name__}"
            elif isinstance(r, HookDecision) and r.stop:
                self.stop = _stop_reason(r.stop)
            elif isinstance(r, str):
                self.stop = f"hook_stop:{r}"
            if self.stop is not None:
                yield from self.decided(hook, "stop", self.stop.partition(":")[2], step.tool_call.tool)

    def finish(self) -> Phase:
        """Teardown, reached once whatever happened: answer dangling calls, build the RunResult, call
        ``on_loop_end`` hooks in reverse order."""
        stop = self.stop or "cancelled"
        if self.dangling and not self.text_mode:
            for tc in self.dangling:  # keep the transcript valid for a resume: every call gets an answer
                self.session_log.append(
                    {"role": "tool", "tool_call_id": tc.id, "content": f"Not run: the run stopped ({stop})."}
                )
        state, totals = self.state, self.totals
        totals.cost = getattr(state, "cost_usd", totals.cost)
        if stop == "timeout" and self.error is None:
            self.error = f"the run took longer than run_timeout_s={self.config.run_timeout_s}"
        result = RunResult(
            stop_reason=stop,
            steps=list(state.steps),
            usage=totals.usage,
            cost_usd=totals.cost,
            duration_ms=(time.perf_counter() - self.started) * 1000.0,
            final_output=self.final,
            error=self.error,
            run_id=self.run.run_id,
            trace_id=self.run.trace_id,
            llm_calls=totals.llm_calls,
            llm_errors=totals.llm_errors,
        )
        if hasattr(state, "result"):
            state.result = result
        if self.sink is not None:
            self.sink.append(result)
        for hook, fn in reversed(self.h.on_loop_end):  # the outermost hook sees the rest finish
            out = yield CallHook(fn, (state, self.session_log, self.p.context, result))
            if isinstance(out, Raised) and not isinstance(out, Interrupted):
                _log_fault(hook, "on_loop_end", out.exc, self.logged)
                for _h, efn in self.h.on_hook_error:
                    yield CallHook(efn, (hook, "on_loop_end", out.exc))
        return result


# -- records ---------------------------------------------------------------------------------------


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
    if record.cost_usd is not None:  # read the state's total: hooks may add to it
        totals.cost = (getattr(state, "cost_usd", totals.cost) or 0.0) + record.cost_usd
        if hasattr(state, "cost_usd"):
            state.cost_usd = totals.cost


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


def side_call_done(
    run: Run | None, record: LLMCall, faults: Sequence[Fault], error: BaseException | None
) -> list[Any]:
    """An LLM call a hook made on its own (a compaction summary), through the run's chain: its facts join
    the run's totals and reach the ``on_llm_call`` observers like the loop's own calls. Returns the
    awaitables of ``async def`` observers (the async caller awaits them)."""
    if run is None:
        return []
    if record.outcome == "pending":
        _unsent(record, Raised(error) if error is not None else None)
    if isinstance(run._totals, _Totals):
        _account(run._totals, run.state, record)
    for hook, method, exc in faults:
        _log_fault(hook, method, exc)
    hooks = run.hooks
    if hooks is None:
        return []
    calls: list[tuple[Any, str, Callable[..., Any], tuple[Any, ...]]]
    calls = [(h, "on_llm_call", fn, (run.state, record)) for h, fn in hooks.on_llm_call]
    calls += [(h, "on_hook_error", fn, f) for f in faults for h, fn in hooks.on_hook_error]
    pending: list[Any] = []
    for hook, method, fn, args in calls:
        try:
            out = fn(*args)
        except Exception as exc:
            _log_fault(hook, method, exc)
            continue
        if inspect.isawaitable(out):
            pending.append(out)
    return pending


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


def _log_fault(hook: Any, method: str, exc: BaseException, seen: set[tuple[int, str]] | None = None) -> None:
    """Log a hook fault: a warning the first time for this hook and method in the run, then debug."""
    key = (id(hook), method)
    first = seen is None or key not in seen
    if seen is not None:
        seen.add(key)
    log.log(
        logging.WARNING if first else logging.DEBUG,
        "hook %s.%s raised %s: %s",
        type(hook).__name__,
        method,
        type(exc).__name__,
        exc,
    )


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


# -- small helpers -----------------------------------------------------------------------------------


def _stop_reason(reason: str) -> str:
    """``HookDecision(stop=reason)`` ends the run as ``hook_stop:<reason>``; ``awaiting_approval`` (an
    ApprovalHook pausing the run) is a stop reason of its own and is kept as it is."""
    return reason if reason == "awaiting_approval" else f"hook_stop:{reason}"


def _err(message: str, kind: str) -> ToolResult:
    return ToolResult(error=message, error_kind=kind, text=f"ERROR: {message}")


def _model_text(result: ToolResult) -> str:
    """What the model is shown for a result (a result whose data cannot even be printed says so)."""
    if result.text is not None:
        return result.text
    if result.error:
        return f"ERROR: {result.error}"
    try:
        return str(result.data)
    except Exception as exc:  # a hostile __str__, or a structure too deep to print (RecursionError)
        return f"ERROR: the result ({type(result.data).__name__}) cannot be shown: {type(exc).__name__}"


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
    except Exception:  # not JSON-able, or too deep
        new.text = _model_text(new)
    return new


def _backoff(base: float, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 0.0), 60.0)
    return float(min(base * (2**attempt) * random.uniform(0.5, 1.5), 20.0))


_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(ensure_ascii=False) builds per call


def _dumps_args(args: Any) -> str:
    try:
        return _JSON.encode(args)
    except (TypeError, ValueError, RecursionError):
        from looplet.types import _json_safe

        return json.dumps(_json_safe(args), ensure_ascii=False)


def _assistant_message(text: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    tool_calls = []  # (a loop: cheaper than a comprehension in Python 3.11, once a step)
    for c in calls:
        function = {"name": c.tool, "arguments": _dumps_args(c.args)}
        tool_calls.append({"id": c.id, "type": "function", "function": function})
    return {"role": "assistant", "content": text, "tool_calls": tool_calls}


def _transcript(
    state: Any, config: LoopConfig, registry: BaseToolRegistry, task: Any
) -> list[dict[str, Any]]:
    existing = getattr(state, "transcript", None)
    if isinstance(existing, list) and existing:
        return existing  # resuming: the model sees everything it saw before
    system = config.system_prompt or DEFAULT_SYSTEM_PROMPT.format(done=config.done_tool)
    log_: list[dict[str, Any]] = existing if isinstance(existing, list) else []
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


# -- tool calls written as text ------------------------------------------------------------------------

_OPEN = {"{": "}", "[": "]"}


def parse_text_tool_calls(text: str | None, registry: BaseToolRegistry | None = None) -> list[ToolCall]:
    """Tool calls written as JSON in prose: ``{"tool": ..., "args": {...}}`` (or ``name``/``arguments``),
    possibly inside a code fence, or a list of them. Returns [] when none is found."""
    return parse_text(text)[0]


def parse_text(text: str | None) -> tuple[list[ToolCall], str | None]:
    """``parse_text_tool_calls`` plus the reason nothing usable was found (for the model to read).

    Linear in the length of the text: one scan finds the balanced ``{...}``/``[...]`` spans (strings
    inside brackets are skipped, quotes in prose are not); the outermost are decoded, and a span that is
    not JSON is searched through its inner spans. A span nested deeper than :data:`MAX_JSON_DEPTH` is
    refused without being decoded."""
    if not text:
        return [], None
    spans, too_deep = _json_spans(text)
    found: list[ToolCall] = []
    todo = list(reversed(spans))
    while todo and len(found) < 16:
        start, end, inner = todo.pop()
        if end - start < 12 or text.find('"tool', start, end) < 0 and text.find('"name', start, end) < 0:
            if text.find('"function', start, end) < 0:
                continue  # no key a tool call needs (the shortest is {"tool":"x"}): not worth decoding
        try:
            obj = json.loads(text[start:end])
        except (ValueError, RecursionError):
            todo.extend(reversed(inner))
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            tc = _as_tool_call(item, len(found))
            if tc is not None:
                found.append(tc)
    if found:
        return found[:16], None
    if too_deep:
        return [], f"its JSON is nested deeper than {MAX_JSON_DEPTH} levels"
    return [], None


_Span = tuple[int, int, list[Any]]  # start, end, the spans inside


def _json_spans(text: str) -> tuple[list[_Span], bool]:
    """The balanced bracket spans of ``text``, outermost first with their inner spans, and whether
    some nesting went deeper than :data:`MAX_JSON_DEPTH`."""
    top: list[_Span] = []
    stack: list[tuple[str, int, list[_Span]]] = []  # expected closer, start, inner spans
    too_deep = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if stack and c == '"':
            i = _string_end(text, i + 1)
            continue
        if c in _OPEN:
            stack.append((_OPEN[c], i, []))
            if len(stack) > MAX_JSON_DEPTH:  # refused: what is inside stays usable
                too_deep = True
                _flush(stack, top)
        elif stack and c == stack[-1][0]:
            _closer, start, inner = stack.pop()
            (stack[-1][2] if stack else top).append((start, i + 1, inner))
        elif stack and c in "]}":  # a mismatched closer: not JSON around here
            _flush(stack, top)
        i += 1
    _flush(stack, top)
    return top, too_deep


def _flush(stack: list[tuple[str, int, list[_Span]]], top: list[_Span]) -> None:
    """Drop the unclosed brackets; the balanced spans inside them become outermost ones."""
    for _closer, _start, inner in stack:
        top.extend(inner)
    stack.clear()


def _string_end(text: str, i: int) -> int:
    """The index just after the string that starts at ``i`` (after its opening quote)."""
    n = len(text)
    while i < n:
        quote = text.find('"', i)
        if quote < 0:
            return n
        k = quote - 1
        while k >= i and text[k] == "\\":
            k -= 1
        if (quote - 1 - k) % 2 == 0:  # an even number of backslashes: the quote is not escaped
            return quote + 1
        i = quote + 1
    return n


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
        except (ValueError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(name, args, f"text_{index}_{random.getrandbits(32):08x}")
