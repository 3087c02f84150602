"""Hook faults: a hook that raises in any method, returns the wrong type, or is slow."""

from __future__ import annotations

import time

import pytest

from looplet import MockLLMBackend, tool, tools_from
from looplet.hooks import OBSERVER_METHODS

from ..unit._harness import MODES, run


@tool
def echo(text: str) -> str:
    return text


SCRIPT = ['{"tool": "echo", "args": {"text": "a"}}', '{"tool": "done", "args": {"answer": "ok"}}']
METHODS = [
    m for m in OBSERVER_METHODS if m not in ("on_hook_error", "on_llm_retry", "on_llm_chunk", "on_event")
]


def _raising(method: str):
    def fail(*args):
        raise RuntimeError(f"{method} broke")

    return type(f"Broken_{method}", (), {method: staticmethod(fail)})()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
def test_a_hook_raising_in_any_method_is_isolated(mode: str, method: str) -> None:
    errors: list[str] = []

    class Seen:
        def on_hook_error(self, hook, meth, error):
            errors.append(meth)

    steps, result = run(
        mode,
        llm=MockLLMBackend(SCRIPT),
        tools=tools_from([echo]),
        task={"goal": "x"},
        hooks=[_raising(method), Seen()],
    )
    assert result.stop_reason == "done" and [s.tool_call.tool for s in steps] == ["echo", "done"]
    assert errors and set(errors) == {method}


@pytest.mark.parametrize("mode", MODES)
def test_wrong_types_are_reported_and_ignored(mode: str) -> None:
    errors: list[str] = []

    class Wrong:
        def pre_prompt(self, *a):
            return 3.14

        def pre_dispatch(self, *a):
            return ["not", "a", "decision"]

        def post_dispatch(self, *a):
            return {"also": "wrong"}

        def on_hook_error(self, hook, method, error):
            errors.append(method)

    steps, result = run(
        mode, llm=MockLLMBackend(SCRIPT), tools=tools_from([echo]), task={"goal": "x"}, hooks=[Wrong()]
    )
    assert result.stop_reason == "done" and steps[0].tool_result.data == "a"
    assert {"pre_prompt", "pre_dispatch", "post_dispatch"} <= set(errors)


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_hook_slows_only_by_its_own_time(mode: str) -> None:
    class Slow:
        def on_step(self, state, step):
            time.sleep(0.05)

    started = time.perf_counter()
    steps, result = run(
        mode, llm=MockLLMBackend(SCRIPT), tools=tools_from([echo]), task={"goal": "x"}, hooks=[Slow()]
    )
    elapsed = time.perf_counter() - started
    assert result.stop_reason == "done" and 0.1 <= elapsed < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_a_wrap_hook_raising_before_call_next_is_skipped_and_reported(mode: str) -> None:
    errors: list[tuple[str, str]] = []

    class BadWrap:
        def wrap_tool(self, tool_call, call_next):
            if tool_call.tool == "echo":
                raise RuntimeError("wrapper bug")
            return call_next(tool_call)

        def on_hook_error(self, hook, method, error):
            errors.append((method, str(error)))

    steps, result = run(
        mode, llm=MockLLMBackend(SCRIPT), tools=tools_from([echo]), task={"goal": "x"}, hooks=[BadWrap()]
    )
    assert steps[0].tool_result.ok and steps[0].tool_result.data == "a"  # the tool ran without that hook
    assert errors == [("wrap_tool", "wrapper bug")]
    assert result.stop_reason == "done"
