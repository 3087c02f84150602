"""@tool schemas, validation and the registry."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest

from looplet import BaseToolRegistry, ToolCall, ToolSpec, tool, tools_from
from looplet.tools import INVALID_JSON_KEY, validate_args


def test_schema_from_signature_covers_the_common_types() -> None:
    @tool(description="Everything.")
    def f(
        s: str,
        i: int,
        x: float,
        b: bool,
        tags: list[str],
        meta: dict,
        mode: Literal["a", "b"] = "a",
        note: str | None = None,
        n: int | None = 3,
    ) -> None:
        pass

    p = f.parameters
    assert p["required"] == ["s", "i", "x", "b", "tags", "meta"]
    props = p["properties"]
    assert props["s"] == {"type": "string"} and props["i"] == {"type": "integer"}
    assert props["x"] == {"type": "number"} and props["b"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["meta"] == {"type": "object"}
    assert props["mode"] == {"enum": ["a", "b"], "type": "string", "default": "a"}
    assert props["note"]["type"] == ["string", "null"] and props["n"]["default"] == 3
    assert p["additionalProperties"] is False
    assert f.description == "Everything."


def test_simple_and_json_schema_parameters() -> None:
    spec = ToolSpec("t", "d", {"name": "str", "count": "int", "why": "the reason"}, lambda **k: k)
    assert spec.parameters["properties"] == {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "why": {"type": "string", "description": "the reason"},
    }
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert ToolSpec("t", "d", schema, lambda q: q).parameters["required"] == ["q"]


@pytest.mark.parametrize(
    "args,kind",
    [
        ({}, "missing_argument"),
        ({"q": "x", "extra": 1}, "unexpected_argument"),
        ({"q": 3}, "invalid_argument"),
        ({"q": "x", "k": True}, "invalid_argument"),  # bool is not an integer
        ({"q": "x", "tags": ["a", 2]}, "invalid_argument"),
        ({"q": "x", "mode": "c"}, "invalid_argument"),
        ({"q": "x", "k": 2, "tags": ["a"], "mode": "b", "opt": None}, None),
    ],
)
def test_validation(args: dict, kind: str | None) -> None:
    @tool
    def f(
        q: str,
        k: int = 1,
        tags: list[str] | None = None,
        mode: Literal["a", "b"] = "a",
        opt: float | None = None,
    ) -> None:
        pass

    assert validate_args(args, f.parameters)[1] == kind


def test_async_tools_and_sync_dispatch() -> None:
    @tool
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        return url.upper()

    reg = tools_from([fetch], include_done=False)
    assert reg.dispatch(ToolCall("fetch", {"url": "a"})).data == "A"
    assert asyncio.run(reg.adispatch(ToolCall("fetch", {"url": "b"}))).data == "B"


def test_registry_schemas_in_each_shape_and_done_tool() -> None:
    @tool
    def search(query: str) -> str:
        """Search things."""
        return query

    reg = tools_from([search])
    assert reg.tool_names() == ["search", "done"]
    assert reg.schemas("openai")[0]["function"]["name"] == "search"
    assert reg.schemas("anthropic")[0]["input_schema"]["required"] == ["query"]
    assert reg.schemas()[0]["description"] == "Search things."
    with pytest.raises(ValueError):
        reg.schemas("xml")


def test_invalid_json_arguments_and_huge_output() -> None:
    @tool
    def big() -> str:
        return "x" * 100_000

    reg = BaseToolRegistry([big], max_output_chars=1000)
    r = reg.dispatch(ToolCall("big", {INVALID_JSON_KEY: '{"a": '}))
    assert r.error_kind == "invalid_argument" and "not valid JSON" in r.error
    r = reg.dispatch(ToolCall("big", {}))
    assert r.ok and len(r.text) < 1100 and "99000" in r.text and len(r.data) == 100_000


def test_cyclic_result_is_an_error_not_a_crash() -> None:
    @tool
    def cyc() -> dict:
        d: dict = {}
        d["self"] = d
        return d

    r = tools_from([cyc]).dispatch(ToolCall("cyc", {}))
    assert r.error_kind == "unserializable_result"
    json.dumps(r.to_dict())


def test_registry_bad_input() -> None:
    @tool
    def a() -> None:
        pass

    with pytest.raises(ValueError, match="two tools are named 'a'"):
        tools_from([a, a])
    with pytest.raises(TypeError, match="execute must be callable"):
        ToolSpec("x", "d", {}, execute="not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of functions"):
        tools_from(a)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported parameter type"):

        @tool
        def bad(x: complex) -> None:
            pass


def test_a_non_string_under_the_invalid_json_key_is_an_invalid_argument_error() -> None:
    @tool(description="x")
    def f(a: int) -> int:
        return a

    result = tools_from([f]).dispatch(ToolCall("f", {INVALID_JSON_KEY: 5}, "c1"))
    assert result.error_kind == "invalid_argument" and "not valid JSON ('5')" in (result.error or "")
