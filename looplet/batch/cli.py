"""``looplet batch TASKS.jsonl --agent MODULE:FACTORY --out RESULTS.jsonl``: one run per task.

TASKS.jsonl holds one task a line, ``{"id": "t1", "task": {"goal": "..."}}`` (a line without ``id`` gets
its line number). RESULTS.jsonl gets one line per task: id, status, stop reason, steps, LLM calls, tokens,
cost, duration, model, trace id, trajectory folder, error, node. Rerun the same command to resume: tasks
already in RESULTS.jsonl are skipped.

    looplet batch tasks.jsonl --agent my_agent:build --out results.jsonl --concurrency 16
    looplet batch tasks.jsonl --agent my_agent:build --out results.jsonl --engine ray --address ray://head:10001 \\
        --otlp http://collector:4318 --trace-dir /shared/traces --metrics-port 9464 --eval evals.py

Exit status: 0 every task has a result without error, 1 some failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from looplet.errors import MissingExtra

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="looplet batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("tasks", metavar="TASKS.jsonl", help="one task a line")
    p.add_argument(
        "--agent", required=True, metavar="MODULE:FACTORY", help="the agent factory (as for looplet run)"
    )
    p.add_argument(
        "--out", required=True, metavar="RESULTS.jsonl", help="results, one line per task (appended)"
    )
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where runs happen (default local)"
    )
    p.add_argument(
        "--concurrency", type=int, default=None, metavar="N", help="runs at a time (local: 8; ray: the CPUs)"
    )
    p.add_argument("--address", default=None, help="Ray cluster address (host:port or ray://host:10001)")
    p.add_argument(
        "--cpus-per-run", type=float, default=1.0, metavar="C", help="Ray CPUs reserved by a run (default 1)"
    )
    p.add_argument(
        "--working-dir", default=None, metavar="DIR", help="Ray: ship DIR (your agent's code) to the workers"
    )
    p.add_argument(
        "--otlp",
        default=None,
        metavar="URL",
        help="export spans here (default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    p.add_argument(
        "--otlp-metrics", action="store_true", help="workers also push the GenAI metrics over OTLP"
    )
    p.add_argument("--service-name", default="looplet-batch", help="OpenTelemetry service.name")
    p.add_argument(
        "--trace-dir", default=None, metavar="DIR", help="a trajectory folder per task, named by its id"
    )
    p.add_argument(
        "--metrics-port", type=int, default=None, metavar="P", help="serve the batch's /metrics on P"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR", help="address for --metrics-port")
    p.add_argument("--eval", default=None, metavar="FILE", help="eval_* functions run on every run")
    p.add_argument("--max-steps", type=int, default=None, help="tool calls per run at most")
    p.add_argument(
        "--traceparent", default=None, metavar="TP", help="the batch's parent trace (default: $TRACEPARENT)"
    )
    p.add_argument("--fsync", action="store_true", help="sync each result line to disk")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from looplet.batch._driver import run_batch
    from looplet.batch._engines import working_dir_env
    from looplet.batch._store import BatchError
    from looplet.cli_run import UsageError

    err = sys.stderr
    try:
        summary = run_batch(
            args.tasks,
            args.agent,
            args.out,
            engine=args.engine,
            concurrency=args.concurrency,
            address=args.address,
            cpus_per_run=args.cpus_per_run,
            ray_init=working_dir_env(args.working_dir),
            trace_dir=args.trace_dir,
            otlp=args.otlp,
            otlp_metrics=args.otlp_metrics,
            service_name=args.service_name,
            metrics_port=args.metrics_port,
            metrics_addr=args.metrics_addr,
            evals=args.eval,
            max_steps=args.max_steps,
            traceparent=args.traceparent,
            fsync=args.fsync,
            progress=not args.quiet,
        )
    except (BatchError, UsageError, MissingExtra) as exc:
        print(f"looplet batch: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print(
            "\nlooplet batch: interrupted; finished results are kept, rerun the same command to resume",
            file=err,
        )
        return 130
    print(summary.format(), file=err)
    return 1 if summary.failed else 0
