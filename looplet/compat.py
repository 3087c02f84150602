"""Names of looplet 0.4.1, kept so code written for it keeps running while it moves to 0.5.

Everything here is deprecated and goes away in looplet :data:`REMOVAL`. An old name either still works
(with one ``DeprecationWarning`` per use that names the 0.5 spelling) or raises
:class:`RemovedAPIError`, whose message says what to write instead. ``looplet``'s package
``__getattr__`` and the shim modules (``looplet.testing``, ``looplet.compact``, ...) look names up here
with :func:`old_name`; nothing else in looplet depends on this module. docs/migration.md has the table.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar, cast, runtime_checkable

__all__ = ["REMOVAL", "RemovedAPIError", "warn_renamed", "old_name"]

#: The looplet version that removes the names of this module.
REMOVAL = "0.7"


#: Set once a 0.4.1 feature the loop must see per run has been used (a ``ToolSpec(free=True)``): runs then
#: go through ``looplet._compat_loop.old_run``. False for code written for 0.5, whose runs never look further.
OLD_RUN_FEATURES = False


class RemovedAPIError(ImportError):
    """A looplet 0.4.1 name that has no working counterpart in 0.5; the message says what to use.

    An ``ImportError`` so that ``from looplet import X`` shows this message, not "cannot import name".
    """


def warn_renamed(old: str, new: str) -> None:
    """The one ``DeprecationWarning`` an old spelling emits when it is used, attributed to the first
    caller outside looplet (the user's line, however deep in the loop the old name was met)."""
    _warn(
        f"{old} is deprecated since looplet 0.5 and will be removed in {REMOVAL}; use {new} "
        "(see docs/migration.md)"
    )


def _warn(message: str) -> None:
    frame, level = sys._getframe(2), 2
    while frame.f_back is not None and _in_looplet(frame):
        frame, level = frame.f_back, level + 1
    if frame.f_code.co_name == "_handle_fromlist":  # `from looplet import X` asks twice: warn once
        return
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)


def _in_looplet(frame: Any) -> bool:
    name = frame.f_globals.get("__name__", "")
    if name in ("abc", "typing"):  # a metaclass between a class statement and __init_subclass__
        return True
    return isinstance(name, str) and (name == "looplet" or name.startswith("looplet."))


def _removed(old: str, advice: str) -> RemovedAPIError:
    return RemovedAPIError(f"{old} was removed in looplet 0.5: {advice} (see docs/migration.md)")


class _Removed(type):
    """The type of placeholders: a 0.4.1 name with no working counterpart still imports (so a module
    that imports it among others loads), and any use of it (calling it, reading an attribute)
    raises :class:`RemovedAPIError` saying what to write instead. ``isinstance(x, it)`` is False."""

    __removed__: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RemovedAPIError(cls.__removed__)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise RemovedAPIError(cls.__removed__)

    def __repr__(cls) -> str:  # so that any message quoting it (a tool's annotation, ...) carries the advice
        return f"<placeholder: {cls.__removed__}>"


_PLACEHOLDERS: dict[str, type] = {}


def placeholder(old: str, advice: str) -> type:
    """The placeholder of the removed name ``old`` (``"module.Name"``), with one DeprecationWarning at
    the import that names what to write; the same object for every import of that name."""
    message = str(_removed(old, advice))
    _warn(
        f"{message}; until looplet {REMOVAL} it imports as a placeholder that raises RemovedAPIError when used"
    )
    ph = _PLACEHOLDERS.get(old)
    if ph is None:
        module, _, name = old.rpartition(".")
        bases: tuple[type, ...] = (Exception,) if name.endswith("Error") else ()
        ns = {"__removed__": message, "__module__": module, "__doc__": message}
        ph = _PLACEHOLDERS[old] = _Removed(name, bases, ns)
    return ph


# ---------------------------------------------------------------- old constructor keywords

#: What an old keyword became: a new keyword (renamed), None (accepted, no effect in 0.5), a sentence
#: saying what to write instead (refused with TypeError), or a function(value, kwargs) that translates it.
KeywordTable = dict[str, "str | None | Callable[[Any, dict[str, Any]], None]"]

_T = TypeVar("_T")


def old_keywords(table: KeywordTable, *, what: str = "") -> Callable[[type[_T]], type[_T]]:
    """Class decorator: the class's ``__init__`` also takes 0.4.1's keywords in ``table``. A renamed
    keyword warns and is passed on under its new name; one with no effect warns and is dropped; one
    that cannot work raises ``TypeError`` naming what to write. Only calls that use an old keyword pay
    for the check (one dict lookup per keyword)."""

    def decorate(cls: type[_T]) -> type[_T]:
        init = cls.__init__
        label = what or cls.__name__
        old = {k: v for k, v in table.items() if k not in inspect.signature(init).parameters}

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if kwargs and not old.keys().isdisjoint(kwargs):
                _translate(label, old, kwargs)
                kept = kwargs.pop("_old", None)  # values a translator keeps on the object (its `_old` slot)
                init(self, *args, **kwargs)
                if kept is not None:
                    self._old = kept
                return
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return decorate


def set_old_keywords(obj: Any, label: str, table: KeywordTable, old: dict[str, Any]) -> None:
    """For a hot record whose own ``__init__`` takes ``**old``: ``old_keywords``'s translation, with
    the new keywords it yields set on ``obj`` (the constructor pays nothing when no old keyword is used)."""
    unknown = [k for k in old if k not in table]
    if unknown:
        raise TypeError(f"{label}.__init__() got an unexpected keyword argument {unknown[0]!r}")
    _translate(label, table, old)
    for key, value in old.items():  # what the call gave under the new name wins, as in old_keywords
        if getattr(obj, key, None) in (None, ""):
            setattr(obj, key, value)


def _translate(label: str, old: KeywordTable, kwargs: dict[str, Any]) -> None:
    for key in [k for k in kwargs if k in old]:
        target = old[key]
        value = kwargs.pop(key)
        if callable(target):
            target(value, kwargs)
        elif target is None:
            warn_renamed(f"{label}({key}=...)", f"{label}() without it: it has no effect in 0.5")
        elif target.isidentifier():
            warn_renamed(f"{label}({key}=...)", f"{label}({target}=...)")
            kwargs.setdefault(target, value)
        else:
            raise TypeError(
                f"{label}({key}=...) was removed in looplet 0.5: {target} (see docs/migration.md)"
            )


def _old_permission(value: Any, kwargs: dict[str, Any]) -> None:
    """``HookDecision(permission="allow" | "deny" | None)`` of 0.4.1: ``allow=True`` or a ``block``."""
    value = getattr(value, "value", value)
    if value == "allow" and not kwargs.get("block"):
        warn_renamed("HookDecision(permission='allow')", "Allow() (or HookDecision(allow=True))")
        kwargs["allow"] = True
    elif value == "deny" or (value == "allow" and kwargs.get("block")):
        warn_renamed("HookDecision(permission='deny')", "Deny(reason) (or HookDecision(block=reason))")
        kwargs.setdefault("block", kwargs.get("block") or "permission denied")
    elif value is not None:
        raise TypeError(
            f"HookDecision(permission={value!r}) was removed in looplet 0.5: return Deny(reason) to refuse, "
            "Allow() to approve; to ask a person use ApprovalHook(tools, handler=...) (see docs/migration.md)"
        )
    else:
        warn_renamed("HookDecision(permission=None)", "HookDecision() without it")


#: composable_loop / async_composable_loop keywords of 0.4.1.
LOOP_KEYWORDS: KeywordTable = {
    "session_log": "the loop keeps its own transcript (hooks receive it as session_log); to continue a "
    "saved run use resume(...) or CheckpointHook(dir)",
    "conversation": "the loop builds the transcript from system_prompt and task; to continue a saved run use "
    "resume(...) or CheckpointHook(dir)",
    "stream": "the loop's events reach hooks (on_step, on_llm_chunk with LoopConfig(stream=True), on_event)",
}

_P = ParamSpec("_P")
_R = TypeVar("_R")


