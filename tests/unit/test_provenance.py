"""ProvenanceSink, the trajectory folder, looplet show and replay.

Runs are the scripted demo agent (``looplet.demo.build``) on both loops. The exporter path uses the real
OpenTelemetry SDK (TracerProvider + BatchSpanProcessor) and the real TracingHook.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from looplet import DefaultState, LoopConfig, MockLLMBackend, ToolCall, tool, tools_from
from looplet.demo import TASK, build
from looplet.provenance import ProvenanceSink, TrajectoryError, load_trajectory, replay_loop
from looplet.provenance import cli as show_cli
from looplet.provenance import format as fmt
from looplet.provenance import replay as replay_cli
from tests.unit._harness import MODES, run

opentelemetry = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from looplet.telemetry.tracing import TracingHook  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def demo(mode: str, hooks: list[Any], llm: Any = None, tools: Any = None, task: Any = TASK, **kw: Any):
    llm0, tools0, config = build(latency_s=0.0)
    return run(
        mode,
        llm=llm or llm0,
        tools=tools or tools0,
        task=task,
        config=config,
        hooks=hooks,
        state=DefaultState(max_steps=config.max_steps),
        **kw,
    )


def traced(
    sink: ProvenanceSink, capture: bool = True
) -> tuple[TracerProvider, InMemorySpanExporter, TracingHook]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(sink, schedule_delay_millis=50))
    return provider, memory, TracingHook(tracer_provider=provider, capture_content=capture)


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def comparable_step(raw: bytes) -> dict[str, Any]:
    d = json.loads(raw)
    for key in ("llm_ms", "tool_ms", "span_id"):
        d.pop(key, None)
    d["tool_result"].pop("duration_ms", None)
    return d


def comparable_traj(raw: bytes) -> dict[str, Any]:
    d = json.loads(raw)
    calls = [{k: v for k, v in c.items() if k not in ("duration_ms", "span_id")} for c in d["calls"]]
    keep = (
        "schema_version",
        "task",
        "agent",
        "models",
        "provider",
        "stop_reason",
        "error",
        "final_output",
        "usage",
        "cost_usd",
        "llm_calls",
        "step_count",
        "steps",
        "content",
        "tools",
    )
    return {**{k: d[k] for k in keep}, "calls": calls}


# ------------------------------------------------------------------------------------------------------
# the folder
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_hook_writes_the_trajectory_folder(tmp_path: Path, mode: str) -> None:
    sink = ProvenanceSink(tmp_path)
    steps, result = demo(mode, [sink.trajectory_hook()])
    folder = sink.last_path
    assert folder == tmp_path  # one run through the sink: its files in dir itself

    traj = json.loads((folder / "trajectory.json").read_text())
    assert list(traj)[0] == "schema_version" and traj["schema_version"] == fmt.SCHEMA_VERSION
    assert traj["task"] == TASK and traj["agent"] == "demo-agent" and traj["models"] == ["gpt-4o-mini"]
    assert traj["stop_reason"] == "done" and traj["final_output"] == result.final_output
    assert traj["run_id"] == result.run_id and traj["trace_id"] is None
    assert traj["usage"] == result.usage.to_dict() and traj["cost_usd"] == pytest.approx(result.cost_usd)
    assert traj["llm_calls"] == result.llm_calls >= 7 and traj["step_count"] == len(steps) >= 8
    assert traj["duration_ms"] == pytest.approx(result.duration_ms, abs=0.01)
    assert [s["tool"] for s in traj["steps"]] == [s.tool_call.tool for s in steps]
    assert {t["name"] for t in traj["tools"]} == {"search_docs", "fetch_page", "calculator", "done"}
    kinds = [e["kind"] for e in traj["timeline"]]
    assert kinds.count("llm") == result.llm_calls and kinds.count("tool") == len(steps)
    assert all(e["step"] is not None for e in traj["timeline"] if e["kind"] == "tool")

    for s in steps:
        d = json.loads((folder / f"steps/step_{s.number:02d}.json").read_text())
        assert d["tool_call"] == s.tool_call.to_dict()
        assert d["tool_result"]["data"] == s.tool_result.to_dict()["data"]
        assert d["tool_result"]["error"] == s.tool_result.error
        assert d["usage"] == (s.usage.to_dict() if s.usage else None)
        assert d["cost_usd"] == s.cost_usd and d["llm_call"] is not None
    # steps 4 and 5 came from one LLM response: the usage sits on the first only
    s4, s5 = (json.loads((folder / f"steps/step_0{n}.json").read_text()) for n in (4, 5))
    assert s4["llm_call"] == s5["llm_call"] and s4["usage"] and s5["usage"] is None

    prompt3 = load_trajectory(folder).prompt(3)  # the whole prompt, from the files of calls 1 to 3
    assert prompt3 is not None and prompt3.startswith("[system]\n") and TASK["goal"] in prompt3
    # each prompt file holds what the call added to the one before (a run's folder grows with its steps)
    assert (
        (folder / "call_03_prompt.txt").read_text().startswith("[… the prompt of call 2 (call_02_prompt.txt)")
    )
    assert prompt3.count("[system]") == 1 and prompt3.endswith("/looplet/hooks\n")
    assert "[tool call_2_0]\nERROR: Tool fetch_page raised LookupError" in prompt3
    assert (
        folder / "call_03_response.txt"
    ).read_text() == '[assistant]\n→ fetch_page({"url": "https://docs.example/looplet"}) id=call_3_0\n'
    assert len([p for p in folder.iterdir() if p.name.startswith("call_")]) == 2 * result.llm_calls

    # the manifest lists every other file with its size and hash
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    on_disk = files_of(folder)
    del on_disk["manifest.jsonl"]
    assert {m["path"] for m in manifest} == set(on_disk)
    for m in manifest:
        assert m["bytes"] == len(on_disk[m["path"]])
        assert m["sha256"] == hashlib.sha256(on_disk[m["path"]]).hexdigest()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no temporary files left behind


def test_step_files_are_diff_friendly(tmp_path: Path) -> None:
    """Two runs of the same agent: step files differ only in durations and ids; no wall-clock time."""
    sink = ProvenanceSink(tmp_path, fsync=False)
    steps, _result = demo("sync", [sink.trajectory_hook()])
    demo("sync", [sink.trajectory_hook()])
    a, b = sink.written
    assert a != b
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
    for n in range(1, len(steps) + 1):
        ra, rb = (p / f"steps/step_{n:02d}.json" for p in (a, b))
        assert not stamp.search(ra.read_text())
        assert comparable_step(ra.read_bytes()) == comparable_step(rb.read_bytes())
    for name in (p.name for p in a.iterdir() if p.name.startswith("call_")):
        assert (a / name).read_text() == (b / name).read_text()


def test_json_files_hold_one_value_per_line_whatever_the_strings_hold() -> None:
    """Lists of objects are encoded at once and cut between objects: strings that look like the cut, and
    objects holding lists of objects, still give the same JSON back; a list of flat objects is one
    object per line."""
    tricky = ['}, {"a": 1}', '"}, {"', "\\", "\n", "ü", "\u2028", ""]
    flat = [{"name": t, "n": i, "x": None, "ok": i % 2 == 0, "ms": 1.5} for i, t in enumerate(tricky)]
    nested = [{"tool_calls": [{"args": {"q": t}}, {"args": {"items": [{"k": t}, {"k": 2}]}}]} for t in tricky]
    doc = {"number": 3, "text": 'a "quoted" }, {" line', "flat": flat, "nested": nested, "scalars": tricky}
    doc |= {"empty": [], "nan": float("nan"), "inf": float("inf")}
    text = fmt._lines(doc)
    back = json.loads(text)
    assert back["flat"] == flat and back["nested"] == nested and back["scalars"] == tricky
    assert back["text"] == doc["text"] and back["empty"] == [] and back["nan"] != back["nan"]
    lines = text.split("\n")  # not splitlines(): U+2028 is written as it is, inside a string
    start = lines.index('  "flat": [') + 1
    rows = lines[start : start + len(flat)]  # one flat object a line
    assert [json.loads(row.strip().rstrip(",")) for row in rows] == flat and lines[
        start + len(flat)
    ] == "  ],"


def test_argument_key_order_does_not_change_the_files(tmp_path: Path) -> None:
    flip = iter([True, False])

    @tool(description="echo")
    def echo(a: int, b: int) -> dict[str, int]:
        return {"b": b, "a": a} if next(flip) else {"a": a, "b": b}

    sink = ProvenanceSink(tmp_path, fsync=False)
    for order in ('{"tool": "echo", "args": {"a": 1, "b": 2}}', '{"tool": "echo", "args": {"b": 2, "a": 1}}'):
        llm = MockLLMBackend([order, '{"tool": "done", "args": {"answer": "ok"}}'])
        run("sync", llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[sink.trajectory_hook()])
    a, b = sink.written
    assert "".join((a / "steps/step_01.json").read_text().split()).count('{"a":1,"b":2}') == 2  # args, data
    assert comparable_step((a / "steps/step_01.json").read_bytes()) == comparable_step(
        (b / "steps/step_01.json").read_bytes()
    )


def test_several_runs_in_one_process_get_separate_folders(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    hook = sink.trajectory_hook()
    results = []
    threads = [threading.Thread(target=lambda: results.append(demo("sync", [hook])[1])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.written) == 3 and len({p.name for p in sink.written}) == 3
    for path in sink.written:
        traj = load_trajectory(path)
        assert traj.run_id in {r.run_id for r in results}
        mine = next(r for r in results if r.run_id == traj.run_id)
        assert len(traj.steps) == len(mine.steps) and len(traj.calls) == traj.llm_calls == mine.llm_calls
        assert traj.usage == mine.usage  # no run's calls leaked into another's


def test_prompt_and_response_files_are_capped(tmp_path: Path) -> None:
    big = "x" * 5000
    sink = ProvenanceSink(tmp_path, max_chars_per_call=1000, fsync=False)
    _steps, result = demo("sync", [sink.trajectory_hook()], task={"goal": "start " + big + " end"})
    folder = sink.last_path
    prompt = (folder / "call_01_prompt.txt").read_text()  # the system prompt and the long task
    assert len(prompt) < 1100 and "cut by max_chars_per_call=1000" in prompt
    assert prompt.startswith("[system]") and prompt.rstrip().endswith("x end")  # head and tail kept
    call = json.loads((folder / "trajectory.json").read_text())["calls"][0]
    assert call["prompt_truncated"] is True and call["response_truncated"] is False
    with pytest.raises(ValueError, match="max_chars_per_call"):
        ProvenanceSink(tmp_path, max_chars_per_call=0)


# ------------------------------------------------------------------------------------------------------
# redaction
# ------------------------------------------------------------------------------------------------------

SECRET_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
EMAIL = "alice.secret@example.com"
TOKEN = "Bearer abcdef0123456789xyz"


@pytest.mark.parametrize("mode", MODES)
def test_redaction_covers_every_byte_but_not_what_the_model_sees(tmp_path: Path, mode: str) -> None:
    seen: list[Any] = []

    @tool(description=f"Look up a user. Admin contact: {EMAIL}")
    def lookup(user: str) -> dict[str, str]:
        seen.append(user)
        return {"email": EMAIL, "auth": TOKEN}

    class Recording(MockLLMBackend):
        def generate(self, messages: Any, **kw: Any) -> Any:
            seen.append(json.dumps(messages))
            return super().generate(messages, **kw)

        async def agenerate(self, messages: Any, **kw: Any) -> Any:
            seen.append(json.dumps(messages))
            return await super().agenerate(messages, **kw)

    custom = ProvenanceSink(tmp_path / "custom", redact=lambda s: s.replace("Admin", "[ROLE]"), fsync=False)
    builtin = ProvenanceSink(tmp_path / "builtin", redact=True, fsync=False)
    for _run in range(
        2
    ):  # the second run finds what the sinks keep redacted from the first (tool schemas, names)
        seen.clear()
        llm = Recording(
            [
                {"tool": "lookup", "args": {"user": EMAIL}},
                {"tool": "done", "args": {"answer": f"key {SECRET_KEY}"}},
            ],
            usage=None,
        )
        steps, result = run(
            mode,
            llm=llm,
            tools=tools_from([lookup]),
            hooks=[builtin.trajectory_hook(), custom.trajectory_hook()],
            task={"goal": f"find {EMAIL}", "api_key": SECRET_KEY},
            system_prompt=f"Use {TOKEN} when asked.",
        )
        # the model and the tool saw the originals
        assert seen[1] == EMAIL and result.final_output == f"key {SECRET_KEY}"
        assert SECRET_KEY in seen[0] and TOKEN in seen[0]
        blob = b"".join(files_of(builtin.last_path).values()).decode()
        for secret in (SECRET_KEY, EMAIL, "abcdef0123456789xyz", "alice.secret"):
            assert secret not in blob
        for marker in (
            "[REDACTED:email]",
            "[REDACTED:openai_key]",
            "[REDACTED:secret_field]",
            "[REDACTED:bearer_token]",
        ):
            assert marker in blob, marker
        custom_blob = b"".join(files_of(custom.last_path).values()).decode()
        assert "Admin contact" not in custom_blob and "[ROLE] contact" in custom_blob  # tool schemas too
        assert EMAIL in custom_blob  # only what the user's callable removes
    later = [p for p in (tmp_path / "builtin").iterdir() if p.is_dir() and p.name != "steps"]
    assert (tmp_path / "builtin" / "trajectory.json").is_file() and len(later) == 1  # the first run, then one


def test_looplets_own_strings_are_redacted_too(tmp_path: Path) -> None:
    """Not only the user's data: an error message, a tool name, the agent's name go through the redactor,
    in step files and in trajectory.json alike."""

    @tool(description="Leaky.")
    def leaky(x: int) -> int:
        raise RuntimeError(f"upstream refused key {SECRET_KEY}")

    llm = MockLLMBackend([{"tool": "leaky", "args": {"x": 1}}, {"tool": "done", "args": {"answer": "ok"}}])
    builtin = ProvenanceSink(tmp_path / "builtin", fsync=False)
    seen: list[str] = []
    custom = ProvenanceSink(
        tmp_path / "custom", redact=lambda t: seen.append(t) or t.replace("leaky", "[tool]")
    )
    config = LoopConfig(agent_name="leaky-agent")
    run("sync", llm=llm, tools=tools_from([leaky]), task={"goal": "g"}, config=config,
        hooks=[builtin.trajectory_hook(), custom.trajectory_hook()])  # fmt: skip
    blob = b"".join(files_of(builtin.last_path).values()).decode()
    assert SECRET_KEY not in blob and "upstream refused key [REDACTED:openai_key]" in blob
    step = json.loads((custom.last_path / "steps/step_01.json").read_text())
    traj = json.loads((custom.last_path / "trajectory.json").read_text())
    assert step["tool_call"]["tool"] == "[tool]" and traj["steps"][0]["tool"] == "[tool]"
    assert traj["agent"] == "[tool]-agent" and "[tool]" in step["tool_result"]["error"]
    assert [r for r in traj["timeline"] if r["kind"] == "tool"][0]["name"] == "execute_tool [tool]"
    assert "leaky-agent" in seen and "tool_exception" in seen  # the callable sees looplet's strings


def test_redact_argument_is_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="redact"):
        ProvenanceSink(tmp_path, redact=42)
    with pytest.raises(TypeError, match="path"):
        ProvenanceSink(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------------


def test_a_crash_while_writing_leaves_no_half_written_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "steps/step_01.json": "{}\n",
        "call_01_prompt.txt": "p",
        "trajectory.json": '{"schema_version": 1}\n',
    }
    real = fmt._write_file
    calls = {"n": 0}

    def dying(path: str, data: bytes, fsync: bool) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(path, data, fsync)

    monkeypatch.setattr(fmt, "_write_file", dying)
    with pytest.raises(OSError):
        fmt.write_folder(tmp_path, "run-a", files)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin

    (tmp_path / "made-by-user").mkdir()  # the sink's dir, made beforehand: the run goes in it
    calls["n"] = 0
    with pytest.raises(OSError):
        fmt.write_folder(tmp_path, "made-by-user", files)
    assert list((tmp_path / "made-by-user").iterdir()) == []
    monkeypatch.setattr(fmt, "_write_file", real)
    fmt.write_folder(tmp_path, "made-by-user", files)
    assert set(files_of(tmp_path / "made-by-user")) == {*files, "manifest.jsonl"}


# ------------------------------------------------------------------------------------------------------
# the span exporter
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_span_exporter_writes_the_same_folder_as_the_hook(tmp_path: Path, mode: str) -> None:
    sink = ProvenanceSink(tmp_path / "spans", fsync=False)
    hook_sink = ProvenanceSink(tmp_path / "hook", fsync=False)
    provider, memory, tracing = traced(sink)
    steps, result = demo(mode, [tracing, hook_sink.trajectory_hook()])
    assert provider.force_flush()
    a, b = sink.last_path, hook_sink.last_path
    assert a == tmp_path / "spans" and b == tmp_path / "hook"

    fa, fb = files_of(a), files_of(b)
    assert set(fa) == set(fb)
    for name in fa:
        if name.startswith("steps/"):
            assert comparable_step(fa[name]) == comparable_step(fb[name]), name
        elif name.startswith("call_"):
            assert fa[name] == fb[name], name  # the same prompt and response text, byte for byte
    assert comparable_traj(fa["trajectory.json"]) == comparable_traj(fb["trajectory.json"])

    traj = json.loads(fa["trajectory.json"])
    spans = memory.get_finished_spans()
    agent = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert traj["trace_id"] == f"{agent.context.trace_id:032x}" == result.trace_id
    step_spans = {f"{s.context.span_id:016x}" for s in spans if s.name == "looplet.step"}
    for s in steps:
        d = json.loads(fa[f"steps/step_{s.number:02d}.json"])
        assert d["span_id"] in step_spans and d["span_id"] == s.span_id and d["trace_id"] == result.trace_id
    provider.shutdown()


def test_spans_without_content_still_give_steps_usage_and_timings(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    provider, _memory, tracing = traced(sink, capture=False)
    steps, result = demo("sync", [tracing])
    provider.force_flush()
    t = load_trajectory(sink.last_path)
    assert t.data["content"] is False and [s.tool_call.tool for s in t.steps] == [
        s.tool_call.tool for s in steps
    ]
    assert t.usage.to_dict() == result.usage.to_dict() and t.stop_reason == "done"
    assert t.steps[1].tool_result.error_kind == "tool_exception" and "404" in t.steps[1].tool_result.error
    assert not list(sink.last_path.glob("call_*_prompt.txt"))
    out = io.StringIO()
    assert show_cli.main([str(sink.last_path)], out=out) == 0
    assert "without content capture" in out.getvalue()
    with pytest.raises(TrajectoryError, match="cannot be replayed"):
        replay_loop(sink.last_path, tools=build()[1])
    provider.shutdown()


def test_exporter_contract(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    assert sink.export([]) is SpanExportResult.SUCCESS
    assert sink.force_flush() is True and sink.force_flush(timeout_millis=1) is True
    provider, _memory, tracing = traced(sink)
    demo("sync", [tracing])
    provider.shutdown()  # flushes the batch processor, then shuts the sink down
    assert sink.last_path is not None and load_trajectory(sink.last_path).stop_reason == "done"
    assert sink.export([]) is SpanExportResult.FAILURE  # after shutdown
    sink.shutdown()  # twice is harmless


def test_export_never_raises_into_the_sdk(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)

    class Broken:
        name = "invoke_agent x"

        @property
        def context(self) -> Any:
            raise RuntimeError("boom")

    assert sink.export([Broken()]) is SpanExportResult.FAILURE


def test_runs_interleaved_in_batches_go_to_their_own_folders(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(sink, max_export_batch_size=5, schedule_delay_millis=10))
    tracing = TracingHook(tracer_provider=provider, capture_content=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(demo("sync", [tracing])[1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    provider.force_flush()
    assert sorted(load_trajectory(p).run_id for p in sink.written) == sorted(r.run_id for r in results)
    for p in sink.written:
        t = load_trajectory(p)
        mine = next(r for r in results if r.run_id == t.run_id)
        assert len(t.steps) == len(mine.steps) and t.llm_calls == len(t.calls) == mine.llm_calls
    provider.shutdown()


def test_global_provider_in_a_fresh_process(tmp_path: Path) -> None:
    """Added to the global TracerProvider; the folder is there once the provider shuts down at exit."""
    code = f"""
