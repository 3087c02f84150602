"""Where runs happen: threads of this process (``local``) or Ray tasks (``ray``). An engine only turns a
task (plain data) into its result line (plain data); the driver does everything else."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from looplet.batch._worker import SetupFailed, failed_record, run_task

__all__ = ["LocalEngine", "RayEngine", "guarded_run"]

SETUP_FAILED = "__looplet_setup_failed__"


def guarded_run(spec: dict[str, Any], item: dict[str, Any], cancel: Any = None) -> dict[str, Any]:
    """:func:`run_task`, with "the agent cannot be built" returned as a marker instead of raised (an
    exception would come back from Ray wrapped in its own types)."""
    try:
        return run_task(spec, item, cancel)
    except SetupFailed as exc:
        return {SETUP_FAILED: str(exc)}


class LocalEngine:
    """Runs in a thread pool of ``concurrency`` threads in this process (an agent with only an async
    backend runs in its thread's own event loop). A cancelled batch cancels the runs in progress."""

    name = "local"

    def __init__(self, concurrency: int | None) -> None:
        self.concurrency = concurrency or 8
        self.cancel = threading.Event()
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="looplet-batch")

    def start(self, spec: dict[str, Any]) -> None:
        from looplet.batch._worker import _factory

        _factory(spec)  # a wrong MODULE:FACTORY fails here, before any task runs

    async def submit(self, spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, guarded_run, spec, item, self.cancel)

    def attributes(self) -> dict[str, Any]:
        return {"looplet.batch.engine": self.name, "looplet.batch.concurrency": self.concurrency}

    def stop(self, interrupted: bool) -> None:
        if interrupted:
            self.cancel.set()  # runs end as `cancelled` at their next phase; their results are not kept
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayEngine:
    """Runs each task as a Ray task (``max_retries=1``: a worker that dies is retried once, then the task
    is written as failed with the reason). Connects to ``address`` (``ray://`` included) or, by default,
    starts a local Ray instance in this process and stops it at the end. Tasks are spread over the nodes
    (``SPREAD``); each reserves ``cpus_per_run`` CPUs, so ``cpus_per_run=0.25`` runs four agents per core
    (agents mostly wait on the model)."""

    name = "ray"

    def __init__(
        self,
        concurrency: int | None,
        address: str | None = None,
        *,
        cpus_per_run: float = 1.0,
        ray_init: dict[str, Any] | None = None,
        scheduling_strategy: Any = "SPREAD",
    ) -> None:
        from looplet.errors import require

        self.ray = require("ray", "ray")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.init_args = dict(ray_init or {})
        self.strategy = scheduling_strategy
        self.concurrency = concurrency or 0
        self.owns = False
        self.fn: Any = None
        self.inflight: set[Any] = set()

    def start(self, spec: dict[str, Any]) -> None:
        ray = self.ray
        if not ray.is_initialized():
            args: dict[str, Any] = {"address": self.address or "local", "log_to_driver": True}
            if args["address"] == "local":  # our own instance: results are small, so is its object store
                args.update(include_dashboard=False, object_store_memory=128 * 1024 * 1024)
                _short_temp_dir()
            args.update(self.init_args)
            try:
                ray.init(**args)
            except Exception as exc:
                from looplet.batch._store import BatchError

                where = self.address or "a local Ray instance"
                raise BatchError(f"cannot start or reach {where}: {type(exc).__name__}: {exc}") from exc
            self.owns = True
        if not self.concurrency:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            self.concurrency = max(1, int(cpus / self.cpus_per_run)) if self.cpus_per_run > 0 else int(cpus)
        self.fn = ray.remote(guarded_run).options(
            num_cpus=self.cpus_per_run,
            max_retries=1,
            retry_exceptions=False,
            scheduling_strategy=self.strategy,
            name="looplet.batch.run",
        )

    async def submit(self, spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        ref = self.fn.remote(spec, item)
        self.inflight.add(ref)
        try:
            result: dict[str, Any] = await ref
            return result
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(
                cause, ImportError
            ):  # the worker lacks looplet or the agent's code: every task would
                return {SETUP_FAILED: f"a Ray worker cannot import what the batch needs: {cause}"}
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return failed_record(item["id"], f"{type(exc).__name__}: {first}"[:500], attempts=2)
        finally:
            self.inflight.discard(ref)

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "looplet.batch.engine": self.name,
            "looplet.batch.concurrency": self.concurrency,
            "looplet.batch.cpus_per_run": self.cpus_per_run,
        }
        try:
            attrs["looplet.batch.nodes"] = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        except Exception:
            pass
        return attrs

    def stop(self, interrupted: bool) -> None:
        ray = self.ray
        if interrupted:
            for ref in list(self.inflight):
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
        if self.owns:
            ray.shutdown()


def _short_temp_dir() -> None:
    """Ray keeps Unix sockets under its temp folder, and a socket path may not exceed 107 bytes: with a long
    ``TMPDIR`` (macOS, CI sandboxes) starting Ray fails. Use ``/tmp`` then, unless ``RAY_TMPDIR`` is set."""
    import tempfile

    if not os.environ.get("RAY_TMPDIR") and len(tempfile.gettempdir()) > 40 and os.path.isdir("/tmp"):
        os.environ["RAY_TMPDIR"] = "/tmp"


def working_dir_env(path: str | None) -> dict[str, Any]:
    """``ray.init`` arguments that ship ``path`` (the agent's code) to every worker."""
    if not path:
        return {}
    return {"runtime_env": {"working_dir": os.path.abspath(path)}}
