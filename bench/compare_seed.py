"""looplet (this repo) against the published looplet 0.4.1 and the OpenAI Agents SDK, in one run.

    .venv/bin/python bench/compare_seed.py            # the full comparison (about 8 minutes on 2 cores)
    .venv/bin/python bench/compare_seed.py --quick    # a smoke run: fewer repetitions, no 10,000 steps
    options: --no-agents, --no-write (print only), --render (rewrite the section from the recorded
    results, measuring nothing), --import-reps N

The other frameworks live in their own virtual environments under bench/.venvs/ (created and filled
from PyPI on first use; ``looplet`` 0.4.1 has the same import name as ours, so it never goes into the
project venv). Every measurement runs in a fresh subprocess of the right venv, and the frameworks
take turns (ours, 0.4.1, Agents SDK, then again), so drift on the machine hits all of them alike.

Measured:
* cold import: wall time of a fresh ``python -I -c "import <pkg>"`` against ``python -I -c "pass"``
  in the same venv (medians); the difference is the import alone;
* loop overhead per step: each framework's own scripted model proposing a trivial tool N-1 times and
  then ``done`` (bench/_compare_worker.py), at 100, 1,000 and 10,000 steps, bare and with each one's
  telemetry on (ours: OpenTelemetry SDK tracing through a BatchSpanProcessor, Prometheus metrics on a
  private registry, JSON logs to /dev/null; 0.4.1: its TracingHook and MetricsHook; Agents SDK: its
  tracing exported through openai-agents-opentelemetry to an SDK TracerProvider).

The table goes to stdout and, between ``<!-- compare:start -->`` and ``<!-- compare:end -->``, to
docs/benchmarks.md; the raw samples to bench/results/compare_seed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, revision, today, write_section

BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"
WORKER = BENCH / "_compare_worker.py"
RESULTS = BENCH / "results" / "compare_seed.json"

#: What goes into each venv (pinned, so a rerun measures the same code).
REQUIREMENTS = {
    "seed": ["looplet==0.4.1"],
    "agents": ["openai-agents==0.24.0", "openai-agents-opentelemetry==0.4.1", "opentelemetry-sdk"],
}
LABEL = {"ours": "looplet (this repo)", "seed": "looplet 0.4.1 (PyPI)", "agents": "OpenAI Agents SDK"}
IMPORT_MODULE = {"ours": "looplet", "seed": "looplet", "agents": "agents"}

#: Repetitions per framework at each run length. Both others grow worse than linearly with the
#: number of steps (0.4.1 takes about 100 s for one 10,000-step run; the Agents SDK about 75 s for
#: 1,000 steps and, growing quadratically, hours for 10,000), so their long runs are repeated less, or
#: not at all (0).
PLAN = {
    100: {"ours": 9, "seed": 7, "agents": 5},
    1_000: {"ours": 7, "seed": 5, "agents": 1},
    10_000: {"ours": 3, "seed": 1, "agents": 0},
}
#: Ours with one telemetry hook at a time (what each costs), at the shorter run lengths only.
BREAKDOWN = ("tracing", "metrics", "logs")
BREAKDOWN_MAX_STEPS = 1_000
QUICK_PLAN = {100: {"ours": 3, "seed": 3, "agents": 1}, 1_000: {"ours": 2, "seed": 1, "agents": 0}}


#: What profiling (cProfile, and timing the libraries' calls on their own) showed on this machine, with
#: the versions pinned above. Kept here so the section reads whole; rerun the profiles when they change.
ANALYSIS = [
    "looplet 0.4.1's cost per step grows with the run: every step rebuilds the prompt from the whole "
    "session log and re-collects every entity seen so far (cProfile at 2,000 steps: about 40% of the time "
    "rendering the session log, about 35% in a generator over all past steps in its `types.py`, 12% "
    "collecting entities).",
    "The Agents SDK's cost per turn also grows with the run: each turn checks the new tool calls against "
    "every earlier tool-call item (cProfile at 300 turns: 39% of the time in "
    "`_dedupe_processed_response_invocations`, with 91,200 calls of `tool_invocation_identity` for 300 "
    "turns). `import agents` pulls in the `openai` client and its types (about 0.7 s of 2.2 s under "
    "`python -X importtime`), the sandbox package (1.3 s) and the MCP client (0.9 s).",
    "Ours with telemetry: tracing is most of the cost. It makes 3 spans per step; the OpenTelemetry SDK alone "
    "spends about 14 µs of CPU to start and end a span with no processor and about 30 µs with a "
    "BatchSpanProcessor (its worker thread and the export included), so about 90 of the ~130 µs tracing adds "
    "per step are the SDK's, and TracingHook's own code (context attach/detach, attribute dicts, span ids "
    "for the Step) the rest. A JSON log line through `configure_logging()`'s structlog pipeline costs about "
    "10 µs (2 per step); a Prometheus `observe` about 0.7 µs, 2 µs with an exemplar.",
]


def loadavg() -> str:
    """The 1-minute load average (how busy the machine was), as text."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def ours_python() -> Path:
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """Create bench/.venvs/<name> and install its pinned requirements, unless they are already there."""
    py = venv_python(name)
    probe = (
        "import importlib.metadata as m, sys; reqs = sys.argv[1:]; "
        "sys.exit(0 if all(m.version(r.split('==')[0]) == r.split('==')[1] for r in reqs if '==' in r) else 1)"
    )
    if (
        py.exists()
        and subprocess.run(
            [str(py), "-I", "-c", probe, *REQUIREMENTS[name]], cwd="/", capture_output=True
        ).returncode
        == 0
    ):
        return py
    if not py.exists():
        print(f"creating {py.parent.parent} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
    print(f"installing {' '.join(REQUIREMENTS[name])} into {VENVS / name} ...", flush=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS[name]],
        check=True,
    )
    return py


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OTEL_", "OPENAI_"))}
    env["OTEL_SDK_DISABLED"] = "false"
    return env


