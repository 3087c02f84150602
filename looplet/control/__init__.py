"""Control hooks: steer a run and make it survive a crash or a pause.

``ApprovalHook`` (a human says yes or no), ``PermissionHook`` (allow/deny/ask rules), ``CheckpointHook``
(state on disk after every step; resumes by itself), ``resume`` (continue a saved or paused run),
``BudgetHook`` (tokens and cost) and ``StagnationHook`` (the same call over and over). Each reports what
it did with ``looplet.emit_event`` (span events and metrics through the telemetry hooks) and a log line.
"""

from looplet.control.approval import ApprovalHook
from looplet.control.checkpoint import Checkpoint, CheckpointHook
from looplet.control.limits import BudgetHook, StagnationHook
from looplet.control.permission import PermissionHook, Rule
from looplet.control.resume import aresume, resume

__all__ = [
    "ApprovalHook",
    "PermissionHook",
    "Rule",
    "CheckpointHook",
    "Checkpoint",
    "resume",
    "aresume",
    "BudgetHook",
    "StagnationHook",
]
