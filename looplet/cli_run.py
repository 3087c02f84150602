"""``looplet run MODULE:FACTORY "task"``: run your agent with telemetry switched on from flags.

FACTORY is a function (no arguments) in MODULE that returns the agent: a dict or an object with ``llm`` and
``tools``, and optionally ``hooks``, ``config``, ``state``, ``context`` and ``system_prompt``. MODULE is a
dotted module name (importable from the current folder) or a path to a ``.py`` file.

    looplet run my_agent:build "Summarise the open issues" --otlp http://127.0.0.1:4318 --metrics-port 9464
    looplet run agents/triage.py:make "Triage #42" --trace-dir ./traces --log-file run.jsonl
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from typing import Any

from looplet.cli import (
    EXIT_APPROVAL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ArgumentParser,
    UsageError,
    check_otlp,
    check_output_dir,
    check_output_file,
    port_arg,
    port_in_use,
)
from looplet.errors import MissingExtra
from looplet.progress import StepPrinter
from looplet.telemetry.propagation import parse_traceparent

__all__ = ["main", "load_factory", "build_agent", "UsageError"]

_FIELDS = ("llm", "tools", "hooks", "config", "state", "context", "system_prompt")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser("looplet run", __doc__)
    p.add_argument("target", metavar="MODULE:FACTORY", help="where your agent factory lives")
    p.add_argument("task", help="the goal, or a JSON object for a structured task")
    p.add_argument(
        "--otlp",
        metavar="URL",
        default=None,
        help="send spans to this OTLP endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT when set)",
    )
    p.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics on 127.0.0.1:PORT while the run lasts",
    )
    p.add_argument("--log-file", default=None, metavar="FILE", help="write JSON log lines to FILE")
    p.add_argument(
        "--trace-dir", default=None, metavar="DIR", help="save the run's trajectory folder under DIR"
    )
    p.add_argument(
        "--traceparent", default=None, metavar="TP", help="continue this W3C trace (default: $TRACEPARENT)"
    )
    p.add_argument(
        "--service-name", default=None, help="OpenTelemetry service.name (default: the agent's name)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many tool calls")
    p.add_argument("--no-telemetry", action="store_true", help="run without any telemetry")
    p.add_argument("--quiet", action="store_true", help="no step lines, only the summary")
    p.add_argument("--json", action="store_true", help="print the run's result as one JSON line at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    err = sys.stderr
    try:
        task, parent, agent, session = _prepare(args)
    except (UsageError, MissingExtra) as exc:
        print(f"looplet run: error: {' '.join(str(exc).split())}", file=err)
        return 2

    hooks = list(agent["hooks"]) + (list(session.hooks) if session is not None else [])
    printer = StepPrinter(quiet=args.quiet)
    state = agent["state"]
    if state is None:
        from looplet.state import DefaultState

        config = agent["config"]
        state = DefaultState(max_steps=args.max_steps or (config.max_steps if config is not None else 15))
    if session is not None:
        print(f"telemetry: {_where(session)}", file=err)
    started = time.perf_counter()
    code = 0
    try:
        result = _run(agent, task, hooks, state, parent, args.max_steps, printer)
    except KeyboardInterrupt:
        result = getattr(state, "result", None)
        steps = getattr(state, "steps", None)
        if isinstance(steps, list) and not args.quiet:
            for step in steps[printer.steps :]:  # finished (and recorded) before their line was printed
                printer.step(step, state)
        print(
            "\ninterrupted (Ctrl-C): the run ended as 'cancelled'; hooks were told and telemetry is flushed",
            file=err,
        )
        code = EXIT_INTERRUPTED
    finally:
        wall_s = time.perf_counter() - started
        if session is not None:
            session.shutdown()
    if result is None:
        return code
    _report(args, result, state, session, printer, wall_s)
    if code == 0 and result.stop_reason == "awaiting_approval":
        return EXIT_APPROVAL
    if code == 0 and result.stop_reason != "done":
        return EXIT_FAILED
    return code


def _prepare(args: argparse.Namespace) -> tuple[dict[str, Any], str | None, dict[str, Any], Any]:
    """Everything checked before the first step: the task, the trace parent, the agent, every output."""
    task = _task(args.task)
    parent = _traceparent(args.traceparent)
    agent = build_agent(load_factory(args.target), args.target)
    if args.otlp:
        args.otlp, args.otlp_protocol = check_otlp(args.otlp)
    if args.trace_dir:
        check_output_dir(args.trace_dir, "--trace-dir")
    if args.log_file:
        check_output_file(args.log_file, "--log-file")
    session = None if args.no_telemetry else _telemetry(args, agent)
    return task, parent, agent, session


def _report(
    args: argparse.Namespace, result: Any, state: Any, session: Any, printer: StepPrinter, wall_s: float
) -> None:
    if not args.quiet:
        print(file=printer.out)
    printer.summary(result, wall_s, trace_id=bool(getattr(session, "otlp_endpoint", None)))
    provenance = getattr(session, "provenance", None)  # written by then: the session has shut down
    saved = provenance.folder_of(result.run_id) if provenance is not None else None
    if saved:
        print(f"trajectory: {saved}\n  read it: looplet show {saved}")
    if result.stop_reason == "awaiting_approval":
        print(
            "waiting for approval: the run paused before a tool that needs a human's decision (exit code 3)"
        )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))


def _run(
    agent: dict[str, Any],
    task: dict[str, Any],
    hooks: list[Any],
    state: Any,
    parent: Any,
    max_steps: int | None,
    printer: StepPrinter,
) -> Any:
    kwargs = dict(
        llm=agent["llm"],
        tools=agent["tools"],
        task=task,
        hooks=hooks,
        config=agent["config"],
        state=state,
        context=agent["context"],
        system_prompt=agent["system_prompt"],
        max_steps=max_steps,
        parent=parent,
    )
    if callable(getattr(agent["llm"], "generate", None)):
        from looplet.loop import composable_loop

        gen = composable_loop(**kwargs)
        try:
            while True:
                try:
                    step = next(gen)
                except StopIteration as stop:
                    return stop.value
                printer.step(step, state)
        finally:
            gen.close()  # Ctrl-C outside the loop's own code: end the run now, so its hooks finish it

    import asyncio

    from looplet.async_loop import async_composable_loop

    async def go() -> Any:
        async for step in async_composable_loop(**kwargs):
            printer.step(step, state)
        return state.result

    return asyncio.run(go())


# --- loading the user's agent ------------------------------------------------------------------------


def load_factory(target: str) -> Any:
    """Import ``MODULE:FACTORY`` (a dotted name or a ``.py`` path) and return the factory."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"expected MODULE:FACTORY, got {target!r}; e.g. my_agent:build or agents/triage.py:make"
        )
    module = _import(module_name, attr)
    factory = getattr(module, attr, None)
    if factory is None:
        names = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise UsageError(
            f"{module_name} has no {attr!r}" + (f"; it defines: {', '.join(names)}" if names else "")
        )
    if not callable(factory):
        raise UsageError(
            f"{module_name}:{attr} is a {type(factory).__name__}, not a function that builds the agent"
        )
    return factory


