"""``replay_loop``: re-run a recorded trajectory's LLM answers against the tools you have now.

The model is replaced by a :class:`~looplet.backends.mock.MockLLMBackend` that gives the recorded
answers in order; the tools really run. The report says where the new run first differs from the
recording: a different result, error, tool call, stop reason or number of steps. Useful after changing a
tool: "does the agent's recorded path still work?"

Limits: answers are replayed as recorded even after a result changed (the model would have answered
otherwise); redacted values replay redacted; failed LLM attempts and compaction calls are skipped.

``looplet replay TRACE_DIR --tools MODULE:NAME`` (:func:`main`) does it from the shell: ``--tools`` names a
``BaseToolRegistry``, a list of tool functions, or a function returning either (or a tuple holding a
registry, or an agent with ``tools`` and ``hooks``, as ``looplet.demo:build`` returns: its hooks take part
in the replay); ``MODULE`` may be a dotted module or a ``.py`` file. Exit codes: 0 same results,
1 diverged, 2 bad input.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from looplet.cli import ArgumentParser
from looplet.errors import LoopletError
from looplet.provenance.format import Trajectory, TrajectoryError, load_trajectory, shown
from looplet.types import LLMResponse, RunResult, Step, ToolCall, Usage, _json_safe

__all__ = ["replay_loop", "ReplayReport", "Divergence", "main", "load_agent"]


def _brief(value: Any, n: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")


@dataclass(slots=True)
class Divergence:
    """One way the replay differs from the recording, at step ``step`` (0: the run as a whole)."""

    step: int
    what: str  # "result", "error", "call", "missing_step", "extra_step", "stop_reason"
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        where = f"step {self.step}" if self.step else "run"
        return f"{where}: {self.what} differs: recorded {_brief(self.recorded)}, replayed {_brief(self.replayed)}"


@dataclass(slots=True)
class ReplayReport:
    """The replayed run next to the recording."""

    trajectory: Trajectory
    steps: list[Step]
    result: RunResult | None
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    @property
    def first(self) -> Divergence | None:
        """The first divergence, by step."""
        return self.divergences[0] if self.divergences else None

    def __str__(self) -> str:
        t, stop = self.trajectory, self.result.stop_reason if self.result else "?"
        head = f"replayed {t.name}: {len(t.steps)} recorded steps, {len(self.steps)} replayed; stop reason {t.stop_reason} -> {stop}"
        if not self.divergences:
            return head + "\nsame results at every step"
        first, *rest = self.divergences
        return "\n".join([head, f"diverged first at {first}", *(f"  {d}" for d in rest)])


def _norm(value: Any) -> Any:
    """The recorded form of a value (JSON round trip), for comparison."""
    return json.loads(json.dumps(_json_safe(value), ensure_ascii=False))


def _responses(t: Trajectory) -> list[LLMResponse]:
    out = []
    for i, c in enumerate(t.calls):
        if not isinstance(c, dict) or c.get("error") is not None or c.get("purpose", "step") != "step":
            continue
        if not c.get("answered", True):
            why = f"LLM call {c.get('number', i + 1)} has no recorded answer (recorded from spans without content capture); it cannot be replayed"
            raise TrajectoryError(t.path or t.name, why)
        calls = [ToolCall(str(tc.get("tool")), dict(tc.get("args") or {}), str(tc.get("id") or "")) for tc in c.get("tool_calls") or ()]  # fmt: skip
        usage, model = Usage.from_dict(c.get("usage")), c.get("model")
        out.append(LLMResponse(c.get("text"), calls, usage, model, finish_reason=c.get("finish_reason")))
    if not out:
        raise TrajectoryError(t.path or t.name, "has no recorded LLM answers to replay")
    return out


def _same_step(old: Step, new: Step, compare: Callable[[Step, Step], str | None] | None) -> list[Divergence]:
    n, o, r = old.number, old.tool_result, new.tool_result
    if compare is not None:
        reason = compare(old, new)
        return [Divergence(n, "result", o.data, reason)] if reason else []
    if old.tool_call.tool != new.tool_call.tool or _norm(old.tool_call.args) != _norm(new.tool_call.args):
        was, now = (old.tool_call.tool, old.tool_call.args), (new.tool_call.tool, _norm(new.tool_call.args))
        return [Divergence(n, "call", {"tool": was[0], "args": was[1]}, {"tool": now[0], "args": now[1]})]
    if (o.error is None) != (r.error is None) or o.error_kind != r.error_kind:
        return [Divergence(n, "error", o.error or "no error", r.error or "no error")]
    if o.error is None and _norm(o.data) != shown(r):
        return [Divergence(n, "result", o.data, shown(r))]
    return []


def replay_loop(
    trace_dir: str | os.PathLike[str] | Trajectory,
    tools: Any,
    hooks: list[Any] | None = None,
    *,
    config: Any = None,
    compare: Callable[[Step, Step], str | None] | None = None,
) -> ReplayReport:
    """Re-run the trajectory in ``trace_dir`` with its recorded LLM answers against ``tools`` (a
    ``BaseToolRegistry``), with ``hooks`` if given. Returns a :class:`ReplayReport`.

    compare: your own test of one step, ``(recorded, replayed) -> reason or None``, replacing the default
        (same call, same error kind, equal result data).
    """
    from looplet.backends.mock import MockLLMBackend
    from looplet.config import LoopConfig
    from looplet.loop import run_loop

    t = trace_dir if isinstance(trace_dir, Trajectory) else load_trajectory(trace_dir)
    llm = MockLLMBackend(_responses(t), model=(t.models or ["replay"])[0])
    if config is None:
        config = LoopConfig(max_steps=max(len(t.steps), 1), agent_name=t.agent or "looplet", llm_retries=0)
    task = t.task if isinstance(t.task, dict) or t.task is None else {"goal": t.task}
    result = run_loop(llm=llm, tools=tools, task=task, config=config, hooks=list(hooks or ()))
    out: list[Divergence] = []
    for old, new in zip(t.steps, result.steps, strict=False):
        out += _same_step(old, new, compare)
    out += [Divergence(s.number, "extra_step", None, s.tool_call.tool) for s in result.steps[len(t.steps) :]]
    gone = f"none (the replay stopped: {result.stop_reason})"
    out += [Divergence(s.number, "missing_step", s.tool_call.tool, gone) for s in t.steps[len(result.steps) :]]  # fmt: skip
    if result.stop_reason != t.stop_reason:
        out.append(Divergence(0, "stop_reason", t.stop_reason, result.stop_reason))
    return ReplayReport(t, result.steps, result, out)


def load_agent(spec: str) -> tuple[Any, list[Any]]:
    """``MODULE:NAME`` -> ``(registry, hooks)``: NAME as the module docstring says; an agent's hooks (a
    permission policy, say) take part in the replay, as they did in the recorded run."""
    from looplet.cli_run import _import
    from looplet.tools import BaseToolRegistry, tools_from

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"--tools {spec!r}: expected MODULE:NAME (e.g. looplet.demo:build or tools.py:registry)"
        )
    obj = getattr(_import(module_name, attr), attr, None)
    if obj is None:
        raise ValueError(f"--tools {spec!r}: {module_name} has no {attr!r}")
    obj = obj() if callable(obj) and not isinstance(obj, BaseToolRegistry) else obj
    hooks: list[Any] = []
    if isinstance(obj, dict) and "tools" in obj:
        hooks, obj = list(obj.get("hooks") or []), obj["tools"]
    elif not isinstance(obj, (BaseToolRegistry, list)) and hasattr(obj, "tools"):
        hooks, obj = list(getattr(obj, "hooks", None) or []), obj.tools
    if isinstance(obj, tuple):
        obj = next((x for x in obj if isinstance(x, BaseToolRegistry)), obj)
    obj = tools_from(obj) if isinstance(obj, list) else obj
    if not isinstance(obj, BaseToolRegistry):
        raise ValueError(f"--tools {spec!r}: got a {type(obj).__name__}, not a tool registry")
    return obj, hooks


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    parser = ArgumentParser("looplet replay", __doc__)
    parser.add_argument("path", metavar="TRACE_DIR", help="a run folder written by ProvenanceSink")
    parser.add_argument(
        "--tools", required=True, metavar="MODULE:NAME", help="the tools to run the answers against"
    )
    args = parser.parse_args(argv)
    try:
        trajectory = load_trajectory(args.path)
        tools, hooks = load_agent(args.tools)
        report = replay_loop(trajectory, tools=tools, hooks=hooks)
    except (TrajectoryError, LoopletError, ValueError) as exc:
        print(f"looplet replay: error: {exc}", file=err or sys.stderr)
        return 2
    print("".join(f"{s.pretty()}\n" for s in report.steps) + f"\n{report}", file=out or sys.stdout)
    return 1 if report.diverged else 0


if __name__ == "__main__":
    raise SystemExit(main())