def old_loop_keywords(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``composable_loop(..., session_log=, stream=, conversation=)`` of 0.4.1: ``None`` (what 0.4.1 code
    often passed explicitly) is dropped with a warning; anything else is refused with advice."""

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if kwargs and not LOOP_KEYWORDS.keys().isdisjoint(kwargs):
            for key in [k for k in kwargs if k in LOOP_KEYWORDS]:
                if kwargs[key] is not None:
                    raise TypeError(
                        f"{fn.__name__}({key}=...) was removed in looplet 0.5: {LOOP_KEYWORDS[key]} "
                        "(see docs/migration.md)"
                    )
                del kwargs[key]
                warn_renamed(f"{fn.__name__}({key}=None)", f"{fn.__name__}() without it")
        return fn(*args, **kwargs)

    return call


_HOOK_INSTEAD = "write a hook (pre_prompt, pre_dispatch, check_done, ...); see docs/hooks.md"

#: LoopConfig fields of 0.4.1.
LOOP_CONFIG_KEYWORDS: KeywordTable = {
    "concurrent_dispatch": "parallel_tools",
    **dict.fromkeys(
        """use_native_tools max_parallel_calls reactive_recovery recovery_temperature max_briefing_tokens
        context_window_steps context_inline_per_step_chars context_window_total_chars cache_policy
        max_turn_continuations tool_result_persist_dir""".split()
    ),
    "checkpoint_dir": "add CheckpointHook(checkpoint_dir) to hooks=[...]",
    "tracer": "add TracingHook() (OpenTelemetry) to hooks=[...]",
    "router": "pass the backend to use as llm=...",
    "generate_kwargs": "set temperature=/max_tokens= here, or change call.options in a wrap_llm_call hook",
    "approval_handler": "add ApprovalHook(tools, handler=...) to hooks=[...]",
    "cancel_token": "pass cancel=CancelToken() to composable_loop",
    "done_tools": "name one done tool with done_tool=...",
    **dict.fromkeys(
        """build_briefing extract_entities build_trace build_prompt context_planner extract_step_metadata
        domain tool_view_selector recovery_registry output_schema initial_checkpoint checkpoint_state
        restore_checkpoint_state memory_sources scoped_context_sources scoped_context_budget_tokens
        execution_policy render_messages_override tool_metadata run_envelope done_tool_schemas""".split(),
        _HOOK_INSTEAD,
    ),
}


# ---------------------------------------------------------------- records (mixins of ToolCall, ToolResult, RunResult)

TOOL_CALL_KEYWORDS: KeywordTable = {
    "call_id": "id",
    "metadata": "keep per-call data in a hook (run.scratch) or in the arguments",
}


def _kept(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def translate(value: Any, kwargs: dict[str, Any]) -> None:
        from looplet._compat_records import keep

        keep(name)(value, kwargs)

    return translate


TOOL_RESULT_KEYWORDS: KeywordTable = {  # tool=, call_id=, ...: kept on the result (looplet._compat_records)
    **{name: _kept(name) for name in ("tool", "call_id", "args_summary", "result_key")},
    "error_detail": lambda value, kwargs: _old_error_detail(value, kwargs),
    "metadata": "attach data to the result itself (data=...) or keep it in a hook",
}


_SPEC_KEPT = ("idempotency", "retryable", "requires", "tags", "render")


def _kept_spec(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def translate(value: Any, kwargs: dict[str, Any]) -> None:
        _records().keep_spec(name, value, kwargs)

    return translate


#: ToolSpec fields of 0.4.1.
TOOL_SPEC_KEYWORDS: KeywordTable = {
    "free": None,  # free=True makes looplet._compat_loop's free ToolSpec (calls not counted as steps)
    "infer_optional_from_signature": "give a JSON Schema whose 'required' lists only the required arguments, "
    "or build the spec with @tool (it reads defaults from the signature)",
    "capabilities": None,
    # kept on the spec for code that reads them back (looplet._compat_records); 0.5 does not read them
    **{name: _kept_spec(name) for name in _SPEC_KEPT},
}


HOOK_DECISION_KEYWORDS: KeywordTable = {
    "permission": _old_permission,
    "rewrite_thread": "compaction strategies return the new transcript (looplet.context)",
    "policy_decision": "return Deny(reason) / Allow(); PermissionHook counts its decisions",
    "metadata": None,
}


class LegacyHookDecision:
    """0.4.1's ``HookDecision`` queries, deprecated; ``HookDecision`` inherits them."""

    __slots__ = ()
    block: str | None
    stop: str | None
    allow: bool

    def is_block(self) -> bool:
        warn_renamed("decision.is_block()", "decision.block is not None")
        return self.block is not None

    def is_stop(self) -> bool:
        warn_renamed("decision.is_stop()", "decision.stop is not None")
        return self.stop is not None

    def is_noop(self) -> bool:
        warn_renamed("decision.is_noop()", "the fields you care about (decision.block, decision.stop, ...)")
        return not any(getattr(self, f.name) for f in fields(cast(Any, self)))

    def ignored_effects(self, slot: str) -> tuple[str, ...]:
        """The fields set here that the hook method ``slot`` does not act on (looplet._compat_hooks)."""
        from looplet._compat_hooks import ignored_effects

        warn_renamed("decision.ignored_effects(slot)", "the fields docs/hooks.md lists per hook method")
        return ignored_effects(self, slot)

    def to_wire(self) -> dict[str, Any]:
        from looplet._compat_compact import to_wire

        warn_renamed("decision.to_wire()", "dataclasses.asdict(decision)")
        return to_wire(cast(Any, self))

    @classmethod
    def from_wire(cls, raw: Any) -> Any:
        from looplet._compat_compact import from_wire

        warn_renamed("HookDecision.from_wire(d)", "HookDecision(**d)")
        return from_wire(raw)

    @property
    def permission(self) -> str | None:
        warn_renamed("decision.permission", "decision.block is not None (deny) / decision.allow")
        given = getattr(self, "permission_given", ())  # HookDecision(permission=...): as given
        if given:
            return cast("str | None", given[0])
        return "deny" if self.block is not None else ("allow" if self.allow else None)


class LegacyStep:
    """0.4.1's ``Step`` methods, deprecated; ``Step`` inherits them."""

    __slots__ = ()

    def summary(self) -> str:
        return cast(str, _records().step_summary(self))


class LegacyToolCall:
    """0.4.1's ``ToolCall`` attributes, deprecated; ``ToolCall`` inherits them."""

    __slots__ = ()
    id: str

    @property
    def call_id(self) -> str:
        """The call's id; a call without one gets one here (0.4.1 made one for every ToolCall)."""
        warn_renamed("ToolCall.call_id", "ToolCall.id")
        if not self.id:
            import uuid

            cast(Any, self).id = f"call_{uuid.uuid4().hex[:12]}"
        return self.id

    @property
    def metadata(self) -> dict[str, Any]:
        warn_renamed("ToolCall.metadata", "run.scratch (looplet.current_run()) or the call's arguments")
        return {}


class ErrorKind(StrEnum):
    """0.4.1's error families. 0.5's ``ToolResult.error_kind`` is a finer string (``denied``,
    ``invalid_argument``, ...); ``result.error_detail.kind`` gives its 0.4.1 family."""

    PERMISSION_DENIED = "permission_denied"
    TIMEOUT = "timeout"
    VALIDATION = "validation"
    EXECUTION = "execution"
    PARSE = "parse"
    CONTEXT_OVERFLOW = "context_overflow"
    RATE_LIMIT = "rate_limit"
    NETWORK = "network"
    CANCELLED = "cancelled"

    def __eq__(self, other: object) -> bool:
        """0.4.1's ``result.error_kind == ErrorKind.VALIDATION`` keeps working: a family equals each
        0.5 kind in it (``"missing_argument"``, ``"unknown_tool"``, ...) as well as its own value."""
        if type(other) is str and other in _KINDS:
            return _KINDS[other] is self or str.__eq__(self, other)
        return str.__eq__(self, other)

    __hash__ = str.__hash__


#: 0.5 error kinds -> 0.4.1's family (anything else: EXECUTION), and back.
_FAMILY = {
    "denied": ErrorKind.PERMISSION_DENIED,
    "timeout": ErrorKind.TIMEOUT,
    **dict.fromkeys(
        ("unknown_tool", "missing_argument", "unexpected_argument", "invalid_argument", "done_rejected"),
        ErrorKind.VALIDATION,
    ),
    "not_run": ErrorKind.CANCELLED,
}
#: The 0.5 kinds ErrorKind compares equal to (``tool_exception`` and the like are EXECUTION).
_KINDS: dict[str, ErrorKind] = {
    **_FAMILY,
    **dict.fromkeys(("tool_exception", "unserializable_result", "subagent_incomplete"), ErrorKind.EXECUTION),
}
_KIND_OF_FAMILY = {
    ErrorKind.PERMISSION_DENIED: "denied",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.VALIDATION: "invalid_argument",
    ErrorKind.EXECUTION: "tool_exception",
    ErrorKind.CANCELLED: "not_run",
}


@dataclass(frozen=True)
class ToolError:
    """0.4.1's structured tool error; in 0.5 a result carries ``error`` (text) and ``error_kind``."""

    kind: ErrorKind
    message: str
    retriable: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    recovery_hint: Any = None

    def __bool__(self) -> bool:
        return True


def _old_error_detail(value: Any, kwargs: dict[str, Any]) -> None:
    """``ToolResult(error_detail=ToolError(kind, message))`` of 0.4.1 -> ``error=``, ``error_kind=``."""
    warn_renamed(
        "ToolResult(error_detail=ToolError(...))", "ToolResult(error='...', error_kind='denied' | ...)"
    )
    if value is not None:
        kind = ErrorKind(getattr(value, "kind", ErrorKind.EXECUTION))
        kwargs.setdefault("error", getattr(value, "message", None) or str(kind))
        kwargs.setdefault("error_kind", _KIND_OF_FAMILY.get(kind, kind.value))


def _records() -> Any:
    import looplet._compat_records

    return looplet._compat_records


class LegacyToolResult:
    """0.4.1's ``ToolResult`` attributes, deprecated; ``ToolResult`` inherits them. ``_old`` (unset
    unless used) holds what 0.4.1 code gave: ``ToolResult(tool=, call_id=, ...)``, or the call
    ``registry.dispatch`` ran."""

    __slots__ = ("_old",)
    _old: Any
    error: str | None
    error_kind: str | None

    @property
    def error_detail(self) -> ToolError | None:
        warn_renamed("ToolResult.error_detail", "ToolResult.error and ToolResult.error_kind (a string)")
        if self.error is None:
            return None
        from looplet._compat_errors import old_error_detail  # families of raised exceptions, hints

        return cast(ToolError, old_error_detail(self, _FAMILY, ErrorKind, ToolError))

    @property
    def error_retriable(self) -> bool:
        warn_renamed("ToolResult.error_retriable", "ToolResult.error_kind (a timeout may be retried)")
        return False

    @property
    def error_message(self) -> str | None:
        warn_renamed("ToolResult.error_message", "ToolResult.error")
        return self.error

    @property
    def args_summary(self) -> str:
        return cast(str, _records().old_field(self, "args_summary", ""))

    @property
    def tool(self) -> str:
        return cast(str, _records().old_field(self, "tool", ""))

    @property
    def call_id(self) -> str | None:
        return cast("str | None", _records().old_field(self, "call_id", None))

    @property
    def result_key(self) -> str | None:
        return cast("str | None", _records().old_field(self, "result_key", None))

    @property
    def metadata(self) -> dict[str, Any]:
        warn_renamed("ToolResult.metadata", "ToolResult.data")
        return {}


class RunStatus(StrEnum):
    """0.4.1's run status; 0.5 has one stop reason (``RunResult.stop_reason``)."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CANCELLED = "cancelled"


_STATUS = {
    "done": RunStatus.COMPLETED,
    "cancelled": RunStatus.CANCELLED,
    "llm_error": RunStatus.FAILED,
    "hook_error": RunStatus.FAILED,
}


class LegacyState:
    """0.4.1's lifecycle attributes of a state, deprecated; ``DefaultState`` inherits them. In 0.5 a
    finished run leaves ``state.result`` (its ``stop_reason``); None while it runs."""

    __slots__ = ()
    steps: list[Any]
    result: Any

    @property
    def run_status(self) -> str:
        warn_renamed("state.run_status", "state.result.stop_reason (state.result is None while it runs)")
        if self.result is None:
            return "running" if self.steps else "created"
        return _STATUS.get(self.result.stop_reason.split(":")[0], RunStatus.STOPPED).value

    @property
    def step_count(self) -> int:
        warn_renamed("state.step_count", "len(state.steps)")
        return len(self.steps)

    @property
    def run_phase(self) -> str:
        warn_renamed("state.run_phase", "state.result is not None (the run ended)")
        return "terminal" if self.result is not None else ("running" if self.steps else "starting")

    @property
    def termination_reason(self) -> str | None:
        warn_renamed("state.termination_reason", "state.result.stop_reason")
        return None if self.result is None else str(self.result.stop_reason)

    @property
    def _stop_reason(self) -> str | None:
        """0.4.1's private ``state._stop_reason``: the reason a hook gave to stop (its ``Stop(reason)``),
        else the stop reason; None while the run goes on."""
        warn_renamed("state._stop_reason", "state.result.stop_reason")
        if self.result is None:
            return None
        return str(self.result.stop_reason).removeprefix("hook_stop:")


class LegacyRunResult:
    """0.4.1's ``RunResult`` attributes (and its trace dict's ``result["termination_reason"]``),
    deprecated; ``RunResult`` inherits them."""

    __slots__ = ()
    stop_reason: str
    final_output: Any
    steps: list[Any]

    @property
    def termination_reason(self) -> str:
        warn_renamed("RunResult.termination_reason", "RunResult.stop_reason")
        return self.stop_reason

    @property
    def status(self) -> RunStatus:
        warn_renamed("RunResult.status", "RunResult.stop_reason")
        return _STATUS.get(self.stop_reason.split(":")[0], RunStatus.STOPPED)

    @property
    def completed(self) -> bool:
        warn_renamed("RunResult.completed", "RunResult.stop_reason == 'done'")
        return self.stop_reason == "done"

    @property
    def output(self) -> Any:
        warn_renamed("RunResult.output", "RunResult.final_output")
        return self.final_output

    @classmethod
    def from_state(cls, state: Any, **_: Any) -> Any:
        """0.4.1's ``RunResult.from_state(state)``: the result the loop left on ``state.result``."""
        warn_renamed("RunResult.from_state(state)", "state.result, or run_loop(...)'s return value")
        result = getattr(state, "result", None)
        if result is None:
            raise ValueError("RunResult.from_state(state): this state has not finished a run yet")
        return result

    def __getitem__(self, key: str) -> Any:
        """0.4.1's trace dict: ``result["termination_reason"]``, ``result["status"]``, ..."""
        warn_renamed(f"result[{key!r}]", "the RunResult attributes (stop_reason, steps, usage, ...)")
        if key in ("termination_reason", "stop_reason"):
            return self.stop_reason
        if key == "status":
            return _STATUS.get(self.stop_reason.split(":")[0], RunStatus.STOPPED).value
        if key in ("output", "final_output"):
            return self.final_output
        if key == "steps":
            return len(self.steps)
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


