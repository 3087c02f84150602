"""One task, one run, one plain result: what a worker (a thread of this process or a Ray worker) does.

:func:`run_task` takes the batch's settings and a task as plain data, builds the agent with the factory
(``looplet run``'s ``MODULE:FACTORY`` convention, :func:`looplet.cli_run.build_agent`), runs it under the
batch's ``traceparent`` and returns the result line as a dict. What a process sets up once (the factory's
module, the telemetry session, the evals) is kept per process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import threading
import time
from typing import Any

from looplet.batch._store import folder_for

__all__ = ["run_task", "failed_record", "SetupFailed"]

log = logging.getLogger("looplet")
_lock = threading.Lock()
_factories: dict[tuple[str, str], Any] = {}
_evals: dict[str, list[Any]] = {}


class SetupFailed(Exception):
    """The agent cannot be built at all (bad MODULE:FACTORY, a factory that raises): the batch stops."""


def _node() -> str:
    ray = sys.modules.get("ray")  # a Ray worker has it; the local engine does not import it
    try:
        if ray is not None and ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # ray absent, or not a Ray worker
        pass
    return socket.gethostname()


def failed_record(task_id: str, error: str, **extra: Any) -> dict[str, Any]:
    """The result line of a task that has no run to report (its worker died, the run raised)."""
    return {
        "id": task_id,
        "status": "failed",
        "stop_reason": None,
        "steps": 0,
        "llm_calls": 0,
        "usage": None,
        "cost_usd": None,
        "duration_ms": None,
        "model": None,
        "trace_id": None,
        "trajectory": None,
        "error": error[:2000],
        **extra,
    }


def _factory(spec: dict[str, Any]) -> Any:
    from looplet.cli_run import UsageError, load_factory

    key = (spec["agent"], spec.get("cwd") or "")
    with _lock:
        factory = _factories.get(key)
        if factory is not None:
            return factory
        cwd = spec.get("cwd")
        if cwd and os.path.isdir(cwd) and cwd not in sys.path:
            sys.path.insert(0, cwd)  # a dotted MODULE next to where the batch was started
        try:
            factory = load_factory(spec["agent"])
        except UsageError as exc:
            raise SetupFailed(str(exc)) from None
        _factories[key] = factory
        return factory


def telemetry_session(spec: dict[str, Any]) -> Any:
    """The process's telemetry session when spans are exported (``--otlp`` or ``OTEL_*``), else None."""
    wanted = spec.get("otlp") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    wanted = wanted or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not wanted:
        return None
    from looplet.telemetry.setup import configure

    return configure(
        service_name=spec.get("service_name") or "looplet-batch",
        otlp_endpoint=spec.get("otlp"),
        otlp_protocol=spec.get("otlp_protocol"),
        json_logs=False,
        otlp_metrics=bool(spec.get("otlp_metrics")),
    )


def _tracing_hooks(spec: dict[str, Any]) -> tuple[list[Any], Any]:
    session = telemetry_session(spec)
    if session is not None:
        return list(session.hooks), session
    try:
        from looplet.telemetry.tracing import TracingHook
    except ImportError:  # no otel extra: runs are not traced, results carry no trace id
        return [], None
    return [TracingHook()], None  # the application's global provider (a no-op one keeps the ids)


def _eval_hook(spec: dict[str, Any]) -> Any:
    source = spec.get("eval")
    if not source:
        return None
    from looplet.evals import EvalHook, discover

    with _lock:
        fns = _evals.get(source)
        if fns is None:
            try:
                fns = _evals[source] = discover(source)
            except Exception as exc:
                raise SetupFailed(
                    f"cannot load the evals in {source!r}: {type(exc).__name__}: {exc}"
                ) from None
    return EvalHook(fns)


def _trajectory(spec: dict[str, Any], task_id: str) -> tuple[list[Any], str | None]:
    root = spec.get("trace_dir")
    if not root:
        return [], None
    from looplet.provenance import ProvenanceSink

    folder = os.path.join(root, folder_for(task_id))
    if os.path.isdir(folder):  # left by an attempt that never wrote its result line: start clean
        shutil.rmtree(folder, ignore_errors=True)
    sink = ProvenanceSink(folder, redact=spec.get("redact", True))
    return [sink.trajectory_hook()], folder