import atexit
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from looplet import ProvenanceSink, TracingHook, run_loop
from looplet.demo import build, TASK
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(ProvenanceSink({str(tmp_path)!r})))
trace.set_tracer_provider(provider)
llm, tools, config = build(latency_s=0.0)
run_loop(llm, TASK, tools, hooks=[TracingHook(capture_content=True)], config=config)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert load_trajectory(tmp_path).stop_reason == "done"


# ------------------------------------------------------------------------------------------------------
# wrapped backend
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_wrap_llm_gives_the_same_folder_as_the_hook(tmp_path: Path, mode: str) -> None:
    wrapped = ProvenanceSink(tmp_path / "wrapped", fsync=False)
    hooked = ProvenanceSink(tmp_path / "hook", fsync=False)
    llm, _tools, _config = build(latency_s=0.0)
    steps, result = demo(mode, [hooked.trajectory_hook()], llm=wrapped.wrap_llm(llm))
    assert wrapped.last_path is None  # written at flush()
    (path,) = wrapped.flush()
    fa, fb = files_of(path), files_of(hooked.last_path)
    assert set(fa) == set(fb)
    for name in fa:
        if name.startswith("steps/"):
            assert comparable_step(fa[name]) == comparable_step(fb[name]), name
        elif name.startswith("call_"):
            assert fa[name] == fb[name], name
    assert comparable_traj(fa["trajectory.json"]) == comparable_traj(fb["trajectory.json"])
    assert wrapped.flush() == []  # nothing pending any more