def _import(module_name: str, attr: str) -> Any:
    """The module ``MODULE`` of ``MODULE:FACTORY``: a ``.py`` path or a dotted name."""
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {module_name}")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {module_name} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(path))  # its own sibling imports work, as with `python file.py`
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"importing {module_name} raised {type(exc).__name__}: {exc}") from exc
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the current folder are found
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise UsageError(
                    f"cannot import {module_name!r}: no such module. Run from the folder that holds "
                    f"it, or give its path: looplet run path/to/{module_name.split('.')[-1]}.py:{attr}"
                ) from exc
            raise UsageError(f"importing {module_name!r} failed: {exc}") from exc
        except Exception as exc:
            raise UsageError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    return module


def build_agent(factory: Any, target: str = "FACTORY") -> dict[str, Any]:
    """Call the factory and normalise what it returns to a dict with every field (None when absent)."""
    try:
        made = factory()
    except TypeError as exc:
        raise UsageError(
            f"calling {target}() failed: {exc}. The factory is called with no arguments; give its "
            "parameters defaults"
        ) from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        problem = getattr(exc, "problem", None)  # a setup error's message without a flag's hint
        if isinstance(problem, str):
            raise UsageError(f"{target}() could not build the agent: {problem}") from exc
        raise UsageError(f"{target}() raised {type(exc).__name__}: {exc}") from exc
    if isinstance(made, dict):
        agent = {k: made.get(k) for k in _FIELDS}
    else:
        agent = {k: getattr(made, k, None) for k in _FIELDS}
    missing = [k for k in ("llm", "tools") if agent[k] is None]
    if missing:
        raise UsageError(
            f"{target}() returned {type(made).__name__} without {' and '.join(missing)}; return e.g. "
            "{'llm': OpenAIBackend.from_env(), 'tools': tools_from([...]), 'hooks': [...]}"
        )
    if isinstance(agent["tools"], (list, tuple)):
        from looplet.tools import tools_from

        agent["tools"] = tools_from(list(agent["tools"]))
    agent["hooks"] = list(agent["hooks"] or [])
    return agent


