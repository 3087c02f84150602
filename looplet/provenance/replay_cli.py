"""``looplet replay TRACE_DIR --tools MODULE:NAME``: re-run a trajectory's recorded LLM answers against
the tools you have now and say where the results differ.

``--tools`` names a ``BaseToolRegistry``, a list of tool functions, or a function returning either (or a
tuple holding a registry, or an agent with ``tools`` and ``hooks``, as ``looplet.demo:build`` returns: its
hooks take part in the replay); ``MODULE`` may be a dotted module or a ``.py`` file.
Exit codes: 0 same results, 1 diverged, 2 bad input.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from looplet.cli import ArgumentParser
from looplet.errors import LoopletError

__all__ = ["main", "load_agent"]


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
    from looplet.provenance.format import TrajectoryError, load_trajectory
    from looplet.provenance.replay import replay_loop

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