def test_wrap_llm_keeps_the_backend_interface(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "a"}}'], model="m1")
    wrapped = sink.wrap_llm(llm)
    assert wrapped.model == "m1" and wrapped.provider == "mock" and callable(wrapped.agenerate)

    class SyncOnly:
        def generate(self, messages: Any, **kw: Any) -> Any:
            return llm.generate(messages, **kw)

    assert getattr(sink.wrap_llm(SyncOnly()), "agenerate", None) is None
    with pytest.raises(TypeError, match="backend"):
        sink.wrap_llm(object())
    # a second run ending writes the first one's folder without an explicit flush
    for _ in range(2):
        llm2 = MockLLMBackend(['{"tool": "done", "args": {"answer": "a"}}'])
        run("sync", llm=sink.wrap_llm(llm2), tools=tools_from([]), task={"goal": "g"})
    run(
        "sync",
        llm=sink.wrap_llm(MockLLMBackend(['{"tool": "done", "args": {"answer": "b"}}'])),
        tools=tools_from([]),
        task={"goal": "g"},
    )
    assert len(sink.written) == 2
    assert len(sink.flush()) == 1


# ------------------------------------------------------------------------------------------------------
# sub-agents
# ------------------------------------------------------------------------------------------------------


def test_sub_agent_steps_are_children_in_both_paths(tmp_path: Path) -> None:
    from looplet.loop import run_loop
    from looplet.subagents import agent_tool

    span_sink = ProvenanceSink(tmp_path / "spans", fsync=False)
    hook_sink = ProvenanceSink(tmp_path / "hook", fsync=False)
    provider, _memory, tracing = traced(span_sink)

    @agent_tool(description="Research a question.")
    def research(question: str) -> Any:
        llm = MockLLMBackend(
            [
                '{"tool": "search_docs", "args": {"query": "looplet"}}',
                '{"tool": "done", "args": {"answer": "found it"}}',
            ],
            usage="estimate",
        )
        return run_loop(
            llm,
            {"goal": question},
            build()[1],
            hooks=[tracing, hook_sink.trajectory_hook()],
            config=LoopConfig(agent_name="researcher"),
        )

    llm = MockLLMBackend(
        [
            '{"tool": "research", "args": {"question": "what is looplet?"}}',
            '{"tool": "done", "args": {"answer": "done"}}',
        ],
        usage="estimate",
    )
    run(
        "sync",
        llm=llm,
        tools=tools_from([research]),
        task={"goal": "ask"},
        hooks=[tracing, hook_sink.trajectory_hook()],
    )
    provider.force_flush()
    for sink in (span_sink, hook_sink):
        parent_dir, child_dir = sink.written  # the parent first: it is the run in dir itself
        assert parent_dir == sink.dir and child_dir.parent == sink.dir and "researcher" in child_dir.name
        parent = load_trajectory(sink.dir)
        assert [s.tool_call.tool for s in load_trajectory(child_dir).steps] == ["search_docs", "done"]
        kids = parent.steps[0].children
        assert [c.tool_call.tool for c in kids] == ["search_docs", "done"], sink
        out = io.StringIO()
        show_cli.main([str(parent.path)], out=out)
        assert re.search(r"\n    ↳ #1 ✓ search_docs\(query='looplet'\)", out.getvalue())
    provider.shutdown()