# ------------------------------------------------------------------------------------------ imports
def time_imports(pythons: dict[str, Path], reps: int) -> dict[str, dict[str, list[float]]]:
    """Fresh interpreters, alternating between frameworks and the bare baseline; one warm-up each
    (so every run finds its .pyc files written)."""
    env = clean_env()
    cmds = {}
    for impl, py in pythons.items():
        mod = IMPORT_MODULE[impl]
        cmds[(impl, "import")] = [
            str(py),
            "-I",
            "-c",
            f"import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)",
        ]
        cmds[(impl, "bare")] = [str(py), "-I", "-c", "import time; print(0.0)"]
    samples: dict[str, dict[str, list[float]]] = {
        impl: {"import": [], "bare": [], "inside": []} for impl in pythons
    }
    for cmd in cmds.values():
        subprocess.run(cmd, cwd="/", env=env, capture_output=True, check=True)
    for rep in range(reps):
        keys = list(cmds)
        keys = keys[rep % len(keys) :] + keys[: rep % len(keys)]
        for impl, kind in keys:
            t0 = time.perf_counter()
            out = subprocess.run(
                cmds[(impl, kind)], cwd="/", env=env, capture_output=True, text=True, check=True
            )
            wall = time.perf_counter() - t0
            samples[impl][kind].append(wall)
            if kind == "import":
                samples[impl]["inside"].append(float(out.stdout.strip()))
    return samples


# ------------------------------------------------------------------------------------------- loops
def run_worker(py: Path, impl: str, steps: int, mode: str) -> dict[str, Any]:
    cmd = [str(py), str(WORKER), "--impl", impl, "--steps", str(steps), "--mode", mode]
    out = subprocess.run(cmd, cwd="/", env=clean_env(), capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["steps"] != steps or res["last_tool"] != "done" or res["stop"] != "done":
        raise RuntimeError(f"{impl} {mode} {steps}: the run did not do the workload: {res}")
    if impl == "ours" and not str(res.get("file", "")).startswith(str(ROOT / "looplet")):
        raise RuntimeError(f"ours imported looplet from {res.get('file')}, not from this repo")
    if impl == "seed" and res["version"] != "0.4.1":
        raise RuntimeError(f"the seed venv imported looplet {res['version']}")
    return res


def time_loops(
    pythons: dict[str, Path], modes: dict[str, list[str]], plan: dict[int, dict[str, int]], log: Any
) -> list[dict[str, Any]]:
    rows = []
    for steps, reps in plan.items():
        for rep in range(max(reps.values())):
            order = list(pythons)
            order = order[rep % len(order) :] + order[: rep % len(order)]
            for impl in order:
                if rep >= reps.get(impl, 0):
                    continue
                for mode in modes[impl]:
                    if mode in BREAKDOWN and steps > BREAKDOWN_MAX_STEPS:
                        continue
                    res = run_worker(pythons[impl], impl, steps, mode)
                    row = {
                        "impl": impl,
                        "mode": mode,
                        "steps": steps,
                        "rep": rep,
                        **res,
                        "us_per_step": res["seconds"] / steps * 1e6,
                        "cpu_us_per_step": res["cpu_seconds"] / steps * 1e6,
                    }
                    rows.append(row)
                    log(
                        f"  {steps:>6} steps  {impl:<6} {mode:<9} rep {rep}: {row['us_per_step']:10.1f} us/step"
                        + (f"  ({res['spans']} spans exported)" if "spans" in res else "")
                    )
    return rows


def ours_has_telemetry(py: Path) -> str | None:
    """None when looplet.telemetry's tracing, metrics and logging hooks import; else why not."""
    probe = (
        "import looplet.telemetry.tracing as t, looplet.telemetry.metrics as m, looplet.telemetry.logging as l; "
        "t.TracingHook; m.MetricsHook; l.LoggingHook"
    )
    out = subprocess.run([str(py), "-c", probe], cwd="/", env=clean_env(), capture_output=True, text=True)
    return None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["unknown error"])[-1]


