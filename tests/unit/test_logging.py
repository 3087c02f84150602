"""LoggingHook and configure_logging: JSON lines with ids, levels, errors with tracebacks, stdlib interplay."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from looplet import Deny, LoopConfig, Usage, tool, tools_from
from looplet.backends.mock import MockLLMBackend
from looplet.errors import LLMError
from looplet.telemetry.logging import LoggingHook, configure_logging, reset_logging
from looplet.telemetry.tracing import TracingHook
from tests.unit._harness import MODES, run

KEY = "sk-proj-" + "K" * 30


@tool(description="Add two numbers.")
def add(a: int, b: int) -> int:
    return a + b


@tool(description="Fails.")
def leaky() -> None:
    raise RuntimeError(f"upstream rejected key {KEY}")


TOOLS = tools_from([add, leaky])
CALL = '{"tool": "add", "args": {"a": 1, "b": 2}}'
DONE = '{"tool": "done", "args": {"answer": "3"}}'


@pytest.fixture
def sink():
    stream = io.StringIO()
    yield stream
    reset_logging()


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def mock(*script):
    return MockLLMBackend(list(script), model="gpt-4o-mini", usage=Usage(120, 30))


def go(mode, llm, hooks, **config):
    config.setdefault("llm_backoff_s", 0.001)
    return run(
        mode,
        llm=llm,
        task={"goal": "add"},
        tools=TOOLS,
        hooks=hooks,
        config=LoopConfig(agent_name="calc", **config),
    )


@pytest.mark.parametrize("mode", MODES)
def test_one_json_line_per_run_start_end_llm_call_and_tool_call(mode, sink):
    configure_logging(json=True, file=sink)
    llm = mock(CALL, '[{"tool": "add", "args": {"a": 2, "b": 2}}, {"tool": "leaky"}]', DONE)
    steps, result = go(mode, llm, [TracingHook(TracerProvider()), LoggingHook()])
    out = lines(sink)
    assert [e["event"] for e in out] == [
        "run.start",
        "llm.call",
        "tool.call",
        "llm.call",
        "tool.call",
        "tool.call",
        "llm.call",
        "tool.call",
        "run.end",
    ]
    for e in out:
        assert e["run_id"] == result.run_id and e["agent"] == "calc" and e["trace_id"] == result.trace_id
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        assert e["level"] in ("info", "warning")
    tool_lines = [e for e in out if e["event"] == "tool.call"]
    for e, step in zip(tool_lines, steps):
        assert e["step"] == step.number and e["tool"] == step.tool_call.tool and e["span_id"] == step.span_id
        assert e["duration_ms"] == pytest.approx(step.tool_ms, abs=0.001)
    bad = tool_lines[2]
    assert bad["level"] == "warning" and bad["ok"] is False and bad["error_kind"] == "tool_exception"
    assert KEY not in bad["error"] and "[REDACTED:openai_key]" in bad["error"]
    llm_lines = [e for e in out if e["event"] == "llm.call"]
    assert [e["input_tokens"] for e in llm_lines] == [120, 120, 120]
    assert sum(e["cost_usd"] for e in llm_lines) == pytest.approx(result.cost_usd)
    end = out[-1]
    assert end["stop_reason"] == "done" and end["steps"] == 4 and end["llm_calls"] == 3
    assert end["input_tokens"] == 360 and end["output_tokens"] == 90 and end["duration_ms"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_llm_errors_carry_the_exception_and_retries_are_warnings(mode, sink):
    configure_logging(file=sink)
    script = [LLMError(f"overloaded ({KEY})", retryable=True, status=529), CALL, LLMError("bad", status=400)]
    steps, result = go(mode, mock(*script), [TracingHook(TracerProvider()), LoggingHook()], llm_retries=1)
    out = lines(sink)
    errors = [e for e in out if e["event"] == "llm.error"]
    assert [e["level"] for e in errors] == ["error", "error"]
    assert errors[0]["error_kind"] == "http_529" and errors[0]["retryable"] is True and errors[0]["step"] == 1
    assert (
        "Traceback (most recent call last)" in errors[0]["exception"] and "LLMError" in errors[0]["exception"]
    )
    assert KEY not in json.dumps(out)
    assert len(errors[0]["span_id"]) == 16  # the chat span that failed
    (retry,) = [e for e in out if e["event"] == "llm.retry"]
    assert retry["level"] == "warning" and retry["attempt"] == 1
    end = out[-1]
    assert end["event"] == "run.end" and end["level"] == "error" and end["stop_reason"] == "llm_error"


def test_hook_errors_and_decisions(sink):
    configure_logging(file=sink)

    class Faulty:
        def on_step(self, state, step):
            raise ValueError("observer bug")

    class NoLeaky:
        def pre_dispatch(self, state, session_log, tool_call, step_num):
            return Deny("leaky is off") if tool_call.tool == "leaky" else None

    go("sync", mock('{"tool": "leaky"}', DONE), [LoggingHook(), Faulty(), NoLeaky()])
    out = lines(sink)
    (decision,) = [e for e in out if e["event"] == "hook.decision"]
    assert decision == {
        **decision,
        "hook": "NoLeaky",
        "decision": "deny",
        "tool": "leaky",
        "reason": "leaky is off",
        "level": "info",
    }
    hook_errors = [e for e in out if e["event"] == "hook.error"]
    assert (
        len(hook_errors) == 2 and hook_errors[0]["hook"] == "Faulty" and hook_errors[0]["method"] == "on_step"
    )
    assert "ValueError: observer bug" in hook_errors[0]["exception"]


def test_stdlib_records_of_the_looplet_logger_share_the_renderer_and_the_level(sink):
    configure_logging(file=sink, level="WARNING")
    std = logging.getLogger("looplet")
    std.info("not shown")
    std.warning("careful: %s", "x")
    try:
        raise KeyError("k")
    except KeyError:
        std.exception("failed")
    go("sync", mock(CALL, DONE), [LoggingHook()])  # info lines: filtered out by the level
    out = lines(sink)
    assert [e["event"] for e in out] == ["careful: x", "failed"]
    assert out[0]["level"] == "warning" and out[0]["logger"] == "looplet"
    assert "KeyError" in out[1]["exception"]
    reset_logging()
    assert std.propagate is True and not [h for h in std.handlers if getattr(h, "_looplet", False)]


def test_file_output_and_console_mode(tmp_path):
    path = tmp_path / "run.log"
    configure_logging(file=str(path))
    go("sync", mock(CALL, DONE), [LoggingHook()])
    configure_logging(json=False, file=io.StringIO())  # replaces the set-up and closes the file
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events[0] == "run.start" and events[-1] == "run.end"
    console = io.StringIO()
    configure_logging(json=False, file=console)
    go("sync", mock(CALL, DONE), [LoggingHook()])
    assert "run.start" in console.getvalue() and not console.getvalue().lstrip().startswith("{")
    reset_logging()


def test_without_configure_logging_the_applications_structlog_config_is_used():
    reset_logging()
    with structlog.testing.capture_logs() as captured:
        go("sync", mock(CALL, DONE), [LoggingHook()])
    assert [e["event"] for e in captured][:2] == ["run.start", "llm.call"]
    assert captured[-1]["stop_reason"] == "done"


def test_bad_level_is_a_clear_error():
    with pytest.raises(ValueError, match="level='LOUD'"):
        configure_logging(level="LOUD")


def test_a_tool_name_the_model_made_up_is_redacted_in_log_lines(sink):
    configure_logging(file=sink)
    go("sync", mock('{"tool": "jane.doe@example.com", "args": {}}', DONE), [LoggingHook()])
    assert "jane.doe@example.com" not in sink.getvalue()
    (bad,) = [e for e in lines(sink) if e["event"] == "tool.call" and not e["ok"]]
    assert bad["tool"] == "[REDACTED:email]" and bad["error_kind"] == "unknown_tool"