# ------------------------------------------------------------------------------------------------------
# OTLP JSON
# ------------------------------------------------------------------------------------------------------


def _otlp_lines(spans: Any, hex_ids: bool) -> str:
    """OTLP JSON as the Collector's file exporter writes it (hex ids), or protobuf's JSON mapping (base64)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    doc = MessageToDict(encode_spans(spans))
    if hex_ids:
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if s.get(key):
                            s[key] = base64.b64decode(s[key]).hex()
    return json.dumps(doc) + "\n"


@pytest.mark.parametrize("hex_ids", [True, False])
def test_otlp_json_offline(tmp_path: Path, hex_ids: bool) -> None:
    sink = ProvenanceSink(tmp_path / "live", fsync=False)
    provider, memory, tracing = traced(sink)
    demo("sync", [tracing])
    demo("sync", [tracing])
    provider.force_flush()
    spans = memory.get_finished_spans()
    path = tmp_path / "spans.jsonl"
    half = len(spans) // 2  # two requests, one per line, split across runs
    path.write_text(_otlp_lines(spans[:half], hex_ids) + _otlp_lines(spans[half:], hex_ids))

    offline = ProvenanceSink(tmp_path / "offline", fsync=False)
    written = offline.load_otlp_json(path)
    assert len(written) == 2 and written[0] == tmp_path / "offline"
    live_by_run = {load_trajectory(p).run_id: p for p in sink.written}
    for p in written:
        live = live_by_run[load_trajectory(p).run_id]
        fa, fb = files_of(p), files_of(live)
        assert set(fa) == set(fb)
        for name in fa:
            if name != "manifest.jsonl" and name != "trajectory.json":
                assert fa[name] == fb[name], name
        assert comparable_traj(fa["trajectory.json"]) == comparable_traj(fb["trajectory.json"])

    out = io.StringIO()
    assert show_cli.main([str(path), "--width", "120"], out=out) == 0
    assert len(re.findall(r"#\d+ ✓ calculator\(expression='12 \+ 3'\) → 15\.0", out.getvalue())) == 2
    provider.shutdown()


def test_otlp_json_from_a_collector_file(tmp_path: Path) -> None:
    """A hand-written line in the Collector file exporter's shape: hex ids, string int64s, status codes."""

    def attr(k: str, v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"key": k, "value": {"boolValue": v}}
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        return {"key": k, "value": {"stringValue": v}}

    tid = "5b8efff798038103d269b633813fc60c"
    spans = [
        {
            "traceId": tid,
            "spanId": "0000000000000003",
            "parentSpanId": "0000000000000002",
            "name": "execute_tool add",
            "kind": 1,
            "startTimeUnixNano": "1700000000030000000",
            "endTimeUnixNano": "1700000000040000000",
            "attributes": [
                attr("gen_ai.tool.name", "add"),
                attr("gen_ai.tool.call.id", "c1"),
                attr("gen_ai.tool.call.arguments", '{"a": 1}'),
                attr("looplet.tool.error_kind", "timeout"),
            ],
            "status": {"code": 2, "message": "tool timed out"},
        },
        {
            "traceId": tid,
            "spanId": "0000000000000004",
            "parentSpanId": "0000000000000002",
            "name": "chat m",
            "kind": 3,
            "startTimeUnixNano": "1700000000010000000",
            "endTimeUnixNano": "1700000000020000000",
            "attributes": [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.usage.input_tokens", 10),
                attr("gen_ai.usage.output_tokens", 3),
                attr("gen_ai.response.model", "m"),
            ],
            "status": {},
        },
        {
            "traceId": tid,
            "spanId": "0000000000000002",
            "parentSpanId": "0000000000000001",
            "name": "looplet.step",
            "startTimeUnixNano": "1700000000005000000",
            "endTimeUnixNano": "1700000000041000000",
            "attributes": [attr("looplet.step.number", 1)],
            "status": {},
        },
        {
            "traceId": tid,
            "spanId": "0000000000000001",
            "name": "invoke_agent calc",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000050000000",
            "attributes": [
                attr("gen_ai.agent.name", "calc"),
                attr("looplet.run.id", "r" * 32),
                attr("looplet.stop_reason", "max_steps"),
            ],
            "status": {"code": "STATUS_CODE_UNSET"},
        },
    ]
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": "looplet"}, "spans": spans}],
            }
        ]
    }
    path = tmp_path / "collector.json"
    path.write_text(json.dumps(doc) + "\n")
    (t,) = show_cli.load_any([str(path)])
    assert t.agent == "calc" and t.stop_reason == "max_steps" and t.trace_id == tid
    (s,) = t.steps
    assert (
        s.tool_call.tool == "add" and s.tool_call.args == {"a": 1} and s.tool_result.error == "tool timed out"
    )
    assert (
        s.tool_result.error_kind == "timeout"
        and s.usage.input_tokens == 10
        and s.llm_ms == pytest.approx(10.0)
    )
    assert t.duration_ms == pytest.approx(50.0) and t.usage.input_tokens == 10
    assert [e["kind"] for e in t.timeline] == ["llm", "tool"] and t.timeline[1]["error"] == "tool timed out"


