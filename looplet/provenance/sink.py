"""ProvenanceSink: an OpenTelemetry span exporter that writes each run as a trajectory folder.

Three ways in, one builder (:func:`looplet.provenance.spans.build`): spans from any ``TracerProvider``
(``BatchSpanProcessor(ProvenanceSink(dir))``), ``sink.trajectory_hook()`` and ``sink.wrap_llm(llm)``; the
last two emit the same span records ``TracingHook`` would, so every route writes the same folder.

Where a run goes: the first run the sink writes goes in ``dir`` itself when ``dir`` holds no run yet;
every other run goes in ``dir/<YYYYmmdd-HHMMSS>-<agent>-<run id[:8]>/``. ``ProvenanceSink`` is made on
first use: with the ``otel`` extra it subclasses ``opentelemetry.sdk.trace.export.SpanExporter``;
``import looplet.provenance`` imports no OpenTelemetry.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looplet.provenance import capture
from looplet.provenance.format import TRAJECTORY_FILE, RunRecord, folder_name, render_files, write_folder
from looplet.provenance.spans import SpanBuffer, read_otlp_json

__all__ = ["ProvenanceSink", "TrajectoryHook"]

log = logging.getLogger("looplet.provenance")
TrajectoryHook = capture.TrajectoryHook


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

    def __init__(self, dir: str | os.PathLike[str], redact: Any = True, max_chars_per_call: int = 200_000, *, fsync: bool = False) -> None:  # fmt: skip
        if not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"ProvenanceSink(dir=...) must be a path, got {type(dir).__name__}")
        if not isinstance(max_chars_per_call, int) or max_chars_per_call < 1:
            raise ValueError(f"max_chars_per_call must be an int >= 1, got {max_chars_per_call!r}")
        if redact is True or redact == "default":
            from looplet.telemetry.redact import Redactor

            redact = Redactor()
        elif not (redact is None or redact is False or callable(redact)):
            why = (
                f"redact must be None, True, 'default' or a callable str -> str, got {type(redact).__name__}"
            )
            raise TypeError(why)
        self.dir, self.redact, self.max_chars_per_call, self.fsync = Path(dir), redact or None, max_chars_per_call, fsync  # fmt: skip
        self.written: collections.deque[Path] = collections.deque(maxlen=1000)
        self._lock = threading.RLock()
        self._buffer = SpanBuffer()
        self._pending: dict[str, tuple[Any, capture._RunState]] = {}  # wrap_llm runs by run id
        self._children: dict[int, list[Any]] = {}  # a hook's sub-agent records, waiting for their parent
        self._folders: dict[str, Path] = {}
        self._dir_used = self._closed = False

    def __repr__(self) -> str:
        return f"ProvenanceSink({str(self.dir)!r})"

    def folder_of(self, run_id: str) -> Path | None:
        """Where the run ``run_id`` was written (None: not written, or not among the last 1000)."""
        return self._folders.get(run_id)

    @property
    def last_path(self) -> Path | None:
        """The folder written most recently."""
        return self.written[-1] if self.written else None

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
            ended = [
                r for r, (run, _s) in self._pending.items() if getattr(run.state, "result", None) is not None
            ]
            out = [p for rid in ended for p in self._take(capture.wrapped(*self._pending.pop(rid)))]
            return out + [p for r in self._buffer.release() if (p := self._write(r))]

    # -- inside ----------------------------------------------------------------------------------------------
    def _pending_run(self, run: Any) -> capture._RunState:
        with self._lock:
            if (
                run.run_id not in self._pending
            ):  # a new run: the runs that have ended meanwhile are written now
                self.flush()
                self._pending[run.run_id] = (run, capture._RunState(run, self))
            return self._pending[run.run_id][1]

    def _take(self, spans: Any) -> list[Path]:
        with self._lock:
            return [p for r in self._buffer.add(spans) if (p := self._write(r)) is not None]

    def _write(self, rec: RunRecord) -> Path | None:
        """Write ``rec`` in ``dir`` when it is the sink's first run and ``dir`` holds none yet; else in a
        new folder under ``dir``."""
        try:
            files = render_files(rec, self.redact, self.max_chars_per_call)
            target = self.dir
            if self._dir_used or (self.dir / TRAJECTORY_FILE).exists() or (self.dir / "steps").exists():
                target = base = self.dir / folder_name(rec, self.redact)
                for n in range(2, 1 << 30):
                    if not target.exists():
                        break
                    target = base.with_name(f"{base.name}-{n}")
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


if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    class ProvenanceSink(_Sink, SpanExporter): ...
else:

    def __getattr__(name: str) -> Any:
        if name != "ProvenanceSink":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:  # made on first use: only then is OpenTelemetry imported
            from opentelemetry.sdk.trace.export import SpanExporter

            bases: tuple[type, ...] = (_Sink, SpanExporter)
        except ImportError:
            bases = (_Sink,)
        cls = globals()["ProvenanceSink"] = type("ProvenanceSink", bases, {"__doc__": _Sink.__doc__, "__module__": __name__})  # fmt: skip
        return cls
