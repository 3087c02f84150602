"""Live feedback on the terminal: step lines with running totals, and a progress bar for long jobs.

Standard library only. Two pieces:

* :class:`StepPrinter` prints one line per Step with the run's running token and cost totals::

      #3 ✓ fetch_page(url='https://…') → looplet runs tool-calling agents… [52ms]  Σ 412 tok $0.00031

  Use it directly (``printer.step(step)`` while iterating ``composable_loop``) or pass it as a hook
  (it has ``on_step``). ``printer.summary(result)`` prints the closing lines.
* :func:`bar` wraps an iterable: a redrawn bar on a terminal, plain progress lines otherwise (CI logs,
  files, pipes), so a 1,000-step benchmark or an eval over many trajectories shows it is alive.

Cost is shown only when it is known: a step whose model has no price turns the total into ``$?``
rather than pretending it cost nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["StepPrinter", "bar", "is_tty", "format_cost"]

T = TypeVar("T")


def is_tty(out: Any) -> bool:
    """True when ``out`` is an interactive terminal that can redraw a line (not ``TERM=dumb``)."""
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed stream
        return False


def format_cost(cost: float | None) -> str:
    """``$0.00123``; ``$?`` when the cost is unknown (a model missing from the price table)."""
    if cost is None:
        return "$?"
    if cost >= 1:
        return f"${cost:.2f}"
    return f"${cost:.5f}"


class StepPrinter:
    """Prints a line per step with running totals (tokens and cost of the run so far).

    out: where to write (default ``sys.stdout``, looked up at print time).
    width: room for ``Step.pretty``; default: the terminal's width on a TTY, 120 otherwise.
    quiet: keep the totals but print nothing (``summary`` still prints).
    """

    def __init__(self, out: TextIO | None = None, *, width: int | None = None, quiet: bool = False) -> None:
        self._out = out
        self._width = width
        self.quiet = quiet
        self.tokens = 0
        self.cost: float | None = 0.0
        self.steps = 0
        self.errors = 0

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def reset(self) -> None:
        """Start a new run's totals."""
        self.tokens, self.cost, self.steps, self.errors = 0, 0.0, 0, 0

    def add(self, step: Any, state: Any = None) -> None:
        """Add a step to the totals without printing. With the run's ``state`` the totals are the loop's
        own (they also count LLM answers that proposed no tool call, and a resumed run's earlier steps)."""
        self.steps += 1
        if step.tool_result.error is not None:
            self.errors += 1
        usage = getattr(state, "usage", None)
        if usage is not None and hasattr(usage, "total_tokens"):
            self.tokens = usage.total_tokens
            cost = getattr(state, "cost_usd", None)
            self.cost = cost if cost is not None or not self.tokens else None
            return
        if step.usage is not None:
            self.tokens += step.usage.total_tokens
            if step.cost_usd is None:
                self.cost = None  # tokens we cannot price: the total is unknown from now on
        if step.cost_usd is not None and self.cost is not None:
            self.cost += step.cost_usd

    def line(self, step: Any) -> str:
        """The line for ``step`` with the totals as they stand (call :meth:`add` first)."""
        totals = f"  Σ {self.tokens:,} tok {format_cost(self.cost)}"
        ttfc = getattr(step, "ttfc_ms", None)
        if isinstance(ttfc, (int, float)):  # a streamed answer: the latency the user feels
            totals = f"  ttft {ttfc:.0f}ms" + totals
        width = self._width or (shutil.get_terminal_size((120, 24)).columns if is_tty(self.out) else 120)
        return str(step.pretty(max(40, width - len(totals)))) + totals

    def step(self, step: Any, state: Any = None) -> str:
        """Add ``step`` to the totals and print its line; returns the line."""
        self.add(step, state)
        text = self.line(step)
        if not self.quiet:
            print(text, file=self.out, flush=True)
        return text

    # as a hook: hooks=[StepPrinter()] prints each step as the loop records it
    def on_step(self, state: Any, step: Any) -> None:
        self.step(step, state)

    def summary(self, result: Any, wall_s: float | None = None, *, trace_id: bool = True) -> str:
        """Closing lines: how the run ended, steps, tokens, cost, time and the answer (and the trace id,
        unless ``trace_id=False``: pass it when no span is exported, so the id points nowhere)."""
        usage = result.usage
        if result.cost_usd is not None:
            cost = format_cost(result.cost_usd)
        elif not result.llm_calls:  # nothing answered (a wrong base URL, a dead server): nothing to price
            cost = "none (no LLM call was answered)"
        else:
            cost = "unknown (model not priced)"
        ms = result.duration_ms if wall_s is None else wall_s * 1000.0
        lines = [
            f"{result.stop_reason}: {len(result.steps)} steps, {result.llm_calls} LLM calls, "
            f"{usage.input_tokens:,} input + {usage.output_tokens:,} output tokens, cost {cost}, {ms:.0f} ms"
        ]
        if result.error:
            lines.append(f"error: {result.error}")
        if result.final_output is not None:
            lines.append(f"answer: {result.final_output}")
        if result.trace_id and trace_id:
            lines.append(f"trace_id: {result.trace_id}")
        text = "\n".join(lines)
        print(text, file=self.out, flush=True)
        return text