def _task(text: str) -> dict[str, Any]:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            task = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(
                f"the task looks like JSON but is not valid ({exc}); quote it, or give plain text"
            ) from None
        if not isinstance(task, dict):
            raise UsageError('a JSON task must be an object, e.g. \'{"goal": "..."}\'')
        return task
    if not stripped:
        raise UsageError('the task is empty; say what the agent should do, e.g. "Summarise README.md"')
    return {"goal": text}


def _traceparent(value: str | None) -> str | None:
    tp = value if value is not None else os.environ.get("TRACEPARENT")
    if tp is None or tp == "":
        return None
    tp = tp.strip().lower()
    try:
        parse_traceparent(tp)
        if tp.count("-") != 3:
            raise ValueError("expected exactly 4 fields")
    except ValueError:
        source = "--traceparent" if value is not None else "TRACEPARENT"
        raise UsageError(
            f"{source} {tp!r} is not a W3C traceparent; expected 00-<32 hex trace id>-<16 hex span id>-"
            "<2 hex flags>, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ) from None
    return tp


def _where(session: Any) -> str:
    """One line: where this run's spans, metrics, logs and trajectories go."""
    parts = [
        f"spans → {session.otlp_protocol} {session.otlp_endpoint}"
        if getattr(session, "otlp_endpoint", None)
        else "spans not exported (no --otlp)"
    ]
    if getattr(session, "metrics_port", None) is not None:
        parts.append(f"metrics → http://127.0.0.1:{session.metrics_port}/metrics (while the run lasts)")
    if getattr(session, "log_file", None):
        parts.append(f"logs → {session.log_file}")
    provenance = getattr(session, "provenance", None)
    if provenance is not None:
        parts.append(f"trajectories → {provenance.dir}")
    return "; ".join(parts)


def _telemetry(args: argparse.Namespace, agent: dict[str, Any]) -> Any:
    """``configure(...)`` from the flags; None when nothing asks for telemetry."""
    otlp = args.otlp
    wanted = (
        otlp
        or args.metrics_port is not None
        or args.log_file
        or args.trace_dir
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not wanted:
        return None
    try:
        from looplet.telemetry.setup import configure
    except MissingExtra:
        raise
    except ImportError as exc:
        raise UsageError(
            f"telemetry flags need looplet.telemetry.setup, which this install lacks ({exc})"
        ) from exc
    config = agent["config"]
    service = args.service_name or (config.agent_name if config is not None else None) or "looplet-agent"
    try:
        return configure(
            service_name=service,
            otlp_endpoint=otlp,
            otlp_protocol=getattr(args, "otlp_protocol", None),
            metrics_port=args.metrics_port,
            json_logs=bool(args.log_file),
            log_file=args.log_file,
            provenance_dir=args.trace_dir,
        )
    except OSError as exc:
        if args.metrics_port is not None and getattr(exc, "errno", None) in (98, 48, 10048):  # EADDRINUSE
            raise UsageError(port_in_use("--metrics-port", args.metrics_port)) from exc
        raise UsageError(f"setting up telemetry failed: {exc}") from exc
