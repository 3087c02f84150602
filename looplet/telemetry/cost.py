"""Cost: a dated price table per model, user overrides, and no guessing for unknown models.

Prices are USD per million tokens: input, cached input, output. Reasoning tokens are billed as output
tokens by both providers and are already included in ``output_tokens``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

from looplet.types import Usage

__all__ = [
    "Price",
    "PRICES_DATE",
    "PRICES_SOURCE",
    "price_for",
    "cost_of",
    "set_prices",
    "load_prices",
    "unknown_models",
]

log = logging.getLogger("looplet")

PRICES_DATE = "2026-11-23"
PRICES_SOURCE = (
    "Anthropic: https://platform.claude.com/docs/en/about-claude/pricing (model pricing table, read 2026-11-23). "
    "OpenAI: https://developers.openai.com/api/docs/pricing (standard tier) as reproduced by the GitHub Docs "
    "Copilot model price table and provider price trackers, read 2026-11-23; OpenAI's page itself was not "
    "reachable from here, so check these before billing anyone. USD per 1M tokens, standard (not batch, "
    "priority or long-context) rates."
)


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    cached_input: float
    output: float


# model id -> price. A dated or tagged id resolves to its family ("gpt-4o-2024-08-06" -> "gpt-4o",
# "claude-sonnet-4-5-20250929" -> "claude-sonnet-4-5", "...-latest"); any other suffix is a different model
# ("o3-pro", "gpt-5-pro", "claude-opus-4-9") and stays unknown rather than borrowing a relative's price.
# Models whose price could not be checked against the sources above are left out on purpose.
_BUILTIN: dict[str, Price] = {
    # OpenAI
    "gpt-5.4": Price(2.50, 0.25, 15.00),
    "gpt-5.4-mini": Price(0.75, 0.075, 4.50),
    "gpt-5.2": Price(1.75, 0.175, 14.00),
    "gpt-5.1": Price(1.25, 0.125, 10.00),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
    # Anthropic (cached input = "cache hits and refreshes"; cache writes are billed as input here)
    "claude-opus-5": Price(5.00, 0.50, 25.00),
    "claude-opus-4-8": Price(5.00, 0.50, 25.00),
    "claude-opus-4-7": Price(5.00, 0.50, 25.00),
    "claude-opus-4-6": Price(5.00, 0.50, 25.00),
    "claude-opus-4-5": Price(5.00, 0.50, 25.00),
    "claude-opus-4-1": Price(15.00, 1.50, 75.00),
    "claude-opus-4": Price(15.00, 1.50, 75.00),
    "claude-opus-4-0": Price(15.00, 1.50, 75.00),
    "claude-sonnet-4-6": Price(3.00, 0.30, 15.00),
    "claude-sonnet-4-5": Price(3.00, 0.30, 15.00),
    "claude-sonnet-4": Price(3.00, 0.30, 15.00),
    "claude-sonnet-4-0": Price(3.00, 0.30, 15.00),
    "claude-3-7-sonnet": Price(3.00, 0.30, 15.00),
    "claude-haiku-4-5": Price(1.00, 0.10, 5.00),
    "claude-3-5-haiku": Price(0.80, 0.08, 4.00),
    "claude-3-haiku": Price(0.25, 0.03, 1.25),
}

# suffixes that name a snapshot of the same model: -2024-08-06, -20250929, -latest, @20250929
_SNAPSHOT = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-latest|@[\w.\-]+)$")

_prices: dict[str, Price] = dict(_BUILTIN)
_cache: dict[str, Price | None] = {}
_unknown: set[str] = set()
_MAX_NAMES = 1000  # model names remembered (prices looked up, unknown names warned about)
_overflow: list[str] = []  # the first unknown name past the limit (the note about the rest is given once)
_lock = threading.Lock()


def price_for(model: str | None) -> Price | None:
    """The price of ``model``: its exact id, else the family of a dated snapshot (``gpt-4o-2024-08-06`` →
    ``gpt-4o``); None (logged once, counted by ``MetricsHook``) for anything else."""
    if not model:
        return None
    try:
        return _cache[model]
    except KeyError:
        pass
    price = _lookup(model)
    with _lock:
        if len(_cache) < _MAX_NAMES:  # bounded: a server may answer with any model name
            _cache[model] = price
        if price is None and model not in _unknown:
            if len(_unknown) < _MAX_NAMES:
                _unknown.add(model)
                log.warning(
                    "no price known for model %r: its cost is left empty; add it with "
                    "looplet.telemetry.set_prices({%r: (input, cached_input, output)})",
                    model,
                    model,
                )
            elif not _overflow:
                _overflow.append(model)
                log.warning("more than %d models without a price: the others are not listed", _MAX_NAMES)
    return price


def _lookup(model: str) -> Price | None:
    name = model.split("/")[-1].lower()  # "openai/gpt-4o" style ids
    price = _prices.get(name)
    while price is None:
        base = _SNAPSHOT.sub("", name)
        if base == name:
            break
        name = base
        price = _prices.get(name)
    return price


def cost_of(model: str | None, usage: Usage | None) -> float | None:
    """USD cost of one call, or None when the model's price or the usage is unknown (never a guess)."""
    if usage is None:
        return None
    price = price_for(model)
    if price is None:
        return None
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return (
        (usage.input_tokens - cached) * price.input
        + cached * price.cached_input
        + usage.output_tokens * price.output
    ) / 1_000_000


def unknown_models() -> frozenset[str]:
    """Models seen without a price (their calls have ``cost_usd=None``)."""
    return frozenset(_unknown)


def set_prices(prices: dict[str, Any], *, replace: bool = False) -> None:
    """Add or change prices: ``{"my-model": (input, cached_input, output)}`` or dicts with those keys,
    USD per million tokens. ``replace=True`` drops the built-in table first."""
    parsed = {str(name).split("/")[-1].lower(): _parse_price(name, value) for name, value in prices.items()}
    with _lock:
        if replace:
            _prices.clear()
        _prices.update(parsed)
        _cache.clear()
        _unknown.difference_update([m for m in _unknown if _lookup(m) is not None])


def load_prices(path: str | Path, *, replace: bool = False) -> None:
    """Load prices from a JSON or TOML file: ``{"model": {"input": 1.0, "cached_input": 0.1, "output": 4.0}}``
    (a TOML file may hold them under a ``[prices]`` table)."""
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read price file {p}: {exc.strerror}") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"price file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("prices"), dict):
        data = data["prices"]
    if not isinstance(data, dict):
        raise ValueError(f"price file {p} must hold a table of model -> prices")
    set_prices(data, replace=replace)


def _parse_price(name: str, value: Any) -> Price:
    try:
        if isinstance(value, Price):
            return value
        if isinstance(value, dict):
            inp = float(value["input"])
            return Price(inp, float(value.get("cached_input", inp)), float(value["output"]))
        inp, cached, out = (float(v) for v in value)
        return Price(inp, cached, out)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"price of {name!r} must be (input, cached_input, output) or "
            "{'input':..., 'cached_input':..., 'output':...} in USD per 1M tokens"
        ) from None
