"""The batch driver: reads the tasks, skips those already in the results, hands the rest to an engine
with a bounded number in flight, and appends each result line as it arrives."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from looplet.batch._engines import SETUP_FAILED, LocalEngine, RayEngine
from looplet.batch._report import BatchMetrics, BatchSummary, Progress, is_failure, summarize
from looplet.batch._store import BatchError, ResultsFile, Task, read_results, read_tasks
from looplet.batch._worker import SetupFailed

__all__ = ["run_batch", "arun_batch"]

log = logging.getLogger("looplet")


def _tasks(tasks: str | os.PathLike[str] | Iterable[Any]) -> list[Task]:
    if isinstance(tasks, (str, os.PathLike)):
        return read_tasks(os.fspath(tasks))
    out: list[Task] = []
    seen: set[str] = set()
    for n, t in enumerate(tasks, 1):
        if isinstance(t, Task):
            item = t
        elif isinstance(t, dict) and isinstance(t.get("task"), dict):
            item = Task(str(t.get("id", n)), t["task"])
        else:
            raise BatchError(f"task {n}: expected a Task or {{'id': ..., 'task': {{...}}}}, got {t!r:.80}")
        if item.id in seen:
            raise BatchError(f"task id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)
        out.append(item)
    return out


def _target(agent: str) -> str:
    """``MODULE:FACTORY`` with a file path made absolute, so workers started elsewhere find it."""
    module, sep, attr = agent.rpartition(":")
    if sep and (module.endswith(".py") or "/" in module or os.sep in module):
        return f"{os.path.abspath(module)}:{attr}"
    return agent


class _Tracing:
    """The ``looplet.batch`` span and the telemetry session of the driver (when spans are exported)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from looplet.batch._worker import telemetry_session
        from looplet.telemetry import setup

        self.span: Any = None
        self.traceparent: str | None = None
        before = setup.current_session()
        self.session = telemetry_session(spec)  # the same session as the local engine's runs
        self.owns_session = self.session is not None and self.session is not before

    def start(self, attributes: dict[str, Any], parent: str | None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            return
        from looplet import __version__

        provider = self.session.tracer_provider if self.session is not None else trace.get_tracer_provider()
        tracer = provider.get_tracer("looplet.batch", __version__)
        context = None
        tp = parent or os.environ.get("TRACEPARENT")
        if tp:
            from looplet.telemetry.propagation import context_from_traceparent

            try:
                context = context_from_traceparent(tp, os.environ.get("TRACESTATE") if not parent else None)
            except ValueError as exc:
                log.warning("looplet batch: ignoring the parent trace: %s", exc)
        self.span = tracer.start_span("looplet.batch", context=context, attributes=attributes)
        sc = self.span.get_span_context()
        if sc.is_valid:
            self.traceparent = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"

    @property
    def trace_id(self) -> str | None:
        return self.traceparent.split("-")[1] if self.traceparent else None

    def end(self, attributes: dict[str, Any], error: BaseException | None) -> None:
        if self.span is not None:
            try:
                self.span.set_attributes(attributes)
                if error is not None:
                    from opentelemetry.trace import Status, StatusCode

                    self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
                self.span.end()
            except Exception as exc:  # telemetry never decides how the batch ends
                log.warning("looplet batch: ending the batch span failed: %r", exc)
        if self.session is not None:
            if self.owns_session:
                self.session.shutdown()
            else:
                self.session.force_flush()


class _Batch:
    """One call of :func:`arun_batch`: what its lanes share."""

    def __init__(
        self,
        engine: Any,
        results: ResultsFile,
        tasks: list[Task],
        metrics: BatchMetrics | None,
        retry_failed: bool = False,
    ):
        self.engine = engine
        self.results = results
        self.tasks = tasks
        self.metrics = metrics
        self.retried = 0
        if retry_failed:
            ids = {t.id for t in tasks}
            self.retried = results.drop(lambda rec: rec.get("id") in ids and is_failure(rec))
        before = read_results(results.path)
        if before.unreadable:
            log.warning(
                "looplet batch: %d unreadable line(s) in %s ignored (a result cut short by a crash)",
                before.unreadable,
                results.path,
            )
        self.earlier = [before.records[t.id] for t in tasks if t.id in before.records]
        self.pending = [t for t in tasks if t.id not in before.records]
        self.progress = Progress(len(tasks), earlier=len(self.earlier))
        if metrics is not None:
            metrics.start(len(tasks), len(self.earlier), sum(map(is_failure, self.earlier)))
        self.written: list[dict[str, Any]] = []
        self.wall_s = 0.0
        self.stopping = False

    async def lane(self, spec: dict[str, Any], queue: list[dict[str, Any]]) -> None:
        while queue and not self.stopping:
            item = queue.pop()
            if self.metrics is not None:
                self.metrics.running(1)
            try:
                record = await self.engine.submit(spec, item)
            finally:
                if self.metrics is not None:
                    self.metrics.running(-1)
            if SETUP_FAILED in record:
                if self.stopping:
                    return  # another lane already reported it
                self.stopping = True
                raise BatchError(f"the agent cannot be built: {record[SETUP_FAILED]}")
            if self.stopping:
                return  # interrupted: a run cut short is not a result; a rerun does it again
            self.results.append(record)
            self.written.append(record)
            self.progress.add(record)
            if self.metrics is not None:
                self.metrics.add(record)

    def start(self, spec: dict[str, Any]) -> None:
        if self.pending:
            try:
                self.engine.start(spec)
            except SetupFailed as exc:
                raise BatchError(f"the agent cannot be built: {exc}") from None
        self.progress.restart()

    async def run(self, spec: dict[str, Any], tracing: _Tracing, traceparent: str | None) -> None:
        error: BaseException | None = None
        try:
            self.start(spec)
            attrs = {"looplet.batch.tasks": len(self.tasks), "looplet.batch.pending": len(self.pending)}
            tracing.start({**attrs, **self.engine.attributes()}, traceparent)
            queue = [{"id": t.id, "task": t.task, "traceparent": tracing.traceparent} for t in self.pending]
            queue.reverse()  # lanes pop from the end: tasks start in file order
            async with asyncio.TaskGroup() as group:
                for _ in range(min(len(queue), self.engine.concurrency)):
                    group.create_task(self.lane(spec, queue))
            self.wall_s = time.perf_counter() - self.progress.start
        except BaseException as exc:
            self.stopping = True
            error = exc
            if isinstance(exc, BaseExceptionGroup):  # the lanes' group: the first real error
                error = exc.exceptions[0]
            raise error from None
        finally:
            if self.pending:
                self.engine.stop(error is not None)
            self.progress.close()
            failed = sum(map(is_failure, self.written))
            tracing.end({"looplet.batch.ran": len(self.written), "looplet.batch.failed": failed}, error)

    def summary(self, engine: str, trace_id: str | None) -> BatchSummary:
        now = read_results(self.results.path).records
        return summarize(
            [now[t.id] for t in self.tasks if t.id in now],
            tasks=len(self.tasks),
            ran=len(self.written),
            skipped=len(self.earlier),
            retried=self.retried,
            wall_s=self.wall_s,
            out=self.results.path,
            trace_id=trace_id,
            engine=engine,
        )


def _spec(agent: str, options: dict[str, Any], engine: str) -> dict[str, Any]:
    """The settings every worker gets, as plain data."""
    trace_dir = options.get("trace_dir")
    evals = options.get("evals")
    return {
        "agent": _target(agent),
        "cwd": os.getcwd(),
        "trace_dir": os.path.abspath(trace_dir) if trace_dir else None,
        "otlp": options.get("otlp"),
        "otlp_protocol": options.get("otlp_protocol"),
        "otlp_metrics": bool(options.get("otlp_metrics")),
        "service_name": options.get("service_name") or "looplet-batch",
        "eval": os.path.abspath(evals) if evals and os.path.exists(evals) else evals,
        "max_steps": options.get("max_steps"),
        "redact": options.get("redact", True),
        "flush_each_run": engine == "ray",  # a Ray worker may be stopped before its exporter's next batch
    }


_OPTIONS = (
    "trace_dir",
    "otlp",
    "otlp_protocol",
    "otlp_metrics",
    "service_name",
    "evals",
    "max_steps",
    "redact",
)


async def arun_batch(
    tasks: str | os.PathLike[str] | Iterable[Any],
    agent: str,
    out: str | os.PathLike[str],
    *,
    engine: str = "local",
    concurrency: int | None = None,
    address: str | None = None,
    trace_dir: str | os.PathLike[str] | None = None,
    otlp: str | None = None,
    otlp_protocol: str | None = None,
    otlp_metrics: bool = False,
    service_name: str = "looplet-batch",
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    registry: Any = None,
    evals: str | None = None,
    max_steps: int | None = None,
    redact: bool = True,
    fsync: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    traceparent: str | None = None,
    cpus_per_run: float = 1.0,
    ray_init: dict[str, Any] | None = None,
) -> BatchSummary:
    """Run the agent ``agent`` (``MODULE:FACTORY``) once per task and append a result line per task to
    ``out``; see :func:`run_batch` for the arguments. The async form, for a caller with an event loop."""
    all_tasks = _tasks(tasks)
    if engine not in ("local", "ray"):
        raise BatchError(f"engine must be 'local' or 'ray', got {engine!r}")
    if concurrency is not None and concurrency < 1:
        raise BatchError(f"concurrency must be >= 1, got {concurrency}")
    options = dict(locals())
    spec = _spec(agent, {k: options[k] for k in _OPTIONS}, engine)
    runner: Any = (
        LocalEngine(concurrency)
        if engine == "local"
        else RayEngine(concurrency, address, cpus_per_run=cpus_per_run, ray_init=ray_init)
    )
    metrics = BatchMetrics(registry) if (metrics_port is not None or registry is not None) else None
    with ResultsFile(os.fspath(out), fsync=fsync) as results:
        batch = _Batch(runner, results, all_tasks, metrics, retry_failed)
        batch.progress.enabled = batch.progress.enabled and progress
        tracing = _Tracing(spec)
        if metrics is not None and metrics_port is not None:
            metrics.serve(metrics_port, metrics_addr)
        try:
            await batch.run(spec, tracing, traceparent)
        finally:
            if metrics is not None:
                metrics.stop()
    return batch.summary(engine, tracing.trace_id)


def run_batch(
    tasks: str | os.PathLike[str] | Iterable[Any],
    agent: str,
    out: str | os.PathLike[str],
    **options: Any,
) -> BatchSummary:
    """Run the agent once per task, append one result line per task to ``out``, return the summary.

    tasks: a ``.jsonl`` path (lines ``{"id": ..., "task": {...}}``; a line without ``id`` gets its line
        number) or a list of such dicts (or :class:`Task`).
    agent: ``MODULE:FACTORY`` as for ``looplet run``: FACTORY() returns a dict or object with ``llm`` and
        ``tools`` (optionally ``hooks``, ``config``, ``state``, ``context``, ``system_prompt``). It is
        imported on the workers and called once per task, so every run starts fresh.
    out: the results file. Tasks whose id is already in it are skipped: rerun the same call to resume.
        ``retry_failed=True`` first removes the failed lines of these tasks (no run, or a run that ended
        on an error), so they run again.
    engine: ``"local"`` (threads of this process, ``concurrency`` at a time, default 8) or ``"ray"``
        (Ray tasks; ``address`` of a cluster, ``ray://`` included, else a local Ray instance; default
        concurrency: the cluster's CPUs / ``cpus_per_run``; ``ray_init``: more ``ray.init`` arguments).
    trace_dir: one trajectory folder per task, named by its id (a path every worker can write).
    otlp / otlp_metrics / service_name: export spans (and the GenAI client metrics) over OTLP; the
        ``OTEL_*`` variables work too. The batch's ``looplet.batch`` span is every run's parent.
    metrics_port / metrics_addr / registry: serve the batch's totals on ``/metrics`` (or count them in
        the given ``prometheus_client`` registry).
    evals: a ``.py`` file or module of ``eval_*`` functions run on every run; results go in each line.
    max_steps, redact (trajectories), fsync (each result line), progress (the bar on stderr),
    traceparent (the batch's own parent; default ``TRACEPARENT``).
    """
    return asyncio.run(arun_batch(tasks, agent, out, **options))
