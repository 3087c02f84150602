"""ProvenanceSink: an OpenTelemetry span exporter that writes each run as a trajectory folder.

Three ways in, one builder (:func:`looplet.provenance.spans.build`): spans from any ``TracerProvider``
(``BatchSpanProcessor(ProvenanceSink(dir))``), ``sink.trajectory_hook()`` and ``sink.wrap_llm(llm)``; the
last two emit the same span records ``TracingHook`` would, so every route writes the same folder.

Where a run goes: the first run the sink writes goes in ``dir`` itself when ``dir`` holds no run yet;
every other run goes in ``dir/<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>/``. A sub-agent run recorded by the
same sink is not a folder of its own: its steps are the ``children`` of the step that ran it.

``ProvenanceSink`` is made on first use (``looplet.provenance.ProvenanceSink``): with the ``otel`` extra it
subclasses ``opentelemetry.sdk.trace.export.SpanExporter``; ``import looplet.provenance`` imports no
OpenTelemetry.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looplet.provenance import capture
from looplet.provenance.format import TRAJECTORY_FILE, RunRecord, folder_name, render_files, write_folder
from looplet.provenance.spans import SpanBuffer, read_otlp_json

__all__ = ["ProvenanceSink", "TrajectoryHook"]

log = logging.getLogger("looplet.provenance")
TrajectoryHook = capture.TrajectoryHook


def _resolve_redact(redact: Any) -> Callable[[str], str] | None:
    """None/False: as is. True or "default": ``looplet.telemetry.redact.Redactor()``. A callable: used."""
    if redact is None or redact is False:
        return None
    if redact is True or redact == "default":
        from looplet.telemetry.redact import Redactor

        return Redactor()
    if callable(redact):
        return redact  # type: ignore[no-any-return]
    raise TypeError(
        f"redact must be None, True, 'default' or a callable str -> str, got {type(redact).__name__}"
    )


class _Sink:
    """What ProvenanceSink does; see the module docstring.

    dir: the run folder (the first run), and the parent of the folders of later runs.
    redact: True (the default: looplet's redactor, i.e. the built-in patterns for API keys, bearer tokens,
        e-mail addresses, ... and the values of the process's secret environment variables), a callable
        ``str -> str``, or False/None to write content as it is; applied to every byte written (JSON values
        through ``redact_json`` when it has one).
    max_chars_per_call: prompt and response files longer than this keep their head and tail.
    fsync: have every file and folder on the disk before a folder is put in place (survives a power cut).
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        redact: Any = True,
        max_chars_per_call: int = 200_000,
        *,
        fsync: bool = False,
    ) -> None:
        if not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"ProvenanceSink(dir=...) must be a path, got {type(dir).__name__}")
        if not isinstance(max_chars_per_call, int) or max_chars_per_call < 1:
            raise ValueError(f"max_chars_per_call must be an int >= 1, got {max_chars_per_call!r}")
        self.dir = Path(dir)
        self.redact = _resolve_redact(redact)
        self.max_chars_per_call = max_chars_per_call
        self.fsync = fsync
        self.written: collections.deque[Path] = collections.deque(maxlen=1000)
        self._lock = threading.RLock()
        self._buffer = SpanBuffer()
        self._pending: dict[str, tuple[Any, capture._RunState]] = {}  # wrap_llm runs by run id
        self._children: dict[tuple[int, int], list[Any]] = {}  # sub-agent records waiting for their parent
        self._folders: dict[str, Path] = {}
        self._dir_used = False
        self._closed = False

    def __repr__(self) -> str:
        return f"ProvenanceSink({str(self.dir)!r})"

    def folder_of(self, run_id: str) -> Path | None:
        """Where the run ``run_id`` was written (None: not written, or not among the last 1000)."""
        return self._folders.get(run_id)

    @property
    def last_path(self) -> Path | None:
        """The folder written most recently."""
        return self.written[-1] if self.written else None

    # -- routes ------------------------------------------------------------------------------------------
    def trajectory_hook(self) -> capture.TrajectoryHook:
        """A hook that records each run it is part of; the folder is written when the run ends."""
        return capture.TrajectoryHook(self)

    def wrap_llm(self, llm: Any) -> capture.RecordingLLM:
        """``llm`` with every call recorded; a run's folder is written at :meth:`flush` once it has ended."""
        if not callable(getattr(llm, "generate", None)) and not callable(getattr(llm, "agenerate", None)):
            raise TypeError(
                f"wrap_llm needs a backend with generate() or agenerate(), got {type(llm).__name__}"
            )
        return capture.RecordingLLM(llm, self)

    def add_spans(self, spans: Any) -> list[Path]:
        """File spans (``ReadableSpan`` or :class:`~looplet.provenance.spans.SpanRec`); write the runs they end."""
        return self._take(spans)

    def load_otlp_json(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the runs in a file of OTLP JSON (the Collector's file exporter)."""
        with self._lock:
            return self._take(read_otlp_json(path)) + [
                p for r in self._buffer.release() if (p := self._write(r))
            ]

    # -- SpanExporter --------------------------------------------------------------------------------------
    def export(self, spans: Sequence[Any]) -> Any:
        """Take a batch of finished spans; write the runs they end (on the span processor's thread)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._closed:
            return SpanExportResult.FAILURE
        try:
            self._take(spans)
        except Exception:
            log.exception("ProvenanceSink could not take a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write the wrapped-backend runs that have ended, and sub-agent runs still waiting for theirs."""
        self.flush()
        return True

    def shutdown(self) -> None:
        self.flush()
        self._closed = True

    def flush(self, timeout_s: float | None = None) -> list[Path]:
        """Write every finished run not written yet; returns their folders. Never gives up on one.
        (``timeout_s`` is accepted for older callers; the work is bounded by the runs, not a clock.)"""
        with self._lock:
            ended = {
                rid: e for rid, e in self._pending.items() if getattr(e[0].state, "result", None) is not None
            }
            for rid in ended:
                del self._pending[rid]
            out = self._take(_wrapped(list(ended.values())))
            return out + [p for r in self._buffer.release() if (p := self._write(r))]

    # -- inside ----------------------------------------------------------------------------------------------
    def _pending_run(self, run: Any) -> capture._RunState:
        with self._lock:
            entry = self._pending.get(run.run_id)
            if entry is None:  # a new run: the runs that have ended meanwhile are written now
                self.flush()
                entry = self._pending[run.run_id] = (run, capture._RunState(run, self))
            return entry[1]

    def _take(self, spans: Any) -> list[Path]:
        with self._lock:
            return [p for r in self._buffer.add(spans) if (p := self._write(r)) is not None]

    def _target(self, rec: RunRecord) -> Path:
        """``dir`` for the sink's first run when it holds no run yet; else a new folder under it."""
        if (
            not self._dir_used
            and not (self.dir / TRAJECTORY_FILE).exists()
            and not (self.dir / "steps").exists()
        ):
            return self.dir
        base = self.dir / folder_name(rec, self.redact)
        target, n = base, 1
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}-{n}")
        return target

    def _write(self, rec: RunRecord) -> Path | None:
        try:
            files = render_files(rec, self.redact, self.max_chars_per_call)
            target = self._target(rec)
            path = write_folder(target.parent, target.name, files, fsync=self.fsync)
        except Exception:
            log.exception("could not write the trajectory of run %s under %s", rec.run_id, self.dir)
            return None
        self._dir_used = True  # the first run written (not tried) is the one in dir
        self.written.append(path)
        self._folders[rec.run_id] = path
        while len(self._folders) > 1000:
            del self._folders[next(iter(self._folders))]
        return path


def _wrapped(runs: list[tuple[Any, capture._RunState]]) -> list[Any]:
    """Span records of ended wrapped-backend runs: a sub-agent's (found by its Steps being the children of
    a parent's step) go after its parent's steps and before its parent's own record."""
    parents: dict[int, tuple[int, int]] = {}
    recs = {id(run): capture.wrapped_records(run, st, parents) for run, st in runs}
    owner = {
        id(s.children[0]): tool
        for run, _st in runs
        for s in run.state.result.steps
        if s.children
        for tool in [parents.get(id(s))]
        if tool
    }
    kids: dict[int, list[Any]] = collections.defaultdict(list)
    top = []
    for run, _st in runs:
        steps = run.state.result.steps
        parent = owner.get(id(steps[0])) if steps else None
        if parent is None:
            top.append(run)
            continue
        for r in recs[id(run)]:
            r.trace_id = parent[0]
        recs[id(run)][-1].parent_id = parent[1]
        kids[parent[0]].append(recs[id(run)])

    out: list[Any] = []
    for run in top:
        mine = recs[id(run)]
        out += mine[:-1]
        for k in kids.pop(mine[-1].trace_id, []):
            out += k
        out.append(mine[-1])
    return out + [r for k in kids.values() for rs in k for r in rs]


def _make_class() -> type:
    try:
        from opentelemetry.sdk.trace.export import SpanExporter
    except ImportError:
        return type("ProvenanceSink", (_Sink,), {"__doc__": _Sink.__doc__, "__module__": __name__})
    return type("ProvenanceSink", (_Sink, SpanExporter), {"__doc__": _Sink.__doc__, "__module__": __name__})


if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    class ProvenanceSink(_Sink, SpanExporter): ...
else:

    def __getattr__(name: str) -> Any:
        if name == "ProvenanceSink":  # made on first use: only then is OpenTelemetry imported
            cls = globals()["ProvenanceSink"] = _make_class()
            return cls
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
