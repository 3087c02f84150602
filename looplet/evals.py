"""Evals: small functions that judge a run, over saved trajectories or live at the end of a run.

An eval is a function named ``eval_*`` that takes an :class:`EvalContext` and passes unless it returns
``False`` (or a string, the reason it failed), returns ``(False, reason)``, or fails an ``assert``. Any
other exception counts as an error. ``@eval_mark("tag", ...)`` adds tags to select evals by::

    from looplet.evals import eval_mark

    @eval_mark("smoke")
    def eval_finished(ctx):
        assert ctx.stop_reason == "done", f"stopped with {ctx.stop_reason}"

    @eval_mark("cost")
    def eval_cheap(ctx):
        return ctx.cost is not None and ctx.cost < 0.01

Run them over folders with ``python -m looplet eval TRACE_DIR --evals evals.py [--tag smoke]``, in pytest
with :func:`trajectory_cases` / :func:`eval_cases`, or during live runs with :class:`EvalHook`. Stdlib only.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, overload

from looplet.compat import LegacyEvalContext, module_getattr
from looplet.types import Step, ToolCall, Usage

__all__ = [
    "eval_mark",
    "EvalContext",
    "EvalOutcome",
    "EvalHook",
    "run_eval",
    "run_evals",
    "discover",
    "select",
    "trajectory_cases",
    "eval_cases",
    "check",
    "BUILTIN_EVALS",
]

_TAGS = "looplet_eval_tags"
EvalFn = Callable[["EvalContext"], Any]


_Marked = TypeVar("_Marked", bound=Callable[..., Any])


@overload
def eval_mark(fn: _Marked, /) -> _Marked: ...
@overload
def eval_mark(*tags: str) -> Callable[[_Marked], _Marked]: ...
def eval_mark(*tags: Any) -> Any:
    """Tag an eval: ``@eval_mark("smoke", "cost")``. Also works bare (``@eval_mark``) to mark a function
    as an eval whatever its name."""
    if len(tags) == 1 and callable(tags[0]) and not isinstance(tags[0], str):
        fn = tags[0]
        setattr(fn, _TAGS, tuple(getattr(fn, _TAGS, ())))
        return fn
    for t in tags:
        if not isinstance(t, str) or not t:
            raise TypeError(f"eval_mark tags must be non-empty strings, got {t!r}")

    def mark(fn: _Marked) -> _Marked:
        if not callable(fn):
            raise TypeError(f"@eval_mark goes on a function, got {type(fn).__name__}")
        setattr(fn, _TAGS, tuple(dict.fromkeys((*getattr(fn, _TAGS, ()), *tags))))
        return fn

    return mark


def tags_of(fn: EvalFn) -> tuple[str, ...]:
    return tuple(getattr(fn, _TAGS, ()))


@dataclass(slots=True)
class EvalContext(LegacyEvalContext):  # 0.4.1's step_count, errors, ... (looplet.compat)
    """What an eval sees of a run.

    steps: the run's :class:`~looplet.types.Step` objects. final_output: the ``done`` answer (or None).
    stop_reason: ``done``, ``max_steps``, ``hook_stop:<reason>``, ... usage: token totals.
    cost: USD (None when a model had no price). duration_ms: wall time of the run.
    trajectory: the :class:`~looplet.provenance.format.Trajectory` when read from a folder.
    """

    steps: list[Step]
    final_output: Any = None
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    duration_ms: float = 0.0
    task: Any = None
    error: str | None = None
    llm_calls: int = 0
    models: list[str] = field(default_factory=list)
    agent: str = ""
    run_id: str = ""
    name: str = ""
    trajectory: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __new__(cls, *args: Any, **kwargs: Any) -> EvalContext:
        if "metadata" in kwargs or "artifacts" in kwargs:  # looplet 0.4.1's EvalContext(metadata=...)
            from looplet.compat import old_eval_context_class, warn_renamed

            warn_renamed(
                "EvalContext(metadata=..., artifacts=...)",
                "EvalContext(task=...) (put what evals need in the task)",
            )
            cls = old_eval_context_class()
        return object.__new__(cls)  # (not super(): slots=True makes a new class)

    # derived views ---------------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Wall time of the run in seconds."""
        return self.duration_ms / 1000.0

    @property
    def cost_usd(self) -> float | None:
        return self.cost

    def tool_calls(self, tool: str | None = None) -> list[ToolCall]:
        """The calls made, all of them or those of one tool, in order."""
        return [s.tool_call for s in self.steps if tool is None or s.tool_call.tool == tool]

    @property
    def tools_used(self) -> list[str]:
        """Tool names in the order they were first called."""
        return list(dict.fromkeys(s.tool_call.tool for s in self.steps))

    @property
    def failed_steps(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]

    @property
    def completed(self) -> bool:
        """The run ended with ``done``."""
        return self.stop_reason == "done"

    @property
    def expected(self) -> Any:
        """``task["expected"]`` when the task is a dict that has it (else an empty dict)."""
        return self.task.get("expected", {}) if isinstance(self.task, dict) else {}

    def __repr__(self) -> str:
        return f"EvalContext({self.name or self.run_id[:8]!r}, stop_reason={self.stop_reason!r}, steps={len(self.steps)})"

    # construction ----------------------------------------------------------------------------------
    @classmethod
    def from_trajectory(cls, t: Any) -> EvalContext:
        return cls._of(
            t, task=t.task, models=t.models, agent=t.agent, name=t.name, trajectory=t, events=t.events
        )

    @classmethod
    def from_run(cls, result: Any, task: Any = None, agent: str = "") -> EvalContext:
        """From a live run's :class:`~looplet.types.RunResult`."""
        models = list(dict.fromkeys(s.model for s in result.steps if s.model))
        return cls._of(result, task=task, models=models, agent=agent, name=result.run_id[:8])

    @classmethod
    def _of(cls, run: Any, **more: Any) -> EvalContext:
        """The fields a saved trajectory and a live result both carry, under the same names, and ``more``."""
        same = {k: getattr(run, k) for k in _SAME_FIELDS}
        return cls(steps=list(run.steps), cost=run.cost_usd, **same, **more)


