"""``looplet`` / ``python -m looplet``: demo, run, batch, show, eval, replay, doctor.

Every command shares what this module holds: the exit codes, the one-line error format
(``looplet CMD: error: what happened; what to do``), the checks of outputs, ports and OTLP endpoints made
before the first step, and :func:`run_command`, the one place that turns an exception into a code and a
message. The same mistake gets the same code and hint in every command.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn
from urllib.parse import urlsplit

from looplet.errors import LoopletError, MissingExtra

__all__ = [
    "main",
    "run_command",
    "UsageError",
    "ArgumentParser",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_APPROVAL",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "check_output_dir",
    "check_output_file",
    "check_port",
    "check_otlp",
    "port_arg",
    "port_in_use",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_APPROVAL = 3
EXIT_INTERRUPTED = 130

#: the exit codes every command uses, as ``--help`` and docs/faq.md print them
EXIT_CODES = """exit codes:
  0    done: the run finished (or the command did what was asked)
  1    the run ended without finishing (max_steps, llm_error, ...), an eval failed, a replay diverged
  2    usage or input error: a bad flag, an unwritable output, a busy port, an unreadable trajectory
  3    the run is waiting for approval (resume it with the decision)
  130  interrupted (Ctrl-C); the run ended as 'cancelled' and its telemetry was flushed"""

_COMMANDS = {
    "demo": ("looplet.demo", "run the scripted demo agent with full telemetry (no API key)"),
    "run": ("looplet.cli_run", "run an agent factory MODULE:FACTORY against a real model"),
    "batch": ("looplet.batch.cli", "run an agent factory once per task of a JSONL file (local or Ray)"),
    "show": ("looplet.provenance.cli", "print a saved trajectory (and --html a waterfall)"),
    "eval": ("looplet.evals_cli", "run evals over saved trajectories"),
    "replay": ("looplet.provenance.replay", "re-run a trajectory's LLM answers against current tools"),
    "doctor": ("looplet.doctor", "which extras are installed and where telemetry goes"),
}


class UsageError(LoopletError):
    """A mistake on the command line or in its input; the message says what to do. Exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with looplet's error format: one line on stderr, exit code 2, the exit codes in ``--help``."""

    def __init__(self, prog: str, description: str | None = None) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# --- checks made before the first step ----------------------------------------------------------------


def check_output_dir(folder: str, flag: str) -> str:
    """Create ``folder`` if needed and prove a file can be written there; returns its absolute path or
    raises :class:`UsageError` naming the flag, the path and the fix."""
    path = os.path.abspath(os.path.expanduser(folder))
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".looplet-write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a folder you can "
            f"write to, e.g. {flag} ./traces"
        ) from None
    return path


def check_output_file(file: str, flag: str) -> str:
    """Create the file's folder if needed and prove the file can be opened for appending; returns its
    absolute path or raises :class:`UsageError`."""
    path = os.path.abspath(os.path.expanduser(file))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {file}: this is a folder; give a file name, e.g. {flag} ./run.jsonl")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        existed = os.path.exists(path)
        with open(path, "a", encoding="utf-8"):
            pass
        if not existed:
            os.unlink(path)
    except OSError as exc:
        raise UsageError(
            f"{flag} {file}: cannot write there ({exc.strerror or exc}); choose a file you can write "
            f"to, e.g. {flag} ./run.jsonl"
        ) from None
    return path


def check_port(port: int, flag: str) -> int:
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag} {port}: a port is 0-65535 (0 picks a free one), e.g. {flag} 9464")
    return port


def port_arg(text: str) -> int:
    """argparse ``type=`` for a TCP port: a plain mistake becomes a one-line error, never a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; use 0-65535, e.g. 9464") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 0-65535 (0 picks a free one), e.g. 9464")
    return port


def port_in_use(flag: str, port: int) -> str:
    """The message for a busy port, the same in every command."""
    return f"{flag} {port}: the port is already in use; pick a free one (or {flag} 0 for any free port)"


_OTLP_FORM = (
    "expected http://HOST:PORT (4318, OTLP/HTTP) or grpc://HOST:PORT (4317), e.g. http://127.0.0.1:4318"
)


def check_otlp(url: str, flag: str = "--otlp") -> tuple[str, str | None]:
    """Check an OTLP endpoint: scheme http, https or grpc, a host, a valid port. Returns ``(endpoint,
    protocol)``: ``grpc://H:P`` becomes ``("http://H:P", "grpc")``, the form the gRPC exporter takes; for
    http(s) the protocol is left to ``configure()`` (gRPC on port 4317, OTLP/HTTP otherwise). Raises
    :class:`UsageError` with the expected form."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        raise UsageError(f"{flag} {url}: the port is not a number in 0-65535; {_OTLP_FORM}") from None
    if parts.scheme not in ("http", "https", "grpc"):
        hint = "a scheme is missing" if "://" not in text else f"unknown scheme {parts.scheme!r}"
        raise UsageError(f"{flag} {url}: {hint}; {_OTLP_FORM}")
    if not parts.hostname:
        raise UsageError(f"{flag} {url}: no host; {_OTLP_FORM}")
    if port is None and parts.scheme == "grpc":
        raise UsageError(f"{flag} {url}: give the port; {_OTLP_FORM}")
    if parts.scheme == "grpc":
        return "http://" + text.split("://", 1)[1], "grpc"
    return text, None


# --- one mapping from exceptions to exit codes ----------------------------------------------------------


def _message(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for a plain mistake; None for a real bug (its traceback is kept)."""
    if isinstance(exc, (UsageError, MissingExtra)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return EXIT_USAGE, f"{exc.strerror or exc}; pick a free port (0 picks any free one)"
    if isinstance(exc, LoopletError):  # trajectory and setup errors: the message names the file and fix
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return EXIT_USAGE, f"{exc.filename}: {exc.strerror or exc}"
    return None


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body; map a plain mistake to exit code 2 and one line on stderr, Ctrl-C to 130."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        mapped = _message(exc)
        if mapped is None:
            raise
        code, text = mapped
        print(f"{prog}: error: {' '.join(text.split())}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: looplet COMMAND [ARGS]   (looplet COMMAND --help for each)\n\ncommands:")
        for name, (_mod, text) in _COMMANDS.items():
            print(f"  {name:<8} {text}")
        print(f"\n{EXIT_CODES}")
        return 0 if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        from looplet import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in _COMMANDS:
        print(f"looplet: error: unknown command {name!r}; try: {', '.join(_COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(_COMMANDS[name][0])
    return run_command(f"looplet {name}", lambda: int(module.main(argv[1:]) or 0))


if __name__ == "__main__":
    raise SystemExit(main())
