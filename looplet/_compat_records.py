"""looplet 0.4.1's record attributes that still work, deprecated (removed in looplet 0.7; see
:mod:`looplet.compat`).

0.4.1's ``ToolResult`` carried its call (``tool``, ``call_id``, ``args_summary``, ``result_key``); in 0.5
the ``Step`` carries the call and the result only what the tool gave back. A result made with those
keywords keeps them (in a slot nothing else reads), and ``registry.dispatch(call)`` leaves its call
there, so reading ``result.tool`` and ``result.call_id`` still answers. ``Step.summary()`` and
``registry.introspect()`` are 0.4.1's one-line and machine-readable views.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from looplet.compat import warn_renamed

__all__ = ["AgentState", "introspect", "keep_spec", "old_field", "spec_field", "step_summary"]


@runtime_checkable
class AgentState(Protocol):
    """0.4.1's state protocol: an object with ``steps`` (a list). The 0.5 loop takes ``DefaultState`` or
    any such object."""

    steps: list[Any]


#: The 0.5 spelling of each ToolResult field of 0.4.1 that results keep.
KEPT = {
    "tool": "step.tool_call.tool",
    "call_id": "step.tool_call.id",
    "args_summary": "step.tool_call.args (and step.pretty())",
    "result_key": "a key of your own in the result's data",
}


def keep(name: str) -> Any:
    """The ``TOOL_RESULT_KEYWORDS`` translator of ``ToolResult(name=...)``: kept on the result."""

    def translate(value: Any, kwargs: dict[str, Any]) -> None:
        warn_renamed(f"ToolResult({name}=...)", KEPT[name])
        kwargs.setdefault("_old", {})[name] = value

    return translate


#: 0.4.1's ToolSpec fields that specs keep, with their defaults (0.5 reads none of them).
SPEC_DEFAULTS: dict[str, Any] = {
    "idempotency": "unknown",
    "retryable": False,
    "requires": [],
    "tags": [],
    "render": {},
}
_SPEC_ADVICE = (
    "nothing: 0.5 does not read it (the loop retries LLM calls, never tool calls); it is kept on the spec"
)


def keep_spec(name: str, value: Any, kwargs: dict[str, Any]) -> None:
    """``ToolSpec(name=value)`` of 0.4.1 (``TOOL_SPEC_KEYWORDS``): kept on the spec."""
    warn_renamed(f"ToolSpec({name}=...)", _SPEC_ADVICE)
    kwargs.setdefault("_old", {})[name] = value


def spec_field(spec: Any, name: str) -> Any:
    """``spec.<name>`` of 0.4.1: what the spec was given, else 0.4.1's default."""
    warn_renamed(f"ToolSpec.{name}", _SPEC_ADVICE)
    kept = getattr(spec, "_old", None) or {}
    default = SPEC_DEFAULTS[name]
    return kept.get(name, type(default)(default) if isinstance(default, list | dict) else default)


def old_field(result: Any, name: str, default: Any) -> Any:
    """``result.<name>`` of 0.4.1: what the constructor was given, else the call that produced it
    (``registry.dispatch``), else ``default``."""
    warn_renamed(f"ToolResult.{name}", KEPT[name])
    kept = getattr(result, "_old", None)
    if isinstance(kept, dict):
        return kept.get(name, default)
    if kept is not None:  # the ToolCall registry.dispatch ran
        found = {"tool": kept.tool, "call_id": kept.id or None}.get(name)
        return default if found is None else found
    return default


def step_summary(step: Any) -> str:
    """``step.summary()`` of 0.4.1: ``S3: search(q='x') ✓ 2 items`` or ``S3: search() ✗ ERROR: ...``."""
    from looplet.types import summarize

    warn_renamed("Step.summary()", "step.pretty()")
    call, result = step.tool_call, step.tool_result
    args = ", ".join(f"{k}={v!r}" for k, v in call.args.items())
    outcome = f"✗ ERROR: {result.error}" if result.error is not None else f"✓ {summarize(result.data)}"
    return f"S{step.number}: {call.tool}({args}) {outcome}"


def introspect(registry: Any) -> dict[str, Any]:
    """``registry.introspect()`` of 0.4.1: the tools' names, descriptions, schemas and flags."""
    warn_renamed("registry.introspect()", "registry.schemas('neutral') and registry.get(name)")
    tools = []
    for spec in registry._tools.values():
        schema = dict(spec.parameters)
        if schema.get("additionalProperties") is False:  # 0.4.1's schemas did not say it
            del schema["additionalProperties"]
        tools.append(
            {
                "name": spec.name,
                "description": spec.description,
                "parameters": schema,
                "concurrent_safe": spec.concurrent_safe,
                "free": "free" in getattr(type(spec), "__dataclass_fields__", {}) and spec.free is True,
            }
        )
    return {"tool_count": len(tools), "tools": tools}
