"""LLM backends. ``MockLLMBackend`` is stdlib-only; the OpenAI and Anthropic backends import their
clients when constructed."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MockLLMBackend": "looplet.backends.mock",
    "OpenAIBackend": "looplet.backends.openai",
    "AnthropicBackend": "looplet.backends.anthropic",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'looplet.backends' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
