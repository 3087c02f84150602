"""Content capture on chat spans, kept incrementally: each message converted, redacted and encoded once,
the attribute values the same as converting the call's whole transcript from scratch."""

from __future__ import annotations

import copy
import json
import os
import random
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from looplet import DefaultState, LoopConfig, composable_loop, tool, tools_from
from looplet.backends.mock import MockLLMBackend
from looplet.telemetry import messages as semconv
from looplet.telemetry import names as N
from looplet.telemetry import tracing as T
from looplet.telemetry.redact import Redactor, add_secret
from looplet.telemetry.tracing import TracingHook, cap_json

ALPHABET = 'abcdefghij KLMNOP \n\t"\\é€😀\x01/'


def _text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 5, 11, 12, 13, 40, 64, 65, 66, 200, 256, 257, 300, 1000, 4000])
    alphabet = rng.choice([ALPHABET, "abc é€😀"])  # with characters JSON escapes, or none
    return "".join(rng.choice(alphabet) for _ in range(n))


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.45:
        return _text(rng)
    if r < 0.55:
        return rng.choice([1, -2.5, None, True, False, ("x" * 300, 1), float("nan")])
    if r < 0.8:
        return {_text(rng)[:12]: _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def test_capped_list_gives_what_cap_json_gives() -> None:
    """Grown, cut back and grown again, at limits from tight to loose: byte for byte ``cap_json``'s text
    (every search: fits whole, long strings cut, oldest items dropped)."""
    rng = random.Random(7)
    for _trial in range(150):
        capped, ref = T._Capped(), []
        for _step in range(rng.randint(1, 10)):
            if ref and rng.random() < 0.25:
                k = rng.randint(0, len(ref))
                capped.truncate(k)
                del ref[k:]
            new = [{"role": "user", "parts": [{"type": "text", "content": _value(rng)}]}]
            new += [_value(rng) for _ in range(rng.randint(0, 4))]
            capped.add(new)
            ref.extend(new)
            for limit in rng.sample([256, 300, 700, 2000, 5000, 32_000], 3):
                assert capped.text(limit) == cap_json(ref, limit)


def test_capped_list_with_the_mark_in_its_own_text() -> None:
    """An item whose own text holds the mark used to find its long strings is encoded the long way."""
    long = "y" * 500
    item = {"a": f"{T._SLOT}0@@", "b": long, "c": [long, "z" * 90]}
    capped = T._Capped()
    capped.add([item, {"k": long}])
    for limit in (256, 600, 900, 1200):
        assert capped.text(limit) == cap_json([item, {"k": long}], limit)


def test_transcript_converts_each_message_once_and_notices_replacements() -> None:
    t = semconv.Transcript()
    log: list[dict[str, Any]] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}]
    assert t.update(log) == (0, 0)
    assert (t.system, t.messages) == semconv.messages(log)
    first_messages = t.messages
    log += [{"role": "assistant", "content": "a"}, {"role": "tool", "tool_call_id": "1", "content": "r"}]
    assert t.update(log) == (1, 1)
    assert t.messages is first_messages  # grown in place: the first call's first message is still its
    assert (t.system, t.messages) == semconv.messages(log)
    extra = [*log, {"role": "user", "content": "one-off"}]
    t.update(extra)
    assert t.update(log) == (1, 3)  # the one-off extra message went
    assert (t.system, t.messages) == semconv.messages(log)
    before = list(t.messages)
    kept = t.messages
    log[2] = {**log[2], "content": "pruned"}  # a compaction replaced a message, same length
    assert t.update(log) == (1, 1)
    assert (t.system, t.messages) == semconv.messages(log)
    assert kept == before  # the list an earlier call holds is not touched
    system = t.system
    log.append({"role": "system", "content": "a rule added later"})
    t.update(log)
    assert (t.system, t.messages) == semconv.messages(log)
    assert system == [{"type": "text", "content": "sys"}]  # a new list: the earlier call's kept its own
    log[:] = [copy.deepcopy(m) for m in log]  # equal copies: nothing to convert again
    assert t.update(log) == (2, 3)
    assert t.update([]) == (0, 0) and (t.system, t.messages) == ([], [])


