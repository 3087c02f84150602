"""Shared by the bench scripts: the machine they ran on, and writing a section of docs/benchmarks.md
between a pair of markers (other sections of the file are left as they are)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model, cores, OS and Python, on one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def revision_of(root: str | os.PathLike[str]) -> str:
    """``revision()`` of another checkout."""
    return revision(Path(root))


def revision(root: Path = ROOT) -> str:
    """The commit measured, marked dirty when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "looplet"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in looplet/' if dirty else ''}" if head else "unknown"


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Put ``body`` between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->`` in ``path``: replace
    what is there, append the section when the markers are missing, create the file when it is."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        rest = text[j + len(end) :].lstrip("\n")
        text = text[:i] + block + ("\n" + rest if rest else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def settle(where: str | os.PathLike[str], timeout_s: float = 60.0) -> float:
    """Wait until creating files in the directory ``where`` runs at its usual speed (the probe files stay
    there for the caller to remove); returns the seconds waited.

    On this VM's disk (ext4 mounted with ``discard``), a few seconds after many files were deleted,
    creating a file becomes 30x slower for several seconds (deleting 30,000 files: 22-28 µs a file before
    and after, 730-900 µs for about six seconds starting five seconds later). Whatever ran before the
    bench (a test suite, the last bench) may have deleted thousands; this probes until two probes in a
    row are fast, so the sink is measured, not the aftermath of someone else's deletion."""
    t0 = time.monotonic()
    fast = 0
    n = 0
    while time.monotonic() - t0 < timeout_s:
        t = time.perf_counter()
        for _i in range(200):
            n += 1
            fd = os.open(os.path.join(where, f".settle-{n}"), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"x" * 800)
            os.close(fd)
        fast = fast + 1 if (time.perf_counter() - t) / 200 < 100e-6 else 0
        if fast == 2:
            break
        time.sleep(0.5)
    return time.monotonic() - t0
