"""LoggingHook and configure_logging: JSON lines with ids, levels, errors with tracebacks, stdlib interplay."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    steps, result = go(mode, llm, [LoggingHook(), TracingHook(provider)])  # any order
    out = lines(sink)
    spans = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
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
        assert e["span_id"] in spans  # every line points at a span of the run
    assert spans[out[0]["span_id"]].name == spans[out[-1]["span_id"]].name == "invoke_agent calc"
    tool_lines = [e for e in out if e["event"] == "tool.call"]
    for e, step in zip(tool_lines, steps, strict=True):
        assert e["step"] == step.number and e["tool"] == step.tool_call.tool
        span = spans[e["span_id"]]  # the call's own execute_tool span
        assert span.name == f"execute_tool {step.tool_call.tool}"
        assert span.attributes["gen_ai.tool.call.id"] == step.tool_call.id
        assert e["duration_ms"] == pytest.approx(step.tool_ms, abs=0.001)
    for e in out:
        if e["event"] == "llm.call":
            assert spans[e["span_id"]].name == "chat gpt-4o-mini"
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
    calls = [e for e in out if e["event"] == "llm.call"]  # one line per attempt, failed ones included
    assert [(e["outcome"], e["attempt"], e["level"]) for e in calls] == [
        ("error", 1, "error"),
        ("ok", 2, "info"),
        ("error", 1, "error"),
    ]
    assert calls[0]["error_type"] == "http_529" and calls[2]["error_type"] == "http_400"
    assert "input_tokens" not in calls[0] and calls[1]["input_tokens"] == 120
    assert KEY not in json.dumps(out)
    assert len(calls[0]["span_id"]) == 16 and calls[0]["span_id"] != calls[1]["span_id"]  # each its chat span
    (retry,) = [e for e in out if e["event"] == "llm.retry"]
    assert retry["level"] == "warning" and retry["attempt"] == 1 and retry["span_id"] == calls[0]["span_id"]
    assert "[REDACTED:openai_key]" in retry["error"]
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
    hook_errors = [e for e in out if e["event"] == "hook.error"]  # two faults, logged once
    assert (
        len(hook_errors) == 1 and hook_errors[0]["hook"] == "Faulty" and hook_errors[0]["method"] == "on_step"
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


@pytest.mark.parametrize("mode", MODES)
def test_stdlib_lines_written_during_a_run_carry_the_run_and_the_current_span(mode, sink):
    configure_logging(file=sink)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @tool(description="Logs through the stdlib logger.")
    def chatty() -> str:
        logging.getLogger("looplet.tools.chatty").warning("inside the tool")
        return "ok"

    class Warns:
        def on_step(self, state, step):
            logging.getLogger("looplet").warning("after step %d", step.number)

    steps, result = run(
        mode,
        llm=mock('{"tool": "chatty", "args": {}}', DONE),
        task={"goal": "x"},
        tools=tools_from([chatty]),
        hooks=[Warns(), TracingHook(provider)],
    )
    spans = {format(s.context.span_id, "016x"): s.name for s in exporter.get_finished_spans()}
    out = {e["event"]: e for e in lines(sink)}
    inside, after = out["inside the tool"], out["after step 1"]
    for e in (inside, after):
        assert e["run_id"] == result.run_id and e["trace_id"] == result.trace_id
    assert spans[inside["span_id"]] == "execute_tool chatty"  # the span current while the tool ran
    assert spans[after["span_id"]] == "invoke_agent looplet"  # outside any call: the run's span
    logging.getLogger("looplet").warning("outside a run")
    assert "run_id" not in lines(sink)[-1]


# -- the collector's timestamp parsing (exporters/otel-collector.yaml) -----------------------------------
#
# No OpenTelemetry Collector binary can be installed here, so the stanza operator is not run. Instead the
# test reads the operator out of the YAML and parses real emitted lines with a translation of its Go layout
# that follows Go's time.Parse rules for the elements it may hold (and refuses any other element, so a
# changed layout fails here rather than silently in the collector).

_GO_ELEMENTS = [  # (Go layout element, regex of what Go's parser accepts there)
    ("2006", r"(?P<year>\d{4})"),
    ("01", r"(?P<month>\d{2})"),
    ("02", r"(?P<day>\d{2})"),
    ("15", r"(?P<hour>\d{2})"),
    ("04", r"(?P<minute>\d{2})"),
    # time.Parse: "a fractional second field immediately after the seconds field" is accepted even when
    # the layout does not name one
    ("05", r"(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?"),
    ("Z07:00", r"(?P<zone>Z|[+-]\d{2}:\d{2})"),  # "Z" for UTC, else the offset
]


_OTHER_GO_ELEMENTS = ("Jan", "Mon", "MST", "PM", "pm", "Z0", "_2", "-07", ".0", ".9", ",0", ",9")


def _go_layout_regex(layout: str):
    """A regex matching what Go's time.Parse(layout, value) accepts, for the elements above; any other
    Go element (a digit, Jan, Mon, MST, PM, _2, -07, a fraction...) is refused; other text is literal."""
    import re

    out, i = "", 0
    while i < len(layout):
        for element, pattern in _GO_ELEMENTS:
            if layout.startswith(element, i):
                out += pattern
                i += len(element)
                break
        else:
            unknown = layout[i].isdigit() or layout.startswith(_OTHER_GO_ELEMENTS, i)
            assert not unknown, f"Go layout element at {layout[i:]!r} not translated"
            out += re.escape(layout[i])
            i += 1
    return re.compile(out)


def _go_parse(layout: str, value: str) -> datetime:
    from datetime import timedelta, timezone

    m = _go_layout_regex(layout).fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} does not match Go layout {layout!r}")
    zone = m["zone"]
    tz = UTC
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    fraction = (m["fraction"] or "").ljust(9, "0")
    return datetime(
        int(m["year"]), int(m["month"]), int(m["day"]), int(m["hour"]), int(m["minute"]), int(m["second"]),
        int(fraction[:6]), tzinfo=tz,
    )  # fmt: skip


def _collector_timestamp_operator() -> dict:
    from pathlib import Path

    import yaml

    config = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "exporters" / "otel-collector.yaml").read_text()
    )
    receiver = config["receivers"]["filelog/looplet"]
    assert "filelog/looplet" in config["service"]["pipelines"]["logs"]["receivers"]
    operators = receiver["operators"]
    (parser,) = [op for op in operators if op["type"] == "json_parser"]
    assert parser["parse_from"] == "body" and parser["parse_to"] == "attributes"
    return parser["timestamp"]


def test_the_collector_parses_the_time_each_line_was_written():
    """The filelog receiver's json_parser takes the record's time from the line's own `timestamp` (so Loki
    stores when it happened, not when the collector read it): parsed with the operator's Go layout, every
    kind of line LoggingHook and the stdlib `looplet` logger write gives the instant it was written, in
    UTC, to the microsecond."""

    ts = _collector_timestamp_operator()
    assert ts["parse_from"] == "attributes.timestamp"  # the field json_parser put the line's key in
    assert ts["layout_type"] == "gotime"
    layout = ts["layout"]
    stream = io.StringIO()
    configure_logging(file=stream)
    try:
        before = datetime.now(UTC)
        run(
            "sync",
            llm=mock(CALL, '{"tool": "leaky", "args": {}}', DONE),
            task={"goal": "x"},
            tools=TOOLS,
            hooks=[LoggingHook()],
        )
        logging.getLogger("looplet").warning("a stdlib line")
        after = datetime.now(UTC)
    finally:
        reset_logging()
    written = lines(stream)
    events = {line["event"] for line in written}
    assert {"run.start", "llm.call", "tool.call", "run.end", "a stdlib line"} <= events, events
    previous = before
    for line in written:
        when = _go_parse(layout, line["timestamp"])
        assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0, line
        assert line["timestamp"].endswith("Z") and "." in line["timestamp"], line  # UTC, sub-second kept
        assert previous <= when <= after, (line, before, after)
        previous = when  # lines are written in order: their times never go back


def test_the_layout_check_fails_on_a_layout_that_misreads_the_lines():
    """The check above can fail: layouts a collector would reject our lines with do not parse them here."""
    value = "2026-12-04T19:02:47.103146Z"
    assert _go_parse("2006-01-02T15:04:05Z07:00", value) == datetime(
        2026, 12, 4, 19, 2, 47, 103146, tzinfo=_utc()
    )
    for wrong in ("2006-01-02 15:04:05Z07:00", "2006-01-02T15:04:05", "02/01/2006T15:04:05Z07:00"):
        with pytest.raises(ValueError):
            _go_parse(wrong, value)
    with pytest.raises(AssertionError, match="not translated"):
        _go_layout_regex("Mon Jan _2 15:04:05 2006")  # an element the translation does not know


def _utc():

    return UTC