# -- through a run --------------------------------------------------------------------------------------


@tool(description="Read something.")
def read(key: str) -> str:
    n = int(key)
    if n % 7 == 3:
        return f"big {n}\n" + ('line "quoted" \\ é€😀\n' * 150)
    if n == 4:
        return "mail bob@example.com"
    return f"result {n}"


class Script:
    """A pre_prompt hook changing the transcript as hooks do: one-off extra context, a system message,
    a pruned message (same length), a compaction, multimodal content, tool calls with arguments that are
    not JSON, equal copies of every message, a secret the run met before registered mid-run."""

    def __init__(self) -> None:
        self.secret = f"tok-{os.urandom(12).hex()}"

    def pre_prompt(self, state: Any, session_log: list[dict[str, Any]], context: Any, step: int) -> Any:
        if step == 12:
            session_log.append({"role": "system", "content": "a rule added before a compaction"})
        elif step == 16:
            session_log[3] = {**session_log[3], "content": "[pruned]"}
        elif step == 20:
            session_log[:] = [*session_log[:2], {"role": "user", "content": "summary"}, *session_log[-3:]]
        elif step == 21:
            session_log.append({"role": "system", "content": "a rule added mid-run"})
        elif step == 22:
            session_log.append({"role": "user", "content": f"use the token {self.secret}"})
        elif step == 23:
            parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
            session_log.append({"role": "user", "content": parts})
            call = {"id": "c9", "type": "function", "function": {"name": "read", "arguments": "{not json"}}
            session_log.append({"role": "assistant", "content": "thinking", "tool_calls": [call]})
            session_log.append({"role": "tool", "tool_call_id": "c9", "content": ["part", {"text": "t"}]})
        elif step == 27:
            session_log[:] = [copy.deepcopy(m) for m in session_log]
        elif step == 30:
            add_secret(self.secret, "test_token")
        if step % 4 == 1:
            return f"extra context for step {step}"
        return None


class Expect:
    """Outermost hook: what the chat span's content must be, converted from scratch before the call."""

    def __init__(self, limit: int) -> None:
        self.limit, self.redactor = limit, Redactor()
        self.expected: list[tuple[str | None, str]] = []

    def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
        system, messages = semconv.messages(call.messages)
        redact = self.redactor.redact_json
        expected = cap_json(redact(system), self.limit) if system else None
        self.expected.append((expected, cap_json(redact(messages), self.limit)))
        return call_next(call)


def _run(hooks: list[Any], steps: int, provider: Any) -> None:
    script = [json.dumps({"tool": "read", "args": {"key": str(i)}}) for i in range(steps)]
    llm = MockLLMBackend(script, model="m")
    config = LoopConfig(max_steps=steps, tool_timeout_s=None)
    tools = tools_from([read])
    for _ in composable_loop(
        llm, {"goal": "go"}, tools, hooks, config, DefaultState(max_steps=steps), system_prompt="be brief"
    ):
        pass


@pytest.mark.parametrize("limit", [400, 3000, 32_000])
def test_chat_spans_carry_what_a_whole_conversion_gives(limit: int) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    expect, script = Expect(limit), Script()
    hook = TracingHook(provider, capture_content=True, max_content_chars=limit)
    _run([script, expect, hook], 40, provider)
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(chats) == len(expect.expected) == 40
    for span, (system, messages) in zip(chats, expect.expected, strict=True):
        assert span.attributes.get(N.GEN_AI_SYSTEM_INSTRUCTIONS) == system
        assert span.attributes[N.GEN_AI_INPUT_MESSAGES] == messages
    last = chats[-1].attributes
    if limit == 32_000:  # all of it fits: the changes show
        assert script.secret in chats[25].attributes[N.GEN_AI_INPUT_MESSAGES]
        assert script.secret not in last[N.GEN_AI_INPUT_MESSAGES]  # registered at step 30
        assert "[REDACTED:test_token]" in last[N.GEN_AI_INPUT_MESSAGES]
        assert "a rule added mid-run" in last[N.GEN_AI_SYSTEM_INSTRUCTIONS]
        assert (
            "image_url" not in last[N.GEN_AI_INPUT_MESSAGES] and "{not json" in last[N.GEN_AI_INPUT_MESSAGES]
        )


