"""``LoggingHook`` and ``configure_logging()``: one structured (JSON) log line per run start and end, per LLM
call and per tool call, carrying ``trace_id``/``span_id`` so a log line links to its span.

Lines (``event`` field): ``run.start``, ``llm.call``, ``tool.call``, ``run.end``; on failures ``llm.error``
(with the exception and its traceback), ``llm.retry``, ``hook.error``; ``hook.decision`` for denials,
stops and injections. Fields come from ``names.LOG_KEYS``: ``run_id``, ``agent``, ``step``, ``tool``,
``model``, ``input_tokens``, ``output_tokens``, ``cost_usd``, ``duration_ms``, ``stop_reason``, ``error``,
``error_kind``, plus ``level`` and ``timestamp``. Error texts and tracebacks pass through the redactor.

``configure_logging(json=True, file=None, level="INFO")`` builds a structlog pipeline of structlog's own
processors (``merge_contextvars``, ``add_log_level``, ``TimeStamper``, ``format_exc_info``,
``JSONRenderer``) writing to stderr or a file, makes it the default logger of ``LoggingHook``, and sends the
stdlib ``logging`` records of the ``looplet`` logger (warnings from the loop, the backends, ...) through the
same renderer, so one stream holds one format. Every line, of either origin, passes through
``redact.redact_event_dict`` just before it is rendered. Without ``configure_logging()``, ``LoggingHook``
logs through ``structlog.get_logger("looplet")``, i.e. whatever structlog configuration the application has.

Needs ``structlog``.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any, TextIO, cast

from looplet.errors import require
from looplet.hooks import current_run
from looplet.telemetry.redact import Redactor, redact_event_dict

require("structlog", "logs")

import structlog  # noqa: E402

__all__ = ["LoggingHook", "configure_logging", "add_run_context"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_ERROR_STOPS = ("llm_error", "hook_error")
_MAX_ERROR_CHARS = 2000
_MAX_NAMES = 1000  # cached per hook: tool names, faulted components

_lock = threading.Lock()
_default_logger: Any = None
_installed: dict[str, Any] = {}  # what configure_logging() set up last: handler, stream it opened


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[str(level).lower()]
    except KeyError:
        raise ValueError(
            f"level={level!r}: use one of {', '.join(_LEVELS)} (or a logging level number)"
        ) from None


def configure_logging(
    json: bool = True, file: str | IO[str] | None = None, level: int | str = "INFO", *, stdlib: bool = True
) -> Any:
    """Set up looplet's structured logs and return the structlog logger ``LoggingHook()`` will use.

    json: one JSON object per line (else structlog's console renderer, for people).
    file: a path (appended to), an open text stream, or None for stderr.
    level: lines below it cost nothing (the method is a no-op).
    stdlib: route the stdlib ``looplet`` logger through the same renderer and stream (it then stops
        propagating to the root logger, so its records are not printed twice).
    Calling it again replaces the previous set-up (and closes a file it opened).
    """
    global _default_logger
    lvl = _level(level)
    opened = None
    if file is None:
        stream: IO[str] = sys.stderr
    elif isinstance(file, str) or hasattr(file, "__fspath__"):
        stream = opened = open(file, "a", encoding="utf-8", buffering=1)
    else:
        stream = file
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        add_run_context,
    ]
    if json:
        chain.append(structlog.processors.format_exc_info)
    logger = structlog.wrap_logger(
        structlog.WriteLogger(cast(TextIO, stream)),
        processors=[*chain, redact_event_dict, renderer],  # redaction last: it sees every field
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    with _lock:
        _uninstall()
        _installed["stream"] = opened
        if stdlib:
            handler = _OnceHandler(stream)
            handler.setFormatter(
                structlog.stdlib.ProcessorFormatter(
                    foreign_pre_chain=[*chain[:4], structlog.stdlib.add_logger_name],
                    processors=[
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *([structlog.processors.format_exc_info] if json else []),
                        redact_event_dict,
                        renderer,
                    ],
                )
            )
            handler._looplet = True  # type: ignore[attr-defined]
            std = logging.getLogger("looplet")
            std.addHandler(handler)
            _installed["handler"] = handler
            _installed["propagate"] = std.propagate
            _installed["level"] = std.level
            std.setLevel(lvl)
            std.propagate = False
        _default_logger = logger
    return logger


class _OnceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A log destination that breaks (a full disk) costs its lines, counted by the hooks, and one note on
    stderr, instead of the standard library's traceback for every lost line."""

    broken = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.broken:
            self.broken = True
            name = getattr(self.stream, "name", "the log stream")
            sys.stderr.write(
                f"looplet: cannot write log lines to {name} ({sys.exc_info()[1]}); "
                "further lines that fail are dropped silently\n"
            )


def _uninstall() -> None:
    handler = _installed.pop("handler", None)
    std = logging.getLogger("looplet")
    if handler is not None:
        std.removeHandler(handler)
        std.propagate = _installed.pop("propagate", True)
        std.setLevel(_installed.pop("level", logging.NOTSET))
    stream = _installed.pop("stream", None)
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


def reset_logging() -> None:
    """Undo ``configure_logging()`` (tests, ``shutdown()``)."""
    global _default_logger
    with _lock:
        _uninstall()
        _default_logger = None


class LoggingHook:
    """Structured log lines for every run it is passed to.

    logger: a structlog logger; by default the one ``configure_logging()`` built, else
        ``structlog.get_logger("looplet")``.
    redact: ``str -> str`` applied to error texts and tracebacks (default: the built-in ``Redactor``).

    Every line of a run carries ``run_id``, ``agent`` and, when the run is traced, ``trace_id`` and
    ``span_id``: ``llm.call`` the chat span of that attempt, ``tool.call`` the call's execute_tool span, the
    others the run's span (:func:`looplet.telemetry.tracing.trace_ids`, whatever the order of the hooks).
    """

    def __init__(self, logger: Any = None, redact: Callable[[str], str] | None = None) -> None:
        self._logger = logger
        self._redact = redact if redact is not None else Redactor()
        self._names: dict[str, str] = {}
        self._faulted: set[str] = set()  # components whose first fault was logged

    def _base(self) -> Any:
        logger = self._logger or _default_logger
        if logger is None:
            logger = self._logger = structlog.get_logger("looplet")
        return logger

    def _bound(self) -> tuple[Any, Any]:
        """(the run, a logger bound to its run_id and agent)."""
        run = current_run()
        if run is None:
            return None, self._base()
        log = run.scratch.get(self)
        if log is None:
            log = self._bind(run)
        return run, log

    def _bind(self, run: Any) -> Any:
        log = self._base().bind(run_id=run.run_id, agent=run.agent_name)
        run.scratch[self] = log
        return log

    def _error(self, text: str | None) -> str | None:
        if not text:
            return text
        text = self._redact(text)
        return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "…"

    def _tool_name(self, name: str) -> str:
        """A tool name through the redactor, cached (the model may invent any name, e.g. an e-mail address)."""
        safe = self._names.get(name)
        if safe is None:
            safe = self._redact(name)[:256]
            if len(self._names) < _MAX_NAMES:
                self._names[name] = safe
        return safe

    def _exception(self, exc: BaseException) -> str:
        return self._redact("".join(traceback.format_exception(exc)))

    # -- run ----------------------------------------------------------------------------------------

    def on_loop_start(self, state: Any, session_log: Any, context: Any) -> None:
        run = current_run()
        if run is None:
            return
        log = self._bind(run)
        fields: dict[str, Any] = {"model": run.model}
        resumed = len(getattr(state, "steps", ()) or ())
        if resumed:
            fields["resumed_steps"] = resumed
        log.info("run.start", **fields, **_ids(run, "run"))

    def on_loop_end(self, state: Any, session_log: Any, context: Any, result: Any) -> None:
        run, log = self._bound()
        if run is not None:
            run.scratch.pop(self, None)
        stop = result.stop_reason
        usage = result.usage
        fields: dict[str, Any] = {
            "stop_reason": stop,
            "steps": len(result.steps),
            "llm_calls": result.llm_calls,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": result.cost_usd,
            "duration_ms": round(result.duration_ms, 3),
        }
        if run is not None and run.model:
            fields["model"] = run.model
        if result.error:
            fields["error"] = self._error(result.error)
        fields.update(_ids(run, "run"))
        if stop in _ERROR_STOPS:
            log.error("run.end", **fields)
        elif stop == "cancelled":
            log.warning("run.end", **fields)
        else:
            log.info("run.end", **fields)

    # -- LLM calls: one line per attempt, answered or failed, from the call's facts ---------------------

    def on_llm_call(self, state: Any, call: Any) -> None:
        if call.replayed:  # given back from a checkpoint: no model was called
            return
        run, log = self._bound()
        fields: dict[str, Any] = {
            "step": call.step,
            "attempt": call.attempt,
            "model": call.response_model or call.model,
            "duration_ms": round(call.duration_ms, 3),
            "outcome": call.outcome,
            "cost_usd": call.cost_usd,
        }
        if call.purpose != "step":
            fields["purpose"] = call.purpose
        usage = call.usage
        if usage is not None:
            fields["input_tokens"] = usage.input_tokens
            fields["output_tokens"] = usage.output_tokens
            if usage.cached_input_tokens:
                fields["cached_input_tokens"] = usage.cached_input_tokens
            if usage.reasoning_tokens:
                fields["reasoning_tokens"] = usage.reasoning_tokens
        if call.ttfc_ms is not None:
            fields["ttfc_ms"] = round(call.ttfc_ms, 3)
        fields.update(_ids(run, "chat"))
        if call.outcome == "ok":
            log.info("llm.call", **fields)
        else:
            log.error("llm.call", error_type=self._error(call.error_type or "error"), **fields)

    # -- steps --------------------------------------------------------------------------------------

    def on_step(self, state: Any, step: Any) -> None:
        run, log = self._bound()
        result = step.tool_result
        fields: dict[str, Any] = {
            "step": step.number,
            "tool": self._tool_name(step.tool_call.tool),
            "duration_ms": round(step.tool_ms, 3),
            "ok": result.error is None,
        }
        if result.cost_usd is not None or result.usage is not None:  # a sub-agent or a tool calling a model
            fields["tool_cost_usd"] = result.cost_usd
            if result.usage is not None:
                fields["tool_input_tokens"] = result.usage.input_tokens
                fields["tool_output_tokens"] = result.usage.output_tokens
        fields.update(_ids(run, "tool", step))
        if result.error is None:
            log.info("tool.call", **fields)
        else:
            log.warning("tool.call", error_kind=result.error_kind, error=self._error(result.error), **fields)

    # -- failures and events ------------------------------------------------------------------------

    def on_llm_retry(self, state: Any, attempt: int, error: Any, delay_s: float) -> None:
        run, log = self._bound()
        log.warning(
            "llm.retry",
            attempt=attempt,
            delay_s=round(float(delay_s), 3),
            error=self._error(f"{type(error).__name__}: {error}"),
            **_ids(run, "chat"),
        )

    def on_hook_error(self, hook: Any, method: str, error: Any) -> None:
        """The first fault of each component (hook class) is logged with its traceback; later ones are
        counted (``looplet_telemetry_errors_total``), not logged again."""
        component = type(hook).__name__
        if component in self._faulted:
            return
        if len(self._faulted) < _MAX_NAMES:
            self._faulted.add(component)
        run, log = self._bound()
        log.error(
            "hook.error",
            hook=component,
            method=method,
            error=self._error(f"{type(error).__name__}: {error}"),
            exception=self._exception(error),
            note="later faults of this component are counted in looplet_telemetry_errors_total, not logged",
            **_ids(run, "line"),
        )

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        run, log = self._bound()
        if name == "hook.decision":
            tool = attributes.get("tool")
            log.info(
                "hook.decision",
                hook=attributes.get("hook"),
                decision=attributes.get("decision"),
                tool=self._tool_name(tool) if tool else None,
                reason=self._error(attributes.get("reason")),
                **_ids(run, "line"),
            )
        else:  # the emitting module logs its own line through stdlib logging; this one is for debugging
            fields = {
                k: (self._error(v) if isinstance(v, str) else v)
                for k, v in (attributes or {}).items()
                if k not in ("event", "trace_id", "span_id")
            }
            log.debug(name, **fields, **_ids(run, "line"))


_NO_IDS: dict[str, str] = {}


def _ids(run: Any, kind: str, step: Any = None) -> dict[str, str]:
    """``trace_id``/``span_id`` for a line about ``run`` (empty when nothing traces it). The tracing
    module is looked up, never imported: without it loaded, no TracingHook exists."""
    tracing = sys.modules.get("looplet.telemetry.tracing")
    if tracing is None or run is None:
        return {}
    fields: dict[str, str] | None = tracing.trace_fields(run, kind, step)  # shared: read, never changed
    return fields or _NO_IDS


def add_run_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: a line written while a run is in progress (from any code: the loop, a
    backend, a tool, the stdlib ``looplet`` logger) gets the run's ``run_id`` and the current
    ``trace_id``/``span_id`` (the chat or execute_tool span while a call runs, else the run's span)."""
    run = current_run()
    if run is None:
        return event
    if "run_id" not in event:
        event["run_id"] = run.run_id
    if "trace_id" not in event:
        event.update(_ids(run, "line"))
    return event
