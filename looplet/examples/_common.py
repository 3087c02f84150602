"""What the examples share: choosing the model (a real one from the environment, or ``--scripted``) and
printing a run."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from looplet.errors import LoopletError, MissingExtra
from looplet.progress import StepPrinter

ENV_HELP = (
    "real model: set OPENAI_API_KEY and OPENAI_MODEL (and OPENAI_BASE_URL for Ollama, vLLM or any "
    "OpenAI-compatible server); --scripted runs without a key or network"
)


class SetupError(LoopletError):
    """An example cannot start (no API key, a missing extra, a bad flag); the message says what to do.

    ``problem`` is the message without ``hint`` (a flag of the example's own command line, such as
    ``--scripted``), for callers that have no such flag (``looplet run``)."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem if hint is None else f"{problem}\n({hint})")
        self.problem = problem
        self.hint = hint


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; returns exit status 2 (a setup problem, not a crash)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=ENV_HELP)
    p.add_argument("--scripted", action="store_true", help="use the scripted model (no API key, no network)")
    p.add_argument("--latency", type=float, default=0.0, help="simulated model latency per call (--scripted)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many tool calls")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def backend(
    scripted: bool,
    script: Sequence[Any],
    *,
    latency_s: float = 0.0,
    model: str = "gpt-4o-mini",
    scripted_class: type | None = None,
) -> Any:
    """The scripted model (``scripted_class``, default ``MockLLMBackend``), or ``OpenAIBackend.from_env()``.
    A missing key or extra raises :class:`SetupError` saying what to set."""
    if scripted:
        from looplet.backends.mock import MockLLMBackend

        cls = scripted_class or MockLLMBackend
        return cls(list(script), model=model, usage="estimate", latency_s=latency_s)
    try:
        from looplet.backends.openai import OpenAIBackend

        return OpenAIBackend.from_env()
    except (MissingExtra, ValueError) as exc:
        raise SetupError(str(exc), "or run the example with --scripted: no key, no network") from exc


def run(gen: Any, *, quiet: bool = False, printer: StepPrinter | None = None, state: Any = None) -> Any:
    """Iterate a loop generator, printing each step with the run's running totals (from ``state`` when
    given), then the summary. Returns the ``RunResult``."""
    printer = printer or StepPrinter(quiet=quiet)
    started = time.perf_counter()
    try:
        while True:
            try:
                step = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            printer.step(step, state)
    except KeyboardInterrupt:
        gen.close()  # if Ctrl-C landed outside the loop's own code, end the run now (its hooks finish it)
        steps = getattr(state, "steps", None)
        if isinstance(steps, list) and not printer.quiet:
            for step in steps[printer.steps :]:  # steps finished (and saved) whose line was not printed yet
                printer.step(step, state)
        if getattr(state, "result", None) is not None:
            print(file=printer.out)
            printer.summary(state.result, time.perf_counter() - started)
        raise
    if not printer.quiet:
        print(file=printer.out)
    printer.summary(result, time.perf_counter() - started)
    return result


def cli(main: Any) -> int:
    """Run an example's ``main()`` for ``python -m``: Ctrl-C outside a run exits quietly with status 130."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def exit_code(result: Any) -> int:
    """0 when the run finished (``done``), 1 otherwise (the summary says why)."""
    return 0 if result.stop_reason == "done" else 1


def trajectory_hook(trace_dir: str) -> tuple[Any, Any]:
    """``(hook, sink)`` saving the run to ``trace_dir`` with :class:`looplet.provenance.ProvenanceSink`."""
    check_writable(trace_dir)
    try:
        from looplet.provenance import ProvenanceSink
    except ImportError as exc:
        raise SetupError(f"--trace needs looplet.provenance, which this install lacks ({exc})") from None
    sink = ProvenanceSink(trace_dir)
    return sink.trajectory_hook(), sink


def check_writable(folder: str, flag: str = "--trace") -> None:
    """Create ``folder`` and prove a file can be written there, or raise :class:`SetupError` before the run
    (the message is the one every looplet command gives for an unwritable output)."""
    from looplet.cli import UsageError, check_output_dir

    try:
        check_output_dir(folder, flag)
    except UsageError as exc:
        raise SetupError(str(exc)) from None
