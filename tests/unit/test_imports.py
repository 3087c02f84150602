"""`import looplet` is stdlib-only; each integration names its extra when its library is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_core_loads_no_third_party_module() -> None:
    code = (
        "import sys; before = set(sys.modules); import looplet; from looplet import composable_loop, "
        "async_composable_loop, MockLLMBackend, tools_from, LoopConfig, DefaultState, Deny; "
        "std = set(sys.stdlib_module_names); "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - std - {'looplet'}))"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name,blocked,extra",
    [
        ("OpenAIBackend", "openai", "openai"),
        ("AnthropicBackend", "anthropic", "anthropic"),
        ("TracingHook", "opentelemetry", "otel"),
        ("MetricsHook", "prometheus_client", "prometheus"),
        ("LoggingHook", "structlog", "logs"),
    ],
)
def test_missing_extra_says_what_to_install(name: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import looplet\n"
        "try:\n"
        f"    cls = getattr(looplet, {name!r})\n"
        "    cls(model='m') if 'Backend' in cls.__name__ else cls()\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert f"pip install 'looplet[{extra}]'" in out.stdout, out.stdout
