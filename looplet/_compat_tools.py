"""looplet 0.4.1's tool inference rules, behind its entry points only. Deprecated; removed in 0.7.

Code that calls ``tools_from(..., validate=...)`` (or another 0.4.1 keyword) or ``minimal_preset(...)``
is 0.4.1 code, and gets what 0.4.1 did with its plain functions:

- a signature that cannot become a JSON object is refused when the registry is built, not at the first
  call: ``*args``/``**kwargs``, positional-only parameters, tuple and set annotations (JSON arrays arrive
  as lists), unions that mix a container with other types, annotations with no JSON type;
- a union of plain types is written ``{"type": ["string", "integer"]}`` (0.5's ``@tool`` writes
  ``anyOf``), a ``Literal`` of several kinds gets a ``type`` list too, an unannotated parameter is a
  string.

0.5's ``@tool`` and ``tools_from([...])`` without those keywords are unchanged by this module.
``ToolSpec.contract_errors()`` (a deprecated 0.4.1 method) audits a spec's schema against its function.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from looplet.compat import warn_renamed

__all__ = ["old_tools", "old_schema", "contract_errors", "minimal_preset"]

_PLAIN = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_SETS = (tuple, set, frozenset)


def old_tools(items: list[Any]) -> list[Any]:
    """The items of ``tools_from(items, validate=...)`` as 0.4.1 built them: plain callables become
    specs by 0.4.1's rules; a ``ToolSpec`` whose function cannot take its arguments by name is refused."""
    from looplet.tools import ToolSpec, _doc, callable_name

    out = []
    for item in items:
        if isinstance(item, ToolSpec):
            _refuse_positional_only(item.execute, item.name)
        elif callable(item):
            name = callable_name(item)
            item = ToolSpec(name, _doc(item) or name.replace("_", " "), old_schema(item), item)
        out.append(item)
    return out


def _refuse_positional_only(fn: Callable[..., Any], name: str) -> None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
    if positional:
        raise TypeError(
            f"tool {name!r}: callable parameter {positional[0]!r} is positional-only, but tool arguments "
            "arrive by name; use a keyword-compatible wrapper (def wrapper(value): return fn(value))"
        )