# ------------------------------------------------------------------------------------------------------
# looplet show
# ------------------------------------------------------------------------------------------------------


def test_show_prints_steps_tokens_cost_timings_and_summary(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    steps, result = demo("sync", [sink.trajectory_hook()])
    out = io.StringIO()
    assert show_cli.main([str(tmp_path), "--width", "120"], out=out) == 0  # the parent folder works too
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("demo-agent · run ") and "gpt-4o-mini" in lines[0]
    assert f"task: {TASK['goal']}" in text
    step_lines = [line for line in lines if line.startswith("#")]
    assert len(step_lines) == len(steps)
    for line, step in zip(step_lines, steps, strict=True):
        assert line.startswith(step.pretty(96)[:40])
        if step.usage:
            assert f"{step.usage.total_tokens} tok" in line and f"${step.cost_usd:.6f}" in line
    assert "#2 ✗ fetch_page" in text and "ERROR: LookupError: 404 Not Found" in text
    u = result.usage
    cached = f" ({u.cached_input_tokens} cached)" if u.cached_input_tokens else ""
    assert (
        f"done: {len(steps)} steps, {result.llm_calls} LLM calls, {u.input_tokens} input + {u.output_tokens} "
        f"output tokens{cached}, cost ${result.cost_usd:.6f}"
    ) in text
    failed = sum(1 for s in steps if s.tool_result.error_kind == "tool_exception")
    assert f"failed steps: tool_exception ×{failed}" in text and f"answer: {result.final_output}" in text


def test_show_through_the_looplet_command(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    steps, _result = demo("sync", [sink.trajectory_hook()])
    html = tmp_path / "out.html"
    proc = subprocess.run(
        [sys.executable, "-m", "looplet", "show", str(sink.last_path), "--html", str(html)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"#{len(steps)} ✓ done(" in proc.stdout and f"wrote {html}" in proc.stdout
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<script>" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)  # nothing fetched
    assert "@import" not in page and "url(http" not in page
    assert page.count('<details class="step') == len(steps) and page.count('<div class="bar ') >= len(steps)


def test_html_escapes_content(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    evil = "</script><script>alert(1)</script><b>x</b>"
    demo("sync", [sink.trajectory_hook()], task={"goal": evil})
    from looplet.provenance.cli import render_html

    page = render_html([load_trajectory(sink.last_path)])
    assert evil not in page and "alert(1)" in page  # shown as text, never as markup
    assert page.count("<script") == 1 and page.count("</script>") == 1  # only looplet's own script


def test_html_shows_each_prompt_message_once_and_grows_linearly(tmp_path: Path) -> None:
    """A call's prompt block holds what the call added, after a link to the call it continues: the task
    is written once in the prompts however long the run, and the page grows with the steps, not their square."""
    from looplet.provenance.cli import render_html

    @tool
    def ping(x: int) -> int:
        """Echo x."""
        return x

    def page_of(n: int) -> str:
        answers = [[ToolCall("ping", {"x": i}, f"c{i}")] for i in range(n)]
        sink = ProvenanceSink(tmp_path / f"r{n}", fsync=False)
        steps, _result = run(
            "sync",
            llm=MockLLMBackend(answers),
            tools=tools_from([ping]),
            task={"goal": "GOAL-TEXT"},
            config=LoopConfig(max_steps=n),
            hooks=[sink.trajectory_hook()],
        )
        assert len(steps) == n
        return render_html([load_trajectory(sink.last_path)])

    short, long = page_of(10), page_of(80)
    assert long.count("GOAL-TEXT") == short.count("GOAL-TEXT") <= 3  # the task div and call 1's prompt
    assert 'the prompt of <a href="#r0-call-79">LLM call 79</a>, then:' in long
    assert "[tool c78]" in long[long.index('id="r0-call-80"') :]  # what call 80 added: the result before it
    assert len(long) < 10 * len(short)  # 8x the steps: linear, with room for longer numbers


# ------------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------------


def _good_folder(tmp_path: Path) -> Path:
    sink = ProvenanceSink(tmp_path / "runs", fsync=False)
    demo("sync", [sink.trajectory_hook()])
    return sink.last_path


def number_of(steps: Any, tool_name: str) -> int:
    """The number of the first step that called ``tool_name``."""
    return next(s.number for s in steps if s.tool_call.tool == tool_name)


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", r"no such file or directory"),
        ("foreign", r"not a trajectory folder: no trajectory\.json"),
        ("truncated", r"trajectory\.json: truncated JSON"),
        ("corrupted", r"trajectory\.json: corrupted JSON"),
        ("empty", r"trajectory\.json: is empty"),
        ("newer", r"trajectory\.json: schema version 99 is newer than this looplet"),
        ("no_version", r"trajectory\.json: not a looplet trajectory \(no schema_version\)"),
        ("not_object", r"trajectory\.json: not a looplet trajectory \(a JSON list"),
        ("bad_steps", r"field 'steps' must be a list"),
        ("missing_step", r"steps/step_03\.json: missing \(listed in trajectory\.json\)"),
        ("bad_step", r"steps/step_02\.json: truncated JSON"),
        ("otlp_garbage", r"spans\.json: line 1: not JSON"),
        ("otlp_foreign", r"spans\.json: line 1: not OTLP JSON traces"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(tmp_path: Path, damage: str, expected: str) -> None:
    folder = _good_folder(tmp_path)
    traj = folder / "trajectory.json"
    raw = traj.read_text()
    target = folder
    if damage == "missing":
        target = tmp_path / "nope"
    elif damage == "foreign":
        target = tmp_path / "foreign"
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    elif damage == "truncated":
        traj.write_text(raw[: len(raw) // 2])
    elif damage == "corrupted":
        traj.write_text(raw.replace('"agent":', '"agent" ', 1))
    elif damage == "empty":
        traj.write_text("")
    elif damage == "newer":
        traj.write_text(raw.replace('"schema_version": 1', '"schema_version": 99'))
    elif damage == "no_version":
        traj.write_text(json.dumps({"agent": "x"}))
    elif damage == "not_object":
        traj.write_text("[1, 2]")
    elif damage == "bad_steps":
        traj.write_text(json.dumps({**json.loads(raw), "steps": {"a": 1}}))
    elif damage == "missing_step":
        (folder / "steps/step_03.json").unlink()
    elif damage == "bad_step":
        p = folder / "steps/step_02.json"
        p.write_text(p.read_text()[:40])
    elif damage in ("otlp_garbage", "otlp_foreign"):
        target = tmp_path / "spans.json"
        target.write_text("{not json\n" if damage == "otlp_garbage" else '{"resourceLogs": []}\n')
    with pytest.raises(TrajectoryError, match=expected):
        show_cli.load_any([str(target)])
    from looplet.evals_cli import main as eval_main

    commands = [(show_cli.main, [str(target)]), (eval_main, [str(target)])]
    if not damage.startswith("otlp"):
        commands.append((replay_cli.main, [str(target), "--tools", "looplet.demo:build"]))
    for main, argv in commands:
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, out=out, err=err) == 2, (main, argv)
        assert re.search(expected, err.getvalue()) and str(target.name) in err.getvalue(), err.getvalue()
        assert len(err.getvalue().splitlines()) == 1  # one line, no traceback
    if damage == "truncated":  # and through the installed command, in a fresh interpreter
        for argv in (["show", str(target)], ["eval", str(target)], ["replay", str(target), "--tools", "x:y"]):
            proc = subprocess.run(
                [sys.executable, "-m", "looplet", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT
            )
            assert proc.returncode == 2 and re.search(expected, proc.stderr), (argv, proc.stderr)
            assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------------
# replay
# ------------------------------------------------------------------------------------------------------


def test_replay_with_the_same_tools_does_not_diverge(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path)
    report = replay_loop(folder, tools=build()[1])
    assert not report.diverged and report.first is None
    assert [s.tool_call.tool for s in report.steps] == [
        s.tool_call.tool for s in load_trajectory(folder).steps
    ]
    assert report.result.stop_reason == "done" and "same results at every step" in str(report)


def test_replay_reports_the_first_divergence(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path)
    from looplet.demo import fetch_page, search_docs

    @tool(description="Evaluate an arithmetic expression.", name="calculator")
    def calc(expression: str) -> float:
        return 16.0

    n = number_of(load_trajectory(folder).steps, "calculator")
    report = replay_loop(folder, tools=tools_from([search_docs, fetch_page, calc]))
    assert report.diverged and report.first.step == n and report.first.what == "result"
    assert (report.first.recorded, report.first.replayed) == (15.0, 16.0)
    assert f"diverged first at step {n}: result differs: recorded '15.0', replayed '16.0'" in str(report)
    assert len(report.divergences) == 1

    report = replay_loop(folder, tools=tools_from([search_docs, fetch_page]))  # calculator removed
    assert report.first.step == n and report.first.what == "error"
    assert "unknown" in report.first.replayed.lower() or "calculator" in report.first.replayed

    @tool(description="Fetch a documentation page by URL.", name="fetch_page")
    def fetch_all(url: str) -> str:
        return "page"

    report = replay_loop(folder, tools=tools_from([search_docs, fetch_all, calc]))
    assert report.first.step == 2 and report.first.what == "error"  # the 404 no longer happens


def test_replay_ending_early_is_reported(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path)
    recorded = len(load_trajectory(folder).steps)
    report = replay_loop(folder, tools=build()[1], config=LoopConfig(max_steps=3))
    assert [d.what for d in report.divergences] == ["missing_step"] * (recorded - 3) + ["stop_reason"]
    assert report.first.step == 4
    assert report.divergences[-1].replayed == "max_steps"


def test_replay_command_exit_codes(tmp_path: Path) -> None:
    folder = _good_folder(tmp_path)
    tools_py = tmp_path / "tools.py"
    tools_py.write_text(
        "from looplet import tool\nfrom looplet.demo import search_docs, fetch_page\n"
        "@tool(description='calc')\ndef calculator(expression: str) -> float:\n    return 16.0\n"
        "tools = [search_docs, fetch_page, calculator]\n"
    )
    out = io.StringIO()
    # the demo as it runs, with its permission policy: build() carries the hooks, so the replay has them too
    sink = ProvenanceSink(tmp_path / "as-the-demo-runs", fsync=False)
    demo("sync", [sink.trajectory_hook(), *build().hooks])
    assert replay_cli.main([str(sink.last_path), "--tools", "looplet.demo:build"], out=out) == 0
    assert replay_cli.main([str(folder), "--tools", f"{tools_py}:tools"], out=out) == 1
    n = number_of(load_trajectory(folder).steps, "calculator")
    assert f"diverged first at step {n}" in out.getvalue()
    err = io.StringIO()
    assert replay_cli.main([str(folder), "--tools", "looplet.demo:nothing"], out=out, err=err) == 2
    assert "has no 'nothing'" in err.getvalue()
    assert replay_cli.main([str(folder), "--tools", "no_such_module_xyz:tools"], out=out, err=err) == 2


def test_show_lists_eval_and_hook_events(tmp_path: Path) -> None:
    from looplet import Deny
    from looplet.evals import EvalHook

    class NoCalc:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
            return Deny("no arithmetic today") if tool_call.tool == "calculator" else None

    sink = ProvenanceSink(tmp_path, fsync=False)
    demo("sync", [NoCalc(), sink.trajectory_hook(), EvalHook()])
    t = load_trajectory(sink.last_path)
    names = [e["name"] for e in t.events]
    assert names.count("hook.decision") == 1 and names.count("eval") == 2
    assert t.steps[number_of(t.steps, "calculator") - 1].tool_result.error_kind == "denied"
    out = io.StringIO()
    show_cli.main([str(sink.last_path)], out=out)
    assert "events: eval ×2, hook.decision ×1" in out.getvalue()
    assert "eval eval_finished: pass" in out.getvalue()


def test_looplet_exports_the_names() -> None:
    import looplet

    assert looplet.ProvenanceSink is ProvenanceSink and looplet.replay_loop is replay_loop
    code = (
        "import sys, looplet.provenance.sink, looplet.provenance.format; "
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "False"  # the hook path imports no OpenTelemetry


def test_a_resumed_run_keeps_the_steps_from_before(tmp_path: Path) -> None:
    from looplet.demo import SCRIPT

    sink = ProvenanceSink(tmp_path, fsync=False)
    _llm, tools, _config = build()
    state = DefaultState(max_steps=3)
    run(
        "sync",
        llm=MockLLMBackend(SCRIPT[:3], usage="estimate"),
        tools=tools,
        task=TASK,
        state=state,
        hooks=[sink.trajectory_hook()],
    )
    state.max_steps = 15  # resume from the same state (what a checkpoint restores)
    _steps, result = run(
        "sync",
        llm=MockLLMBackend(SCRIPT[3:], usage="estimate"),
        tools=tools,
        task=TASK,
        state=state,
        hooks=[sink.trajectory_hook()],
    )
    first, second = (load_trajectory(p) for p in sink.written)
    assert first.stop_reason == "max_steps" and len(first.steps) == 3
    # the resumed run's folder holds the steps it took (numbered on from the checkpoint's)
    assert second.stop_reason == "done" and [s.number for s in second.steps] == list(
        range(4, len(state.steps) + 1)
    )
    assert len(state.steps) > 3 and len(_steps) == len(state.steps) - 3
    assert second.data["steps"][0]["llm_call"] == 1
    assert "[tool call_3_0]" in second.prompt(1)  # the resumed model saw the whole transcript


def test_flush_writes_a_wrapped_run_once_it_has_ended(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    from looplet import composable_loop

    llm, tools, config = build(latency_s=0.0)
    gen = composable_loop(llm=sink.wrap_llm(llm), tools=tools, task=TASK, config=config)
    next(gen), next(gen)
    assert sink.flush() == [] and not (tmp_path / "trajectory.json").exists()  # still running
    steps = 2 + sum(1 for _ in gen)
    (final,) = sink.flush()
    assert final == tmp_path
    t = load_trajectory(final)
    assert t.stop_reason == "done" and len(t.steps) == steps and len(t.calls) == t.llm_calls
    assert sink.flush() == []


# ------------------------------------------------------------------------------------------------------
# one builder: every route writes the same folder
# ------------------------------------------------------------------------------------------------------


def test_every_route_writes_the_same_bytes_for_a_run_with_a_sub_agent_a_failed_call_and_a_denied_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run recorded three ways at once: spans from TracingHook through a SimpleSpanProcessor, the
    trajectory hook, and the wrapped backend. The clock is frozen for all of them (the stdlib's and the
    one the OpenTelemetry SDK stamps spans with), so the folders must agree byte for byte. The wrapped
    backend cannot see hook decisions or retries (they are not LLM calls): its ``events`` line is empty,
    and that is the only difference allowed."""
    import time as time_module

    import opentelemetry.sdk.trace as sdk_trace

    from looplet import Deny, LLMError, run_loop
    from looplet.subagents import agent_tool

    now = time_module.time_ns()
    for name, value in (("time_ns", lambda: now), ("perf_counter", lambda: 1.0), ("time", lambda: now / 1e9)):
        monkeypatch.setattr(time_module, name, value)
    monkeypatch.setattr(sdk_trace, "time_ns", lambda: now)

    spans, hooked, wrapped = (ProvenanceSink(tmp_path / n, fsync=False) for n in ("spans", "hook", "wrap"))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing = TracingHook(tracer_provider=provider, capture_content=True)

    class Flaky(MockLLMBackend):
        failed = False

        def generate(self, messages: Any, **kw: Any) -> Any:
            if not Flaky.failed:
                Flaky.failed = True
                raise LLMError("the server is busy", retryable=True, status=503)
            return super().generate(messages, **kw)

    class NoCalc:
        def pre_dispatch(self, state: Any, session_log: Any, tool_call: ToolCall, step_num: int) -> Any:
            return Deny("no arithmetic today") if tool_call.tool == "calculator" else None

    _llm, demo_tools, _config = build(latency_s=0.0)

    @agent_tool(description="Research a question.")
    def research(question: str) -> Any:
        child = MockLLMBackend(
            [
                '{"tool": "search_docs", "args": {"query": "looplet"}}',
                '{"tool": "done", "args": {"answer": "found it"}}',
            ],
            usage="estimate",
        )
        hooks = [tracing, hooked.trajectory_hook()]
        cfg = LoopConfig(agent_name="researcher")
        return run_loop(wrapped.wrap_llm(child), {"goal": question}, demo_tools, hooks=hooks, config=cfg)

    script = [
        '{"tool": "research", "args": {"question": "what is looplet?"}}',
        '{"tool": "calculator", "args": {"expression": "2 + 2"}}',
        '{"tool": "done", "args": {"answer": "4"}}',
    ]
    result = run_loop(
        wrapped.wrap_llm(Flaky(script, usage="estimate", model="gpt-4o-mini")),
        {"goal": "ask and count"},
        tools_from([research, *[demo_tools.get(n) for n in ("calculator",)]]),
        hooks=[tracing, NoCalc(), hooked.trajectory_hook()],
        config=LoopConfig(agent_name="boss", llm_retries=1, llm_backoff_s=0.0),
    )
    assert result.stop_reason == "done"
    wrapped.flush()
    provider.shutdown()
    a, b, c = (files_of(tmp_path / n) for n in ("spans", "hook", "wrap"))
    assert sorted(a) == sorted(b) == sorted(c)
    assert a == b  # spans and hook: every byte
    traj = load_trajectory(tmp_path / "spans")
    assert traj.calls[0]["error"] and traj.steps[1].tool_result.error_kind == "denied"
    assert [s.tool_call.tool for s in traj.steps[0].children] == ["search_docs", "done"]
    assert {e["name"] for e in traj.events} >= {"hook.decision", "llm.retry"}
    assert any(e["kind"] == "tool" and e["error"] and e["step"] == 2 for e in traj.timeline)  # the denied row
    events = b'\n  "events": '  # the last key of trajectory.json
    assert a["trajectory.json"].split(events)[0] == c["trajectory.json"].split(events)[0]
    assert c["trajectory.json"].endswith(events + b"[]\n}\n")
    others = ("trajectory.json", "manifest.jsonl")
    assert {k: v for k, v in a.items() if k not in others} == {k: v for k, v in c.items() if k not in others}


def test_the_quickstart_leaves_the_files_in_the_folder_it_names(tmp_path: Path) -> None:
    """docs/provenance.md's quickstart, pasted into a fresh interpreter: traces/run_1 itself holds the run."""
    block = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "provenance.md").read_text(), re.S)[0]
    assert 'ProvenanceSink(dir="traces/run_1")' in block and "wrap_llm" in block and "flush()" in block
    proc = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    run_1 = tmp_path / "traces" / "run_1"
    assert sorted(p.name for p in run_1.iterdir() if p.is_dir()) == ["steps"]  # one run: no sub-folder
    assert (run_1 / "trajectory.json").is_file() and (run_1 / "steps" / "step_01.json").is_file()
    assert (run_1 / "call_01_prompt.txt").is_file() and (run_1 / "call_01_response.txt").is_file()
    assert load_trajectory(run_1).stop_reason == "done"


def test_later_runs_get_a_folder_each_under_dir_and_readers_see_all(tmp_path: Path) -> None:
    from looplet.evals import eval_cases  # noqa: F401  (the eval command reads the same way)
    from looplet.provenance.format import find_trajectories

    sink = ProvenanceSink(tmp_path / "runs", fsync=False)
    results = [demo("sync", [sink.trajectory_hook()])[1] for _ in range(3)]
    first, *later = sink.written
    assert first == tmp_path / "runs" and all(p.parent == first for p in later) and len(later) == 2
    found = [t.run_id for t in find_trajectories([first])]  # dir's own run first, then by start time
    assert found[0] == results[0].run_id and sorted(found) == sorted(r.run_id for r in results)
    out = io.StringIO()
    assert show_cli.main([str(first)], out=out) == 0 and out.getvalue().count("done: ") == 3
    again = ProvenanceSink(tmp_path / "runs", fsync=False)  # a new sink never writes over the first run
    demo("sync", [again.trajectory_hook()])
    assert again.last_path is not None and again.last_path.parent == first
    assert load_trajectory(first).run_id == results[0].run_id


def test_provenance_sink_is_a_span_exporter_made_on_first_use() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter

    assert issubclass(ProvenanceSink, SpanExporter)
    code = (
        "import sys, looplet, looplet.provenance\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), 'imported too early'\n"
        "from looplet.provenance import ProvenanceSink\n"
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter\n"
        "assert issubclass(ProvenanceSink, SpanExporter)\n"
        "BatchSpanProcessor(ProvenanceSink('x')).shutdown()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
