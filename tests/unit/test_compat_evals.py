"""looplet 0.4.1's eval entry points as adapters (``looplet._compat_evals``): each old spelling works with
one DeprecationWarning naming the 0.5 spelling, or fails with an error naming it. (0.4.1's provenance
recorders: tests/unit/test_compat_provenance.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from looplet import EvalContext, MockLLMBackend, composable_loop, tools_from

from ._compat_support import one_warning, quiet


def write(folder: Path, name: str, data: Any) -> None:
    (folder / name).write_text(data if isinstance(data, str) else json.dumps(data))


def test_from_trajectory_dir_reads_a_folder_041_saved(tmp_path: Path) -> None:
    write(
        tmp_path,
        "trajectory.json",
        {
            "run_id": "abc",
            "termination_reason": "done",
            "task": {"goal": "g"},
            "expected": {"answer": 42},
            "metadata": {"note": "kept", "run_id": "shadowed"},
            "steps": [
                {"tool_call": {"tool": "bash", "args": {"cmd": "ls"}}, "tool_result": {"data": {"out": 1}}},
                {"tool_call": {"tool": "escalate", "args": {"to": "ops"}}, "tool_result": {"error": "no"}},
            ],
        },
    )
    write(tmp_path, "artifacts.json", {"tests_passing": True})
    with one_warning("load_trajectory"):
        ctx = EvalContext.from_trajectory_dir(tmp_path)  # type: ignore[attr-defined]
    assert [c.tool for c in ctx.tool_calls()] == ["bash", "escalate"]
    assert ctx.completed and ctx.final_output == {"to": "ops"}  # a custom terminal: its arguments
    assert ctx.task == {"goal": "g", "expected": {"answer": 42}} and ctx.expected == {"answer": 42}
    assert ctx.artifacts == {"tests_passing": True}
    assert (ctx.metadata["note"], ctx.metadata["run_id"]) == ("kept", "abc")
    assert [s.ok for s in ctx.steps] == [True, False]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"trajectory.json": []}, "trajectory.json"),
        ({"trajectory.json": {"steps": ["x"]}}, "trajectory.json"),
        ({"trajectory.json": {"steps": []}, "artifacts.json": "not json"}, "artifacts.json"),
        ({"trajectory.json": {"steps": []}, "metrics.json": "not json"}, "metrics.json"),
        ({"trajectory.json": {"steps": [], "task": {"expected": 1}}, "expected.json": 2}, "Conflicting"),
    ],
)
def test_from_trajectory_dir_refuses_malformed_folders(
    tmp_path: Path, files: dict[str, Any], message: str
) -> None:
    for name, data in files.items():
        write(tmp_path, name, data)
    with quiet(), pytest.raises(ValueError, match=message):
        EvalContext.from_trajectory_dir(tmp_path)  # type: ignore[attr-defined]


def test_plain_context_has_empty_041_dicts() -> None:
    ctx = EvalContext(steps=[])
    with one_warning("ctx.task"):
        assert ctx.artifacts == {}  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        ctx.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def eval_ok(ctx: Any) -> bool:
    return True


def eval_half(ctx: Any) -> float:
    return 0.5 if ctx.steps else 0.25


async def eval_async(ctx: Any) -> bool:
    return True


def test_eval_assess_reports_verdicts_and_integrity() -> None:
    from looplet import eval_assess  # type: ignore[attr-defined]

    ctx = EvalContext(steps=[], stop_reason="done")
    with one_warning("run_evals"):
        report = eval_assess([eval_ok, eval_half], ctx)
    assert report.valid and not report.passed  # 0.25 < 0.5
    with pytest.raises(AssertionError, match="eval_half"):
        report.assert_passed()
    with quiet():
        bad = eval_assess([eval_async], ctx)
    assert not bad.valid and not bad.passed
    assert "async graders are not supported" in bad.to_dict()["cases"][0]["results"][0]["explanation"]
    with quiet():
        eval_assess([eval_ok], ctx).assert_passed()


def test_eval_run_batch_rows_and_recorded_collector_failures() -> None:
    from looplet.evals import eval_run_batch  # type: ignore[attr-defined]

    failure = {"name": "collector:db", "label": "error", "explanation": "unavailable"}
    with quiet():
        contexts = [
            EvalContext(steps=[]),
            EvalContext(steps=[], metadata={"eval_collector_errors": [failure]}),
        ]
    with one_warning("run_evals"):
        table = eval_run_batch([eval_half], contexts)
    rows = {row["name"]: row for row in table}
    assert rows["eval_half"]["scores"] == [0.25, 0.25] and rows["eval_half"]["avg_score"] == 0.25
    assert rows["collector:db"]["runs"] == 2
    assert rows["collector:db"]["per_run"] == [{"name": "collector:db", "label": "skipped"}, failure]


@pytest.mark.parametrize("raw", [None, {}, [None], [{"name": "collector:x", "label": "pass"}]])
def test_malformed_recorded_collector_errors_fail_closed(raw: Any) -> None:
    from looplet.compat import eval_run

    def eval_erase(ctx: Any) -> bool:
        ctx.metadata.clear()  # a grader cannot erase the record
        return True

    with quiet():
        ctx = EvalContext(steps=[], metadata={"eval_collector_errors": raw})
        results = eval_run([eval_erase], ctx)
    assert [r.name for r in results] == ["eval_erase", "collector:recorded_errors"]
    assert results[-1].label == "error" and not results[-1].passed


def test_old_eval_hook_assessment() -> None:
    from looplet import EvalHook

    def collect_broken(state: Any) -> Any:
        return "not a dict"

    with quiet():
        hook = EvalHook(evaluators=[eval_ok], collectors=[collect_broken])  # type: ignore[call-arg]
        llm = MockLLMBackend(['{"tool": "done", "args": {"answer": "x"}}'])
        list(composable_loop(llm=llm, tools=tools_from([]), hooks=[hook], task={"g": 1}))
    report = hook.assessment()
    assert not report.valid and not report.passed
    assert any("collector:collect_broken" in f for f in report.integrity_failures)


def test_strict_discovery_names_the_broken_file_and_duplicates(tmp_path: Path) -> None:
    from looplet import eval_discover  # type: ignore[attr-defined]

    write(tmp_path, "eval_one.py", "def eval_same(ctx): return 1.0\n")
    write(tmp_path, "eval_two.py", "def eval_same(ctx): return 0.0\n")
    with quiet():
        assert len(eval_discover(tmp_path)) == 2
        with pytest.raises(RuntimeError, match="duplicate evaluator name"):
            eval_discover(tmp_path, strict=True)
    write(tmp_path, "eval_three.py", "raise RuntimeError('broken')\n")
    with quiet(), pytest.raises(RuntimeError, match="eval_three.py"):
        eval_discover(tmp_path, strict=True)


def saved_runs(root: Path, **scores: float) -> Path:
    """Folders as 0.4.1 saved them: one per run, each with a trajectory.json."""
    for name, score in scores.items():
        (root / "runs" / name).mkdir(parents=True)
        write(
            root / "runs" / name,
            "trajectory.json",
            {"steps": [], "task": {"score": score}, "termination_reason": "done"},
        )
    return root / "runs"


@pytest.mark.parametrize(
    ("source", "extra", "scores", "code"),
    [
        ("def eval_s(ctx):\n    return ctx.task['score']\n", [], {"one": 0.9}, 0),
        (
            "def eval_s(ctx):\n    return ctx.task['score']\n",
            ["--threshold", "0.7"],
            {"one": 1.0, "two": 0.6},
            1,
        ),
        ("def eval_s(ctx):\n    return 'wrong'\n", [], {"one": 1.0}, 1),
        ("def eval_s(ctx):\n    return {'steps': 3}\n", [], {"one": 1.0}, 1),  # metrics, no verdict
        ("def eval_s(ctx):\n    return {'steps': 3}\n", ["--summary-version", "1"], {"one": 1.0}, 0),
        (
            "from looplet import eval_mark\n@eval_mark('required')\ndef eval_s(ctx, llm):\n    return 1.0\n",
            [],
            {"one": 1.0},
            1,
        ),
        (
            "from looplet import eval_mark\n@eval_mark('required')\ndef eval_s(ctx):\n    return 1.0\n",
            ["--include", "x"],
            {"one": 1.0},
            1,
        ),
        ("def eval_s(ctx):\n    return 1.0\n", ["--threshold", "nan"], {"one": 1.0}, 1),
    ],
)
def test_eval_cli_grades_folders_041_saved(
    tmp_path: Path, capsys: Any, source: str, extra: list[str], scores: dict[str, float], code: int
) -> None:
    from looplet.evals import eval_cli  # type: ignore[attr-defined]

    runs = saved_runs(tmp_path, **scores)
    write(tmp_path, "eval_s.py", source)
    with one_warning("python -m looplet eval"):
        got = eval_cli([str(runs), "--evals", str(tmp_path / "eval_s.py"), "--json", *extra])
    assert got == code
    if "nan" not in extra:
        report = json.loads(capsys.readouterr().out)
        assert report["passed"] is (code == 0)
        assert [c["id"] for c in report["cases"]] == sorted(scores)


def test_eval_cli_fails_closed_on_a_corrupt_folder_and_keeps_stdout_for_the_report(
    tmp_path: Path, capsys: Any
) -> None:
    from looplet.evals import eval_cli  # type: ignore[attr-defined]

    runs = saved_runs(tmp_path, one=1.0)
    (runs / "bad").mkdir()
    write(runs / "bad", "trajectory.json", "not json")
    write(
        tmp_path,
        "eval_ok.py",
        "print('noise')\ndef eval_ok(ctx):\n    print('more noise')\n    return True\n",
    )
    with quiet():
        assert eval_cli([str(runs), "--evals", str(tmp_path / "eval_ok.py"), "--json"]) == 1
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert not report["valid"] and "trajectory load failed: bad" in report["integrity_failures"][0]
    assert "noise" in out.err and "Invalid trajectory.json" in out.err
    with quiet():
        assert eval_cli(["init", str(tmp_path / "new")]) == 2
    assert "python -m looplet eval" in capsys.readouterr().err
