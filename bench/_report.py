"""Shared by the bench scripts: the machine they ran on, and writing a section of docs/benchmarks.md
between a pair of markers (other sections of the file are left as they are)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
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
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def revision() -> str:
    """The commit measured, marked dirty when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "looplet"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
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
        rest = text[j + len(end):].lstrip("\n")
        text = text[:i] + block + ("\n" + rest if rest else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