# ---------------------------------------------------------------- hooks written for 0.4.1

#: 0.4.1 hook methods 0.5 does not call under that name.
OLD_HOOK_METHODS = (
    "pre_loop",
    "check_permission",
    "build_briefing",
    "should_compact",
    "build_prompt",
    "post_step",
)


class OldHook:
    """A hook written for 0.4.1, as the 0.5 loop sees it: ``pre_loop`` becomes ``on_loop_start``,
    ``check_permission`` returning False becomes a ``pre_dispatch`` denial, ``build_briefing``'s text is
    added to the prompt (``pre_prompt``), ``post_step`` is called from ``on_step``; ``should_compact`` is not called (a warning says so). Every
    other attribute is the hook's own."""

    def __init__(self, hook: Any, tools: Any = None) -> None:
        self._hook = hook
        self._has = {m for m in OLD_HOOK_METHODS if callable(getattr(hook, m, None))}
        self._tools = tools  # for pre_loop(..., tools=): 0.4.1 gave the run's registry to hooks asking for it
        self._pre_loop_tools = "pre_loop" in self._has and _takes(hook.pre_loop, "tools")

    def __getattr__(self, name: str) -> Any:
        if name in ("on_loop_start", "pre_dispatch", "pre_prompt", "on_step"):
            own = getattr(self._hook, name, None)
            old = {
                "on_loop_start": "pre_loop",
                "pre_dispatch": "check_permission",
                "pre_prompt": "build_briefing",
                "on_step": "post_step",
            }
            if old[name] in self._has:
                return functools.partial(getattr(type(self), "_" + name), self, own)
            return getattr(self._hook, name)
        return getattr(self._hook, name)

    def __repr__(self) -> str:
        return f"OldHook({self._hook!r})"

    def _on_loop_start(self, own: Any, state: Any, session_log: Any, context: Any) -> Any:
        extra = {"tools": self._tools} if self._pre_loop_tools else {}
        first = self._hook.pre_loop(state, session_log, context, **extra)
        if inspect.isawaitable(first):  # an async pre_loop: the loop awaits what this returns
            return _then(first, own, (state, session_log, context))
        return own(state, session_log, context) if own else None

    def _pre_dispatch(self, own: Any, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        from looplet._compat_hooks import permission_answer

        denied = permission_answer(self._hook.check_permission(tool_call, state))
        if denied is not None:
            return denied
        return own(state, session_log, tool_call, step_num) if own else None

    def _on_step(self, own: Any, state: Any, step: Any) -> Any:
        """0.4.1's ``post_step(state, session_log, step_num)``; the transcript is ``state.transcript``."""
        self._hook.post_step(state, getattr(state, "transcript", None), step.number)
        return own(state, step) if own else None

    def _pre_prompt(self, own: Any, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        briefing = self._hook.build_briefing(state, session_log, context)
        extra = own(state, session_log, context, step_num) if own else None
        if briefing and isinstance(extra, str):
            return f"{briefing}\n\n{extra}"
        return briefing or extra


async def _then(first: Any, own: Any, args: tuple[Any, ...]) -> Any:
    await first
    out = own(*args) if own else None
    return (await out) if inspect.isawaitable(out) else out


def _takes(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _engine_check(hook: Any, method: str) -> bool:
    """``PermissionHook(PermissionEngine)``'s ``check_permission`` is for callers: it judges in pre_dispatch."""
    return method == "check_permission" and isinstance(getattr(hook, "engine", None), PermissionEngine)


def old_hooks(hooks: list[Any], tools: Any = None) -> list[Any]:
    """The hooks as the 0.5 loop should see them: those with 0.4.1-only methods wrapped in
    :class:`OldHook`, those with 0.4.1's ``on_event(payload)`` in ``looplet._compat_events.OldEventHook``
    (with one DeprecationWarning each); the list itself when there are none.
    ``tools``: the run's registry, for a ``pre_loop(..., tools=)``."""
    if not any(callable(getattr(h, m, None)) for h in hooks for m in OLD_HOOK_METHODS) and not any(
        _event_payload(h) for h in hooks
    ):
        return hooks
    out = []
    for h in hooks:
        has = [m for m in OLD_HOOK_METHODS if callable(getattr(h, m, None)) and not _engine_check(h, m)]
        wrapped = _old_hook(h, has, tools) if has else h
        if _event_payload(h):
            from looplet._compat_events import OldEventHook

            warn_renamed(
                f"hook {type(h).__name__}.on_event(payload)",
                "the named hook methods (pre_prompt, pre_dispatch, post_dispatch, ...) returning decisions; "
                "on_event(name, attributes) observes 0.5's events",
            )
            wrapped = OldEventHook(wrapped)
        out.append(wrapped)
    if any(
        callable(getattr(h, "check_permission", None)) and not _engine_check(h, "check_permission")
        for h in hooks
    ):
        from looplet._compat_hooks import permission_last  # 0.4.1's order: check_permission last

        return permission_last(hooks, out)
    return out


def _old_hook(h: Any, has: list[str], tools: Any) -> OldHook:
    if "build_prompt" in has:
        raise TypeError(
            f"hook {type(h).__name__}.build_prompt was removed in looplet 0.5: the loop keeps a chat "
            "transcript; change call.messages in a wrap_llm_call(call, call_next) hook (see docs/migration.md)"
        )
    new = {
        "pre_loop": "on_loop_start",
        "check_permission": "pre_dispatch returning Deny(reason)",
        "build_briefing": "pre_prompt returning text",
        "should_compact": "ThresholdCompactHook (should_compact is not called)",
        "post_step": "on_step(state, step)",
    }
    warn_renamed(f"hook {type(h).__name__}.{'/'.join(has)}", ", ".join(new[m] for m in has))
    return OldHook(h, tools)


def _event_payload(hook: Any) -> bool:
    """Whether ``hook`` has 0.4.1's ``on_event(payload)`` (one positional parameter; 0.5's takes
    ``name, attributes``). Reads the function's code object only: no signature is built."""
    fn = getattr(hook, "on_event", None)
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None or code.co_flags & inspect.CO_VARARGS:
        return False
    return bool(code.co_argcount - inspect.ismethod(fn) == 1)


# ---------------------------------------------------------------- backends written for 0.4.1

_OLD_STYLE: dict[type, bool] = {}


def _old_style(llm: Any) -> bool:
    """0.4.1's backend protocol: ``generate(prompt: str, *, max_tokens, system_prompt, temperature) -> str``
    (a first parameter named ``prompt``, no ``tools``). Decided once per backend class."""
    cls = type(llm)
    known = _OLD_STYLE.get(cls)
    if known is None:
        try:
            params = list(inspect.signature(llm.generate).parameters)
        except (TypeError, ValueError, AttributeError):
            params = []
        known = _OLD_STYLE[cls] = bool(params) and params[0] == "prompt" and "tools" not in params
    return known


def old_backend(llm: Any) -> Any:
    """The backend as the 0.5 loop calls it: a 0.4.1-style one wrapped in :class:`OldBackend`."""
    if not _old_style(llm):
        return llm
    warn_renamed(
        f"a backend with generate(prompt) -> str ({type(llm).__name__})",
        "generate(messages, *, tools=None, **options) -> LLMResponse (see looplet.protocols.LLMBackend)",
    )
    return OldBackend(llm)


class OldBackend:
    """A 0.4.1 backend behind the 0.5 protocol: the transcript and the tool list become one prompt text
    (the tools described, the model asked to answer with ``{"tool": ..., "args": {...}}``), and the
    string it returns becomes an ``LLMResponse`` whose text the loop parses for the tool call. A backend
    with 0.4.1's ``generate_with_tools(prompt, tools=...)`` is asked that way when the run has tools (as
    0.4.1 did by default): its ``tool_use`` blocks become the response's native tool calls."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.model = getattr(llm, "model", None) or getattr(llm, "_model", None)
        self.provider = getattr(llm, "provider", None)
        params = inspect.signature(llm.generate).parameters
        self._takes = {k for k in ("system_prompt", "max_tokens", "temperature") if k in params}
        self._is_async = inspect.iscoroutinefunction(llm.generate)
        self._native = callable(getattr(llm, "generate_with_tools", None))

    def _request(
        self, messages: list[dict[str, Any]], tools: Any, options: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
        lines = []
        for m in messages:
            if m.get("role") == "system":
                continue
            for call in m.get("tool_calls") or ():
                fn = call.get("function", {})
                lines.append(f'assistant: {{"tool": {fn.get("name")!r}, "args": {fn.get("arguments")}}}')
            if m.get("content"):
                lines.append(f"{m.get('role')}: {m.get('content')}")
        if tools:
            lines.append("Available tools:")
            for t in tools:
                spec = t.get("function", t)
                lines.append(
                    f"- {spec.get('name')}: {spec.get('description', '')} {spec.get('parameters', {})}"
                )
            lines.append('Answer with one JSON object: {"tool": "<name>", "args": {...}}')
        kwargs = {
            "system_prompt": system,
            **{k: v for k, v in options.items() if k in ("max_tokens", "temperature")},
        }
        return "\n".join(lines), {k: v for k, v in kwargs.items() if k in self._takes}

    def _start(self, messages: list[dict[str, Any]], tools: Any, options: dict[str, Any]) -> tuple[bool, Any]:
        """Call the backend: ``generate_with_tools`` (the tools as 0.4.1's schemas) or ``generate``."""
        native = bool(tools) and self._native
        prompt, kwargs = self._request(messages, None if native else tools, options)
        if not native:
            return False, self.llm.generate(prompt, **kwargs)
        schemas = [
            {
                "name": spec.get("name"),
                "description": spec.get("description", ""),
                "input_schema": spec.get("parameters") or {"type": "object", "properties": {}},
            }
            for spec in (t.get("function", t) for t in tools)
        ]
        return True, self.llm.generate_with_tools(prompt, tools=schemas, **kwargs)

    def _answer(self, native: bool, out: Any) -> Any:
        from looplet.types import LLMResponse, ToolCall

        if not native:
            return LLMResponse(text=str(out), model=self.model)
        blocks = [b for b in out or () if isinstance(b, dict)]
        text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
        calls = [
            ToolCall(str(b.get("name") or ""), dict(b.get("input") or {}), str(b.get("id") or f"call_{i}"))
            for i, b in enumerate(blocks)
            if b.get("type") == "tool_use"
        ]
        return LLMResponse(text=text or None, tool_calls=calls, model=self.model)

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> Any:
        native, out = self._start(messages, tools, options)
        if inspect.isawaitable(out):
            if inspect.iscoroutine(out):
                out.close()
            raise TypeError(f"{type(self.llm).__name__}.generate is async: use async_composable_loop")
        return self._answer(native, out)

    async def agenerate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> Any:
        native, out = self._start(messages, tools, options)
        if inspect.isawaitable(out):
            out = await out
        return self._answer(native, out)


def suggest_similar(name: str, choices: Any, *, cutoff: float = 0.6) -> str | None:
    """0.4.1's ``suggest_similar(name, choices)``: the closest of ``choices``, or None."""
    import difflib

    warn_renamed("suggest_similar(name, choices)", "difflib.get_close_matches(name, choices, n=1)")
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff) if name and choices else []
    return found[0] if found else None


# ---------------------------------------------------------------- parsing (0.4.1's looplet.parse)


def parse_tool_call(text: str) -> Any:
    """0.4.1's ``parse_tool_call(text)``: the first tool call written as JSON in ``text``, or None."""
    calls = parse_multi_tool_calls(text, _warn_as="parse_tool_call(text)")
    return calls[0] if calls else None


def parse_multi_tool_calls(text: str, *, _warn_as: str = "parse_multi_tool_calls(text)") -> list[Any]:
    """0.4.1's ``parse_multi_tool_calls(text)``: every tool call written as JSON in ``text`` (the loop
    reads model text the same way)."""
    from looplet._compat_parse import old_text_calls
    from looplet._engine import parse_text_tool_calls

    warn_renamed(_warn_as, "composable_loop (it reads tool calls written as JSON text itself)")
    return old_text_calls(text, parse_text_tool_calls(text))


def parse_native_tool_use(blocks: list[Any]) -> list[Any]:
    """0.4.1's ``parse_native_tool_use(content_blocks)``: the ``tool_use`` blocks as ``ToolCall``s."""
    from looplet.types import ToolCall

    warn_renamed("parse_native_tool_use(blocks)", "LLMResponse.tool_calls (the backends parse native calls)")
    return [
        ToolCall(b.get("name", ""), dict(b.get("input") or {}), b.get("id") or "")
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


# ---------------------------------------------------------------- decisions (0.4.1's hook_decision)


def Block(reason: str) -> Any:
    """0.4.1's ``Block(reason)``: deny a call in ``pre_dispatch``, reject ``done`` in ``check_done``."""
    from looplet.hooks import HookDecision

    warn_renamed("Block(reason)", "Deny(reason) in pre_dispatch, or return the reason string from check_done")
    return HookDecision(block=reason)


def Continue(additional_context: str | None = None) -> Any:
    """0.4.1's explicit no-op, optionally carrying text for the next prompt."""
    from looplet.hooks import HookDecision

    warn_renamed("Continue()", "None (no opinion) or InjectContext(text)")
    return HookDecision(additional_context=additional_context)


# ---------------------------------------------------------------- protocols and small helpers


class PermissionDecision(StrEnum):
    """0.4.1's permission outcomes; 0.5 rules take the strings ``"allow"``, ``"deny"``, ``"ask"``."""

    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


@runtime_checkable
class LoopHook(Protocol):
    """0.4.1's hook protocol (``isinstance(hook, LoopHook)`` checks for its six methods). Hooks are plain
    objects now: the loop calls only the methods a hook has, so subclassing anything is unnecessary
    (a subclass inherits no-op methods)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if Protocol not in cls.__bases__:
            warn_renamed(f"subclassing LoopHook ({cls.__name__})", "a plain class with the hook methods")

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        return None

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> Any:
        return None

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> Any:
        return None

    def check_done(self, state: Any, session_log: Any, context: Any, step_num: int) -> Any:
        return None

    def should_stop(self, state: Any, step_num: int, new_entities: Any) -> Any:
        return None

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> Any:
        return None


def register_done_tool(registry: Any, *, name: str = "done", parameters: dict[str, Any] | None = None) -> Any:
    """0.4.1's ``register_done_tool(registry)``: add 0.4.1's ``done(summary)`` tool to a registry."""

    warn_renamed("register_done_tool(registry)", "tools_from([...], include_done=True)")
    if name not in registry:
        registry.register(old_done_tool(parameters, name=name))
    return registry


@dataclass(frozen=True)
class PermissionRule:
    """0.4.1's ``PermissionRule(tool, decision, arg_matcher=, reason=)``; now
    ``looplet.control.Rule(action, tool, args=..., reason=...)``. ``arg_matcher(args) -> bool`` narrows
    the rule; one that raises fails closed (a deny/ask rule matches, an allow rule does not)."""

    tool: str
    decision: Any
    arg_matcher: Any = None
    reason: str = ""

    def __post_init__(self) -> None:
        warn_renamed("PermissionRule(tool, decision)", "looplet.control.Rule(action, tool, args=...)")

    @property
    def action(self) -> str:
        return str(getattr(self.decision, "value", self.decision))

    def matches(self, call: Any) -> bool:
        if self.tool != "*" and self.tool != call.tool:
            return False
        if self.arg_matcher is None:
            return True
        try:
            return bool(self.arg_matcher(dict(call.args)))
        except Exception:
            return self.action != "allow"  # fail closed

    def to_rule(self) -> Any:
        return _matcher_rule()(self.action, self.tool, reason=self.reason or None, old=self)


@functools.cache
def _matcher_rule() -> Any:
    """``looplet.control.Rule`` that also asks a 0.4.1 rule's ``matches`` (for ``arg_matcher``)."""
    from looplet.control import Rule

    @dataclass(frozen=True)
    class OldRule(Rule):
        old: Any = None

        def matches(self, tc: Any) -> bool:
            return super().matches(tc) and (self.old is None or self.old.matches(tc))

    return OldRule


@dataclass(frozen=True)
class PermissionOutcome:
    """0.4.1's answer of ``PermissionEngine.evaluate(call)``."""

    decision: PermissionDecision
    reason: str = ""
    rule: Any = None

    @property
    def allowed(self) -> bool:
        return self.decision == PermissionDecision.ALLOW

    @property
    def denied(self) -> bool:
        return self.decision == PermissionDecision.DENY


def _matcher_fails(rule: Any, call: Any) -> bool:
    """Whether an ``ask`` rule matched only because its ``arg_matcher`` raised: denied, never asked."""
    try:
        rule.arg_matcher is None or rule.arg_matcher(dict(call.args))
    except Exception:
        return True
    return False


class PermissionEngine:
    """0.4.1's rule list; ``PermissionHook(PermissionEngine(rules=...))`` still works (it judges with
    ``evaluate``: looplet._compat_permissions). Use ``PermissionHook(rules, default=...)``."""

    looplet_engine = True  # PermissionHook(engine) makes looplet._compat_permissions.EngineHook

    def __init__(
        self,
        rules: list[Any] | None = None,
        default: Any = "allow",
        ask_handler: Any = None,
        policy_version: Any = None,
        **_: Any,
    ) -> None:
        warn_renamed("PermissionEngine(rules=...)", "PermissionHook(rules, default=...)")
        self.rules = list(rules or [])
        self.default = str(getattr(default, "value", default))
        self.ask_handler = ask_handler
        self.policy_version = policy_version
        self.denials: list[dict[str, Any]] = []

    def _add(self, decision: str, tool: str, arg_matcher: Any, reason: str) -> PermissionEngine:
        with warnings.catch_warnings():  # one warning for the engine, not one per rule
            warnings.simplefilter("ignore", DeprecationWarning)
            self.rules.append(PermissionRule(tool, decision, arg_matcher, reason))
        return self

    def allow(self, tool: str, *, arg_matcher: Any = None, reason: str = "") -> PermissionEngine:
        return self._add("allow", tool, arg_matcher, reason)

    def deny(self, tool: str, *, arg_matcher: Any = None, reason: str = "") -> PermissionEngine:
        return self._add("deny", tool, arg_matcher, reason)

    def ask(self, tool: str, *, arg_matcher: Any = None, reason: str = "") -> PermissionEngine:
        return self._add("ask", tool, arg_matcher, reason)

    def evaluate(self, call: Any) -> PermissionOutcome:
        """The first matching rule decides (else the default); ``ask`` goes to ``ask_handler(call, rule)``
        and is denied without one, when it fails, or when it changed the call or the rules."""
        rule = next((r for r in self.rules if isinstance(r, PermissionRule) and r.matches(call)), None)
        action = rule.action if rule is not None else self.default
        reason = (rule.reason if rule is not None else "") or f"{action} by policy"
        if action == "ask":
            action = "deny" if _matcher_fails(rule, call) else self._ask(call, rule)
        outcome = PermissionOutcome(PermissionDecision(action), reason, rule)
        if outcome.denied:
            self.denials.append({"tool": call.tool, "reason": reason, "args": dict(call.args)})
        return outcome

    def _ask(self, call: Any, rule: Any) -> str:
        import copy

        if self.ask_handler is None:
            return "deny"
        before = (copy.deepcopy(call.args), list(self.rules), self.policy_version)
        try:
            answer = self.ask_handler(call, rule)
        except Exception:
            return "deny"
        if (copy.deepcopy(call.args), list(self.rules), self.policy_version) != before:
            return "deny"  # the handler approved something other than what was asked
        answer = str(getattr(answer, "value", answer))
        return "allow" if answer == "allow" else "deny"

    def __iter__(self) -> Iterator[Any]:
        """The rules as 0.5 ``Rule``s; a default other than ``allow`` becomes a last rule for every tool
        but ``done`` (PermissionHook lets ``done`` through when no rule names it)."""
        from looplet.control import Rule

        yield from (r.to_rule() if isinstance(r, PermissionRule) else r for r in self.rules)
        if self.default != "allow":
            yield Rule(self.default, re.compile(r"^(?!done$)"), name=f"default:{self.default}")


def make_backend(model: str | None = None, **kwargs: Any) -> Any:
    """0.4.1's ``make_backend(model=...)``: an OpenAI-compatible backend from the environment."""
    from looplet.backends.openai import OpenAIBackend

    warn_renamed(
        "make_backend(model=...)", "OpenAIBackend.from_env() or OpenAIBackend(model=..., base_url=...)"
    )
    if model:
        kwargs["model"] = model
    return OpenAIBackend.from_env(**kwargs)


_PASS_LABELS = frozenset({"pass", "correct", "yes"})
_FAIL_LABELS = frozenset({"fail", "error", "skipped"})


@dataclass
class EvalResult:
    """0.4.1's rich eval result (a score in [0, 1], a label, metrics). ``passed``: a pass label, or a
    score of at least 0.5 without a failing label. Evaluators given to ``EvalHook(evaluators=...)`` or
    :func:`eval_run` may still return it, a number, a bool, a label or a dict of metrics. In 0.5 an eval
    returns None/True, False, a reason string or ``(passed, reason)`` (``looplet.evals``)."""

    name: str = ""
    score: float | None = None
    label: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    explanation: str = ""
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        warn_renamed(
            "EvalResult(...)", "an eval returning None/True, False, a reason string or (passed, reason)"
        )
        if self.score is not None and not _unit(self.score):
            raise ValueError(f"EvalResult.score must be finite and between 0 and 1, got {self.score!r}")
        for key, value in self.metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"EvalResult.metrics[{key!r}] must be finite, got {value!r}")

    @property
    def passed(self) -> bool:
        label = (self.label or "").lower()
        if label in _FAIL_LABELS:
            return False
        return label in _PASS_LABELS or (self.score is not None and self.score >= 0.5)

    @classmethod
    def from_return(cls, value: Any, *, name: str = "") -> EvalResult:
        """What an evaluator returned, as an ``EvalResult``: a bool is 1.0/0.0 (pass/fail), a number a
        score, a string a label, a dict metrics (``score`` is the score; ``f1``/``accuracy``/``overall``
        too, with a warning); anything else, or an out-of-range number, an ``error`` result."""
        return _from_return(value, name)

    def pretty(self) -> str:
        parts = [f"{self.name:40s}"]
        if self.score is not None:
            parts.append(f"{self.score:.2f}")
        if self.label:
            parts.append(self.label)
        shown = [f"{k}={v:.2f}" for k, v in self.metrics.items() if k != "score" or self.score is None]
        parts += [" ".join(shown)] if shown else []
        parts += [self.explanation] if self.explanation else []
        return " ".join(parts) + "".join(f"\n  {d}" for d in self.details[:5])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("score", "label", "metrics", "details", "explanation", "duration_ms"):
            value = getattr(self, key)
            if value or (key == "score" and value is not None):
                out[key] = value
        return out


def _unit(x: float) -> bool:
    return math.isfinite(x) and 0.0 <= x <= 1.0


def _result(
    name: str = "",
    score: float | None = None,
    label: str | None = None,
    metrics: dict[str, float] | None = None,
    details: list[str] | None = None,
    explanation: str = "",
) -> EvalResult:
    """An EvalResult made by this module (checked here, so without its constructor's warning)."""
    r = object.__new__(EvalResult)
    r.name, r.score, r.label, r.explanation, r.duration_ms = name, score, label, explanation, 0.0
    r.metrics, r.details = metrics or {}, details or []
    return r


def _from_return(value: Any, name: str) -> EvalResult:
    if isinstance(value, EvalResult):
        value.name = value.name or name
        return value
    if isinstance(value, bool):
        return _result(name, 1.0 if value else 0.0, "pass" if value else "fail")
    if isinstance(value, (int, float)):
        if not _unit(float(value)):
            return _result(name, label="error", explanation=f"score must be between 0 and 1, got {value!r}")
        return _result(name, float(value))
    if isinstance(value, str):
        return _result(name, label=value)
    if isinstance(value, dict):
        return _from_dict(value, name)
    return _result(name, label="error", explanation=f"unsupported return type {type(value).__name__}")


def _from_dict(value: dict[str, Any], name: str) -> EvalResult:
    """A dict of metrics: numbers are metrics, the rest details; ``score`` (or, with a warning, ``f1``,
    ``accuracy``, ``overall``) is the score."""
    numbers = {
        k: float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    details = [f"{k}: {v}" for k, v in value.items() if k not in numbers]
    key = next((k for k in ("score", "f1", "accuracy", "overall") if k in numbers), None)
    bad = [k for k, v in numbers.items() if not math.isfinite(v)]
    if key == "score" and not _unit(numbers["score"]):
        return _result(name, label="error", details=details, explanation="score must be in [0, 1]")
    if bad:
        return _result(name, label="error", details=details, explanation=f"metric {bad[0]!r} must be finite")
    if key not in (None, "score"):
        warnings.warn(
            f"Inferring an eval gate score from {key!r} is deprecated; set score explicitly "
            "(or return True/False in 0.5)",
            DeprecationWarning,
            stacklevel=4,
        )
    score = numbers[key] if key is not None and _unit(numbers[key]) else None
    return _result(name, score, metrics=numbers, details=details)


def eval_run(
    evaluators: list[Any], ctx: Any, *, judge_llm: Any = None, include: Any = None, exclude: Any = None
) -> list[EvalResult]:
    """0.4.1's ``eval_run(evaluators, ctx)``: one :class:`EvalResult` per evaluator (``(ctx, llm)``
    evaluators get ``judge_llm``, or are ``skipped`` without one; an exception is an ``error`` result)."""
    from looplet._compat_evals import recorded_errors
    from looplet.evals import tags_of

    warn_renamed("eval_run(evaluators, ctx)", "looplet.evals.run_evals(evals, [ctx])")
    recorded = recorded_errors(ctx)  # read before the graders run: they cannot erase it
    results = []
    for fn in evaluators:
        tags = set(tags_of(fn))
        if (include and not tags & set(include)) or (exclude and tags & set(exclude)):
            continue
        results.append(_run_one(fn, ctx, judge_llm))
    return results + recorded


def _run_one(fn: Any, ctx: Any, judge_llm: Any) -> EvalResult:
    name = getattr(fn, "__name__", type(fn).__name__)
    started = time.perf_counter()
    try:
        refused = _not_async(fn, "graders")
        if refused:
            return _result(name, label="error", explanation=refused)
        if "llm" in inspect.signature(fn).parameters:
            if judge_llm is None:
                return _result(name, label="skipped", explanation="requires judge_llm")
            raw = fn(ctx, judge_llm)
        else:
            raw = fn(ctx)
        refused = _not_async(raw, "graders") if inspect.iscoroutine(raw) else None
        if refused:
            return _result(name, label="error", explanation=refused)
        with warnings.catch_warnings():  # eval_run already warned once
            warnings.simplefilter("ignore", DeprecationWarning)
            result = _from_return(raw, name)
    except Exception as exc:
        result = _result(name, label="error", explanation=str(exc))
    result.duration_ms = (time.perf_counter() - started) * 1000.0
    return result


def eval_discover(path: Any, *, strict: bool = False) -> list[Any]:
    """0.4.1's ``eval_discover(dir_or_file)``: the ``eval_*`` functions of a file, or of the
    ``eval_*.py`` files of a folder."""
    import os

    from looplet.evals import discover

    warn_renamed("eval_discover(path)", "looplet.evals.discover(path_or_module)")
    files = sorted(Path(path).glob("eval_*.py")) if os.path.isdir(path) else [Path(path)]
    found: list[Any] = []
    for f in files:
        try:
            found += discover(f)
        except Exception as exc:
            if strict:  # 0.4.1: a suite that does not load is an error naming the file
                raise RuntimeError(f"{f}: the eval file could not be loaded ({exc})") from exc
    names = [getattr(fn, "__name__", type(fn).__name__) for fn in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if strict and twice:
        raise RuntimeError(f"duplicate evaluator name(s) {twice} in {path}: their results would be confused")
    return found


class LegacyEvalContext:
    """0.4.1's ``EvalContext`` views, deprecated; ``EvalContext`` inherits them."""

    __slots__ = ()
    steps: list[Any]

    @property
    def step_count(self) -> int:
        warn_renamed("ctx.step_count", "len(ctx.steps)")
        return len(self.steps)

    @property
    def errors(self) -> list[Any]:
        warn_renamed("ctx.errors", "ctx.failed_steps")
        return [s for s in self.steps if not s.ok]

    @property
    def tool_sequence(self) -> list[str]:
        warn_renamed("ctx.tool_sequence", "[c.tool for c in ctx.tool_calls()]")
        return [s.tool_call.tool for s in self.steps]

    @classmethod
    def from_trajectory_dir(cls, path: Any) -> Any:
        """0.4.1's reader of the folders it saved (``looplet._compat_evals``)."""
        from looplet._compat_evals import from_trajectory_dir

        warn_renamed(
            "EvalContext.from_trajectory_dir(dir)",
            "EvalContext.from_trajectory(looplet.provenance.load_trajectory(dir)) for folders 0.5 wrote",
        )
        return from_trajectory_dir(path)

    def __getattr__(self, name: str) -> Any:
        if name in (
            "artifacts",
            "metadata",
        ):  # 0.4.1's dicts, empty unless EvalContext(metadata=...) was used
            warn_renamed(f"ctx.{name}", "ctx.task (put what evals need in the task)")
            return {}
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@functools.cache
def old_eval_hook_class() -> type:
    """``EvalHook(evaluators=[...], collectors=[...], ...)`` of 0.4.1: ``EvalHook.__new__`` makes this
    subclass when 0.4.1 keywords are given. Its ``results`` are :class:`EvalResult` s (scores, labels),
    the evaluators see ``ctx.artifacts`` filled by the collectors, and each result is reported with
    ``emit_event("eval", ...)`` like 0.5's EvalHook does."""
    from looplet.evals import EvalContext, EvalHook

    OldEvalContext = old_eval_context_class()

    class OldEvalHook(EvalHook):
        def __init__(self, evals: Any = None, tags: Any = None, **old: Any) -> None:
            unknown = set(old) - {
                "evaluators",
                "collectors",
                "judge_llm",
                "include",
                "exclude",
                "verbose",
                "expected",
            }
            if unknown:
                raise TypeError(f"EvalHook() got unexpected keyword arguments {sorted(unknown)}")
            warn_renamed("EvalHook(evaluators=[...])", "EvalHook([...]) (evals passed positionally)")
            self.evals = list(old.get("evaluators") or evals or [])
            self.collectors = list(old.get("collectors") or [])
            self.judge_llm = old.get("judge_llm")
            self.include, self.exclude = old.get("include"), old.get("exclude")
            self.verbose, self.expected = bool(old.get("verbose")), old.get("expected")
            self.results: list[Any] = []

        def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
            from looplet.hooks import emit_event

            base = self._context_of(result)
            ctx = OldEvalContext(**{f.name: getattr(base, f.name) for f in fields(EvalContext)})
            failures = [_collect(c, state, ctx.artifacts) for c in self.collectors]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                graded = eval_run(
                    self.evals, ctx, judge_llm=self.judge_llm, include=self.include, exclude=self.exclude
                )
            self.results = graded + [f for f in failures if f is not None]
            for r in self.results:
                outcome = "pass" if r.passed else ("error" if r.label == "error" else "fail")
                emit_event(
                    "eval", eval=r.name, passed=r.passed, outcome=outcome, detail=r.explanation[:500], tags=""
                )
            if isinstance(getattr(state, "metadata", None), dict):
                state.metadata["evals"] = [r.to_dict() for r in self.results]
            if self.verbose:
                print(self.report())

        def assessment(self, **_: Any) -> Any:
            """0.4.1's assessment of the last run (``looplet._compat_evals.OldReport``)."""
            from looplet._compat_evals import OldReport

            return OldReport([self.results] if self.results else [])

        def summary(self) -> str:
            scores = [r.score for r in self.results if r.score is not None]
            passed = sum(r.passed for r in self.results)
            mean = f", mean score {sum(scores) / len(scores):.2f}" if scores else ""
            return f"{passed}/{len(self.results)} passed{mean}"

        def report(self) -> str:
            if not self.results:
                return "No eval results."
            return "\n".join([*(r.pretty() for r in self.results), f"{'overall':40s} {self.summary()}"])

    return OldEvalHook


@functools.cache
def old_eval_context_class() -> Any:
    """``EvalContext`` with 0.4.1's ``artifacts`` and ``metadata`` dicts (``EvalContext(metadata=...)``
    makes one, and so does ``EvalHook(collectors=...)``)."""
    from looplet.evals import EvalContext

    @dataclass
    class OldEvalContext(EvalContext):
        artifacts: dict[str, Any] = field(default_factory=dict)
        metadata: dict[str, Any] = field(default_factory=dict)

    return OldEvalContext


def _is_async(fn: Any) -> bool:
    inner = getattr(fn, "func", fn)  # a functools.partial
    call = type(inner).__call__ if callable(inner) and not inspect.isfunction(inner) else None
    return inspect.iscoroutinefunction(inner) or inspect.iscoroutinefunction(call)


def _not_async(value: Any, what: str) -> str | None:
    """The error for an async grader or collector (its coroutine closed, so nothing runs)."""
    if inspect.iscoroutine(value):
        value.close()
    elif not _is_async(value):
        return None
    return f"async {what} are not supported: await the async work in host code first, then pass plain values"


def _collect(collector: Any, state: Any, artifacts: dict[str, Any]) -> EvalResult | None:
    """Run a 0.4.1 collector: its dict goes into ``artifacts``; anything else is an error result."""
    name = f"collector:{getattr(collector, '__name__', type(collector).__name__)}"
    refused = _not_async(collector, "collectors")
    if refused:
        return _result(name, label="error", explanation=refused)
    try:
        data = collector(state)
    except Exception as exc:
        return _result(name, label="error", explanation=f"{type(exc).__name__}: {exc}")
    refused = _not_async(data, "collectors") if inspect.iscoroutine(data) else None
    if refused:
        return _result(name, label="error", explanation=refused)
    if not isinstance(data, dict):
        return _result(name, label="error", explanation=f"returned {type(data).__name__}, not a dict")
    artifacts.update(data)
    return None


def module_getattr(module: str, names: tuple[str, ...] = ()) -> Callable[[str], Any]:
    """``__getattr__`` for a looplet module 0.4.1 had: its old names (``OLD_MODULES[module]`` and
    ``names``) through :func:`old_name`; names it never had raise AttributeError."""
    held = frozenset(names) | OLD_MODULES.get(module, frozenset())

    def __getattr__(name: str) -> Any:
        if held and name not in held and name not in _TABLE:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return old_name(module, name, known=name in held)

    return __getattr__


# ---------------------------------------------------------------- tools (mixins of ToolSpec, BaseToolRegistry)


class ToolNames(list[str]):
    """``registry.tool_names``: 0.4.1 read it as a property (a list), 0.5 calls it (``tool_names()``);
    this list answers both."""

    def __call__(self) -> list[str]:
        return list(self)


class LegacyToolSpec:
    """0.4.1's ``ToolSpec`` methods, deprecated; ``ToolSpec`` inherits them. ``_old`` (unset unless used)
    holds 0.4.1's retry-contract fields a spec was given (``idempotency=``, ``retryable=``, ...)."""

    __slots__ = ("_old",)
    _old: Any

    @property
    def idempotency(self) -> str:
        return cast(str, _records().spec_field(self, "idempotency"))

    @property
    def retryable(self) -> bool:
        return cast(bool, _records().spec_field(self, "retryable"))

    @property
    def requires(self) -> list[str]:
        return cast("list[str]", _records().spec_field(self, "requires"))

    @property
    def tags(self) -> list[str]:
        return cast("list[str]", _records().spec_field(self, "tags"))

    @property
    def render(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _records().spec_field(self, "render"))

    name: str
    description: str
    parameters: dict[str, Any]

    @property
    def free(self) -> bool:
        """False: only a ``ToolSpec(free=True)`` (``looplet._compat_loop``) is free."""
        warn_renamed("ToolSpec.free", "a higher max_steps (every tool call is a step in 0.5)")
        return False

    @property
    def is_json_schema(self) -> bool:
        warn_renamed("ToolSpec.is_json_schema", "ToolSpec.parameters (always a JSON Schema in 0.5)")
        return True

    def parameter_names(self) -> list[str]:
        warn_renamed("ToolSpec.parameter_names()", "list(spec.parameters['properties'])")
        return list(self.parameters.get("properties", {}))

    def required_parameters(self) -> list[str]:
        warn_renamed("ToolSpec.required_parameters()", "spec.parameters['required']")
        return list(self.parameters.get("required", []))

    def to_json_schema(self) -> dict[str, Any]:
        """0.4.1's form: without ``additionalProperties: false`` (its registry refused unknown
        arguments without saying so in the schema; 0.5's registry does the same from the schema)."""
        warn_renamed("ToolSpec.to_json_schema()", "spec.parameters")
        schema = dict(self.parameters)
        if schema.get("additionalProperties") is False:
            del schema["additionalProperties"]
        return schema

    def contract_errors(self) -> list[str]:
        """0.4.1's audit of a spec's schema against its function (``looplet._compat_tools``)."""
        from looplet._compat_tools import contract_errors

        warn_renamed("ToolSpec.contract_errors()", "@tool (it writes the schema from the signature)")
        return contract_errors(self)

    def to_api_schema(self) -> dict[str, Any]:
        warn_renamed("ToolSpec.to_api_schema()", "registry.schemas('anthropic') or spec.schema()")
        return {"name": self.name, "description": self.description, "input_schema": dict(self.parameters)}

    def spec_text(self) -> str:
        warn_renamed("ToolSpec.spec_text()", "spec.schema() (the model gets native tool schemas)")
        return _spec_text(self)


def _spec_text(spec: Any) -> str:
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    args = ", ".join(
        f"{k}{'' if k in required else '?'}: {v.get('type', 'any') if isinstance(v, dict) else 'any'}"
        for k, v in props.items()
    )
    return f"  {spec.name}({args})\n    {spec.description}"


class LegacyRegistry:
    """0.4.1's ``BaseToolRegistry`` methods, deprecated; ``BaseToolRegistry`` inherits them."""

    __slots__ = ()
    _tools: dict[str, Any]

    def dispatch_batch(self, calls: list[Any], **_: Any) -> list[Any]:
        warn_renamed(
            "registry.dispatch_batch(calls)",
            "[registry.dispatch(c) for c in calls] (the loop "
            "runs concurrent_safe tools together with LoopConfig(parallel_tools=True))",
        )
        return [cast(Any, self).dispatch(c) for c in calls]

    def async_dispatch(self, call: Any, **kwargs: Any) -> Any:
        """``await registry.async_dispatch(call)`` of 0.4.1 (the coroutine of ``adispatch``)."""
        warn_renamed("await registry.async_dispatch(call)", "await registry.adispatch(call)")
        return cast(Any, self).adispatch(call, **kwargs)

    def tool_schemas(self) -> list[dict[str, Any]]:
        warn_renamed("registry.tool_schemas()", "registry.schemas('anthropic') (or 'openai', 'neutral')")
        return list(cast(Any, self).schemas("anthropic"))

    def tool_catalog_text(self) -> str:
        warn_renamed(
            "registry.tool_catalog_text()", "registry.schemas() (the model gets native tool schemas)"
        )
        return "\n".join(["Available tools:", *(_spec_text(s) for s in self._tools.values())])

    def introspect(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _records().introspect(self))

    @property
    def tool_specs(self) -> dict[str, Any]:
        warn_renamed("registry.tool_specs", "registry.get(name)")
        return dict(self._tools)


def tools_from_args(old: dict[str, Any], items: list[Any]) -> tuple[Any, list[Any]]:
    """``tools_from(items, validate=, done_parameters=, include_think=)`` of 0.4.1 -> (its done tool,
    the items as 0.4.1 built them plus its extra tools). Code that passes them is 0.4.1 code, so it gets
    0.4.1's ``done(summary)`` and its tool inference rules (``looplet._compat_tools``)."""
    from looplet._compat_tools import old_tools

    warned = old.pop("_warned", False)  # minimal_preset passing them on
    unknown = set(old) - {"validate", "done_parameters", "include_think", "done_description"}
    if unknown:
        raise TypeError(f"tools_from() got unexpected keyword arguments {sorted(unknown)}")
    if not warned:
        warn_renamed(
            f"tools_from({', '.join(f'{k}=' for k in old)})",
            "tools_from([...], include_done=True) (arguments are always validated; write your own done "
            "or think tool as a function when you need other parameters)",
        )
    done = old_done_tool(old.get("done_parameters"), old.get("done_description"))
    return done, [*old_tools(list(items)), *([_think_tool()] if old.get("include_think") else [])]


def _think_tool() -> Any:
    """0.4.1's think tool: free, as it was there (its calls do not count as steps: ``looplet._compat_loop``)."""
    from looplet._compat_loop import free_tool_spec

    with warnings.catch_warnings():  # the caller's old spelling (register_think_tool, include_think=) warned
        warnings.filterwarnings("ignore", r"ToolSpec\(free=True\)", DeprecationWarning)
        return free_tool_spec()(
            "think",
            "Reason before acting (plan, compare options, reflect); nothing runs and nothing changes.",
            {"analysis": "your reasoning in free text"},
            _acknowledge,
            concurrent_safe=True,
        )


def _acknowledge(analysis: str = "") -> dict[str, Any]:
    return {"acknowledged": True, "analysis": analysis}


def register_think_tool(registry: Any) -> None:
    """0.4.1's ``register_think_tool(registry)``: add a ``think(analysis)`` tool that only echoes."""
    warn_renamed("register_think_tool(registry)", "registry.register(a think function of your own) or @tool")
    registry.register(_think_tool())


def _completed(**args: Any) -> dict[str, Any]:
    return {"status": "completed", **args}


def old_done_tool(
    parameters: dict[str, Any] | None = None, description: str | None = None, name: str = "done"
) -> Any:
    """0.4.1's done tool: ``done(summary)`` unless other parameters are given; it answers its
    arguments with ``status: completed``. 0.5's ``tools_from(include_done=True)`` adds ``done(answer)``."""
    from looplet.tools import ToolSpec

    return ToolSpec(
        name,
        description or "Signal that the task is complete, with a brief summary of what was accomplished.",
        dict(parameters or {"summary": "Brief summary of what was accomplished"}),
        _completed,
    )


# ---------------------------------------------------------------- the table


def _alias(module: str, name: str, new: str | None = None) -> Callable[[str], Any]:
    def get(old: str) -> Any:
        import importlib

        warn_renamed(old, new or f"{module}.{name}")
        return getattr(importlib.import_module(module), name)

    return get


def _compat(module: str, name: str) -> Any:
    """An adapter of a private compat module (``looplet._compat_*``); it warns when called."""
    import importlib

    return getattr(importlib.import_module(module), name)


def _here(name: str, new: str | None = None) -> Callable[[str], Any]:
    """Names defined in this module: they warn when called or subclassed, or (given ``new``, for
    names that are not called, such as an enum) when imported."""

    def get(old: str) -> Any:
        if new is not None:
            warn_renamed(old, new)
        return globals()[name]

    return get


_TO_DO_INSTEAD = {
    "FileCheckpointStore": "use CheckpointHook(dir) in hooks=[...]; resume(dir, ...) continues a saved run",
    "LoopContext": "hooks receive (state, session_log, context, ...) as arguments; looplet.current_run() "
    "gives the run in progress (ids, config, per-hook scratch)",
    "SessionLog": "session_log is now the run's list of chat messages (role/content dicts)",
    "Tracer": "use looplet.TracingHook (OpenTelemetry spans)",
    "MetricsCollector": "use looplet.MetricsHook (Prometheus metrics)",
    "StreamingHook": "use LoopConfig(stream=True) and a hook with on_llm_chunk(state, chunk, step_num)",
    "ResilientBackend": "use LoopConfig(llm_retries=..., llm_backoff_s=...)",
    "RetryExhausted": "a failed LLM call raises looplet.LLMError; the run stops with llm_error",
    "run_sub_loop": "use looplet.agent_tool(...) to run a sub-agent as a tool",
    "BudgetWarningHook": "use looplet.BudgetHook(max_cost_usd=..., max_tokens=...)",
    "PerToolLimitHook": "use looplet.PermissionHook rules or a pre_dispatch hook returning Deny(...)",
    "EvalCase": "save runs with ProvenanceSink and turn them into tests with looplet.evals.eval_cases(dir)",
    "load_eval_run": "looplet.evals.EvalContext.from_trajectory(looplet.provenance.load_trajectory(dir))",
    "async_replay_loop": "replay_loop(trace_dir, tools=...) (sync); run it in a thread from async code",
}

#: old name -> how to get it: a function of the old name returning the value, or a string (what to do).
_TABLE: dict[str, Callable[[str], Any] | str] = {
    "Block": _here("Block"),
    "Continue": _here("Continue"),
    "LLMBackend": _alias("looplet.protocols", "LLMBackend"),
    "AgentState": _alias(  # 0.4.1's protocol: isinstance(x, AgentState) holds for any object with steps
        "looplet._compat_records", "AgentState", "looplet.DefaultState (or any object with steps)"
    ),
    "DefaultState": _alias("looplet.state", "DefaultState", "looplet.DefaultState"),
    "LoopConfig": _alias("looplet.config", "LoopConfig", "looplet.LoopConfig"),
    "PermissionDecision": _here("PermissionDecision"),
    "RunStatus": _here("RunStatus"),
    "ErrorKind": _here("ErrorKind", "the strings of ToolResult.error_kind ('denied', 'timeout', ...)"),
    "ToolError": _here("ToolError", "ToolResult(error='...', error_kind='...')"),
    "CancelToken": _alias("looplet.loop", "CancelToken", "looplet.CancelToken"),
    "HookDecision": _alias("looplet.hooks", "HookDecision", "looplet.HookDecision"),
    "Allow": _alias("looplet.hooks", "Allow", "looplet.Allow"),
    "Deny": _alias("looplet.hooks", "Deny", "looplet.Deny"),
    "Stop": _alias("looplet.hooks", "Stop", "looplet.Stop"),
    "InjectContext": _alias("looplet.hooks", "InjectContext", "looplet.InjectContext"),
    "ApprovalHook": _alias("looplet.control", "ApprovalHook", "looplet.ApprovalHook"),
    "PermissionHook": _alias("looplet.control", "PermissionHook", "looplet.PermissionHook"),
    "Checkpoint": _alias("looplet.control", "Checkpoint", "looplet.control.Checkpoint"),
    "ThresholdCompactHook": _alias("looplet.context", "ThresholdCompactHook", "looplet.ThresholdCompactHook"),
    "make_backend": _here("make_backend"),
    "LoopHook": _here("LoopHook"),
    "register_done_tool": _here("register_done_tool"),
    "register_think_tool": _here("register_think_tool"),
    "parse_tool_call": _here("parse_tool_call"),
    "suggest_similar": _here("suggest_similar"),
    "parse_multi_tool_calls": _here("parse_multi_tool_calls"),
    "parse_native_tool_use": _here("parse_native_tool_use"),
    "PermissionRule": _here("PermissionRule"),
    "PermissionEngine": _here("PermissionEngine"),
    "PermissionOutcome": _here("PermissionOutcome"),
    "AsyncMockLLMBackend": _alias("looplet.testing", "AsyncMockLLMBackend", "looplet.MockLLMBackend"),
    "EvalResult": _here("EvalResult"),
    "eval_run": _here("eval_run"),
    "eval_discover": _here("eval_discover"),
    "EvalContext": _alias("looplet.evals", "EvalContext"),
    "minimal_preset": lambda old: _compat("looplet._compat_tools", "minimal_preset"),
    "eval_assess": lambda old: _compat("looplet._compat_evals", "eval_assess"),
    "eval_run_batch": lambda old: _compat("looplet._compat_evals", "eval_run_batch"),
    "eval_cli": lambda old: _compat("looplet._compat_evals", "eval_cli"),
    **_TO_DO_INSTEAD,
}


def _working(module: str, name: str) -> Callable[[str], Any]:
    """Names kept working by a private ``looplet._compat_*`` module; they warn when used (made, called)."""

    def get(old: str) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)

    return get


# 0.4.1's checkpoint format, run identity and session log (looplet._compat_checkpoint, _compat_session)
_TABLE.update(
    {
        **{
            name: _working("looplet._compat_checkpoint", name)
            for name in """Checkpoint CheckpointStore FileCheckpointStore RunEnvelope resume_loop_state
            UncertainToolEffect CheckpointIdentityError validate_checkpoint_identity""".split()
        },
        "SessionLog": _working("looplet._compat_session", "SessionLog"),
        "LogEntry": _working("looplet._compat_session", "LogEntry"),
    }
)

# the names 0.4.1's examples are built on: memory, domain adapters, context budgets, tool contexts
_TABLE.update(
    {
        name: _working("looplet._compat_examples", name)
        for name in "StaticMemorySource DomainAdapter ContextBudget ToolContext".split()
    }
)

# 0.4.1's compaction services, conversation records and lifecycle events (looplet._compat_compact)
_TABLE.update(
    {
        name: _working("looplet._compat_compact", name)
        for name in """TruncateCompact SummarizeCompact PruneToolResults DefaultCompactService CompactOutcome
        CompactService run_compact apply_thread_rewrite compact_chain default_compact_service Conversation
        Message MessageRole LifecycleEvent LIFECYCLE_EVENTS EventPayload RewriteThread""".split()
    }
)


def _old_record(new: str) -> Callable[[str], Any]:
    """0.4.1's provenance records (looplet._compat_provenance): they warn when imported, since the
    recorders make them too; ``LLMCall`` only from ``looplet.provenance`` (0.5 has its own)."""

    def get(old: str) -> Any:
        import importlib

        name = old.rpartition(".")[2]
        if name == "LLMCall" and not old.startswith("looplet.provenance."):
            return placeholder(old, _NO_COUNTERPART)
        warn_renamed(old, new)
        return getattr(importlib.import_module("looplet._compat_provenance"), name)

    return get


# 0.4.1's recorders (looplet._compat_provenance): the recorders warn when made
_TABLE.update(
    {
        "RecordingLLMBackend": _working("looplet._compat_provenance", "RecordingLLMBackend"),
        "AsyncRecordingLLMBackend": _working("looplet._compat_provenance", "AsyncRecordingLLMBackend"),
        "TrajectoryRecorder": _working("looplet._compat_provenance", "TrajectoryRecorder"),
        "save_eval_run": _working("looplet._compat_provenance", "save_eval_run"),
        "StepRecord": _old_record(
            "looplet.Step (a saved run's steps: looplet.provenance.load_trajectory(dir).steps)"
        ),
        "LLMCall": _old_record(
            "ProvenanceSink(dir).wrap_llm(llm) (a saved run's calls: load_trajectory(dir).calls)"
        ),
    }
)


# 0.4.1's provider backend classes and prompt-cache breakpoints (looplet._compat_backends)
_TABLE.update(
    {
        name: _working("looplet._compat_backends", name)
        for name in """OpenAIStreamingBackend AsyncOpenAIBackend AnthropicStreamingBackend AsyncAnthropicBackend
        CacheControl CachePolicy CacheBreakpoint compute_breakpoints""".split()
    },
    **{
        name: _working("looplet._compat_async", name)
        for name in ("async_llm_call", "NativeToolPolicy", "NativeToolUnsupportedError")
    },
    **{name: _working("looplet._compat_events", name) for name in ("emit_event", "emit_event_async")},
)


def old_name(module: str, name: str, *, known: bool = False) -> Any:
    """The value of 0.4.1's ``module.name``, or :class:`RemovedAPIError` saying what to write instead.

    An ``AttributeError`` for names 0.4.1 did not have either (and for dunder lookups), so ``hasattr``
    and ``getattr(m, x, default)`` keep working. ``known``: the caller knows 0.4.1 had this name.
    """
    if name.startswith("__"):
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    entry = _TABLE.get(name)
    if entry is None:
        if known or name in OLD_PUBLIC_NAMES or name in OLD_MODULES.get(module, ()):
            return placeholder(f"{module}.{name}", _NO_COUNTERPART)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if isinstance(entry, str):
        return placeholder(f"{module}.{name}", entry)
    return entry(f"{module}.{name}")


_NO_COUNTERPART = (
    "it has no counterpart in the 0.5 API (the loop, tools, hooks, backends, telemetry, provenance and "
    "evals remain)"
)

#: The public names of looplet 0.4.1's modules that 0.5 no longer has, or has with fewer names.
OLD_MODULES: dict[str, frozenset[str]] = {
    f"looplet.{module}": frozenset(names.split())
    for module, names in {
        "parse": "parse_multi_tool_calls parse_native_tool_use parse_tool_call to_text",
        "cache": "CacheBreakDetector CacheBreakpoint CacheControl CachePolicy CacheSection compute_breakpoints",
        "streaming": """CallbackEmitter CompositeEmitter ContextPressureEvent Event EventEmitter HookEvent
            LLMCallEndEvent LLMCallStartEvent LLMChunkEvent LoopEndEvent LoopStartEvent QueueEmitter
            RecoveryEvent StepEndEvent StepStartEvent StreamingHook ToolDispatchEvent ToolResultEvent""",
        "native_tools": """NativeToolPolicy NativeToolProbeResult NativeToolUnsupportedError
            probe_native_tool_support supports_native_tools""",
        "events": "EventPayload LIFECYCLE_EVENTS LifecycleEvent",
        "conversation": "ContentBlock Conversation Message MessageRole default_summarizer",
        "context_budget": """COMPACT_TRIGGER_FRACTION CONTEXT_INLINE_PER_STEP_CHARS CONTEXT_WINDOW_STEPS
            CONTEXT_WINDOW_TOTAL_CHARS TOOL_RESULT_MAX_CHARS TOOL_RESULT_MAX_ROWS
            TOOL_RESULT_PERSIST_THRESHOLD_CHARS TOOL_RESULT_PREVIEW_CHARS get_context_inline_per_step_chars
            get_context_window_steps get_context_window_total_chars""",
        "router": "CostTracker FallbackRouter ModelProfile ModelRouter RoutingLLMBackend SimpleRouter",
        "recovery": "FailureScenario RecoveryAction RecoveryRecipe RecoveryRegistry build_default_registry",
        "artifact_compat": "begin_artifact_write read_artifact_descriptor write_artifact_descriptor",
        "session": "LogEntry SessionLog",
        "checkpoint": """Checkpoint CheckpointHook CheckpointIdentityError CheckpointStore FileCheckpointStore
            UncertainToolEffect resume_loop_state save_pending_dispatch validate_checkpoint_identity""",
        "compact": """CompactOutcome CompactService DefaultCompactService PruneToolResults SummarizeCompact
            TruncateCompact apply_thread_rewrite compact_chain default_compact_service run_compact""",
        "approval": "ApprovalHook ApprovalRequest",
        "permissions": "PermissionDecision PermissionEngine PermissionHook PermissionOutcome PermissionRule",
        "hook_decision": """Allow Block Continue Deny HookDecision InjectContext PolicyDecision RewriteThread
            Stop hook_effect_fields normalize_hook_return""",
        "types": """AgentState CancelToken CheckpointableLLMBackend CloseableResource DefaultState ErrorKind
            InvalidRunTransition LLMBackend NativeToolBackend PolicyDecision RunEnvelope RunPhase RunStatus
            ToolContext ToolError ToolValidationError validate_run_transition""",
        "tools": "ToolView excerpt_around_match register_done_tool register_think_tool suggest_similar",
        "loop": "DomainAdapter LoopContext LoopHook emit_event emit_event_async",
        "async_loop": "async_llm_call",
        "provenance": "AsyncRecordingLLMBackend LLMCall RecordingLLMBackend StepRecord TrajectoryRecorder",
        "backends": """AnthropicStreamingBackend AsyncAnthropicBackend AsyncOpenAIBackend OpenAIStreamingBackend
            ProviderSelectionWarning make_backend""",
    }.items()
}


#: The public names of looplet 0.4.1's package (``looplet.__all__``), for the "removed" message.
OLD_PUBLIC_NAMES = frozenset(
    """
    AgentBlueprint AgentPreset AgentRuntime AgentsMdMemorySource ArtifactRef BlueprintComparison
    BundleCard BundleValidation CARTRIDGE_CASES_SUBPATH CARTRIDGE_EVALS_SUBPATH CachePolicy
    CallableMemorySource CapabilityDeniedError Cartridge CartridgeCompatibility CartridgeEvals
    CartridgeLayout CartridgeSerializationError ClaudeSkillCompatibility CloseableResource CompactOutcome
    CompactService ComponentBlueprint ContextPlan ContextProjection ContextSourceDecision
    ContextSourceSelector Conversation DefaultCompactService DomainAdapter ErrorKind EvalReport
    EvalRunRecord EventPayload ExecutionPolicy ExecutionSession FileRunStore FileSkillStore
    InvalidRunTransition LifecycleEvent MCPToolAdapter MemoryRunStore Message ModelGatewayClient
    ModelGatewayHandle ModelGatewayServer NativeToolBackend NativeToolPolicy NativeToolProbeResult
    NativeToolUnsupportedError PermissionDecision PolicyDecision QuestionSpec RPC_PROTOCOL_VERSION
    RunEnvelope RunEvent RunHandle RunPhase RunRecord RunStore ScopedContextSource ShutdownReport Skill
    SkillActivationHook SkillBundle SkillCard SkillManager SkillRuntime SourceBlueprint StateServiceBase
    StateServiceClient StateServiceHandle StaticMemorySource ToolBlueprint ToolError ToolValidationError
    TrajectoryRecorder assert_evals_pass async_llm_call blueprint_from_bundle blueprint_from_preset
    bundled_cartridge_path cartridge_to_preset claude_skill_compatibility coding_agent_preset
    compare_blueprints default_compact_service discover_collectors discover_skill_bundles eval_assess
    eval_cli eval_run_batch event_from_payload excerpt_around_match export_bundle_to_library_code
    install_skills is_rejected_done iter_done_steps last_accepted_done last_rejected_done
    load_cartridge_cases load_cartridge_evals load_cases load_evals load_skill_bundle make_skill_tools
    minimal_preset package_agent_factory_as_bundle parametrize_cases preset_to_cartridge preview_prompt
    probe_native_tool_support promote_to_offline pytest_param_cases research_agent_preset
    resource_ref_for result_size_fingerprint run_cartridge_evals run_compact run_skill_bundle
    save_cartridge_cases save_case save_cases scaffold_cartridge seed_case_workspace serialize_harness
    suggest_similar supports_native_tools tool_call_fingerprint validate_preset_contract
    validate_run_transition validate_skill_bundle wrap_claude_skill_as_bundle
    """.split()
) | frozenset(_TABLE)
