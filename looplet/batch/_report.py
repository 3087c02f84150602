"""What a batch shows while it runs and when it ends: the progress line, the summary, and ``/metrics``.

Everything here is computed from the result lines the driver collects, so the numbers are those of
``RESULTS.jsonl`` whatever engine ran the tasks and however many processes or machines took part.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from looplet.progress import format_cost, is_tty

__all__ = ["BatchSummary", "Progress", "BatchMetrics", "summarize"]

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_TOKEN_TYPES = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
_MAX_MODELS = 50


def outcome(record: dict[str, Any]) -> str:
    """A bounded label for a result: its stop reason without the ``hook_stop`` detail, or ``failed``."""
    if record.get("status") != "ok":
        return "failed"
    return str(record.get("stop_reason") or "unknown").partition(":")[0]


def is_failure(record: dict[str, Any]) -> bool:
    """The task has no run, or its run ended on an error (``llm_error``, ``hook_error``, ``timeout``...)."""
    return record.get("status") != "ok" or bool(record.get("error"))


def _tokens(record: dict[str, Any]) -> int:
    usage = record.get("usage") or {}
    return int(usage.get("total_tokens") or 0)


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


@dataclass
class BatchSummary:
    """The batch as ``RESULTS.jsonl`` now holds it (earlier sessions included).

    tasks: tasks in the tasks file. ran: results written by this call; skipped: tasks already in the
    results file when it started; retried: failed lines removed to run again (``retry_failed``). failed: results with an error (no run, or a run that ended on one).
    by_stop_reason: counts (``failed`` for tasks without a run). p50_ms / p95_ms: run durations.
    cost_usd: total (None when a run used a model without a price). evals: per eval, its outcome counts.
    """

    tasks: int = 0
    ran: int = 0
    skipped: int = 0
    retried: int = 0
    done: int = 0
    failed: int = 0
    by_stop_reason: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p95_ms: float | None = None
    tokens: int = 0
    cost_usd: float | None = 0.0
    wall_s: float = 0.0
    evals: dict[str, dict[str, int]] = field(default_factory=dict)
    out: str = ""
    trace_id: str | None = None
    engine: str = ""

    @property
    def runs_per_s(self) -> float:
        return self.ran / self.wall_s if self.wall_s > 0 else 0.0

    def format(self) -> str:
        """The closing lines printed on stderr."""
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_stop_reason.items(), key=lambda kv: -kv[1]))
        p50 = f"{self.p50_ms / 1000:.2f}s" if self.p50_ms is not None else "-"
        p95 = f"{self.p95_ms / 1000:.2f}s" if self.p95_ms is not None else "-"
        cost = format_cost(self.cost_usd) if self.cost_usd is not None else "unknown (a model is not priced)"
        lines = [
            f"batch: {self.done}/{self.tasks} tasks have a result ({self.ran} now, {self.skipped} from before), "
            f"{self.failed} failed",
            *([f"  {self.retried} failed result(s) removed and run again"] if self.retried else []),
            f"  by stop reason: {reasons or '-'}",
            f"  run duration p50 {p50}, p95 {p95}; {self.tokens:,} tokens; cost {cost}",
            f"  {self.ran} runs in {self.wall_s:.1f}s ({self.runs_per_s:.1f} runs/s, engine {self.engine})",
        ]
        for name, counts in sorted(self.evals.items()):
            total = sum(counts.values())
            lines.append(
                f"  eval {name}: {counts.get('pass', 0)}/{total} passed"
                + (f", {counts['fail']} failed" if counts.get("fail") else "")
                + (f", {counts['error']} errors" if counts.get("error") else "")
            )
        if self.trace_id:
            lines.append(f"  trace_id: {self.trace_id}")
        lines.append(f"  results: {self.out}")
        return "\n".join(lines)


def summarize(records: list[dict[str, Any]], **fields: Any) -> BatchSummary:
    s = BatchSummary(**fields)
    durations: list[float] = []
    for rec in records:
        s.done += 1
        s.failed += is_failure(rec)
        key = outcome(rec)
        s.by_stop_reason[key] = s.by_stop_reason.get(key, 0) + 1
        if rec.get("status") == "ok" and isinstance(rec.get("duration_ms"), (int, float)):
            durations.append(float(rec["duration_ms"]))
        s.tokens += _tokens(rec)
        cost = rec.get("cost_usd")
        if rec.get("status") == "ok" and s.cost_usd is not None:
            s.cost_usd = None if (cost is None and _tokens(rec)) else s.cost_usd + float(cost or 0.0)
        for ev in rec.get("evals") or ():
            counts = s.evals.setdefault(str(ev.get("name")), {})
            counts[str(ev.get("outcome"))] = counts.get(str(ev.get("outcome")), 0) + 1
    durations.sort()
    s.p50_ms, s.p95_ms = _percentile(durations, 0.5), _percentile(durations, 0.95)
    return s


class Progress:
    """``batch [####····] 120/200 ok 118 failed 2 | 35.2 runs/s | 12,345 tok $0.01234 | ETA 2s`` on stderr:
    redrawn in place on a terminal (at most 10 times a second), a plain line every 10% (and at most every
    5 s) otherwise. ``LOOPLET_PROGRESS=off`` or ``enabled=False`` silences it."""

    def __init__(
        self, total: int, *, out: TextIO | None = None, enabled: bool = True, earlier: int = 0
    ) -> None:
        self.total = total
        self.earlier = earlier  # results already in the file: shown as done, not counted in the rate
        self.out = out if out is not None else sys.stderr
        off = os.environ.get("LOOPLET_PROGRESS", "").lower() in ("off", "0", "false", "no")
        self.enabled = enabled and not off
        self.tty = is_tty(self.out)
        self.n = self.failed = self.tokens = 0
        self.cost: float | None = 0.0
        self.start = time.perf_counter()
        self._last = float("-inf")
        self._tenth = 0

    def add(self, record: dict[str, Any]) -> None:
        self.n += 1
        self.failed += is_failure(record)
        self.tokens += _tokens(record)
        cost = record.get("cost_usd")
        if self.cost is not None and record.get("status") == "ok":
            self.cost = None if (cost is None and _tokens(record)) else self.cost + float(cost or 0.0)
        if not self.enabled:
            return
        now = time.perf_counter()
        tenth = int(10 * (self.earlier + self.n) / self.total) if self.total else 10
        if (self.tty and now - self._last >= 0.1) or (
            not self.tty and tenth > self._tenth and now - self._last >= 5.0
        ):
            self._last, self._tenth = now, tenth
            self._draw(False)

    def line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = self.earlier + self.n
        left = self.total - done
        eta = f"ETA {left / rate:.0f}s" if rate > 0 and left else f"{elapsed:.1f}s"
        head = f"{done}/{self.total} ok {self.n - self.failed} failed {self.failed}"
        tail = f" | {rate:.1f} runs/s | {self.tokens:,} tok {format_cost(self.cost)} | {'' if final else eta}"
        if not self.tty:
            return f"batch {head}{tail}".rstrip(" |")
        cols = shutil.get_terminal_size((100, 24)).columns
        room = max(10, cols - len(head) - len(tail) - 10)
        filled = int(room * done / self.total) if self.total else room
        return f"batch [{'#' * filled}{'·' * (room - filled)}] {head}{tail}".rstrip(" |")

    def restart(self) -> None:
        """Count time from now (the engine is up: its start-up is not part of the rate)."""
        self.start = time.perf_counter()

    def _draw(self, final: bool) -> None:
        try:
            if self.tty:
                cols = shutil.get_terminal_size((100, 24)).columns
                self.out.write("\r" + self.line(final)[: cols - 1].ljust(cols - 1) + ("\n" if final else ""))
            else:
                self.out.write(self.line(final) + "\n")
            self.out.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the batch
            self.enabled = False

    def close(self) -> None:
        if self.enabled and (self.n or self.tty):
            self._draw(True)


class BatchMetrics:
    """Prometheus metrics of the batch, fed with each result the driver collects: one scrape target for a
    batch that runs on any number of workers.

    ``looplet_batch_runs_total{stop_reason}``, ``looplet_batch_tokens_total{model,type}``,
    ``looplet_batch_cost_usd_total{model}``, ``looplet_batch_run_duration_seconds`` (histogram) count the
    results written by this driver; ``looplet_batch_tasks{state}`` (``total``, ``done``, ``failed``,
    ``running``) describes the whole batch, results from earlier sessions included.
    """

    def __init__(self, registry: Any = None) -> None:
        from looplet.errors import require

        prom = require("prometheus_client", "prometheus")
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        self.runs = prom.Counter(
            "looplet_batch_runs", "Batch results written, by stop reason", ["stop_reason"], registry=r
        )
        self.tokens = prom.Counter(
            "looplet_batch_tokens", "Tokens used by the batch's runs", ["model", "type"], registry=r
        )
        self.cost = prom.Counter("looplet_batch_cost_usd", "Cost of the batch's runs", ["model"], registry=r)
        self.duration = prom.Histogram(
            "looplet_batch_run_duration_seconds",
            "Duration of the batch's runs",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.tasks = prom.Gauge("looplet_batch_tasks", "Tasks of the batch by state", ["state"], registry=r)
        self._models: set[str] = set()
        self.server: Any = None

    def _model(self, value: Any) -> str:
        if not value:
            return "unknown"
        name = str(value)
        if name in self._models or len(self._models) < _MAX_MODELS:
            self._models.add(name)
            return name
        return "other"

    def start(self, total: int, done: int, failed: int) -> None:
        self.tasks.labels("total").set(total)
        self.tasks.labels("done").set(done)
        self.tasks.labels("failed").set(failed)
        self.tasks.labels("running").set(0)

    def running(self, delta: int) -> None:
        self.tasks.labels("running").inc(delta)

    def add(self, record: dict[str, Any]) -> None:
        self.runs.labels(outcome(record)).inc()
        self.tasks.labels("done").inc()
        if is_failure(record):
            self.tasks.labels("failed").inc()
        if record.get("status") != "ok":
            return
        model = self._model(record.get("model"))
        usage = record.get("usage") or {}
        for key in _TOKEN_TYPES:
            n = usage.get(key) or 0
            if n > 0:
                self.tokens.labels(model, key[: -len("_tokens")]).inc(n)
        if isinstance(record.get("cost_usd"), (int, float)) and record["cost_usd"] > 0:
            self.cost.labels(model).inc(record["cost_usd"])
        if isinstance(record.get("duration_ms"), (int, float)):
            self.duration.observe(record["duration_ms"] / 1000.0)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        from looplet.telemetry.metrics import serve_metrics

        self.server = serve_metrics(port, addr, self.registry)
        return int(self.server.server_port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
