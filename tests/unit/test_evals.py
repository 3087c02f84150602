"""Evals: marking, discovery, outcomes, the `looplet eval` command, pytest helpers and EvalHook."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from looplet import DefaultState, MockLLMBackend, tools_from
from looplet.demo import TASK, build
from looplet.evals import (
    EvalContext,
    EvalHook,
    check,
    discover,
    eval_cases,
    eval_mark,
    run_eval,
    select,
    tags_of,
    trajectory_cases,
)
from looplet.evals_cli import main as eval_main
from looplet.provenance import ProvenanceSink
from looplet.provenance.format import run_folders
from tests.unit._harness import MODES, run

ROOT = Path(__file__).resolve().parents[2]

EVALS_PY = """
from looplet.evals import eval_mark, eval_finished

@eval_mark("smoke")
def eval_done(ctx):
    assert ctx.stop_reason == "done", f"stopped with {ctx.stop_reason}"

def eval_few_steps(ctx):
    return len(ctx.steps) <= 8

@eval_mark("cost", "smoke")
def eval_cheap(ctx):
    return (ctx.cost is not None and ctx.cost < 1e-6, f"cost ${ctx.cost}")

def helper(ctx):
    raise AssertionError("not an eval")
"""


def demo(mode: str, hooks: list[Any], llm: Any = None):
    llm0, tools, config = build(latency_s=0.0)
    return run(
        mode,
        llm=llm or llm0,
        tools=tools,
        task=TASK,
        config=config,
        hooks=hooks,
        state=DefaultState(max_steps=config.max_steps),
    )


@pytest.fixture()
def traces(tmp_path: Path) -> Path:
    sink = ProvenanceSink(tmp_path / "traces", fsync=False)
    demo("sync", [sink.trajectory_hook()])
    llm = MockLLMBackend(
        ['{"tool": "search_docs", "args": {"query": "x"}}'], cycle=True, model="gpt-4o-mini", usage="estimate"
    )
    llm0, tools, _ = build()
    run(
        "sync",
        llm=llm,
        tools=tools,
        task={"goal": "loop forever"},
        hooks=[sink.trajectory_hook()],
        max_steps=3,
    )
    return tmp_path / "traces"


def test_eval_mark_and_discovery(tmp_path: Path) -> None:
    path = tmp_path / "evals.py"
    path.write_text(EVALS_PY)
    found = discover(path)
    assert [f.__name__ for f in found] == ["eval_finished", "eval_done", "eval_few_steps", "eval_cheap"]
    names = {f.__name__: f for f in found}
    assert "helper" not in names and "eval_mark" not in names
    assert tags_of(names["eval_cheap"]) == ("cost", "smoke") and tags_of(names["eval_few_steps"]) == ()
    assert [f.__name__ for f in select(found, ["cost"])] == ["eval_cheap"]
    assert {f.__name__ for f in select(found, ["smoke"])} == {"eval_done", "eval_cheap"}
    assert select(found, ["nothing"]) == []
    with pytest.raises(TypeError, match="non-empty strings"):
        eval_mark(1)
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def eval_x(ctx):\n    return (\n")
    with pytest.raises(ImportError, match="broken.py: could not be loaded \\(SyntaxError"):
        discover(broken)


def _ctx(**kw: Any) -> EvalContext:
    from looplet import Usage

    base = dict(steps=[], final_output="a", stop_reason="done", usage=Usage(), cost=0.0, duration_ms=1.0)
    return EvalContext(**{**base, **kw})


@pytest.mark.parametrize(
    "body, outcome, detail",
    [
        ("return None", "pass", ""),
        ("return True", "pass", ""),
        ("return False", "fail", "returned False"),
        ("return 'too slow'", "fail", "too slow"),
        ("return (False, 'why')", "fail", "why"),
        ("return (True, 'fine')", "pass", "fine"),
        ("assert ctx.stop_reason == 'x', 'wrong stop'", "fail", "wrong stop"),
        ("assert False", "fail", "assertion failed"),
        ("raise KeyError('k')", "error", "KeyError: 'k'"),
        ("return 0.5", "error", "returned float"),
    ],
)
def test_outcomes(body: str, outcome: str, detail: str) -> None:
    ns: dict[str, Any] = {}
    exec(f"def eval_x(ctx):\n    {body}\n", ns)
    out = run_eval(ns["eval_x"], _ctx())
    assert out.outcome == outcome and out.detail.startswith(detail) and out.passed == (outcome == "pass")


def test_context_from_a_trajectory(traces: Path) -> None:
    ctxs = [p.values[0] for p in trajectory_cases(traces)]
    done = next(c for c in ctxs if c.stop_reason == "done")
    assert len(done.steps) >= 8 and done.final_output.startswith("looplet has 12 hooks")
    assert done.usage.input_tokens > 0 and done.cost > 0 and done.duration_ms > 0
    assert done.duration == pytest.approx(done.duration_ms / 1000) and done.cost_usd == done.cost
    assert done.tools_used == ["search_docs", "fetch_page", "calculator", "done"]
    assert [c.args["url"] for c in done.tool_calls("fetch_page")][0].endswith("/looplet/hooks")
    assert len(done.failed_steps) == sum(1 for s in done.steps if not s.ok) >= 1
    assert done.task == TASK and done.agent == "demo-agent"
    other = next(c for c in ctxs if c.stop_reason != "done")
    assert other.stop_reason == "max_steps" and len(other.steps) == 3


def test_eval_command(traces: Path, tmp_path: Path) -> None:
    path = tmp_path / "evals.py"
    path.write_text(EVALS_PY)
    out = io.StringIO()
    assert eval_main([str(traces), "--evals", str(path), "--tag", "smoke"], out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["run", "eval", "result", "detail"]
    rows = [line.split(None, 3) for line in lines[1:] if line.strip() and not line.startswith("2 evals")]
    assert sorted((r[1], r[2]) for r in rows[:4]) == sorted(
        [("eval_done", "pass"), ("eval_cheap", "FAIL"), ("eval_done", "FAIL"), ("eval_cheap", "FAIL")]
    )
    assert "stopped with max_steps" in out.getvalue()
    assert "2 evals on 2 runs: 1 passed, 3 failed, 0 errors" in out.getvalue()

    ok = tmp_path / "ok.py"
    ok.write_text("def eval_some_steps(ctx):\n    assert ctx.steps\n")
    assert eval_main([str(traces), "--evals", str(ok)], out=io.StringIO()) == 0
    raising = tmp_path / "raising.py"
    raising.write_text("def eval_boom(ctx):\n    return ctx.nothing\n")
    out = io.StringIO()
    assert eval_main([str(traces), "--evals", str(raising)], out=out) == 1
    assert "ERROR" in out.getvalue() and "AttributeError" in out.getvalue()

    out = io.StringIO()  # built-in evals when none are given
    assert eval_main([str(traces), "--json"], out=out) == 1
    assert out.getvalue().count('"outcome": "pass"') == 2 and out.getvalue().count('"outcome": "fail"') == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{traces}", "--evals", "{tmp}/missing.py"], "missing.py: no such evals file"),
        (["{traces}", "--evals", "{tmp}/evals.py", "--tag", "nope"], "no evals with tag nope"),
        (["{tmp}/nothing-here"], "nothing-here: no such file or directory"),
        (["{traces}", "--evals", "{tmp}/broken.py"], "broken.py: could not be loaded"),
    ],
)
def test_eval_command_bad_input(traces: Path, tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "evals.py").write_text(EVALS_PY)
    (tmp_path / "broken.py").write_text("def eval_x(:\n")
    args = [a.format(traces=traces, tmp=tmp_path) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "looplet", "eval", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_pytest_helpers(traces: Path, tmp_path: Path) -> None:
    params = trajectory_cases(traces)
    assert len(params) == 2 and all(isinstance(p.values[0], EvalContext) for p in params)
    assert sorted(p.id for p in params) == sorted(
        p.name for p in run_folders(traces)
    )  # traces, then one under it
    path = tmp_path / "evals.py"
    path.write_text(EVALS_PY)
    cases = eval_cases(traces, path, tags=["smoke"])
    assert len(cases) == 4 and all("::eval_" in c.id for c in cases)
    done_case = next(
        c for c in cases if c.id.endswith("::eval_done") and c.values[0][0].stop_reason == "done"
    )
    ctx, fn = done_case.values[0]
    check(fn, ctx)  # passes
    failing = next(c for c in cases if c.id.endswith("::eval_done") and c.values[0][0].stop_reason != "done")
    with pytest.raises(AssertionError, match="eval_done on .*: fail: stopped with max_steps"):
        check(failing.values[0][1], failing.values[0][0])


def test_pytest_helpers_in_a_real_pytest_run(traces: Path, tmp_path: Path) -> None:
    test_file = tmp_path / "test_agent_evals.py"
    test_file.write_text(
        textwrap.dedent(f"""
        import pytest
        from looplet.evals import trajectory_cases, eval_cases, check

        @pytest.mark.parametrize("ctx", trajectory_cases({str(traces)!r}))
        def test_stopped(ctx):
            assert ctx.stop_reason in ("done", "max_steps")

        @pytest.mark.parametrize("case", eval_cases({str(traces)!r}))
        def test_builtin(case):
            ctx, fn = case
            check(fn, ctx)
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert "2 failed, 4 passed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("mode", MODES)
def test_eval_hook_reports_each_result(mode: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    class Listener:
        def on_event(self, name: str, attributes: dict[str, Any]) -> None:
            seen.append((name, dict(attributes)))

    @eval_mark("live")
    def eval_under_ten_steps(ctx: EvalContext) -> Any:
        assert len(ctx.steps) < 10

    def eval_no_failures(ctx: EvalContext) -> Any:
        assert not ctx.failed_steps, f"{len(ctx.failed_steps)} failed step(s)"

    hook = EvalHook([eval_under_ten_steps, eval_no_failures])
    steps, result = demo(mode, [hook, Listener()])
    failed = sum(1 for s in steps if not s.ok)
    evals = [a for n, a in seen if n == "eval"]
    assert [(a["eval"], a["outcome"], a["passed"]) for a in evals] == [
        ("eval_under_ten_steps", "pass", True),
        ("eval_no_failures", "fail", False),
    ]
    assert evals[1]["detail"].startswith(f"{failed} failed step(s)") and evals[0]["tags"] == "live"
    assert [o.outcome for o in hook.results] == ["pass", "fail"]
    with pytest.raises(ValueError, match="no evals"):
        EvalHook([eval_no_failures], tags=["nope"])


@pytest.mark.parametrize("mode", MODES)
def test_eval_hook_becomes_a_span_event_and_a_metric(mode: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    prometheus_client = pytest.importorskip("prometheus_client")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from looplet.telemetry.metrics import MetricsHook
    from looplet.telemetry.tracing import TracingHook

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    registry = prometheus_client.CollectorRegistry()
    # EvalHook inside TracingHook: on_loop_end runs in reverse, so its results land while the run span is open
    demo(mode, [TracingHook(tracer_provider=provider), MetricsHook(registry=registry), EvalHook()])
    agent = next(s for s in memory.get_finished_spans() if s.name.startswith("invoke_agent"))
    events = [e for e in agent.events if e.name == "looplet.eval"]
    assert len(events) == 2 and all(e.attributes["looplet.eval.outcome"] == "pass" for e in events)
    for name in ("eval_finished", "eval_answered"):
        assert (
            registry.get_sample_value(
                "looplet_evals_total", {"agent": "demo-agent", "eval": name, "outcome": "pass"}
            )
            == 1.0
        )


def test_eval_hook_results_reach_the_trajectory(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path, fsync=False)
    state = DefaultState(max_steps=15)
    llm, tools, config = build(latency_s=0.0)
    run(
        "sync",
        llm=llm,
        tools=tools,
        task=TASK,
        config=config,
        state=state,
        hooks=[sink.trajectory_hook(), EvalHook()],
    )
    assert [e["name"] for e in state.metadata["evals"]] == ["eval_finished", "eval_answered"]
    from looplet.provenance import load_trajectory

    t = load_trajectory(state.metadata["trajectory_dir"])
    assert [e["attributes"]["eval"] for e in t.events if e["name"] == "eval"] == [
        "eval_finished",
        "eval_answered",
    ]


def test_no_tools_registry_needed_for_contexts() -> None:
    llm = MockLLMBackend(
        ['{"tool": "done", "args": {"answer": "42"}}'], usage="estimate", model="gpt-4o-mini"
    )
    _steps, result = run("sync", llm=llm, tools=tools_from([]), task={"goal": "g"})
    ctx = EvalContext.from_run(result, task={"goal": "g"})
    assert ctx.final_output == "42" and ctx.models == ["gpt-4o-mini"] and ctx.stop_reason == "done"


@pytest.mark.parametrize("doc", ["provenance.md", "evals.md"])
def test_doc_examples_run_as_written(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of the doc, in order, in one namespace, in a folder holding one saved run."""
    import re as _re

    text = (ROOT / "docs" / doc).read_text()
    blocks = _re.findall(r"```python\n(.*?)```", text, _re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    sink = ProvenanceSink(tmp_path / "traces", fsync=False)
    demo("sync", [sink.trajectory_hook()])
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    for block in blocks:
        if block.startswith("# evals.py"):
            (tmp_path / "evals.py").write_text(block)
        exec(compile(block, f"{doc} example", "exec"), namespace)
