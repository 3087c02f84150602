"""Cost: the dated table, snapshot ids, overrides from code and files, and no guessing for unknown models."""

from __future__ import annotations

import datetime
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looplet import LoopConfig, Usage, tool, tools_from
from looplet.backends.mock import MockLLMBackend
from looplet.telemetry import cost as C
from looplet.telemetry.cost import Price, cost_of, load_prices, price_for, set_prices, unknown_models
from tests.unit._harness import MODES, run


@pytest.fixture(autouse=True)
def fresh_table():
    saved = dict(C._prices)
    C._cache.clear()
    C._unknown.clear()
    yield
    C._prices.clear()
    C._prices.update(saved)
    C._cache.clear()
    C._unknown.clear()


def test_the_table_is_dated_and_sourced():
    date = datetime.date.fromisoformat(C.PRICES_DATE)
    assert datetime.date(2025, 1, 1) <= date <= datetime.date.today()
    assert "anthropic" in C.PRICES_SOURCE.lower() and "openai" in C.PRICES_SOURCE.lower()
    for name, price in C._BUILTIN.items():
        assert name == name.lower()
        assert 0 < price.cached_input <= price.input < price.output, name


def test_cost_of_prices_cached_input_separately():
    # gpt-4o: 2.50 input, 1.25 cached input, 10.00 output per 1M tokens
    usage = Usage(
        input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=400_000, reasoning_tokens=50_000
    )
    assert cost_of("gpt-4o", usage) == pytest.approx(0.6 * 2.50 + 0.4 * 1.25 + 0.1 * 10.00)
    # reasoning tokens are part of output_tokens: not billed a second time
    assert cost_of("gpt-4o", Usage(0, 1000, reasoning_tokens=900)) == pytest.approx(1000 * 10 / 1e6)
    assert cost_of("gpt-4o", None) is None
    assert cost_of(None, usage) is None


@pytest.mark.parametrize(
    "model,family",
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
    ],
)
def test_snapshot_ids_resolve_to_their_family(model, family):
    assert price_for(model) == C._BUILTIN[family]


@pytest.mark.parametrize(
    "model",
    [
        "o3-pro",
        "gpt-5-pro",
        "claude-opus-4-9",
        "gpt-4o-realtime-preview",
        "llama3.1:8b",
        "mock-model",
        "gpt-4o-2024",
    ],
)
def test_other_models_are_unknown_not_guessed(model, caplog):
    with caplog.at_level(logging.WARNING, logger="looplet"):
        assert price_for(model) is None
        assert price_for(model) is None
        assert cost_of(model, Usage(1000, 1000)) is None
    assert caplog.text.count(f"no price known for model {model!r}") == 1  # logged once
    assert model in unknown_models()


def test_set_prices_in_code():
    set_prices(
        {"My-Local-Model": (0.5, 0.05, 1.5), "other": {"input": 2, "output": 6}, "p": Price(1, 0.1, 2)}
    )
    assert price_for("my-local-model") == Price(0.5, 0.05, 1.5)
    assert price_for("my-local-model-20260101") == Price(0.5, 0.05, 1.5)
    assert price_for("other") == Price(2.0, 2.0, 6.0)  # no cached price given: cached input costs as input
    assert cost_of("p", Usage(1_000_000, 0)) == 1.0
    price_for("gpt-4o")
    set_prices({"gpt-4o": (1, 1, 1)})  # overrides win and the cache is dropped
    assert price_for("gpt-4o") == Price(1, 1, 1)
    set_prices({"only": (1, 1, 1)}, replace=True)
    assert price_for("gpt-4o-mini") is None and price_for("only") == Price(1, 1, 1)
    with pytest.raises(ValueError, match="price of 'bad'"):
        set_prices({"bad": (1, 2)})
    with pytest.raises(ValueError, match="price of 'bad'"):
        set_prices({"bad": {"input": "cheap"}})


def test_a_model_priced_later_leaves_the_unknown_list():
    assert price_for("private-x") is None
    set_prices({"private-x": (1, 0.5, 2)})
    assert "private-x" not in unknown_models() and price_for("private-x") == Price(1, 0.5, 2)


def test_load_prices_from_json_and_toml(tmp_path):
    j = tmp_path / "prices.json"
    j.write_text('{"json-model": {"input": 1.0, "cached_input": 0.1, "output": 4.0}}')
    load_prices(j)
    assert price_for("json-model") == Price(1.0, 0.1, 4.0)
    t = tmp_path / "prices.toml"
    t.write_text('[prices]\n"toml-model" = { input = 2.0, cached_input = 0.2, output = 8.0 }\n')
    load_prices(str(t))
    assert price_for("toml-model") == Price(2.0, 0.2, 8.0)
    with pytest.raises(ValueError, match="cannot read price file"):
        load_prices(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        load_prices(bad)
    shape = tmp_path / "shape.json"
    shape.write_text("[1, 2]")
    with pytest.raises(ValueError, match="table of model"):
        load_prices(shape)


@tool(description="Add.")
def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.parametrize("mode", MODES)
def test_steps_and_the_run_carry_cost(mode):
    usage = Usage(1000, 200, cached_input_tokens=500)
    script = ['{"tool": "add", "args": {"a": 1, "b": 2}}', '{"tool": "done", "args": {"answer": "3"}}']
    steps, result = run(
        mode,
        llm=MockLLMBackend(script, model="gpt-4o-mini", usage=usage),
        task={"goal": "x"},
        tools=tools_from([add]),
        config=LoopConfig(),
    )
    each = cost_of("gpt-4o-mini", usage)
    assert [s.cost_usd for s in steps] == [pytest.approx(each)] * 2
    assert result.cost_usd == pytest.approx(2 * each)

    steps, result = run(
        mode,
        llm=MockLLMBackend(script, model="unpriced-model", usage=usage),
        task={"goal": "x"},
        tools=tools_from([add]),
        config=LoopConfig(),
    )
    assert [s.cost_usd for s in steps] == [None, None] and result.cost_usd is None  # empty, never $0


@given(inp=st.integers(0, 10**7), cached=st.integers(0, 10**7), out=st.integers(0, 10**7))
def test_cost_is_never_negative_and_caching_never_costs_more(inp, cached, out):
    with_cache = cost_of("claude-sonnet-4-5", Usage(inp, out, cached_input_tokens=cached))
    without = cost_of("claude-sonnet-4-5", Usage(inp, out))
    assert 0 <= with_cache <= without + 1e-12