def test_a_redactor_whose_redact_json_is_not_item_by_item_gets_a_whole_conversion() -> None:
    class Odd:
        def __call__(self, text: str) -> str:
            return text

        def redact_json(self, value: Any) -> Any:
            return {"n": len(value)} if isinstance(value, list) else value

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _run([TracingHook(provider, capture_content=True, redact=Odd())], 3, provider)
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert [json.loads(s.attributes[N.GEN_AI_INPUT_MESSAGES]) for s in chats] == [{"n": k} for k in (1, 3, 5)]


def test_per_call_work_is_flat_in_the_run_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """500 steps: every message converted once (not once per call), and the characters encoded per call
    late in the run no more than early on."""
    conversions = [0]
    real_message = semconv.message

    def counting_message(m: dict[str, Any]) -> dict[str, Any]:
        conversions[0] += 1
        return real_message(m)

    encoded = [0]  # characters encoded before the first call, then per call
    real_dumps = T._dumps

    def counting_dumps(value: Any) -> str:
        out = real_dumps(value)
        encoded[-1] += len(out)
        return out

    class PerCall:
        def wrap_llm_call(self, call: Any, call_next: Any) -> Any:
            encoded.append(0)
            return call_next(call)

    monkeypatch.setattr(semconv, "message", counting_message)
    monkeypatch.setattr(T, "_dumps", counting_dumps)
    provider = TracerProvider()
    _run([PerCall(), TracingHook(provider, capture_content=True)], 500, provider)
    messages = 1 + 2 * 500  # the task, then an answer and a tool result per step (the system prompt aside)
    assert conversions[0] <= messages
    early, late = sum(encoded[51:101]), sum(encoded[451:501])
    assert late <= 1.5 * early, (early, late)


def test_the_run_keeps_nothing_encoded_once_it_ended() -> None:
    provider = TracerProvider()
    hook = TracingHook(provider, capture_content=True)
    seen: list[Any] = []

    class Peek:
        def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
            from looplet.hooks import current_run

            seen.append(current_run().scratch[hook])

    _run([hook, Peek()], 3, provider)
    assert seen and seen[0].capture == {}


def test_provenance_routes_agree_on_prompts_the_transcript_changed_under(tmp_path: Any) -> None:
    """The hook route and the span route convert with the same Transcript: the same prompt files, byte for
    byte, with a system message added mid-run, a pruned message, a compaction and multimodal content."""
    from looplet.provenance import ProvenanceSink

    spans_sink = ProvenanceSink(tmp_path / "spans", fsync=False)
    hook_sink = ProvenanceSink(tmp_path / "hook", fsync=False)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans_sink))
    tracing = TracingHook(provider, capture_content=True, max_content_chars=200_000)
    _run([Script(), tracing, hook_sink.trajectory_hook()], 26, provider)
    provider.force_flush()
    a, b = spans_sink.last_path, hook_sink.last_path
    prompts = sorted(p.name for p in a.glob("call_*_prompt.txt"))
    assert len(prompts) == 26 and prompts == sorted(p.name for p in b.glob("call_*_prompt.txt"))
    for name in prompts:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "a rule added mid-run" in (b / prompts[-1]).read_text()
    provider.shutdown()


def test_a_message_that_cannot_be_converted_leaves_the_transcript_whole() -> None:
    t = semconv.Transcript()
    log: list[Any] = [{"role": "user", "content": "go"}]
    t.update(log)
    with pytest.raises(AttributeError):
        t.update([*log, {"role": "assistant", "content": "a"}, "not a message"])
    log.append({"role": "assistant", "content": "b"})
    t.update(log)
    assert (t.system, t.messages) == semconv.messages(log)
