"""LLM backends. ``MockLLMBackend`` is stdlib-only; the OpenAI and Anthropic backends import their
clients when constructed."""

from __future__ import annotations

from looplet._lazy import lazy_getattr

_LAZY = {
    "MockLLMBackend": "looplet.backends.mock",
    "OpenAIBackend": "looplet.backends.openai",
    "AnthropicBackend": "looplet.backends.anthropic",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr("looplet.backends", globals(), _LAZY, old_names=True)
