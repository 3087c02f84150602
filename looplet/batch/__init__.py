"""Many runs of one agent: ``looplet batch`` and :func:`run_batch` / :func:`arun_batch`.

One run per task of a JSONL file, on threads of this process or on a Ray cluster; one result line per
task appended to a results file, so an interrupted batch resumes where it stopped; one trace for the whole
batch (a ``looplet.batch`` span, parent of every run's ``invoke_agent`` span, wherever the run happened);
one set of numbers (``/metrics`` of the driver, the summary). See docs/scaling.md.

Standard library only at import; Ray (``looplet[ray]``), OpenTelemetry and prometheus_client are imported
when a batch uses them.
"""

from __future__ import annotations

from looplet.batch._driver import arun_batch, run_batch
from looplet.batch._report import BatchSummary
from looplet.batch._store import BatchError, Task, read_results, read_tasks

__all__ = ["run_batch", "arun_batch", "BatchSummary", "BatchError", "Task", "read_tasks", "read_results"]
