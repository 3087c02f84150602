"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakeserver import FakeLLMServer


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A fake OpenAI/Anthropic server on 127.0.0.1 (see tests/fakeserver.py); script it with ``.script(...)``."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def spans() -> Iterator[tuple[Any, Any]]:
    """``(provider, exporter)``: a TracerProvider of the test's own and the in-memory exporter holding its
    spans (the global provider is left alone)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()
