"""looplet 0.4.1's checkpoints, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

0.5 checkpoints are written by ``looplet.CheckpointHook(dir)`` (every step, the whole state, blobs by
hash) and read back by ``looplet.resume(dir, ...)``. This module keeps 0.4.1's own format working for
code that still uses it: the JSON record :class:`Checkpoint` (``step_number``, ``session_log_data``,
``config_snapshot``, ...), :class:`FileCheckpointStore` (``{key}.json`` files in a folder), the
store-based :class:`CheckpointHook`, :func:`resume_loop_state`, and :class:`RunEnvelope` (a run's
identity). ``LoopConfig(checkpoint_dir=..., run_envelope=...)`` runs through :class:`DirectoryCheckpoints`
(``looplet._compat_loop``). Nothing here is loaded unless an old name is used.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from looplet.compat import warn_renamed

__all__ = [
    "Checkpoint",
    "CheckpointHook",
    "CheckpointIdentityError",
    "CheckpointStore",
    "DirectoryCheckpoints",
    "FileCheckpointStore",
    "RunEnvelope",
    "UncertainToolEffect",
    "resume_loop_state",
    "validate_checkpoint_identity",
]

_NEW_CHECKPOINTS = "looplet.CheckpointHook(dir) in hooks=[...] and looplet.resume(dir, ...)"


@contextmanager
def _quiet() -> Iterator[None]:
    """Records this module makes for its own use do not warn (the user's call already did)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class CheckpointIdentityError(ValueError):
    """A 0.4.1 checkpoint that belongs to another run (another ``RunEnvelope.run_id``)."""


class UncertainToolEffect(RuntimeError):
    """A 0.4.1 checkpoint saved while tools were running: whether they had their effect is unknown."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls
        ids = ", ".join(str(c.get("call_id")) for c in calls)
        super().__init__(
            f"Tool effects unknown for calls {ids}: the run stopped while they were running. Check what they "
            "did, then delete the pending checkpoint file before resuming."
        )


def validate_checkpoint_identity(checkpoint: Checkpoint, run_id: str | None) -> None:
    """Raise :class:`CheckpointIdentityError` when ``checkpoint`` belongs to a run other than ``run_id``."""
    if run_id is not None and checkpoint.run_id != run_id:
        raise CheckpointIdentityError(f"checkpoint belongs to run {checkpoint.run_id!r}, not {run_id!r}")


@dataclass(frozen=True)
class RunEnvelope:
    """0.4.1's identity of a run (``run_id`` and the host's ids). In 0.5 every run gets its own id
    (``looplet.current_run().run_id``, on every span and log line); a 0.4.1 checkpoint folder uses
    ``run_id`` to keep runs apart."""

    run_id: str
    request_id: str | None = None
    tenant_id: str | None = None
    actor_id: str | None = None
    parent_run_id: str | None = None
    deadline_at: float | None = None
    deployment: str | None = None
    cartridge_version: str | None = None
    model_id: str | None = None
    policy_version: str | None = None
    trace_id: str | None = None

    def __post_init__(self) -> None:
        warn_renamed(
            "RunEnvelope(run_id=...)",
            "looplet.current_run().run_id (each run has its own id); one CheckpointHook(dir) folder per run",
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunEnvelope:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_TERMINAL_STATUS = frozenset({"completed", "failed", "cancelled"})
_DICT_FIELDS = ("session_log_data", "config_snapshot", "tool_results_store", "metadata", "domain_state")


@dataclass
class Checkpoint:
    """0.4.1's checkpoint record (JSON-safe). In 0.5: ``looplet.control.Checkpoint``, written by
    ``CheckpointHook(dir)``."""

    step_number: int
    session_log_data: dict[str, Any]
    conversation_data: dict[str, Any] | None
    config_snapshot: dict[str, Any]
    tool_results_store: dict[str, Any]
    metadata: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    run_status: str = "created"
    run_phase: str = "starting"
    termination_reason: str | None = None
    domain_state: dict[str, Any] = field(default_factory=dict)
    run_envelope: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        warn_renamed("looplet.checkpoint.Checkpoint(step_number=...)", _NEW_CHECKPOINTS)

    @property
    def run_id(self) -> str | None:
        value = self.run_envelope.get("run_id") if isinstance(self.run_envelope, dict) else None
        return None if value is None else str(value)

    @property
    def is_terminal(self) -> bool:
        """A snapshot of a run that ended: nothing to resume."""
        return (
            self.run_status in _TERMINAL_STATUS
            or self.run_phase == "terminal"
            or self.termination_reason is not None
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy (a ``ValueError`` if something in it is not JSON)."""
        try:
            out: dict[str, Any] = json.loads(json.dumps(asdict(self), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError("checkpoint contains data that is not JSON-safe") from exc
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        """A record from :meth:`to_dict`'s output, checked field by field (``ValueError`` naming the field)."""
        _check(data)
        with _quiet():
            return cls(
                step_number=data["step_number"],
                session_log_data=data.get("session_log_data", {}),
                conversation_data=data.get("conversation_data"),
                config_snapshot=data.get("config_snapshot", {}),
                tool_results_store=data.get("tool_results_store", {}),
                metadata=data.get("metadata", {}),
                created_at=data.get("created_at", time.time()),
                run_status=data.get("run_status", "created"),
                run_phase=data.get("run_phase", "starting"),
                termination_reason=data.get("termination_reason"),
                domain_state=data.get("domain_state", {}),
                run_envelope=data.get("run_envelope"),
            )


def _check(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError("checkpoint must be a JSON object")
    step = data.get("step_number")
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"checkpoint step_number must be an integer, got {step!r}")
    for name in _DICT_FIELDS:
        if name in data and not isinstance(data[name], dict):
            raise ValueError(f"checkpoint {name} must be a JSON object")
    for name in ("conversation_data", "run_envelope"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise ValueError(f"checkpoint {name} must be a JSON object or null")
    created = data.get("created_at", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise ValueError("checkpoint created_at must be a number")
    for name in ("run_status", "run_phase"):
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"checkpoint {name} must be a string")
    if data.get("termination_reason") is not None and not isinstance(data["termination_reason"], str):
        raise ValueError("checkpoint termination_reason must be a string or null")


@runtime_checkable
class CheckpointStore(Protocol):
    """0.4.1's storage protocol for :class:`Checkpoint` s: ``save(checkpoint, key)``, ``load(key)``."""

    def save(self, checkpoint: Checkpoint, key: str) -> None: ...

    def load(self, key: str, *, run_id: str | None = None) -> Checkpoint | None: ...


class FileCheckpointStore:
    """0.4.1's store: each checkpoint a ``{key}.json`` file in ``directory`` (``{run_id}__{key}.json``
    when it carries a run id), written atomically. In 0.5: ``CheckpointHook(dir)``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        warn_renamed("FileCheckpointStore(dir)", _NEW_CHECKPOINTS)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key_for(checkpoint: Checkpoint, key: str) -> str:
        """The file name (without ``.json``) ``save`` uses for ``key``."""
        name = Path(key).name
        return f"{checkpoint.run_id}__{name}" if checkpoint.run_id else name

    def save(self, checkpoint: Checkpoint, key: str) -> None:
        name = self.key_for(checkpoint, key)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(checkpoint.to_dict(), indent=2))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.directory / f"{name}.json")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _path(self, key: str, run_id: str | None) -> Path | None:
        name = Path(key).name
        for candidate in ([f"{run_id}__{name}"] if run_id is not None else []) + [name]:
            if (self.directory / f"{candidate}.json").exists():
                return self.directory / f"{candidate}.json"
        scoped = sorted(self.directory.glob(f"*__{name}.json"))
        if len(scoped) > 1:
            raise ValueError(f"checkpoint key {key!r} is ambiguous: pass run_id")
        return scoped[0] if scoped else None

    def load(self, key: str, *, run_id: str | None = None) -> Checkpoint | None:
        """The checkpoint saved under ``key``, or None; one of another run raises ``CheckpointIdentityError``."""
        path = self._path(key, run_id)
        if path is None:
            return None
        checkpoint = Checkpoint.from_dict(json.loads(path.read_text()))
        validate_checkpoint_identity(checkpoint, run_id)
        return checkpoint

    def remove(self, key: str, checkpoint: Checkpoint) -> None:
        (self.directory / f"{self.key_for(checkpoint, key)}.json").unlink(missing_ok=True)

    def _scan(self, run_id: str | None, strict: bool) -> Iterator[Checkpoint]:
        """Every readable checkpoint. ``strict``: an unreadable file of run ``run_id`` (or one without a
        run id in its name) raises instead of being skipped."""
        for path in sorted(self.directory.glob("*.json")):
            try:
                cp = Checkpoint.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                other_run = "__" in path.stem and (run_id is None or not path.stem.startswith(f"{run_id}__"))
                if not strict or other_run:
                    continue
                raise ValueError(
                    f"Cannot safely resume from checkpoint {path}: it cannot be read ({exc}). Keep the "
                    "file and find out what the run did before starting it again."
                ) from exc
            yield cp

    def load_latest(self, *, run_id: str | None = None) -> Checkpoint | None:
        """The checkpoint with the highest step number (of ``run_id`` when given); unreadable files are skipped."""
        found = [cp for cp in self._scan(run_id, strict=False) if run_id is None or cp.run_id == run_id]
        return max(found, key=lambda cp: cp.step_number, default=None)

    def load_latest_for_resume(self, *, run_id: str | None = None) -> Checkpoint | None:
        """The checkpoint a restarted run continues from: the latest one of the run, or None when the run
        has ended (a terminal checkpoint) or never saved one. An unreadable file of the run raises."""
        found = [cp for cp in self._scan(run_id, strict=True) if cp.run_id == run_id]
        if any(cp.is_terminal for cp in found):
            return None
        return max(found, key=lambda cp: cp.step_number, default=None)


class CheckpointHook:
    """0.4.1's hook: ``store.save(get_checkpoint_data(step), f"step_{step}")`` every
    ``save_every_n_steps`` steps, once the step is recorded. In 0.5: ``looplet.CheckpointHook(dir)``."""

    def __init__(
        self,
        store: Any,
        get_checkpoint_data: Callable[[int], Checkpoint],
        save_every_n_steps: int = 5,
    ) -> None:
        warn_renamed(
            "looplet.checkpoint.CheckpointHook(store=..., get_checkpoint_data=...)", _NEW_CHECKPOINTS
        )
        if (
            isinstance(save_every_n_steps, bool)
            or not isinstance(save_every_n_steps, int)
            or save_every_n_steps < 1
        ):
            raise ValueError(f"save_every_n_steps must be an int >= 1, got {save_every_n_steps!r}")
        self.store = store
        self.get_checkpoint_data = get_checkpoint_data
        self.save_every_n_steps = save_every_n_steps
        self._due: list[int] = []

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
        return None

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> None:
        return None

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> None:
        if step_num % self.save_every_n_steps == 0:
            if isinstance(getattr(state, "steps", None), list):
                self._due.append(step_num)  # saved once the loop has recorded the step
            else:
                self._save(step_num)

    def post_step(self, state: Any, session_log: Any, step_num: int) -> None:
        if step_num in self._due:
            self._due.remove(step_num)
            self._save(step_num)

    def _save(self, step_num: int) -> None:
        self.store.save(self.get_checkpoint_data(step_num), f"step_{step_num}")

    def check_done(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
        return None

    def should_stop(self, state: Any, step_num: int, new_entities: Any) -> bool:
        return False

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        return None


def _budgets(cfg: dict[str, Any], max_steps: int | None) -> dict[str, Any]:
    counters: dict[str, Any] = {k: cfg[k] for k in ("queries_used", "budget_remaining") if k in cfg}
    if max_steps is not None and "max_steps" in cfg and "budget_remaining" in cfg:
        values = (max_steps, cfg["max_steps"], cfg["budget_remaining"])
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"checkpoint step budgets must be nonnegative integers, got {values!r}")
        # what was left, moved by how much the cap changed
        counters["budget_remaining"] = max(0, cfg["budget_remaining"] + max_steps - cfg["max_steps"])
    return counters


def resume_loop_state(checkpoint: Checkpoint, *, max_steps: int | None = None) -> dict[str, Any]:
    """0.4.1's ``resume_loop_state(checkpoint)``: what a run continues from (``session_log``,
    ``step_offset``, ``state_counters`` with the step budget moved to ``max_steps``, ``metadata``, ...).
    In 0.5, ``looplet.resume(dir, ...)`` continues a saved run. A checkpoint saved while tools were
    running raises :class:`UncertainToolEffect`."""
    from looplet._compat_session import SessionLog

    warn_renamed("resume_loop_state(checkpoint)", "looplet.resume(dir, ...)")
    if checkpoint.metadata.get("pending_calls"):
        raise UncertainToolEffect(checkpoint.metadata["pending_calls"])
    with _quiet():
        log = SessionLog.from_data(checkpoint.session_log_data)
    return {
        "session_log": log,
        "conversation": checkpoint.conversation_data or None,  # 0.5 has no Conversation: the saved data
        "step_offset": checkpoint.step_number,
        "state_counters": _budgets(checkpoint.config_snapshot or {}, max_steps),
        "tool_results_store": checkpoint.tool_results_store,
        "domain_state": checkpoint.domain_state,
        "run_envelope": checkpoint.run_envelope,
        "metadata": checkpoint.metadata,
    }


# ---------------------------------------------------------------- LoopConfig(checkpoint_dir=...)


class DirectoryCheckpoints:
    """The hook ``LoopConfig(checkpoint_dir=...)`` adds, in 0.4.1's format: before tools run, a
    ``step_N_pending`` checkpoint listing the calls (a crash then leaves it: their effect is unknown);
    after each step a ``step_N`` checkpoint (the pending one removed); at the end a terminal one.
    :meth:`resume` is what the run does first: continue the step budget of the latest checkpoint."""

    def __init__(self, directory: str, envelope: Any) -> None:
        with _quiet():
            self.store = FileCheckpointStore(directory)
        self.envelope = envelope.to_dict() if isinstance(envelope, RunEnvelope) else envelope
        self.run_id = None if self.envelope is None else self.envelope.get("run_id")
        self.pending: dict[int, list[dict[str, Any]]] = {}

    def resume(self, state: Any, max_steps: int) -> int:
        """The step limit of this run: the budget left by the latest checkpoint (moved by how much
        ``max_steps`` changed), set on the state too. A checkpoint of calls whose effect is unknown
        raises :class:`UncertainToolEffect`; an unreadable one ``ValueError``."""
        latest = self.store.load_latest_for_resume(run_id=self.run_id)
        if latest is None:
            return max_steps
        if latest.metadata.get("pending_calls"):
            raise UncertainToolEffect(latest.metadata["pending_calls"])
        left = _budgets(latest.config_snapshot or {}, max_steps).get("budget_remaining")
        if not isinstance(left, int) or isinstance(left, bool):
            return max_steps
        if isinstance(getattr(type(state), "budget_remaining", None), property):
            with _quiet():
                state.budget_remaining = left
        return min(max_steps, len(state.steps) + left)

    def _record(self, state: Any, step: int, **extra: Any) -> Checkpoint:
        steps = list(getattr(state, "steps", []))
        entries = [
            {
                "step": s.number,
                "theory": "",
                "tool": s.tool_call.tool,
                "reasoning": s.tool_call.reasoning or "",
            }
            for s in steps
        ]
        snapshot = {"max_steps": getattr(state, "max_steps", None), "queries_used": len(steps)}
        left = getattr(state, "budget_remaining", None)
        if isinstance(left, int):
            snapshot["budget_remaining"] = left
        metadata = extra.pop("metadata", {})
        with _quiet():
            return Checkpoint(
                step,
                {"entries": entries, "current_theory": ""},
                None,
                snapshot,
                {},
                metadata,
                run_envelope=self.envelope,
                **extra,
            )

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> None:
        calls = self.pending.setdefault(step_num, [])
        calls.append(
            {
                "call_id": tool_call.id,
                "tool": tool_call.tool,
                "proposed_args": dict(tool_call.args),
                "effective_args": dict(tool_call.args),
                "execution_status": "effect_unknown",
            }
        )
        cp = self._record(
            state, step_num, metadata={"pending_calls": calls}, run_status="running", run_phase="dispatching"
        )
        self.store.save(cp, f"step_{step_num}_pending")

    def on_step(self, state: Any, step: Any) -> None:
        cp = self._record(state, step.number, run_status="running", run_phase="between_steps")
        self.store.save(cp, f"step_{step.number}")
        if self.pending.pop(step.number, None) is not None:
            self.store.remove(f"step_{step.number}_pending", cp)

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        if self.pending:  # tools were running when the run stopped: keep the pending checkpoint
            return
        reason = getattr(result, "stop_reason", None) or "stopped"
        status = {"done": "completed", "cancelled": "cancelled", "llm_error": "failed"}.get(
            reason, "completed"
        )
        cp = self._record(
            state,
            len(getattr(state, "steps", [])),
            metadata={"status": reason},
            run_status=status,
            run_phase="terminal",
            termination_reason=reason,
        )
        self.store.save(cp, f"step_{cp.step_number}_{'done' if reason == 'done' else 'final'}")