#: What :class:`EvalContext` copies from a trajectory or a run result as is.
_SAME_FIELDS = ("final_output", "stop_reason", "usage", "duration_ms", "error", "llm_calls", "run_id")


@dataclass(slots=True)
class EvalOutcome:
    """One eval on one run: ``outcome`` is ``pass``, ``fail`` or ``error``."""

    name: str
    outcome: str
    detail: str = ""
    tags: tuple[str, ...] = ()
    duration_ms: float = 0.0
    run: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "passed": self.passed,
            "detail": self.detail,
            "tags": list(self.tags),
            "duration_ms": round(self.duration_ms, 3),
            "run": self.run,
        }


def _name(fn: EvalFn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def run_eval(fn: EvalFn, ctx: EvalContext) -> EvalOutcome:
    """Run one eval; never raises (an exception other than AssertionError is an ``error`` outcome)."""
    t = time.perf_counter()
    outcome, detail = "pass", ""
    try:
        value = fn(ctx)
    except AssertionError as exc:
        outcome, detail = "fail", str(exc) or "assertion failed"
    except Exception as exc:
        outcome, detail = "error", f"{type(exc).__name__}: {exc}"
    else:
        if value is None or value is True:
            pass
        elif value is False:
            outcome, detail = "fail", "returned False"
        elif isinstance(value, str):
            outcome, detail = "fail", value
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
            outcome, detail = ("pass" if value[0] else "fail"), str(value[1])
        else:
            outcome, detail = (
                "error",
                (
                    f"returned {type(value).__name__}; return None/True to pass, False or a "
                    "reason string to fail, or (passed, reason)"
                ),
            )
    return EvalOutcome(_name(fn), outcome, detail, tags_of(fn), (time.perf_counter() - t) * 1000.0, ctx.name)


def run_evals(evals: Iterable[EvalFn], contexts: Iterable[EvalContext]) -> list[EvalOutcome]:
    fns = list(evals)
    return [run_eval(fn, ctx) for ctx in contexts for fn in fns]


def check(fn: EvalFn, ctx: EvalContext) -> None:
    """Run an eval and raise ``AssertionError`` unless it passes (for pytest)."""
    out = run_eval(fn, ctx)
    if not out.passed:
        raise AssertionError(f"{out.name} on {ctx.name or ctx.run_id}: {out.outcome}: {out.detail}")


# ------------------------------------------------------------------------------------------------------
# Finding evals
# ------------------------------------------------------------------------------------------------------


def _is_eval(name: str, obj: Any, module: str) -> bool:
    """An ``eval_*`` function defined in the module, or any function marked with ``eval_mark`` (so
    ``from looplet.evals import eval_finished`` brings a built-in in)."""
    if not callable(obj) or inspect.isclass(obj) or isinstance(obj, ModuleType):
        return False
    if hasattr(obj, _TAGS):
        return True
    return name.startswith("eval_") and getattr(obj, "__module__", module) == module


def _load_file(path: Path) -> ModuleType:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such evals file")
    name = f"looplet_evals_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ImportError(f"{path}: could not be loaded ({type(exc).__name__}: {exc})") from exc
    return module


def discover(source: Any) -> list[EvalFn]:
    """The evals in a module, a ``.py`` file path, a ``module.name``, or a list of functions (in source order)."""
    if source is None:
        return list(BUILTIN_EVALS)
    if isinstance(source, (list, tuple)):
        return [fn for fn in source if callable(fn)]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".py" or path.exists():
            module = _load_file(path)
        else:
            module = importlib.import_module(str(source))
    elif isinstance(source, ModuleType):
        module = source
    else:
        raise TypeError(
            f"evals must be a module, a file path or a list of functions, got {type(source).__name__}"
        )
    # in the module's own order: imports first, then definitions as they appear
    return list(
        {id(obj): obj for name, obj in vars(module).items() if _is_eval(name, obj, module.__name__)}.values()
    )


def select(evals: Iterable[EvalFn], tags: Sequence[str] | None = None) -> list[EvalFn]:
    """Evals carrying any of ``tags`` (all when ``tags`` is empty)."""
    fns = list(evals)
    if not tags:
        return fns
    wanted = set(tags)
    return [fn for fn in fns if wanted & set(tags_of(fn))]


# ------------------------------------------------------------------------------------------------------
# pytest
# ------------------------------------------------------------------------------------------------------


def _param(value: Any, id_: str) -> Any:
    try:
        import pytest
    except ImportError:
        return value
    return pytest.param(value, id=id_)


def trajectory_cases(*folders: Any) -> list[Any]:
    """One :class:`EvalContext` per saved run under ``folders``, as ``pytest.param``s with the run's
    folder name as id::

        @pytest.mark.parametrize("ctx", trajectory_cases("traces/"))
        def test_finished(ctx):
            assert ctx.stop_reason == "done"
    """
    from looplet.provenance.format import find_trajectories

    return [_param(EvalContext.from_trajectory(t), t.name) for t in find_trajectories(folders)]


def eval_cases(folder: Any, evals: Any = None, tags: Sequence[str] | None = None) -> list[Any]:
    """Every (run, eval) pair as ``pytest.param((ctx, fn))`` with id ``run::eval``; use with :func:`check`::

    @pytest.mark.parametrize("case", eval_cases("traces/", "evals.py"))
    def test_evals(case):
        check(*case[::-1])
    """
    from looplet.provenance.format import find_trajectories

    fns = select(discover(evals), tags)
    return [
        _param((EvalContext.from_trajectory(t), fn), f"{t.name}::{_name(fn)}")
        for t in find_trajectories([folder])
        for fn in fns
    ]


# ------------------------------------------------------------------------------------------------------
# Live runs
# ------------------------------------------------------------------------------------------------------


class EvalHook:
    """Runs evals when a run ends and reports each result with ``looplet.emit_event("eval", ...)``:
    a tracing hook turns it into a ``looplet.eval`` span event, a metrics hook into
    ``looplet_evals_total{eval, outcome}``. Results are also kept in ``state.metadata["evals"]`` and
    ``hook.results`` (the last run's).

    Put it after ``TracingHook`` and ``sink.trajectory_hook()`` in the hook list: ``on_loop_end`` runs in
    reverse order, so the evals report while the run's span is still open and before the trajectory is written.
    """

    def __new__(cls, evals: Any = None, tags: Sequence[str] | None = None, **old: Any) -> EvalHook:
        if old and cls is EvalHook:  # looplet 0.4.1's EvalHook(evaluators=[...], collectors=...)
            from looplet.compat import old_eval_hook_class

            cls = old_eval_hook_class()
        return super().__new__(cls)

    def __init__(self, evals: Any = None, tags: Sequence[str] | None = None, **old: Any) -> None:
        if old:
            raise TypeError(f"EvalHook() got unexpected keyword arguments {sorted(old)}")
        self.verbose, self.expected = False, None
        self.evals = select(discover(evals), tags)
        if not self.evals:
            raise ValueError("EvalHook: no evals to run (check the evals given and the tags)")
        self.results: list[EvalOutcome] = []

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        from looplet.hooks import emit_event

        ctx = self._context_of(result)
        outcomes = [run_eval(fn, ctx) for fn in self.evals]
        if self.verbose:
            for o in outcomes:
                print(f"  eval {o.name}: {o.outcome}" + (f" ({o.detail})" if o.detail else ""))
        self.results = outcomes
        for o in outcomes:
            emit_event(
                "eval",
                eval=o.name,
                passed=o.passed,
                outcome=o.outcome,
                detail=o.detail[:500],
                tags=",".join(o.tags),
            )
        metadata = getattr(state, "metadata", None)
        if isinstance(metadata, dict):
            metadata["evals"] = [o.to_dict() for o in outcomes]

    def _context_of(self, result: Any) -> EvalContext:
        """The :class:`EvalContext` of the run in progress that ended with ``result``; its task carries
        ``expected`` when this hook was given one."""
        from looplet.hooks import current_run

        run = current_run()
        task = getattr(run, "task", None)
        if self.expected is not None:
            task = {**(task if isinstance(task, dict) else {}), "expected": self.expected}
        return EvalContext.from_run(result, task=task, agent=getattr(run, "agent_name", ""))

    def __repr__(self) -> str:
        return f"EvalHook({[_name(f) for f in self.evals]!r})"


# ------------------------------------------------------------------------------------------------------
# Built-in evals (used when no evals are given)
# ------------------------------------------------------------------------------------------------------


@eval_mark("builtin")
def eval_finished(ctx: EvalContext) -> Any:
    """The run ended with ``done``."""
    assert ctx.stop_reason == "done", f"stopped with {ctx.stop_reason}" + (
        f" ({ctx.error})" if ctx.error else ""
    )


@eval_mark("builtin")
def eval_answered(ctx: EvalContext) -> Any:
    """The run gave a non-empty final answer."""
    assert ctx.final_output not in (None, "", [], {}), "no final answer"


BUILTIN_EVALS: tuple[EvalFn, ...] = (eval_finished, eval_answered)


# looplet 0.4.1's names from this module (EvalResult, EvalCase, eval_run): looplet.compat
__getattr__ = module_getattr("looplet.evals")
