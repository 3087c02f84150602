"""The ``wrap_llm_call`` / ``wrap_tool`` chains, shared by the sync and the async loop.

Two things happen here and nowhere else:

* **Facts.** The innermost link (the one that calls the backend) writes the facts of each LLM call
  attempt onto its :class:`~looplet.types.LLMCall` (response, usage, cost, duration, outcome, error type)
  before it returns or raises, so every around-hook sees them right after ``call_next``. The cost of an
  LLM call is computed here, once.
* **Isolation.** A hook's wrapper is guarded (unless ``LoopConfig(strict_hooks=True)``): if it raises
  after its ``call_next`` returned, the inner value is kept (a paid answer is never thrown away, a tool
  result is not changed); if it raises before calling ``call_next``, that hook is skipped for this call
  and the rest of the chain still runs. Either fault is appended to :attr:`Chain.faults`; the engine
  reports it through ``on_hook_error``. ``LoopletError``s (an ``LLMError`` a hook raises on purpose to
  fail a call) are decisions, not faults, and propagate.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from looplet.errors import LoopletError
from looplet.telemetry.cost import cost_of
from looplet.tools import LOST, Alarm, Worker, _Alarm, _timeout_error, _ToolTimeout
from looplet.types import LLMCall, LLMResponse, ToolCall, ToolResult

__all__ = [
    "Chain",
    "Fault",
    "ToolTerminal",
    "AsyncToolTerminal",
    "llm_chain",
    "async_llm_chain",
    "tool_chain",
    "async_tool_chain",
]

Fault = tuple[Any, str, BaseException]  # (hook, method, exception)
Wraps = Iterable[tuple[Any, Callable[..., Any]]]


class Chain:
    """A folded chain of around-hooks over an innermost callable.

    ``last`` is the :class:`LLMCall` that reached the model (or that a hook answered itself) during
    the latest call; ``faults`` collects guarded hook failures until the engine reports them.
    """

    __slots__ = ("fn", "last", "faults")

    def __init__(self) -> None:
        self.fn: Callable[[Any], Any] = _missing
        self.last: LLMCall | None = None
        self.faults: list[Fault] = []

    def __call__(self, arg: Any) -> Any:
        return self.fn(arg)

    def drain(self) -> Sequence[Fault]:
        faults = self.faults
        if not faults:
            return ()
        self.faults = []
        return faults

    def close(self) -> None:
        """At the run's end: let go of its links and its last call. The links refer back to the chain (to
        set ``last``, to collect faults): without this, the run's transcript (``last.messages``) would
        wait for the garbage collector instead of going with the run."""
        self.fn, self.last, self.faults = _missing, None, []


def _missing(arg: Any) -> Any:  # pragma: no cover - replaced at construction
    raise RuntimeError("chain not built")


# -- facts -----------------------------------------------------------------------------------------


def _answered(call: LLMCall, out: Any, started: float) -> None:
    call.duration_ms = (time.perf_counter() - started) * 1000.0
    if not isinstance(out, LLMResponse):
        call.outcome, call.error_type = "error", "invalid_response"
        raise TypeError(f"the backend returned {type(out).__name__}, not an LLMResponse")
    call.response = out
    call.usage = out.usage
    call.response_model = out.model
    if out.usage is not None:
        call.cost_usd = cost_of(out.model or call.model, out.usage)
    if out.time_to_first_chunk_s is not None:
        call.ttfc_ms = out.time_to_first_chunk_s * 1000.0
    call.outcome = "ok"


def _failed(call: LLMCall, exc: BaseException, started: float) -> None:
    call.duration_ms = (time.perf_counter() - started) * 1000.0
    call.outcome = "error"
    kind = getattr(exc, "kind", None)
    call.error_type = kind if isinstance(kind, str) and kind else type(exc).__name__


def replayed(call: LLMCall, out: Any) -> None:
    """A hook answered ``call`` without calling the model (a checkpoint replay): no call was made."""
    call.replayed = True
    if isinstance(out, LLMResponse):
        call.response, call.response_model, call.outcome = out, out.model, "ok"
    else:
        call.outcome, call.error_type = "error", "invalid_response"


def _llm_terminal(chain: Chain, generate: Callable[..., Any]) -> Callable[[LLMCall], Any]:
    def terminal(call: LLMCall) -> Any:
        chain.last = call
        started = time.perf_counter()
        try:
            out = generate(call.messages, tools=call.tools, **call.options)
        except BaseException as exc:
            _failed(call, exc, started)
            raise
        _answered(call, out, started)
        return out

    return terminal


def _async_llm_terminal(chain: Chain, llm: Any) -> Callable[[LLMCall], Any]:
    agenerate = getattr(llm, "agenerate", None)
    generate = llm.generate if not callable(agenerate) else None

    async def terminal(call: LLMCall) -> Any:
        chain.last = call
        started = time.perf_counter()
        try:
            if generate is not None:
                out = await asyncio.to_thread(generate, call.messages, tools=call.tools, **call.options)
            else:
                out = await agenerate(call.messages, tools=call.tools, **call.options)  # type: ignore[misc]
        except BaseException as exc:
            _failed(call, exc, started)
            raise
        _answered(call, out, started)
        return out

    return terminal


# -- guarded links ---------------------------------------------------------------------------------


class _Next:
    """``call_next`` as a hook sees it: remembers whether it was called and how it ended."""

    __slots__ = ("fn", "called", "returned", "value", "error")

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.called = False
        self.returned = False
        self.value: Any = None
        self.error: BaseException | None = None

    def __call__(self, arg: Any) -> Any:
        self.called = True
        try:
            value = self.fn(arg)
        except BaseException as exc:
            self.error = exc
            raise
        self.returned, self.value = True, value
        return value


class _AsyncNext(_Next):
    __slots__ = ()

    def __call__(self, arg: Any) -> Any:
        self.called = True
        return self._run(arg)

    async def _run(self, arg: Any) -> Any:
        try:
            value = await _resolve(self.fn(arg))
        except BaseException as exc:
            self.error = exc
            raise
        self.returned, self.value = True, value
        return value


async def _resolve(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value


def _recover(chain: Chain, hook: Any, method: str, exc: Exception, nxt: _Next) -> tuple[bool, Any]:
    """After a hook raised: (True, value) to use the inner value, (False, None) to run the rest of
    the chain without this hook; or re-raise (a decision, or the inner call's own failure)."""
    if isinstance(exc, LoopletError):
        raise exc
    if nxt.returned:  # raised after a value came back: keep it
        chain.faults.append((hook, method, exc))
        return True, nxt.value
    if not nxt.called:  # raised before calling on: skip this hook
        chain.faults.append((hook, method, exc))
        return False, None
    if nxt.error is exc or nxt.error is None:
        raise exc
    chain.faults.append((hook, method, exc))  # raised something else while the inner call failed
    raise nxt.error


def _link(
    chain: Chain, hook: Any, method: str, wrap: Callable[..., Any], inner: Callable[[Any], Any], llm: bool
) -> Callable[[Any], Any]:
    def step(arg: Any) -> Any:
        nxt = _Next(inner)
        try:
            out = wrap(arg, nxt)
        except Exception as exc:
            use, value = _recover(chain, hook, method, exc, nxt)
            return value if use else inner(arg)
        if llm and not nxt.called:
            _hook_answered(chain, arg, out)
        return out

    return step


def _async_link(
    chain: Chain, hook: Any, method: str, wrap: Callable[..., Any], inner: Callable[[Any], Any], llm: bool
) -> Callable[[Any], Any]:
    async def step(arg: Any) -> Any:
        nxt = _AsyncNext(inner)
        try:
            out = await _resolve(wrap(arg, nxt))
        except Exception as exc:
            use, value = _recover(chain, hook, method, exc, nxt)
            return value if use else await _resolve(inner(arg))
        if llm and not nxt.called:
            _hook_answered(chain, arg, out)
        return out

    return step


def _hook_answered(chain: Chain, call: LLMCall, out: Any) -> None:
    """A ``wrap_llm_call`` hook gave ``out`` without calling on: unless an inner link already settled
    ``call``, it is a replay (no model was called), and the call the chain ends with."""
    if call.outcome == "pending":
        replayed(call, out)
        chain.last = call


def _strict_link(wrap: Callable[..., Any], inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def step(arg: Any) -> Any:
        return wrap(arg, inner)

    return step


def _fold(
    chain: Chain, wraps: Wraps, terminal: Callable[[Any], Any], method: str, strict: bool, is_async: bool
) -> Chain:
    fn = terminal
    llm = method == "wrap_llm_call"
    for hook, wrap in reversed(tuple(wraps)):
        if strict:
            fn = _strict_link(wrap, fn)
        elif is_async:
            fn = _async_link(chain, hook, method, wrap, fn, llm)
        else:
            fn = _link(chain, hook, method, wrap, fn, llm)
    chain.fn = fn
    return chain


def llm_chain(wraps: Wraps, llm: Any, strict: bool = False) -> Chain:
    """The sync loop's LLM chain: hooks around ``llm.generate``."""
    chain = Chain()
    return _fold(chain, wraps, _llm_terminal(chain, llm.generate), "wrap_llm_call", strict, False)


def async_llm_chain(wraps: Wraps, llm: Any, strict: bool = False) -> Chain:
    """The async loop's LLM chain: hooks around ``llm.agenerate`` (or ``generate`` in a thread)."""
    chain = Chain()
    return _fold(chain, wraps, _async_llm_terminal(chain, llm), "wrap_llm_call", strict, True)


class ToolTerminal:
    """The innermost ``wrap_tool`` link of the sync loop: the registry's validation and run, which set
    the tool's facts (``duration_ms``, ``error``, ``error_kind``). Whatever a tool or hostile arguments
    do, a ToolResult comes back. ``timeout`` is set per batch by the driver.

    A sync tool with a timeout runs on the loop's own thread under the run's
    :class:`~looplet.tools.Alarm` when the run is on the main thread and SIGALRM is free, on the run's
    :class:`~looplet.tools.Worker` (one reused thread) otherwise; a parallel batch clears ``worker``, and
    each of its calls gets a thread of its own."""

    __slots__ = ("registry", "max_chars", "timeout", "worker", "alarm")

    def __init__(self, registry: Any, max_chars: int | None) -> None:
        self.registry = registry
        self.max_chars = max_chars
        self.timeout: float | None = None
        self.worker: Worker | None = Worker()
        self.alarm = Alarm()

    def __call__(self, tc: ToolCall) -> ToolResult:
        try:
            spec = self.registry.prepare(tc)
            if isinstance(spec, ToolResult):
                return spec
            timeout = spec.timeout_s or self.timeout
            if timeout is None or self.worker is None or spec.is_async or spec.isolation == "process":
                return self.registry.execute(spec, tc, timeout, self.max_chars)  # type: ignore[no-any-return]
            args = (spec, tc, None, self.max_chars)
            alarm = self.alarm
            try:
                out = alarm.run(self.registry.execute, args, timeout)
            except _Alarm:
                return _timeout_error(spec, timeout, alarm.started, True)
            if out is not LOST:
                return out  # type: ignore[no-any-return]
            started = time.perf_counter()
            try:
                out = self.worker.run(self.registry.execute, args, timeout)
            except _ToolTimeout:
                return _timeout_error(spec, timeout, started)
            return _checked_result(out)
        except Exception as exc:
            return crashed(exc)

    def close(self) -> None:
        self.alarm.close()
        if self.worker is not None:
            self.worker.close()


class AsyncToolTerminal(ToolTerminal):
    """The async loop's innermost ``wrap_tool`` link: ``async def`` tools are awaited; sync tools never
    run on the event loop (the run's worker thread, or a thread of their own in a parallel batch)."""

    __slots__ = ("deadline",)

    def __init__(self, registry: Any, max_chars: int | None) -> None:
        super().__init__(registry, max_chars)
        self.deadline = _Deadline()

    async def __call__(self, tc: ToolCall) -> ToolResult:  # type: ignore[override]
        try:
            spec = self.registry.prepare(tc)
            if isinstance(spec, ToolResult):
                return spec
            timeout = spec.timeout_s or self.timeout
            if spec.isolation == "process" or self.worker is None:  # a parallel batch: a task per call
                return _checked_result(await self.registry.aexecute(spec, tc, timeout, self.max_chars))
            started = time.perf_counter()
            if spec.is_async:
                return await self.awaited(spec, tc, timeout, started)
            try:
                out = await self.worker.arun(self.registry.execute, (spec, tc, None, self.max_chars), timeout)
            except _ToolTimeout:
                return _timeout_error(spec, timeout, started)
            return _checked_result(out)
        except Exception as exc:
            return crashed(exc)

    async def awaited(self, spec: Any, tc: ToolCall, timeout: float | None, started: float) -> ToolResult:
        """An ``async def`` tool on the caller's task, bounded by the run's :class:`_Deadline`."""
        if timeout is None:
            return _checked_result(await self.registry.aexecute(spec, tc, None, self.max_chars))
        deadline = self.deadline
        deadline.start(timeout)
        try:
            out = await self.registry.aexecute(spec, tc, None, self.max_chars)
        except asyncio.CancelledError:
            if deadline.expired():  # our cancellation, and nobody else's: the tool's timeout
                return _timeout_error(spec, timeout, started)
            raise
        finally:
            deadline.stop()
        return _checked_result(out)

    def close(self) -> None:
        super().close()
        self.deadline.close()


class _Deadline:
    """The async loop's timeout for ``async def`` tools, with one timer per run instead of one per call
    (``asyncio.timeout`` costs about 5 µs a call, a sizeable share of a bare async step).

    The timer is armed for the running call's deadline unless one is armed earlier; when it fires before
    the running call's deadline (it was armed for an earlier call) it re-arms itself; when the deadline
    has passed it cancels the calling task, and the terminal turns that cancellation into the tool's
    timeout (``expired``), or lets it through when the task was also cancelled by someone else."""

    __slots__ = ("task", "when", "handle", "fired")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.when = 0.0
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False

    def start(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.task, self.when, self.fired = asyncio.current_task(), loop.time() + timeout, False
        handle = self.handle
        if handle is None or handle.when() > self.when:
            if handle is not None:
                handle.cancel()
            self.handle = loop.call_at(self.when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        if self.task is None:  # no call running: the next one arms the timer again
            return
        if loop.time() < self.when:
            self.handle = loop.call_at(self.when, self._fire, loop)
            return
        self.fired = True
        self.task.cancel()

    def expired(self) -> bool:
        """After a CancelledError: True when it was this deadline's alone. Its request is undone either way."""
        if not self.fired or self.task is None:
            return False
        self.fired = False
        return self.task.uncancel() == 0

    def stop(self) -> None:
        """The call ended. A deadline that fired while the tool swallowed the cancellation is undone too,
        so the run does not end as cancelled."""
        if self.fired and self.task is not None:
            self.task.uncancel()
        self.task, self.fired = None, False

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def crashed(exc: BaseException) -> ToolResult:
    message = f"{type(exc).__name__}: {exc}"
    return ToolResult(error=message, error_kind="tool_exception", text=f"ERROR: {message}")


def _checked_result(out: Any) -> ToolResult:
    if isinstance(out, ToolResult):
        return out
    message = f"a wrap_tool hook returned {type(out).__name__}, not a ToolResult"
    return ToolResult(error=message, error_kind="hook_error", text=f"ERROR: {message}")


def tool_chain(wraps: Wraps, terminal: ToolTerminal, strict: bool = False) -> Chain:
    """The sync loop's tool chain; its outermost call always gives back a ToolResult."""
    return _tool_chain(tuple(wraps), terminal, strict, False)


def async_tool_chain(wraps: Wraps, terminal: AsyncToolTerminal, strict: bool = False) -> Chain:
    """The async loop's tool chain; its outermost call always gives back a ToolResult."""
    return _tool_chain(tuple(wraps), terminal, strict, True)


def _tool_chain(wraps: tuple[Any, ...], terminal: ToolTerminal, strict: bool, is_async: bool) -> Chain:
    # its bound method, not the object: calling an object's __call__ costs ~700 instructions more a call
    chain = _fold(Chain(), wraps, terminal.__call__, "wrap_tool", strict, is_async)
    if not wraps:  # the terminal itself always gives back a ToolResult
        return chain
    inner = chain.fn

    def guarded(tc: ToolCall) -> ToolResult:
        try:
            return _checked_result(inner(tc))
        except Exception as exc:
            return crashed(exc)

    async def aguarded(tc: ToolCall) -> ToolResult:
        try:
            return _checked_result(await _resolve(inner(tc)))
        except Exception as exc:
            return crashed(exc)

    chain.fn = aguarded if is_async else guarded
    return chain