def old_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """0.4.1's JSON Schema of ``fn``'s parameters (see the module docstring); TypeError naming the
    parameter for a signature it cannot describe."""
    from looplet.tools import _target, callable_name

    name = callable_name(fn)
    try:
        hints = typing.get_type_hints(_target(fn))
    except Exception:
        hints = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"tool {name!r}: cannot infer a tool schema for variadic parameter {pname!r}; write a "
                "wrapper with named parameters (a list or dict parameter) that calls it, or give an "
                "explicit ToolSpec.parameters schema"
            )
        if p.kind is p.POSITIONAL_ONLY:
            _refuse_positional_only(fn, name)
        annotation = hints.get(pname, p.annotation)
        try:
            prop: dict[str, Any] = {"type": "string"} if annotation is p.empty else _prop(annotation)
        except TypeError as exc:
            raise TypeError(f"tool {name!r}: parameter {pname!r}: {exc}") from None
        if p.default is p.empty:
            required.append(pname)
        elif p.default is None or isinstance(p.default, (str, int, float, bool)):
            prop["default"] = p.default
        props[pname] = prop
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _prop(tp: Any) -> dict[str, Any]:
    from looplet.tools import _type_schema

    _refuse_sets(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return _literal(list(get_args(tp)))
    if origin in (Union, types.UnionType):
        return _union(tp)
    try:
        return _type_schema(tp)
    except TypeError:
        raise TypeError(
            f"no JSON type for {tp!r}; use str, int, float, bool, list[...], dict, Optional[...] or "
            "Literal[...], or give an explicit ToolSpec.parameters schema"
        ) from None


def _refuse_sets(tp: Any) -> None:
    if tp in _SETS or get_origin(tp) in _SETS:
        raise TypeError(
            f"{tp!r} cannot arrive from a model: JSON arrays arrive as Python lists; annotate a list "
            "parameter and convert it in a wrapper (def wrapper(values: list[str]): return fn(set(values)))"
        )
    for arg in get_args(tp):
        if arg is not Ellipsis and not isinstance(arg, (str, int, float, bool)) and arg is not None:
            _refuse_sets(arg)


def _kinds(values: list[Any]) -> list[str]:
    return list(dict.fromkeys(_PLAIN.get(type(v), "string") for v in values))


def _literal(values: list[Any]) -> dict[str, Any]:
    kinds = _kinds(values)
    return {"enum": values, "type": kinds[0] if len(kinds) == 1 else kinds}


def _union(tp: Any) -> dict[str, Any]:
    members = list(get_args(tp))
    if all(m in _PLAIN for m in members):
        return {"type": [_PLAIN[m] for m in members]}
    non_null = [m for m in members if m is not type(None)]
    if len(non_null) == 1:  # Optional[X]: X's schema, nullable
        inner = _prop(non_null[0])
        kinds = inner.get("type")
        inner["type"] = [*(kinds if isinstance(kinds, list) else [kinds]), "null"]
        if "enum" in inner:
            inner["enum"] = [*inner["enum"], None]
        return inner
    literals = [v for m in members for v in (get_args(m) if get_origin(m) is Literal else [])]
    if all(m in _PLAIN or get_origin(m) is Literal for m in members) and literals:
        return _literal([*literals, *([None] if type(None) in members else [])])
    raise TypeError(
        f"{tp!r} mixes a container with other types; give an explicit ToolSpec.parameters schema "
        "(anyOf) or split the parameter"
    )


def contract_errors(spec: Any) -> list[str]:
    """What does not agree between a spec's schema and its function (0.4.1's ``spec.contract_errors()``):
    positional-only parameters, a parameter with a default that the schema requires, a required
    parameter the schema does not declare."""
    try:
        params = list(inspect.signature(spec.execute).parameters.values())
    except (TypeError, ValueError):
        return []
    declared = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", ()))
    errors = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            errors.append(
                f"callable parameter {p.name!r} is positional-only; use a keyword-compatible wrapper"
            )
        elif p.name not in declared:
            if p.default is p.empty:
                errors.append(f"callable parameter {p.name!r} is not declared")
        elif p.name in required and p.default is not p.empty:
            errors.append(f"callable parameter {p.name!r} has a default but schema marks it required")
    return errors


class OldPreset:
    """What 0.4.1's ``minimal_preset(...)`` returned: a single-use run with ``tools``, ``config``,
    ``state`` and ``hooks`` to adjust, then ``run(llm, task=...)`` (the steps) or
    ``run_result(llm, task=...)``; also a context manager. 0.5: ``run_loop(...)``."""

    def __init__(self, tools: Any, config: Any, state: Any) -> None:
        self.tools, self.config, self.state = tools, _PresetConfig(config), state
        self.hooks: list[Any] = []

    def __enter__(self) -> OldPreset:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    def run(self, llm: Any, *, task: Any = None, **kwargs: Any) -> Any:
        from looplet.loop import composable_loop

        config = object.__getattribute__(self.config, "_config")
        return composable_loop(
            llm=llm,
            task=task,
            tools=self.tools,
            hooks=self.hooks,
            config=config,
            state=self.state,
            **kwargs,
        )

    def run_result(self, llm: Any, *, task: Any = None, **kwargs: Any) -> Any:
        steps = self.run(llm, task=task, **kwargs)
        try:
            for _ in steps:
                pass
        finally:
            steps.close()
        return self.state.result


class _PresetConfig:
    """The preset's ``LoopConfig``, which 0.4.1 code adjusts in place: a 0.4.1 field with no effect in
    0.5 (``run.config.use_native_tools = False``) is dropped with a warning; the rest is the config's."""

    def __init__(self, config: Any) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_config"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        from looplet.compat import LOOP_CONFIG_KEYWORDS

        config = object.__getattribute__(self, "_config")
        if not hasattr(config, name) and name in LOOP_CONFIG_KEYWORDS:
            if LOOP_CONFIG_KEYWORDS[name] is not None:
                raise AttributeError(
                    f"LoopConfig.{name} was removed in looplet 0.5: {LOOP_CONFIG_KEYWORDS[name]}"
                )
            warn_renamed(f"run.config.{name} = ...", "nothing: it has no effect in 0.5")
            return
        setattr(config, name, value)


def minimal_preset(
    *,
    max_steps: int = 10,
    tools: Any = None,
    system_prompt: str = "You are a helpful assistant.",
    validate: bool = False,
) -> OldPreset:
    """0.4.1's ``minimal_preset(tools=[...], max_steps=..., validate=...)``; now
    ``run_loop(llm=..., tools=tools_from([...]), max_steps=..., task=...)``."""
    from looplet.config import LoopConfig
    from looplet.state import DefaultState
    from looplet.tools import tools_from

    warn_renamed(
        "minimal_preset(tools=..., max_steps=...)",
        "run_loop(llm=..., tools=tools_from([...]), max_steps=..., task=...)",
    )
    registry = tools_from(list(tools or []), include_done=False, **_quiet(validate=validate))
    if "done" not in registry:
        from looplet.compat import old_done_tool

        registry.register(old_done_tool())
    config = LoopConfig(max_steps=max_steps, system_prompt=system_prompt)
    return OldPreset(registry, config, DefaultState(max_steps=max_steps))


def _quiet(**old: Any) -> dict[str, Any]:
    """0.4.1 keywords passed on by this module: the user was warned once already."""
    return {"_warned": True, **old}