# ------------------------------------------------------------------------------------------ report
def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_us(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def summarize(rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The markdown section and the verdicts on the targets, from a record (see ``main``)."""
    imports, rows, versions, notes = rec["imports"], rec["loops"], rec["versions"], rec["notes"]
    pythons = rec["versions"]  # the frameworks that took part
    plan = {int(k): v for k, v in rec["plan"].items()}
    load = rec["load"]
    out: list[str] = []
    out.append("## Side by side: looplet 0.4.1 and the OpenAI Agents SDK\n")
    out.append(
        f"Measured {rec['date']} on {rec['machine']}; looplet at {rec['revision']}; 1-minute load average "
        f"{load[0]} at the start and {load[1]} at the end (2 cores; the benchmark itself accounts for 1.0).  "
    )
    out.append(
        f"Command: `{rec['command']}` (bench/compare_seed.py; the workload is in bench/_compare_worker.py).\n"
    )
    dists = {"ours": "looplet", "seed": "looplet", "agents": "openai-agents"}
    out.append("Versions: " + ", ".join(f"{LABEL[k]}: `{dists[k]}` {v}" for k, v in versions.items()) + ".\n")

    out.append("### Cold import\n")
    reps = len(next(iter(imports.values()))["import"])
    out.append(
        f'Fresh interpreter each time (`python -I -c "import …"`), medians of {reps} '
        "runs, taking turns; the bare interpreter of the same venv is the baseline.\n"
    )
    out.append(
        "| | module | interpreter + import (ms) | bare interpreter (ms) | import alone (ms) | "
        "timed inside the process (ms) | vs ours (import alone) |"
    )
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    net = {k: med(v["import"]) - med(v["bare"]) for k, v in imports.items()}
    for impl, s in imports.items():
        ratio = "1×" if impl == "ours" else f"{net[impl] / net['ours']:.1f}×"
        out.append(
            f"| {LABEL[impl]} | `{IMPORT_MODULE[impl]}` | {med(s['import']) * 1e3:.1f} | "
            f"{med(s['bare']) * 1e3:.1f} | {net[impl] * 1e3:.1f} | {med(s['inside']) * 1e3:.1f} | {ratio} |"
        )
    out.append("")

    def cell(impl: str, mode: str, steps: int, key: str = "us_per_step") -> tuple[float | None, int]:
        xs = [r[key] for r in rows if r["impl"] == impl and r["mode"] == mode and r["steps"] == steps]
        return (med(xs) if xs else None), len(xs)

    def cpu(impl: str, mode: str, steps: int) -> float | None:
        return cell(impl, mode, steps, "cpu_us_per_step")[0]

    out.append("### Loop overhead per step (µs, median)\n")
    out.append(
        "Each framework's own scripted model proposes a trivial tool (`echo(x=1)`) N−1 times, then `done`; "
        "one tool call per model response; time from building the run to its end (with telemetry: "
        "including the final flush of the span pipeline), divided by N. `n` is the number of runs.\n"
    )
    cols = [
        ("ours", "bare"),
        ("seed", "bare"),
        ("agents", "bare"),
        ("ours", "telemetry"),
        ("seed", "telemetry"),
        ("agents", "telemetry"),
    ]
    head = {
        ("ours", "bare"): "ours, bare",
        ("seed", "bare"): "0.4.1, bare",
        ("agents", "bare"): "Agents SDK, bare",
        ("ours", "telemetry"): "ours + OTel tracing + Prometheus + JSON logs",
        ("seed", "telemetry"): "0.4.1 + its TracingHook + MetricsHook",
        ("agents", "telemetry"): "Agents SDK + tracing via openai-agents-opentelemetry",
    }
    cols = [c for c in cols if c[0] in pythons]
    out.append("| steps | " + " | ".join(head[c] for c in cols) + " |")
    out.append("| ---: | " + " | ".join("---:" for _ in cols) + " |")
    for steps in plan:
        cells = []
        for impl, mode in cols:
            m, n = cell(impl, mode, steps)
            cells.append("not run" if m is None else f"{fmt_us(m)} (n={n})")
        out.append(f"| {steps:,} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "The same runs by CPU time of the worker process (all its threads), which other work on the "
        "machine disturbs less than the wall clock (µs per step, median):\n"
    )
    out.append("| steps | " + " | ".join(head[c] for c in cols) + " |")
    out.append("| ---: | " + " | ".join("---:" for _ in cols) + " |")
    for steps in plan:
        out.append(
            f"| {steps:,} | "
            + " | ".join("not run" if cpu(i, m, steps) is None else fmt_us(cpu(i, m, steps)) for i, m in cols)
            + " |"
        )
    out.append("")

    if any(r["mode"] in BREAKDOWN for r in rows):
        out.append("### What ours pays for each kind of telemetry (µs per step, median)\n")
        out.append(
            "One hook at a time, then all three (same runs as above); the increment is over the bare loop. "
            "Tracing makes 3 spans per step (`looplet.step`, `chat`, `execute_tool`) plus one `invoke_agent` "
            "per run, content capture off (the default); logs are 2 JSON lines per step "
            "(`llm.call`, `tool.call`).\n"
        )
        out.append("| steps | bare | + TracingHook | + MetricsHook | + LoggingHook | all three |")
        out.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for steps in plan:
            base, _ = cell("ours", "bare", steps)
            if steps > BREAKDOWN_MAX_STEPS or base is None:
                continue
            cells = [fmt_us(base)]
            for mode in (*BREAKDOWN, "telemetry"):
                m, _ = cell("ours", mode, steps)
                delta = "—" if m is None else ("+" if m >= base else "−") + fmt_us(abs(m - base))
                cells.append("—" if m is None else f"{fmt_us(m)} ({delta})")
            out.append(f"| {steps:,} | " + " | ".join(cells) + " |")
        out.append("")

    out.append("### Ratios (how many times ours is faster per step)\n")
    ratio_cols = [
        ("seed", "bare", "ours", "bare", "0.4.1 bare ÷ ours bare"),
        ("agents", "bare", "ours", "bare", "Agents SDK bare ÷ ours bare"),
        ("seed", "telemetry", "ours", "telemetry", "0.4.1 with hooks ÷ ours with full telemetry"),
        ("agents", "telemetry", "ours", "telemetry", "Agents SDK traced ÷ ours with full telemetry"),
        ("seed", "bare", "ours", "telemetry", "0.4.1 bare ÷ ours with full telemetry"),
    ]
    ratio_cols = [c for c in ratio_cols if c[0] in pythons]
    out.append("| steps | " + " | ".join(c[4] for c in ratio_cols) + " |")
    out.append("| ---: | " + " | ".join("---:" for _ in ratio_cols) + " |")
    for steps in plan:
        cells = []
        for a, am, b, bm, _ in ratio_cols:
            x, _n = cell(a, am, steps)
            y, _m = cell(b, bm, steps)
            cells.append("—" if x is None or y is None else f"{x / y:.1f}×")
        out.append(f"| {steps:,} | " + " | ".join(cells) + " |")
    out.append("")

    # targets
    verdicts: dict[str, Any] = {}
    out.append("### Targets\n")
    if "seed" in imports:
        r = net["seed"] / net["ours"]
        verdicts["import"] = r >= 6
        out.append(
            f"- import ≤ 1/6 of 0.4.1's: ours {net['ours'] * 1e3:.1f} ms vs {net['seed'] * 1e3:.1f} ms "
            f"(import alone) = 1/{r:.1f} — **{'met' if r >= 6 else 'missed'}**."
        )
    ob, _ = cell("ours", "bare", 1_000)
    sb, _ = cell("seed", "bare", 1_000)
    if ob and sb:
        r = sb / ob
        verdicts["bare_1000"] = r >= 20
        rc = cpu("seed", "bare", 1_000) / cpu("ours", "bare", 1_000)
        out.append(
            f"- bare loop ≤ 1/20 of 0.4.1's at 1,000 steps: {fmt_us(ob)} vs {fmt_us(sb)} µs/step = 1/{r:.1f} "
            f"(by CPU time: 1/{rc:.1f}) — **{'met' if r >= 20 else 'missed'}**."
        )
    parts, ok = [], True
    for steps in plan:
        ot, _ = cell("ours", "telemetry", steps)
        sb, _ = cell("seed", "bare", steps)
        if ot and sb:
            parts.append(
                f"{steps:,} steps: {fmt_us(ot)} vs {fmt_us(sb)} µs/step "
                f"(CPU: {fmt_us(cpu('ours', 'telemetry', steps))} vs {fmt_us(cpu('seed', 'bare', steps))})"
            )
            ok = ok and ot < sb
    if parts:
        verdicts["telemetry_vs_seed_bare"] = ok
        out.append(
            "- ours with OTel tracing + Prometheus + JSON logs faster than 0.4.1 bare: "
            + "; ".join(parts)
            + f" — **{'met' if ok else 'missed'}**."
        )
    else:
        out.append("- ours with full telemetry faster than 0.4.1 bare: not measured (see notes).")
    out.append("")
    out.append("### Where the time goes\n")
    out.extend(f"- {line}" for line in ANALYSIS)
    out.append("")
    if notes:
        out.append("### Notes\n")
        out.extend(f"- {n}" for n in notes)
        out.append("")
    return "\n".join(out), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, no 10,000-step runs")
    parser.add_argument("--no-agents", action="store_true", help="leave the OpenAI Agents SDK out")
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print only: write neither docs/benchmarks.md nor bench/results/",
    )
    parser.add_argument("--import-reps", type=int, default=None, help="fresh interpreters per import figure")
    parser.add_argument(
        "--render",
        action="store_true",
        help=f"measure nothing: rewrite the section from {RESULTS.relative_to(ROOT)}",
    )
    args = parser.parse_args(argv)
    if args.render:
        text, _verdicts = summarize(json.loads(RESULTS.read_text()))
        print(text)
        if not args.no_write:
            write_section("compare", text)
        return 0
    command = "python bench/compare_seed.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    pythons = {"ours": ours_python(), "seed": ensure_venv("seed")}
    if not args.no_agents:
        pythons["agents"] = ensure_venv("agents")
    versions = {}
    for impl, py in pythons.items():
        dist = {"ours": "looplet", "seed": "looplet", "agents": "openai-agents"}[impl]
        versions[impl] = subprocess.run(
            [str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
            cwd="/",
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    plan = QUICK_PLAN if args.quick else PLAN
    if args.no_agents:
        plan = {k: {i: n for i, n in v.items() if i != "agents"} for k, v in plan.items()}
    notes: list[str] = []
    modes = {impl: ["bare", "telemetry"] for impl in pythons}
    why = ours_has_telemetry(pythons["ours"])
    if not why:
        modes["ours"] += list(BREAKDOWN)
    else:
        modes["ours"] = ["bare"]
        notes.append(
            f"ours with telemetry not measured: looplet.telemetry's hooks are not importable yet ({why})."
        )
    for steps, reps in plan.items():
        for impl in pythons:
            if reps.get(impl, 0) == 0:
                notes.append(
                    f"{LABEL[impl]} at {steps:,} steps: not run"
                    + (
                        " (its per-step cost grows with the run; see the 1,000-step figure)."
                        if not args.quick
                        else " (--quick)."
                    )
                )
            elif reps[impl] < 3 and not args.quick:
                notes.append(
                    f"{LABEL[impl]} at {steps:,} steps: {reps[impl]} run{'s' if reps[impl] > 1 else ''} "
                    f"per column only, to keep the whole comparison near 10 minutes."
                )

    load_at_start = loadavg()
    import_reps = args.import_reps or (5 if args.quick else 15)
    log(f"cold import, {import_reps} fresh interpreters each ...")
    imports = time_imports(pythons, import_reps)
    for impl, s in imports.items():
        log(
            f"  {impl:<6} import+interp {med(s['import']) * 1e3:7.1f} ms, bare {med(s['bare']) * 1e3:6.1f} ms"
        )
    log("loop overhead ...")
    rows = time_loops(pythons, modes, plan, log)

    notes.append(
        "0.4.1 runs with its defaults (native tool calls from its MockLLMBackend, which was faster "
        "than its JSON-text mode here). The Agents SDK runs `Runner.run` under `asyncio.run` with a "
        "`Model` subclass that returns one scripted function call per turn, `StopAtTools(['done'])`, "
        "and the default trace processor (which uploads to OpenAI) replaced: none in the bare column, "
        "openai-agents-opentelemetry's processor in the traced one (its metrics option left off)."
    )
    rec = {
        "date": today(),
        "machine": machine(),
        "revision": revision(),
        "command": command,
        "load": (load_at_start, loadavg()),
        "versions": versions,
        "plan": plan,
        "notes": notes,
        "imports": imports,
        "loops": rows,
    }
    text, rec["verdicts"] = summarize(rec)
    print()
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rec, indent=1) + "\n")
        path = write_section("compare", text)
        log(f"wrote {path.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
