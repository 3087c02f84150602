"""``looplet replay TRACE_DIR --tools MODULE:NAME``: re-run a trajectory's recorded LLM answers against
the tools you have now and say where the results differ.

``--tools`` names a ``BaseToolRegistry``, a list of tool functions, or a function returning either (or a
tuple holding a registry, or an agent with ``tools`` and ``hooks``, as ``looplet.demo:build`` returns: its
hooks take part in the replay); ``MODULE`` may be a dotted module or a ``.py``
file. Exit codes: 0 same results, 1 diverged, 2 bad input.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, TextIO

from looplet.cli import ArgumentParser
from looplet.errors import LoopletError

__all__ = ["main", "load_tools", "load_agent"]


def load_tools(spec: str) -> Any:
    """``MODULE:NAME`` -> a ``BaseToolRegistry``."""
    return load_agent(spec)[0]


def load_agent(spec: str) -> tuple[Any, list[Any]]:
    """``MODULE:NAME`` -> ``(registry, hooks)``. NAME may be a registry, a list of tools, or a function
    returning either, or an agent (a dict or object with ``tools`` and optionally ``hooks``, as ``looplet
    run`` factories return): its hooks (a permission policy, say) take part in the replay, as they did in
    the recorded run."""
    from looplet.tools import BaseToolRegistry, tools_from

    obj = _named_object(spec)
    if callable(obj) and not isinstance(obj, BaseToolRegistry):
        obj = obj()
    hooks: list[Any] = []
    if isinstance(obj, dict) and "tools" in obj:
        hooks, obj = list(obj.get("hooks") or []), obj["tools"]
    elif not isinstance(obj, (BaseToolRegistry, list)) and hasattr(obj, "tools"):
        hooks, obj = list(getattr(obj, "hooks", None) or []), obj.tools
    if isinstance(obj, tuple):
        obj = next((x for x in obj if isinstance(x, BaseToolRegistry)), obj)
    if isinstance(obj, list):
        obj = tools_from(obj)
    if not isinstance(obj, BaseToolRegistry):
        raise ValueError(f"--tools {spec!r}: got a {type(obj).__name__}, not a tool registry")
    return obj, hooks


def _named_object(spec: str) -> Any:
    """The object ``MODULE:NAME`` names."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"--tools {spec!r}: expected MODULE:NAME (e.g. looplet.demo:build or tools.py:registry)"
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise ValueError(f"--tools {spec!r}: {path}: no such file")
        mspec = importlib.util.spec_from_file_location(f"looplet_replay_{path.stem}", path)
        if mspec is None or mspec.loader is None:
            raise ValueError(f"--tools {spec!r}: {path} is not a Python file")
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"--tools {spec!r}: cannot import {module_name} ({exc})") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"--tools {spec!r}: {module_name} has no {attr!r}") from None
    return obj


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = ArgumentParser("looplet replay", __doc__)
    parser.add_argument("path", metavar="TRACE_DIR", help="a run folder written by ProvenanceSink")
    parser.add_argument(
        "--tools", required=True, metavar="MODULE:NAME", help="the tools to run the answers against"
    )
    args = parser.parse_args(argv)

    from looplet.provenance.format import TrajectoryError, load_trajectory
    from looplet.provenance.replay import replay_loop

    try:
        trajectory = load_trajectory(args.path)
        tools, hooks = load_agent(args.tools)
        report = replay_loop(trajectory, tools=tools, hooks=hooks)
    except (TrajectoryError, LoopletError, ValueError) as exc:
        print(f"looplet replay: error: {exc}", file=err)
        return 2
    for s in report.steps:
        print(s.pretty(), file=out)
    print("", file=out)
    print(report, file=out)
    return 1 if report.diverged else 0


if __name__ == "__main__":
    raise SystemExit(main())
