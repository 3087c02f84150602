"""Tools: specs, the ``@tool`` decorator, argument validation and a registry whose dispatch never raises."""

from __future__ import annotations

import contextvars
import difflib
import functools
import inspect
import json
import queue
import signal
import sys
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from looplet.compat import (
    TOOL_SPEC_KEYWORDS,
    LegacyRegistry,
    LegacyToolSpec,
    ToolNames,
    module_getattr,
    old_keywords,
    tools_from_args,
)
from looplet.types import ToolCall, ToolResult

#: ``ToolSpec.isolation`` values: in the agent's process (threads), or a child process per call.
ISOLATIONS = (None, "process")

#: Backends put the raw text under this key when a model's tool arguments are not valid JSON.
INVALID_JSON_KEY = "__looplet_invalid_json__"

__all__ = [
    "ToolSpec",
    "tool",
    "BaseToolRegistry",
    "tools_from",
    "validate_args",
    "schema_from_function",
    "run_in_process",
    "ToolProcessError",
]

_SIMPLE_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "array": "array",
    "dict": "object",
    "object": "object",
}


@old_keywords(TOOL_SPEC_KEYWORDS)  # looplet 0.4.1's free=, tags=, ... (looplet.compat)
@dataclass(slots=True)
class ToolSpec(LegacyToolSpec):
    """A tool the model may call.

    ``parameters`` is a JSON Schema object, or the simple form ``{"arg": "str"}`` (a type name) or
    ``{"arg": "what it is"}`` (a description; the type is then string). All simple arguments are required.

    ``isolation="process"`` runs each call in a child process (see :func:`run_in_process`), killed with
    its whole process group at the timeout: for tools that may hold the GIL or block in C (a regular
    expression, a C extension), which a thread cannot stop. ``execute`` and the arguments go to the
    child by pickle, so ``execute`` must be importable (a module-level function, or a bound method of a
    picklable object); the result or the exception comes back as plain data (a picklable value; an
    exception as its class name and message).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    execute: Callable[..., Any]
    concurrent_safe: bool = False
    timeout_s: float | None = None
    isolation: str | None = None
    is_async: bool = field(init=False, default=False)

    def __new__(cls, *args: Any, **kwargs: Any) -> ToolSpec:
        if (
            kwargs and cls is ToolSpec and kwargs.get("free")
        ):  # looplet 0.4.1's free tool: looplet._compat_loop
            from looplet._compat_loop import free_tool_spec

            cls = free_tool_spec()
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ToolSpec(name={self.name!r}): name must be a non-empty string")
        if not callable(self.execute):
            raise TypeError(
                f"ToolSpec({self.name!r}): execute must be callable, got {type(self.execute).__name__}; "
                "pass the function itself, e.g. execute=my_function"
            )
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"ToolSpec({self.name!r}): timeout_s must be > 0 or None")
        if self.isolation not in ISOLATIONS:
            raise ValueError(
                f"ToolSpec({self.name!r}, isolation={self.isolation!r}): use None (in this process) "
                "or 'process' (a child process, killed at the timeout)"
            )
        self.parameters = normalize_parameters(self.parameters, self.name)
        old = sys.modules.get("looplet._compat_examples")  # loaded by importing 0.4.1's ToolContext
        if old is not None and old.takes_tool_context(self.execute):
            self.execute = old.tool_with_context(self.execute)  # looplet 0.4.1's ctx: ToolContext parameter
        self.is_async = is_async_callable(self.execute)

    def schema(self) -> dict[str, Any]:
        """The neutral schema the loop hands to backends: name, description, parameters."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def normalize_parameters(params: dict[str, Any] | None, tool_name: str = "?") -> dict[str, Any]:
    """Turn the simple parameter form into JSON Schema; pass JSON Schema through."""
    if params is None:
        return {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    if not isinstance(params, dict):
        raise TypeError(
            f"tool {tool_name!r}: parameters must be a dict (simple form or JSON Schema), "
            f"got {type(params).__name__}"
        )
    if params.get("type") == "object" and isinstance(params.get("properties", {}), dict):
        schema = dict(params)
        schema.setdefault("properties", {})
        schema.setdefault("required", [])
        return schema
    props: dict[str, Any] = {}
    for name, spec in params.items():
        if isinstance(spec, dict):
            props[name] = spec
        elif isinstance(spec, str):
            jtype = _SIMPLE_TYPES.get(spec.strip().lower())
            props[name] = {"type": jtype} if jtype else {"type": "string", "description": spec}
        elif isinstance(spec, type) and spec.__name__ in _SIMPLE_TYPES:
            props[name] = {"type": _SIMPLE_TYPES[spec.__name__]}
        else:
            raise TypeError(
                f"tool {tool_name!r}: parameter {name!r} must be a type name, a description or a "
                f"JSON Schema dict, got {spec!r}"
            )
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# --- schema from a Python signature ---------------------------------------------------------------


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union_schema(tp)
    if origin is Literal:
        return _literal_schema(tp)
    if origin in (list, tuple, set, frozenset, typing.Sequence) or tp in (list, tuple, set):
        args = get_args(tp)
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = _type_schema(args[0])
        return schema
    if origin is dict or tp is dict:
        args = get_args(tp)
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _type_schema(args[1])
        return schema
    if tp in _PY_JSON:
        return {"type": _PY_JSON[tp]}
    raise TypeError(
        f"unsupported parameter type {tp!r}; use str, int, float, bool, list[...], dict, "
        "Optional[...] or Literal[...], or build a ToolSpec yourself with an explicit ToolSpec.parameters schema"
    )


def _union_schema(tp: Any) -> dict[str, Any]:
    members = [a for a in get_args(tp) if a is not type(None)]
    inner = _type_schema(members[0]) if len(members) == 1 else {"anyOf": [_type_schema(m) for m in members]}
    if type(None) in get_args(tp):
        return {"anyOf": [inner, {"type": "null"}]} if "type" not in inner else _nullable(inner)
    return inner


def _literal_schema(tp: Any) -> dict[str, Any]:
    values = list(get_args(tp))
    schema: dict[str, Any] = {"enum": values}
    kinds = {type(v) for v in values}
    if len(kinds) == 1:
        schema["type"] = _PY_JSON.get(kinds.pop(), "string")
    return schema


_PY_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out and None not in out["enum"]:  # Optional[Literal[...]]: null is one of the values
        out["enum"] = [*out["enum"], None]
    return out


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What stands behind ``fn`` for its name, docstring and type hints: the function a
    ``functools.partial`` wraps (however nested), a callable object's ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if not (inspect.isroutine(fn) or isinstance(fn, type)) and callable(fn):
        return type(fn).__call__
    return fn


def callable_name(fn: Callable[..., Any]) -> str:
    """A tool's default name: the function's, or the class name of a callable object."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """``async def`` functions, and partials or objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(_target(fn))


def schema_from_function(fn: Callable[..., Any]) -> dict[str, Any]:
    """JSON Schema of ``fn``'s parameters, from its signature and type hints."""
    try:
        hints = typing.get_type_hints(_target(fn))
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        try:
            prop = _type_schema(hints.get(name, p.annotation))
        except TypeError as exc:
            raise TypeError(f"@tool {callable_name(fn)}: parameter {name!r}: {exc}") from None
        if p.default is inspect.Parameter.empty:
            required.append(name)
        elif p.default is None or isinstance(p.default, (str, int, float, bool)):
            prop = {**prop, "default": p.default}
        props[name] = prop
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


@typing.overload
def tool(
    fn: Callable[..., Any],
    *,
    description: str | None = None,
    name: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
    isolation: str | None = None,
) -> ToolSpec: ...


@typing.overload
def tool(
    fn: None = None,
    *,
    description: str | None = None,
    name: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
    isolation: str | None = None,
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    description: str | None = None,
    name: str | None = None,
    timeout_s: float | None = None,
    concurrent_safe: bool = False,
    isolation: str | None = None,
) -> Any:
    """Turn a function (sync or ``async def``) into a :class:`ToolSpec`, its schema from its signature.

    ``@tool`` and ``@tool(description=...)`` both work; the description defaults to the docstring.
    ``isolation="process"``: each call runs in a child process killed at the timeout (see ToolSpec).
    """

    def build(f: Callable[..., Any]) -> ToolSpec:
        desc = description or _doc(f) or callable_name(f).replace("_", " ")
        try:
            schema = schema_from_function(f)
        except TypeError:
            old = sys.modules.get("looplet._compat_examples")  # loaded by importing 0.4.1's ToolContext
            if old is None or not old.takes_tool_context(f):
                raise
            f = old.tool_with_context(f)  # looplet 0.4.1's ctx: ToolContext parameter
            schema = schema_from_function(f)
        return ToolSpec(
            name or callable_name(f),
            desc,
            schema,
            f,
            concurrent_safe=concurrent_safe,
            timeout_s=timeout_s,
            isolation=isolation,
        )

    return build(fn) if fn is not None else build


def _doc(fn: Callable[..., Any]) -> str | None:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isroutine(fn) or isinstance(fn, type):
        return inspect.getdoc(fn)
    return type(fn).__doc__ and inspect.getdoc(type(fn)) or inspect.getdoc(type(fn).__call__)


# --- validation ----------------------------------------------------------------------------------

#: The Python types of each JSON Schema type (a bool is neither an integer nor a number in JSON).
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _is(value: Any, jtype: str) -> bool:
    """``value`` is of the JSON type ``jtype`` (a type name JSON Schema does not have accepts anything)."""
    want = _JSON_TYPES.get(jtype)
    return want is None or isinstance(value, want) and (type(value) is not bool or want is bool)


#: Where a value sits in the arguments: "" (the arguments), or (where its container sits, its key or index).
#: Spelt out (``'tags'[0]``) only for a message: a valid call builds no path strings.
Where = str | tuple[Any, Any]


def _at(where: Where) -> str:
    if isinstance(where, str):
        return where
    parent, key = where
    return f"{_at(parent)}[{key}]" if isinstance(key, int) else f"{_at(parent)}{key!r}"


def _check(value: Any, schema: dict[str, Any], path: Where) -> str | None:
    """Return a message if ``value`` does not fit ``schema`` (the JSON Schema subset tools use)."""
    if not schema:
        return None
    if "anyOf" in schema or "oneOf" in schema or "enum" in schema:
        wrong = _check_choice(value, schema, path)
        if wrong:
            return wrong
    jtype = schema.get("type")
    want = _JSON_TYPES.get(jtype) if type(jtype) is str else None
    if want is None or not isinstance(value, want) or type(value) is bool and want is not bool:
        wrong = _check_type(value, jtype, path)  # (a value of the one type named is through already)
        if wrong:
            return wrong
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            msg = _check(item, schema["items"], (path, i))
            if msg:
                return msg
    if isinstance(value, dict) and "properties" in schema:
        return _check_object(value, schema, path)[0]
    return None


def _check_choice(value: Any, schema: dict[str, Any], path: Where) -> str | None:
    """``anyOf`` / ``oneOf`` (one of the schemas fits) and ``enum``."""
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or ()
        if all(_check(value, s, path) is not None for s in options):
            return f"{_at(path)} has the wrong type ({type(value).__name__})"
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return f"{_at(path)} must be one of {schema['enum']!r}, got {value!r}"
    return None


def _same(value: Any, member: Any) -> bool:
    """JSON equality for ``enum``: ``true`` is not ``1`` and ``false`` is not ``0``."""
    return bool(value == member) and isinstance(value, bool) is isinstance(member, bool)


def _check_type(value: Any, jtype: str | list[str] | None, path: Where) -> str | None:
    if jtype is None:
        return None
    ok = _is(value, jtype) if isinstance(jtype, str) else any(_is(value, t) for t in jtype)
    if ok:
        return None
    want = jtype if isinstance(jtype, str) else " or ".join(jtype)
    return f"{_at(path)} must be {want}, got {type(value).__name__} {value!r:.60}"


def _check_object(args: dict[str, Any], schema: dict[str, Any], path: Where) -> tuple[str | None, str | None]:
    props = schema.get("properties", {})
    for req in schema.get("required", ()):
        if req not in args:
            stray = _stray(args, props, _at(path))
            return f"missing required argument {_at((path, req))}{stray}", "missing_argument"
    if schema.get("additionalProperties") is False:
        for key in args:
            if key not in props:
                known = ", ".join(props) or "none"
                return f"unexpected argument {_at((path, key))} (accepted: {known})", "unexpected_argument"
    for key, value in args.items():
        sub = props.get(key)
        if sub:
            msg = _check(value, sub, (path, key))
            if msg:
                return msg, "invalid_argument"
    return None, None


def _stray(args: dict[str, Any], props: dict[str, Any], path: str) -> str:
    """Next to a missing argument, the first one sent that the tool does not have (often the missing one
    misspelt): named, with the closest accepted name."""
    key = next((k for k in args if k not in props), None)
    if key is None:
        return ""
    accepted = ", ".join(props) or "none"
    close = difflib.get_close_matches(str(key), list(props), n=1)
    if close:
        return f". Did you mean {path}{close[0]!r} where you wrote {path}{key!r} (accepted: {accepted})"
    return f"; {path}{key!r} is not an argument of this tool (accepted: {accepted})"


def validate_args(args: Any, schema: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(message, error_kind)`` when ``args`` do not fit the tool's schema, else ``(None, None)``."""
    if not isinstance(args, dict):
        return f"arguments must be a JSON object, got {type(args).__name__}", "invalid_argument"
    return _check_object(args, schema, "")


# --- the registry --------------------------------------------------------------------------------


class BaseToolRegistry(LegacyRegistry):
    """Holds tools by name; validates and runs calls. ``dispatch`` never raises."""

    def __init__(self, tools: list[ToolSpec] | None = None, *, max_output_chars: int = 50_000) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self.max_output_chars = max_output_chars
        for spec in tools or ():
            self.register(spec)

    def register(self, spec: ToolSpec | Callable[..., Any]) -> ToolSpec:
        if not isinstance(spec, ToolSpec):
            if not callable(spec):
                raise TypeError(f"register() takes a ToolSpec or a function, got {type(spec).__name__}")
            spec = tool(spec)
        if spec.name in self._tools:
            raise ValueError(
                f"two tools are named {spec.name!r}; give one of them another name "
                "(@tool(name=...) or ToolSpec(name=...))"
            )
        self._tools[spec.name] = spec
        return spec

    def tool(self, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Decorator: ``@registry.tool`` or ``@registry.tool(description=...)``; registers and returns the spec."""
        if fn is not None:
            return self.register(tool(fn, **kwargs))
        return lambda f: self.register(tool(f, **kwargs))

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    @property
    def tool_names(self) -> ToolNames:
        """The tools' names: ``registry.tool_names()`` (0.4.1's ``registry.tool_names`` also works)."""
        return ToolNames(self._tools)

    def schemas(self, format: str = "neutral") -> list[dict[str, Any]]:
        """Tool schemas: ``"neutral"`` (name/description/parameters), ``"openai"`` or ``"anthropic"``."""
        neutral = [t.schema() for t in self._tools.values()]
        if format == "neutral":
            return neutral
        if format == "openai":
            return [{"type": "function", "function": s} for s in neutral]
        if format == "anthropic":
            return [
                {"name": s["name"], "description": s["description"], "input_schema": s["parameters"]}
                for s in neutral
            ]
        raise ValueError(f"schemas(format={format!r}): use 'neutral', 'openai' or 'anthropic'")

    # Dispatch is split in three so the sync and async paths share every decision:
    # prepare (lookup + validation) -> run (sync or async) -> finish (serialisation, timing).

    def prepare(self, call: ToolCall) -> ToolSpec | ToolResult:
        spec = self._tools.get(call.tool)
        if spec is None:
            close = difflib.get_close_matches(call.tool, list(self._tools), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return _error(
                f"Unknown tool {call.tool!r}.{hint} Available tools: {', '.join(self._tools)}.",
                "unknown_tool",
            )
        raw = call.args.get(INVALID_JSON_KEY) if isinstance(call.args, dict) else None
        if raw is not None:
            return _error(
                f"The arguments of your {spec.name} call were not valid JSON ({str(raw)[:200]!r}). "
                "Send a JSON object.",
                "invalid_argument",
            )
        msg, kind = validate_args(call.args, spec.parameters)
        if msg:
            return _error(
                f"Invalid call to {spec.name}: {msg}. Fix the arguments and call it again.",
                kind or "invalid_argument",
            )
        return spec

    def finish(self, spec: ToolSpec, data: Any, started: float, max_chars: int | None = None) -> ToolResult:
        duration = (time.perf_counter() - started) * 1000.0
        limit = self.max_output_chars if max_chars is None else max_chars
        if isinstance(data, ToolResult):
            data.duration_ms = data.duration_ms or duration
            if data.text is None:
                data.text = data.error if data.error is not None else _render(data.data, limit)
            return data
        try:
            text = _render(data, limit)
        except (TypeError, ValueError) as exc:
            return _error(
                f"Tool {spec.name} returned a {type(data).__name__} that cannot be sent to the model "
                f"({exc}). Tools should return str, numbers, lists or dicts of those.",
                "unserializable_result",
                duration,
            )
        return ToolResult(data=data, duration_ms=duration, text=text)

    def dispatch(
        self, call: ToolCall, timeout_s: float | None = None, max_chars: int | None = None
    ) -> ToolResult:
        """Validate and run ``call``; every failure comes back as ``ToolResult.error`` with an ``error_kind``."""
        spec = self.prepare(call)
        result = (
            spec
            if isinstance(spec, ToolResult)
            else self.execute(spec, call, spec.timeout_s or timeout_s, max_chars)
        )
        if getattr(result, "_old", None) is None:
            result._old = call  # 0.4.1's result.tool / result.call_id read it (looplet.compat); the loop does not call dispatch
        return result

    def execute(
        self, spec: ToolSpec, call: ToolCall, timeout: float | None, max_chars: int | None = None
    ) -> ToolResult:
        """Run a call ``prepare`` accepted. A sync tool runs on this thread when ``timeout`` is None, on a
        thread of its own otherwise (given up on at the timeout)."""
        started = time.perf_counter()
        try:
            if spec.isolation == "process":
                data = run_in_process(spec.execute, call.args, timeout)
            elif spec.is_async:
                data = _run_coroutine(spec.execute(**call.args), timeout)
            elif timeout is None:
                data = spec.execute(**call.args)
            else:
                data = _run_in_thread(spec.execute, call.args, timeout)
        except _ToolTimeout:
            return _timeout_error(spec, timeout, started)
        except (Exception, SystemExit) as exc:  # a tool calling sys.exit() fails that call, not the agent
            return _exception_error(spec, exc, started)
        return self.finish(spec, data, started, max_chars)

    async def adispatch(
        self, call: ToolCall, timeout_s: float | None = None, max_chars: int | None = None
    ) -> ToolResult:
        """``dispatch`` for the async loop: ``async def`` tools are awaited; sync ones (and the wait for a
        tool's process) never block the event loop: they run on a thread of their own."""
        spec = self.prepare(call)
        if isinstance(spec, ToolResult):
            return spec
        return await self.aexecute(spec, call, spec.timeout_s or timeout_s, max_chars)

    async def aexecute(
        self, spec: ToolSpec, call: ToolCall, timeout: float | None, max_chars: int | None = None
    ) -> ToolResult:
        """``execute`` for the async loop."""
        started = time.perf_counter()
        try:
            if spec.isolation == "process":  # killed at its timeout; only the wait is off the event loop
                job = {"spec": spec, "args": call.args, "timeout": timeout}
                data = await Worker.once(_no_exit, (_in_process, job), None)
            elif not spec.is_async:
                data = await Worker.once(_no_exit, (spec.execute, call.args), timeout)
            elif timeout is None:
                data = await _no_exit_async(spec.execute(**call.args))
            else:
                import asyncio

                async with asyncio.timeout(timeout):
                    data = await _no_exit_async(spec.execute(**call.args))
        except (TimeoutError, _ToolTimeout):
            return _timeout_error(spec, timeout, started)
        except (Exception, SystemExit) as exc:  # a tool calling sys.exit() fails that call, not the agent
            return _exception_error(spec, exc, started)
        return self.finish(spec, data, started, max_chars)


def tools_from(
    items: list[ToolSpec | Callable[..., Any]],
    include_done: bool = True,
    done_name: str = "done",
    **old: Any,
) -> BaseToolRegistry:
    """A registry from functions and specs; ``include_done`` adds ``done(answer: str)``."""
    if isinstance(items, (ToolSpec, BaseToolRegistry)) or callable(items) or isinstance(items, (str, bytes)):
        raise TypeError(
            "tools_from() takes a list of functions or ToolSpecs, e.g. tools_from([search, fetch])"
        )
    if old:  # looplet 0.4.1's validate=, done_parameters=, include_think= (and its inference rules)
        done, items = tools_from_args(old, items)
        items = [*items, *([done] if done and include_done else [])]
    registry = BaseToolRegistry()
    for item in items:
        registry.register(item)
    if include_done and done_name not in registry:
        registry.register(
            ToolSpec(
                done_name,
                "Finish the task and give the final answer.",
                {"answer": {"type": "string", "description": "the final answer"}},
                _done,
            )
        )
    return registry


def _done(answer: str) -> dict[str, str]:
    return {"answer": answer}


# --- helpers ---------------------------------------------------------------------------------------


class _ToolTimeout(Exception):
    pass


class ToolExited(Exception):
    """A tool called ``sys.exit()`` or ended its thread; asyncio would otherwise stop the event loop."""


def _no_exit(fn: Callable[..., Any], args: dict[str, Any]) -> Any:
    try:
        return fn(**args)
    except SystemExit as exc:
        raise ToolExited(f"the tool tried to exit (SystemExit {exc.code!r})") from None


class Worker:
    """A daemon thread that runs the calls handed to it, one at a time, each in a copy of the caller's
    context (so the OpenTelemetry context and the run's context variables cross over).

    The loop keeps one per run for its sync tools: a thread handoff per call costs a fraction of
    starting a thread (or an executor hop) per call. A call that is not answered within its timeout
    abandons the worker, as a thread cannot be stopped: it exits once that call returns, and the next
    call starts a new thread. Daemon threads, so an abandoned call never holds up the exit of the
    interpreter or the close of an event loop (``asyncio.to_thread``'s executor would)."""

    __slots__ = ("jobs", "replies")

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Any] | None = None
        self.replies: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], reply: Callable[[Any], Any]) -> None:
        if self.jobs is None:
            self.jobs = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(self.jobs,), daemon=True, name="looplet-tool").start()
        self.jobs.put((contextvars.copy_context(), fn, args, reply))

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
        """``fn(*args)`` on the worker; its exception is raised here; ``_ToolTimeout`` at the timeout."""
        self._submit(fn, args, self.replies.put)
        try:
            ok, value = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise _ToolTimeout from None
        if not ok:
            raise value
        return value

    async def arun(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
        """``run`` for a coroutine: awaits the call without blocking the event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def reply(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, item)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                pass

        self._submit(fn, args, reply)
        try:
            async with asyncio.timeout(timeout):
                ok, value = await future
        except TimeoutError:
            self.close()
            raise _ToolTimeout from None
        except BaseException:  # cancelled while the call runs: it keeps this worker busy
            self.close()
            raise
        if not ok:
            raise value
        return value

    @staticmethod
    async def once(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
        """``fn(*args)`` on a thread of its own."""
        worker = Worker()
        try:
            return await worker.arun(fn, args, timeout)
        finally:
            worker.close()

    def close(self) -> None:
        """Let the thread exit after its current call; the next call starts a new one."""
        if self.jobs is not None:
            self.jobs.put(None)
            self.jobs, self.replies = None, queue.SimpleQueue()


_get_ident = threading.get_ident

#: What :meth:`Alarm.run` returns, without running anything, once SIGALRM is no longer the run's.
LOST: Any = object()


class _Alarm(BaseException):
    """Raised by :class:`Alarm`'s signal handler into the tool it interrupts (a ``BaseException``, so a
    tool's ``except Exception`` does not swallow it)."""


class Alarm:
    """Bounds sync tools that run on the main thread with an interval timer (``SIGALRM``), so the loop
    needs no thread handoff per call.

    Why a signal and not the :class:`Worker`: with the default ``tool_timeout_s`` every sync call would
    otherwise cross to the worker thread and back, 15-60 µs a call on a 2-core VM against a 12 µs step
    (bench/loop_overhead.py), most of a bare step. On the main thread, ``setitimer`` interrupts the tool
    instead: a blocking call (sleep, socket, FIFO, lock, child process) is cut short and the tool raises
    ``_Alarm``; code in C that holds the GIL is interrupted when it returns, exactly as late as a
    waiting thread would notice. The timer is re-armed lazily: a call only notes its deadline (no system
    call while calls finish within the armed time); the timer fires at most once per timeout and
    re-arms itself for a call still running.

    A run takes SIGALRM only on the main thread and only while nobody else has it (``SIG_DFL``), and
    gives it back at :meth:`close`; otherwise (another thread, a handler of the user's, a nested run)
    :meth:`claim` says no and the caller uses the worker. A tool may use SIGALRM itself (a library's own
    signal timeout): the timer is re-armed at least once a second of calls, and a handler replaced and
    not given back is noticed at the next such check: the run stops its timer, leaves SIGALRM to its new
    owner and uses the worker from then on. (Until then, a tool that set SIGALRM to ``SIG_DFL`` and kept
    it would let our pending timer end the process: restore the handler you found, as signal-timeout
    libraries do.)"""

    __slots__ = ("deadline", "armed_at", "recheck_at", "owner", "started")

    def __init__(self) -> None:
        self.deadline: float | None = None  # of the call running now
        self.armed_at: float | None = None  # when the timer fires next
        self.recheck_at = 0.0  # when a call re-arms the timer even if it seems armed
        self.owner = 0  # the thread id that holds SIGALRM; 0 not yet, -1 no longer
        self.started = 0.0  # of the latest call

    def claim(self) -> bool:
        """Take SIGALRM for this run if it is free and we are on the main thread (first call only)."""
        if self.owner:
            return self.owner == _get_ident()
        if (
            threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")
            or signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        ):
            return False
        signal.signal(signal.SIGALRM, self._fired)
        self.owner = _get_ident()
        return True

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """``fn(*args)`` on this thread; ``_Alarm`` is raised into it at ``timeout``. :data:`LOST` (fn not
        called) when SIGALRM is not this run's to take (:meth:`claim`) or turned out to be someone else's:
        the caller runs it another way."""
        if self.owner != _get_ident() and not self.claim():
            return LOST
        self.started = now = time.perf_counter()
        self.deadline = deadline = now + timeout
        if self.armed_at is None or self.armed_at > deadline or now > self.recheck_at:
            # once a second of calls at most (signal.getsignal costs 2.4 µs for a method handler): a tool
            # may have cancelled our timer, or taken SIGALRM and kept it
            self.recheck_at = now + 1.0
            if signal.getsignal(signal.SIGALRM) != self._fired:
                self._lost()
                return LOST
            self._arm(timeout, deadline)
        try:
            return fn(*args)
        finally:
            self.deadline = None

    def _lost(self) -> None:
        """A tool took SIGALRM and kept it: stop our timer (if it is still ours) and let it be."""
        self.owner, self.deadline = -1, None
        if self.armed_at is not None:
            left = signal.getitimer(signal.ITIMER_REAL)[0]
            if abs(left - (self.armed_at - time.perf_counter())) < 0.05:
                signal.setitimer(signal.ITIMER_REAL, 0)
            self.armed_at = None

    def _arm(self, seconds: float, at: float) -> None:
        self.armed_at = at
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def _fired(self, signum: int, frame: Any) -> None:
        self.armed_at = None
        deadline = self.deadline
        if deadline is None:  # no call running: the next one arms the timer again
            return
        left = deadline - time.perf_counter()
        if left > 1e-4:  # armed for an earlier call that has finished
            self._arm(left, deadline)
            return
        raise _Alarm

    def close(self) -> None:
        """Stop the timer and give SIGALRM back (unless someone replaced our handler since)."""
        if self.owner > 0:
            self.owner, self.armed_at, self.deadline = 0, None, None
            signal.setitimer(signal.ITIMER_REAL, 0)
            if signal.getsignal(signal.SIGALRM) == self._fired:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _serve(jobs: queue.SimpleQueue[Any]) -> None:
    while (job := jobs.get()) is not None:
        ctx, fn, args, reply = job
        try:
            item = (True, ctx.run(fn, *args))
        except BaseException as exc:
            item = (False, exc)
        reply(item)


def _settle(future: Any, item: Any) -> None:
    if not future.done():
        future.set_result(item)


async def _no_exit_async(coro: Any) -> Any:
    try:
        return await coro
    except SystemExit as exc:
        raise ToolExited(f"the tool tried to exit (SystemExit {exc.code!r})") from None


def _error(message: str, kind: str, duration_ms: float = 0.0) -> ToolResult:
    return ToolResult(error=message, error_kind=kind, duration_ms=duration_ms, text=f"ERROR: {message}")


def _timeout_error(
    spec: ToolSpec, timeout: float | None, started: float, interrupted: bool = False
) -> ToolResult:
    elapsed = time.perf_counter() - started
    if spec.isolation == "process":
        how = "was stopped (its process killed)"
    else:
        how = "was interrupted" if interrupted else "was abandoned"
    late = ""
    if timeout is not None and elapsed > timeout * 1.5 + 0.5:  # a thread holding the GIL delays the timeout
        late = f" after {elapsed:.1f}s (it held up the agent; isolation='process' stops such a tool on time)"
    return _error(
        f"Tool {spec.name} did not finish within {timeout:g}s and {how}{late}. "
        "Try smaller input or another approach.",
        "timeout",
        elapsed * 1000.0,
    )


def _exception_error(spec: ToolSpec, exc: BaseException, started: float) -> ToolResult:
    kind = exc.kind if isinstance(exc, ToolProcessError) else type(exc).__name__
    return _error(
        f"Tool {spec.name} raised {kind}: {exc}",
        "tool_exception",
        (time.perf_counter() - started) * 1000.0,
    )


def _render(data: Any, limit: int) -> str:
    """The text the model sees for a result; raises TypeError/ValueError when it is not JSON-able."""
    if isinstance(data, str):
        text = data
    elif type(data) is int:
        return repr(data)
    else:
        if isinstance(data, (bytes, bytearray)):
            raise TypeError("bytes are not JSON; decode them or return base64 text")
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    if len(text) > limit:
        text = f"{text[:limit]}… [cut: {len(text) - limit} of {len(text)} characters not shown]"
    return text


def _run_in_thread(fn: Callable[..., Any], args: dict[str, Any], timeout: float) -> Any:
    """``fn(**args)`` on a thread of its own, waited for at most ``timeout``."""
    worker = Worker()
    try:
        return worker.run(functools.partial(fn, **args), (), timeout)
    finally:
        worker.close()


# --- process isolation ---------------------------------------------------------------------------


class ToolProcessError(Exception):
    """A tool run with ``isolation="process"`` raised (``kind`` is its exception's class name), or its
    process could not start or ended without an answer."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_BOOT = (  # the parent's sys.path first, so looplet and the tool's module import as they did there
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from looplet.tools import _child_main; _child_main()"
)


def _child_main() -> None:
    """The child process (``python -c _BOOT``): read ``(fn, args)`` pickled on stdin,
    run the tool, write ``("ok", value)`` or ``("raised", class name, message)`` pickled on the original
    stdout; the tool's own prints go to stderr."""
    import asyncio
    import os
    import pickle
    import sys

    reply_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        fn, args = pickle.load(sys.stdin.buffer)
        value = fn(**args)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        reply: tuple[Any, ...] = ("ok", value)
    except BaseException as exc:  # SystemExit included: the call fails, the agent does not
        reply = ("raised", type(exc).__name__, str(exc))
    try:
        data = pickle.dumps(reply)
    except Exception as exc:
        data = pickle.dumps(("raised", "UnpicklableResult", f"the result cannot be sent back ({exc})"))
    reply_to.write(data)
    reply_to.flush()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_in_process(fn: Callable[..., Any], args: dict[str, Any], timeout: float | None) -> Any:
    """Run ``fn(**args)`` in a new Python process (its own session and process group) and kill the whole
    group when the call ends, or at ``timeout`` (then the registry's timeout is raised). ``fn`` and
    ``args`` cross by pickle, so ``fn`` must be importable from a module (not ``__main__``, not a nested
    function), or be a bound method of a picklable object; the result crosses back by pickle. An
    exception in the child is raised here as :class:`ToolProcessError` with its class name and message.
    Cost: a Python start and the tool's imports per call (tens of milliseconds)."""
    import os
    import pickle
    import signal
    import subprocess
    import sys

    try:
        if getattr(fn, "__module__", None) == "__main__":
            raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is defined in __main__")
        payload = pickle.dumps(list(sys.path)) + pickle.dumps((fn, args))
    except Exception as exc:
        raise ToolProcessError(
            "ProcessStartError",
            f"cannot run in a child process ({type(exc).__name__}: {exc}); a process-isolated tool must "
            "be a module-level function of an importable module (or a bound method of a picklable "
            "object) with picklable arguments",
        ) from None
    proc = subprocess.Popen(
        [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        out, _ = proc.communicate(payload, timeout)
    except subprocess.TimeoutExpired:
        raise _ToolTimeout from None
    finally:  # the whole group: whatever the tool started in the background dies with the call
        try:
            os.killpg(proc.pid, signal.SIGKILL) if hasattr(os, "killpg") else proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    if not out:
        raise ToolProcessError(
            "ProcessDied", f"the tool's process ended (exit code {proc.returncode}) without an answer"
        )
    reply = pickle.loads(out)
    if reply[0] == "ok":
        return reply[1]
    raise ToolProcessError(reply[1], reply[2])


def _in_process(spec: ToolSpec, args: dict[str, Any], timeout: float | None) -> Any:
    return run_in_process(spec.execute, args, timeout)


def _run_coroutine(coro: Any, timeout: float | None) -> Any:
    """Run an async tool from the sync loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return asyncio.run(asyncio.wait_for(coro, timeout))
        except TimeoutError:
            raise _ToolTimeout from None
    # Called from inside a running event loop (sync loop used in async code): run on a helper thread.
    return _run_in_thread(lambda: asyncio.run(asyncio.wait_for(coro, timeout)), {}, (timeout or 1e9) + 1)


# looplet 0.4.1's names from this module (register_think_tool, suggest_similar, ...): looplet.compat
__getattr__ = module_getattr("looplet.tools")
