"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeserver import FakeLLMServer


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A fake OpenAI/Anthropic server on 127.0.0.1 (see tests/fakeserver.py); script it with ``.script(...)``."""
    with FakeLLMServer() as server:
        yield server
