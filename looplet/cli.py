"""``looplet`` / ``python -m looplet``: demo, run, show, eval, replay, doctor."""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "demo": ("looplet.demo", "run the scripted demo agent with full telemetry (no API key)"),
    "run": ("looplet.cli_run", "run an agent factory MODULE:FACTORY against a real model"),
    "show": ("looplet.provenance.cli", "print a saved trajectory (and --html a waterfall)"),
    "eval": ("looplet.evals_cli", "run evals over saved trajectories"),
    "replay": ("looplet.provenance.replay_cli", "re-run a trajectory's LLM answers against current tools"),
    "doctor": ("looplet.doctor", "which extras are installed and where telemetry goes"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: looplet COMMAND [ARGS]\n\ncommands:")
        for name, (_mod, text) in _COMMANDS.items():
            print(f"  {name:<8} {text}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from looplet import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in _COMMANDS:
        print(f"looplet: unknown command {name!r}; try: {', '.join(_COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[name][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