def _run(
    agent: dict[str, Any], item: dict[str, Any], hooks: list[Any], spec: dict[str, Any], cancel: Any
) -> Any:
    from looplet.state import DefaultState

    config = agent["config"]
    limit = spec.get("max_steps") or (config.max_steps if config is not None else 15)
    state = agent["state"] if agent["state"] is not None else DefaultState(max_steps=limit)
    kwargs = dict(
        llm=agent["llm"],
        tools=agent["tools"],
        task=item["task"],
        hooks=hooks,
        config=config,
        state=state,
        context=agent["context"],
        system_prompt=agent["system_prompt"],
        max_steps=spec.get("max_steps"),
        parent=item.get("traceparent"),
        cancel=cancel,
    )
    if callable(getattr(agent["llm"], "generate", None)):
        from looplet.loop import run_loop

        return run_loop(**kwargs), state
    from looplet.async_loop import async_composable_loop

    async def go() -> Any:
        async for _step in async_composable_loop(**kwargs):
            pass
        return state.result

    return asyncio.run(go()), state


def _settle(folder: str | None, saved: Any) -> str | None:
    """The task's trajectory folder. A sink that puts a run one folder further down (``folder/<run>/``)
    has it moved up, so the trace dir holds exactly one folder per task, named by the task id."""
    if not folder or not isinstance(saved, str) or os.path.normpath(saved) == os.path.normpath(folder):
        return saved if isinstance(saved, str) else None
    if os.path.dirname(os.path.normpath(saved)) != os.path.normpath(folder) or len(os.listdir(folder)) != 1:
        return saved
    moving = f"{os.path.normpath(folder)}.{os.getpid()}.tmp"
    os.rename(saved, moving)
    os.rmdir(folder)
    os.rename(moving, folder)
    return folder


def _record(
    task_id: str, result: Any, state: Any, agent: dict[str, Any], folder: str | None
) -> dict[str, Any]:
    usage = result.usage
    steps = result.steps
    model = getattr(agent["llm"], "model", None) or next((s.model for s in reversed(steps) if s.model), None)
    metadata = getattr(state, "metadata", None)
    saved = metadata.get("trajectory_dir") if isinstance(metadata, dict) else None
    evals = metadata.get("evals") if isinstance(metadata, dict) else None
    record = {
        "id": task_id,
        "status": "ok",
        "stop_reason": result.stop_reason,
        "steps": len(steps),
        "llm_calls": result.llm_calls,
        "usage": usage.to_dict(),
        "cost_usd": result.cost_usd,
        "duration_ms": round(result.duration_ms, 3),
        "model": model,
        "trace_id": result.trace_id,
        "trajectory": _settle(folder, saved),
        "error": result.error,
        "final_output": result.to_dict()["final_output"],
    }
    if evals is not None:
        record["evals"] = evals
    return record


def _flush(session: Any, timeout_s: float) -> None:
    """Export what the run left queued: a Ray worker may be stopped before its exporters' next round."""
    session.force_flush(timeout_s=timeout_s)
    meters = getattr(session, "meter_provider", None)
    if meters is not None:  # --otlp-metrics: the GenAI client metrics too
        try:
            meters.force_flush(timeout_millis=int(timeout_s * 1000))
        except Exception as exc:  # telemetry never decides a task's outcome
            log.debug("looplet batch: flushing metrics failed: %r", exc)


def run_task(spec: dict[str, Any], item: dict[str, Any], cancel: Any = None) -> dict[str, Any]:
    """Run one task; return its result line. Raises :class:`SetupFailed` when the agent cannot be built
    (the same for every task, so the batch stops); any other failure is a ``failed`` result line."""
    from looplet.cli_run import UsageError, build_agent

    task_id = item["id"]
    where = {"node": _node(), "pid": os.getpid()}
    started = time.perf_counter()
    try:
        factory = _factory(spec)
        try:
            agent = build_agent(factory, spec["agent"])
        except UsageError as exc:
            raise SetupFailed(str(exc)) from None
        hooks, session = _tracing_hooks(spec)
        traj_hooks, folder = _trajectory(spec, task_id)
        evals = _eval_hook(spec)
        hooks = hooks + list(agent["hooks"]) + traj_hooks + ([evals] if evals is not None else [])
        result, state = _run(agent, item, hooks, spec, cancel)
        record = _record(task_id, result, state, agent, folder)
    except SetupFailed:
        raise
    # the run itself raised (strict hooks, a bug): this task failed, the batch goes on
    except Exception as exc:
        ms = round((time.perf_counter() - started) * 1000.0, 3)
        return failed_record(task_id, f"{type(exc).__name__}: {exc}", duration_ms=ms, **where)
    if spec.get("flush_each_run") and session is not None:
        _flush(session, float(spec.get("flush_timeout_s", 2.0)))
    record.update(where)
    return record
