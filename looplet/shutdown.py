"""A clean stop on SIGTERM: runs in progress end as ``cancelled``, telemetry is flushed, the process exits.

Containers are stopped with SIGTERM (``docker compose stop``, Kubernetes), then killed a few seconds later.
``install_sigterm_handler()`` (``looplet.telemetry.configure()`` calls it when run in the main thread) makes
the first SIGTERM:

1. ask every run in progress, in any thread, to stop: each ends as ``cancelled`` at its next phase boundary
   (before or after an LLM call, between tool calls), with its ``on_loop_end`` hooks (spans ended, metrics,
   the ``run.end`` log line, the last checkpoint, the trajectory); runs started afterwards end ``cancelled``
   before their first LLM call;
2. once no run is in progress (or ``grace_s`` has passed), call the flush callbacks (``configure()``
   registers its session's: spans, metrics, logs and trajectory folders, each bounded by a deadline);
3. end the process with ``SystemExit(128 + SIGTERM)`` (143) raised in the main thread, so ``finally`` blocks
   and ``atexit`` handlers run; if the main thread has not exited 5 s later (it swallowed the exception),
   the process ends with ``os._exit(143)``, everything being flushed by then.

A second SIGTERM while this goes on ends the process at once (the default action of the signal).

A run blocked inside one LLM call or one tool for longer than ``grace_s`` reaches no phase boundary: at
``grace_s`` the main thread is interrupted anyway (a run on the main thread then ends ``cancelled`` through
the interruption, and the exit flush sends what it left; a run on another thread ends with the process).

If the application had its own Python SIGTERM handler, it is called too and looplet does not end the
process itself: the application decides when to exit (telemetry is still flushed once no run is in
progress). :func:`shutdown_requested` tells a worker loop to stop taking work.

    from looplet.shutdown import install_sigterm_handler, shutdown_requested
    install_sigterm_handler(grace_s=10.0)

Stdlib only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "install_sigterm_handler",
    "uninstall_sigterm_handler",
    "request_shutdown",
    "shutdown_requested",
    "runs_in_progress",
    "add_flush",
    "remove_flush",
]

log = logging.getLogger("looplet")

_requested = False  # set once by the first SIGTERM (or request_shutdown); a plain flag: every run reads it
# at its phase boundaries, with its own cancel token (looplet._engine)
_idle = threading.Condition()
_active = 0
_flushes: list[Callable[[float], Any]] = []
_state: dict[str, Any] = {
    "installed": False,
    "previous": None,
    "grace_s": 10.0,
    "exiting": False,
    "exit_raised": False,
}


def run_started() -> None:
    """Count a run in progress (the loop's drivers call this when a run starts, ``run_ended`` after)."""
    global _active
    with _idle:
        _active += 1


def run_ended() -> None:
    global _active
    with _idle:
        _active = max(0, _active - 1)
        if _active == 0:
            _idle.notify_all()


def runs_in_progress() -> int:
    """How many runs are in progress in this process."""
    return _active


def wait_idle(timeout_s: float) -> bool:
    """Wait until no run is in progress; False if ``timeout_s`` passed first."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    with _idle:
        while _active > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _idle.wait(left)
    return True


def shutdown_requested() -> bool:
    """True once a SIGTERM arrived (or :func:`request_shutdown` was called): take no new work."""
    return _requested


def add_flush(fn: Callable[[float], Any]) -> None:
    """Call ``fn(timeout_s)`` once no run is in progress after a shutdown request (``configure()`` registers
    its session's flush). It must return within ``timeout_s``."""
    if fn not in _flushes:
        _flushes.append(fn)


def remove_flush(fn: Callable[[float], Any]) -> None:
    if fn in _flushes:
        _flushes.remove(fn)


def request_shutdown(exit_process: bool = False) -> None:
    """What the first SIGTERM does: ask every run to stop, flush once they have, and (``exit_process``)
    end the process. Safe to call more than once; only the first call acts."""
    global _requested
    if _requested:
        return
    _requested = True
    threading.Thread(
        target=_wind_down, args=(float(_state["grace_s"]), exit_process), name="looplet-shutdown", daemon=True
    ).start()


def _wind_down(grace_s: float, exit_process: bool) -> None:
    deadline = time.monotonic() + grace_s
    if not wait_idle(grace_s):
        log.warning(
            "shutdown: %d run(s) still in progress after %.1fs; stopping anyway", runs_in_progress(), grace_s
        )
        if exit_process:
            _exit_main()  # a run on the main thread ends cancelled through the interruption
            wait_idle(_EXIT_WAIT_S)
    for fn in list(_flushes):
        try:
            fn(max(0.5, deadline - time.monotonic()))
        except Exception as exc:  # telemetry never decides the outcome
            log.warning("shutdown: a flush failed: %r", exc)
    if exit_process:
        _exit_main()
        # the last resort, once everything is out: the main thread swallowed the SystemExit (a tool that
        # catches it) or is stuck in C code
        time.sleep(_EXIT_WAIT_S)
        os._exit(128 + signal.SIGTERM)


#: How long the main thread gets to exit by itself once told to.
_EXIT_WAIT_S = 5.0


def _exit_main() -> None:
    """Raise SystemExit(143) in the main thread, once (through the signal handler, which runs there)."""
    if _state["exiting"]:
        return
    _state["exiting"] = True
    try:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    if _state["exiting"]:  # sent by _exit_main: raised once; later ones (during the exit) are ignored
        if not _state["exit_raised"]:
            _state["exit_raised"] = True
            raise SystemExit(128 + signum)
        return
    previous = _state["previous"]
    if _requested:  # a second SIGTERM: at once
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    chained = callable(previous)
    log.warning(
        "SIGTERM: ending %d run(s) in progress as cancelled, then flushing telemetry (a second SIGTERM "
        "exits at once)",
        runs_in_progress(),
    )
    request_shutdown(exit_process=not chained)
    if chained:
        previous(signum, frame)


def install_sigterm_handler(grace_s: float = 10.0) -> bool:
    """Handle SIGTERM as described in the module docstring. Only the main thread can install a signal
    handler: elsewhere this returns False and does nothing. Calling it again updates ``grace_s``."""
    if grace_s <= 0:
        raise ValueError(f"grace_s must be > 0, got {grace_s!r}")
    _state["grace_s"] = grace_s
    if _state["installed"]:
        return True
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return False
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter
        return False
    _state.update(installed=True, previous=previous)
    return True


def uninstall_sigterm_handler() -> None:
    """Put back the SIGTERM handler that was there before (if ours is still installed)."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            previous = _state["previous"]
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    except (ValueError, OSError):
        return
    _state.update(installed=False, previous=None)