def _tty_line(prefix: str, n: int, total: int | None, elapsed: float, final: bool, cols: int) -> str:
    """The redrawn terminal line: ``label [####····] 420/1000 42% 310/s ETA 2s``."""
    rate = n / elapsed if elapsed > 0 else 0.0
    if not total:
        return f"{prefix}{n} done {rate:,.0f}/s {elapsed:.1f}s"
    frac = min(1.0, n / total)
    eta = (total - n) / rate if rate > 0 and not final else 0.0
    tail = f" {n}/{total} {frac:4.0%} {rate:,.0f}/s " + (f"{elapsed:.1f}s" if final else f"ETA {eta:.0f}s")
    room = max(10, cols - len(prefix) - len(tail) - 3)
    filled = int(frac * room)
    return f"{prefix}[{'#' * filled}{'·' * (room - filled)}]{tail}"


def bar(
    iterable: Iterable[T],
    total: int | None = None,
    label: str = "",
    *,
    out: TextIO | None = None,
    interval_s: float | None = None,
) -> Iterator[T]:
    """Yield the items of ``iterable`` while showing progress on ``out`` (default ``sys.stderr``).

    On a terminal: one line redrawn at most 10 times a second, ``label [####····] 420/1000 42% 310/s ETA 2s``.
    Otherwise: a plain line about every 10% (and at most one every ``interval_s``, default 2 s), and a
    last line with the count and elapsed time, so logs stay short. ``total`` defaults to ``len(iterable)``
    when it has one. Set ``LOOPLET_PROGRESS=off`` to silence it.
    """
    stream = out if out is not None else sys.stderr
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if os.environ.get("LOOPLET_PROGRESS", "").lower() in ("off", "0", "false", "no"):
        yield from iterable
        return
    tty = is_tty(stream)
    every = interval_s if interval_s is not None else (0.1 if tty else 2.0)
    prefix = f"{label} " if label else ""
    start = time.perf_counter()
    last_draw = float("-inf")
    last_tenth = 0
    n = 0

    finished = False

    def draw(final: bool) -> None:
        elapsed = time.perf_counter() - start
        if tty:
            cols = shutil.get_terminal_size((80, 24)).columns
            text = _tty_line(prefix, n, total, elapsed, final, cols)
            stream.write("\r" + text[: cols - 1].ljust(cols - 1) + ("\n" if final else ""))
        else:
            text = (
                f"{prefix}{n}/{total} ({n / total:.0%}) {elapsed:.1f}s"
                if total
                else f"{prefix}{n} done {elapsed:.1f}s"
            )
            stream.write(text + ((" done" if finished else " stopped") if final else "") + "\n")
        stream.flush()

    try:
        if tty:
            draw(False)
        for item in iterable:
            yield item
            n += 1
            now = time.perf_counter()
            if tty:
                if now - last_draw >= every:
                    last_draw = now
                    draw(False)
            else:
                tenth = int(10 * n / total) if total else 0
                if (
                    (tenth > last_tenth or not total)
                    and now - last_draw >= every
                    and (total is None or n < total)
                ):
                    last_tenth = tenth
                    last_draw = now
                    draw(False)
        finished = True
    finally:
        draw(True)
