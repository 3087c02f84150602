"""``looplet batch TASKS.jsonl --agent MODULE:FACTORY --out RESULTS.jsonl``: one run per task.

TASKS.jsonl holds one task a line, ``{"id": "t1", "task": {"goal": "..."}}`` (a line without ``id`` gets
its line number). RESULTS.jsonl gets one line per task: id, status, stop reason, steps, LLM calls, tokens,
cost, duration, model, trace id, trajectory folder, error, node. Rerun the same command to resume: tasks
already in RESULTS.jsonl are skipped.

    looplet batch tasks.jsonl --agent my_agent:build --out results.jsonl --concurrency 16
    looplet batch tasks.jsonl --agent my_agent:build --out results.jsonl --engine ray --address ray://head:10001 \\
        --otlp http://collector:4318 --trace-dir /shared/traces --metrics-port 9464 --eval evals.py

Exit status 1 means some task failed (no run, or a run that ended on an error); see the summary.
"""

from __future__ import annotations

import argparse
import sys

from looplet.cli import EXIT_INTERRUPTED, ArgumentParser, check_otlp, port_arg, run_command

__all__ = ["main"]

PROG = "looplet batch"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(PROG, __doc__)
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
        "--metrics-port", type=port_arg, default=None, metavar="P", help="serve the batch's /metrics on P"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR", help="address for --metrics-port")
    p.add_argument("--eval", default=None, metavar="FILE", help="eval_* functions run on every run")
    p.add_argument("--max-steps", type=int, default=None, help="tool calls per run at most")
    p.add_argument(
        "--traceparent", default=None, metavar="TP", help="the batch's parent trace (default: $TRACEPARENT)"
    )
    p.add_argument("--fsync", action="store_true", help="sync each result line to disk")
    p.add_argument("--retry-failed", action="store_true", help="run the tasks whose line says failed again")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    return p


def _batch(args: argparse.Namespace) -> int:
    from looplet.batch._driver import run_batch
    from looplet.batch._engines import working_dir_env

    otlp, protocol = check_otlp(args.otlp) if args.otlp else (None, None)
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
            otlp=otlp,
            otlp_protocol=protocol,
            otlp_metrics=args.otlp_metrics,
            service_name=args.service_name,
            metrics_port=args.metrics_port,
            metrics_addr=args.metrics_addr,
            evals=args.eval,
            max_steps=args.max_steps,
            traceparent=args.traceparent,
            fsync=args.fsync,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(
            f"\n{PROG}: interrupted; finished results are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(summary.format(), file=sys.stderr)
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(PROG, lambda: _batch(args))
