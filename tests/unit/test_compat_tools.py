"""looplet 0.4.1's tool inference rules behind its entry points (``tools_from(validate=...)``,
``minimal_preset``), ``ToolSpec.contract_errors()``; and what 0.5's ``@tool`` itself now takes
(partials, callable objects) without changing the schemas it wrote before."""

from __future__ import annotations

import asyncio
import functools
import warnings
from typing import Any, Literal, Union

import pytest

from looplet import MockLLMBackend, ToolCall, ToolSpec, tool, tools_from

from ._compat_support import one_warning


def old_registry(*items: Any, validate: bool = True) -> Any:
    with one_warning("tools_from([...], include_done=True)"):
        return tools_from(list(items), validate=validate)


def prop(registry: Any, name: str, param: str) -> Any:
    return registry.get(name).parameters["properties"][param]


def test_old_entry_point_writes_041_union_and_literal_schemas() -> None:
    def pick(
        a: str | int,
        b: int,  # set to typing.Union[str, int, None] below
        c: Literal["auto", 1],
        d,
        e: Literal["x", "y"] | None = None,
    ):  # type: ignore[no-untyped-def]
        return {"a": a}

    pick.__annotations__["b"] = Union[str, int, None]  # noqa: UP007  # typing.Union, not X | Y
    reg = old_registry(pick)
    assert prop(reg, "pick", "a") == {"type": ["string", "integer"]}
    assert prop(reg, "pick", "b") == {"type": ["string", "integer", "null"]}
    assert prop(reg, "pick", "c") == {"enum": ["auto", 1], "type": ["string", "integer"]}
    assert prop(reg, "pick", "d") == {"type": "string"}  # unannotated: a string, as in 0.4.1
    assert prop(reg, "pick", "e") == {"enum": ["x", "y", None], "type": ["string", "null"], "default": None}
    assert reg.get("pick").parameters["required"] == ["a", "b", "c", "d"]
    ok = reg.dispatch(ToolCall("pick", {"a": 3, "b": None, "c": 1, "d": "x", "e": None}))
    assert ok.error is None and ok.data == {"a": 3}
    assert reg.dispatch(ToolCall("pick", {"a": 1.5, "b": None, "c": 1, "d": "x"})).error is not None
    assert reg.dispatch(ToolCall("pick", {"a": 1, "b": 1, "c": 1, "d": "x", "zz": 1})).error is not None


def test_new_tool_keeps_its_own_schemas() -> None:
    def pick(a: str | int, c: Literal["auto", 1]) -> None:
        return None

    spec = tool(pick)  # no warning, 0.5's rules: anyOf, an enum without a type list
    assert spec.parameters["properties"]["a"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert spec.parameters["properties"]["c"] == {"enum": ["auto", 1]}
    assert spec.parameters["additionalProperties"] is False


def collect_args(*values: int) -> list[int]:
    return list(values)


def collect_kwargs(**filters: str) -> dict[str, str]:
    return filters


def positional(value: str, /) -> str:
    return value


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (collect_args, ["variadic parameter 'values'", "wrapper"]),
        (collect_kwargs, ["variadic parameter 'filters'", "wrapper"]),
        (functools.partial(collect_args, 1), ["variadic parameter 'values'"]),
        (positional, ["'value' is positional-only", "keyword-compatible wrapper"]),
        (ToolSpec("p", "p", {"value": "str"}, positional), ["positional-only"]),
    ],
)
def test_old_entry_point_refuses_signatures_a_model_cannot_call(item: Any, words: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError) as err:
            tools_from([item], validate=False)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert tool(collect_args).parameters["properties"] == {}  # 0.5's @tool still takes *args


@pytest.mark.parametrize(
    "annotation", [tuple, tuple[str, ...], set[str], frozenset, list[set[str]], set[str] | None]
)
def test_old_entry_point_refuses_sets_and_tuples(annotation: Any) -> None:
    def overlap(values):  # type: ignore[no-untyped-def]
        return values

    overlap.__annotations__["values"] = annotation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match=r"Python lists.*list parameter.*wrapper"):
            tools_from([overlap], validate=True)


@pytest.mark.parametrize("annotation", [complex, str | list[int]])
def test_old_entry_point_names_an_explicit_schema_for_what_it_cannot_describe(annotation: Any) -> None:
    def echo(value):  # type: ignore[no-untyped-def]
        return value

    echo.__annotations__["value"] = annotation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match="explicit ToolSpec.parameters schema"):
            tools_from([echo], validate=True)


class Owner:
    def __call__(self, service: str, limit: int = 1) -> dict[str, Any]:
        """Find the team that owns a service."""
        return {"service": service, "limit": limit}


class AsyncOwner:
    async def __call__(self, service: str) -> dict[str, Any]:
        return {"owner": "team-" + service}


def lookup(table: dict[str, str], service: str, limit: int = 1) -> dict[str, Any]:
    """Look a service up."""
    return {"owner": table.get(service), "limit": limit}


def test_new_tool_takes_partials_and_callable_objects() -> None:
    bound = tool(functools.partial(lookup, {"pay": "fin"}, limit=2))
    assert (bound.name, bound.description) == ("lookup", "Look a service up.")
    assert bound.parameters["properties"] == {
        "service": {"type": "string"},
        "limit": {"type": "integer", "default": 2},
    }
    obj = tool(Owner())
    assert (obj.name, obj.description) == ("Owner", "Find the team that owns a service.")
    reg = tools_from([bound, obj])
    assert reg.dispatch(ToolCall("lookup", {"service": "pay"})).data == {"owner": "fin", "limit": 2}
    assert reg.dispatch(ToolCall("Owner", {"service": "x", "limit": "two"})).error is not None


@pytest.mark.parametrize("item", [AsyncOwner(), functools.partial(AsyncOwner())])
def test_async_callable_objects_are_awaited(item: Any) -> None:
    spec = tool(item)
    assert spec.is_async
    result = asyncio.run(tools_from([spec]).adispatch(ToolCall("AsyncOwner", {"service": "a"})))
    assert result.error is None and result.data == {"owner": "team-a"}


def test_enum_check_is_json_equality_and_optional_literal_takes_null() -> None:
    def mode(m: Literal[1, False], n: Literal["a", "b"] | None) -> Any:
        return [m, n]

    reg = tools_from([mode])
    assert reg.dispatch(ToolCall("mode", {"m": True, "n": None})).error is not None  # True is not 1
    assert reg.dispatch(ToolCall("mode", {"m": 0, "n": None})).error is not None  # 0 is not false
    assert reg.dispatch(ToolCall("mode", {"m": False, "n": None})).data == [False, None]
    assert reg.dispatch(ToolCall("mode", {"m": 1, "n": "b"})).data == [1, "b"]


def test_contract_errors_and_041_json_schema_view() -> None:
    spec = ToolSpec(
        "search",
        "Search",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        lambda *, query="x", limit: query,
    )
    with one_warning("@tool"):
        errors = spec.contract_errors()
    assert errors == [
        "callable parameter 'query' has a default but schema marks it required",
        "callable parameter 'limit' is not declared",
    ]
    fine = tool(lookup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert ToolSpec("p", "p", {"value": "str"}, positional).contract_errors() == [
            "callable parameter 'value' is positional-only; use a keyword-compatible wrapper"
        ]
        view = fine.to_json_schema()
    assert "additionalProperties" not in view and fine.parameters["additionalProperties"] is False


def test_minimal_preset_builds_a_run_with_041_rules() -> None:
    from looplet import minimal_preset  # type: ignore[attr-defined]

    def echo_quantity(quantity: int) -> dict[str, int]:
        return {"quantity": quantity}

    with one_warning("run_loop"):
        preset = minimal_preset(tools=[echo_quantity], max_steps=3, validate=True)
    with preset as run:
        with one_warning("no effect"):
            run.config.use_native_tools = False  # 0.4.1 code adjusts the config in place
        run.config.max_steps = 4
        assert run.config.max_steps == 4
        with pytest.raises(AttributeError, match="CheckpointHook"):
            run.config.checkpoint_dir = "x"
        assert run.tools.tool_names() == ["echo_quantity", "done"]
        assert run.tools.dispatch(ToolCall("echo_quantity", {"quantity": "bad"})).error is not None
        llm = MockLLMBackend(
            [
                '{"tool": "echo_quantity", "args": {"quantity": 2}}',
                '{"tool": "done", "args": {"summary": "two"}}',
            ]
        )
        result = run.run_result(llm, task={"goal": "echo"})
    assert result.stop_reason == "done" and [s.tool_call.tool for s in result.steps] == [
        "echo_quantity",
        "done",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match="variadic parameter"):
            minimal_preset(tools=[collect_args])


def test_041_error_families_compare_equal_to_the_finer_05_kinds() -> None:
    from looplet.compat import ErrorKind

    reg = tools_from([lambda path: path])
    missing = reg.dispatch(ToolCall("<lambda>", {}))
    assert missing.error_kind == "missing_argument"  # 0.5's string, unchanged
    assert missing.error_kind == ErrorKind.VALIDATION and ErrorKind.VALIDATION == missing.error_kind
    assert missing.error_kind != ErrorKind.EXECUTION
    assert reg.dispatch(ToolCall("nope", {})).error_kind == ErrorKind.VALIDATION
    assert "denied" == ErrorKind.PERMISSION_DENIED and "tool_exception" == ErrorKind.EXECUTION
    assert "anything else" != ErrorKind.EXECUTION and ErrorKind.TIMEOUT == "timeout"
    assert {ErrorKind.TIMEOUT: 1}["timeout"] == 1
    with one_warning("error_kind"):
        assert missing.error_retriable is False


def test_old_mock_exhaustion_says_how_often_it_was_called() -> None:
    from looplet.testing import LLMResponsesExhausted
    from looplet.testing import MockLLMBackend as OldMock

    with one_warning("looplet.MockLLMBackend"):
        llm = OldMock(["only one"], cycle=False)
    assert llm.generate("x") == "only one"
    with pytest.raises(LLMResponsesExhausted, match="called 2 times"):
        llm.generate("y")
