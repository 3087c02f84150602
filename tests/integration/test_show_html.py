"""`looplet show --html` in a real browser: headless Chromium (Debian's ``chromium``) loads the page from
disk with networking off, runs its script, and we check the DOM it built and the pixels it drew."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from looplet import DefaultState
from looplet.demo import TASK, build
from looplet.provenance import ProvenanceSink, load_trajectory
from tests.unit._harness import run

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=90
    )


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of a non-interlaced 8-bit PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def count_color(width: int, bpp: int, rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    n = 0
    for row in rows:
        for x in range(width):
            px = row[x * bpp : x * bpp + 3]
            if abs(px[0] - rgb[0]) < 6 and abs(px[1] - rgb[1]) < 6 and abs(px[2] - rgb[2]) < 6:
                n += 1
    return n


@pytest.fixture(scope="module")
def page(tmp_path_factory: Any) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("html")
    sink = ProvenanceSink(tmp / "traces", fsync=False)
    llm, tools, config = build(latency_s=0.01)
    run(
        "sync",
        llm=llm,
        tools=tools,
        task=TASK,
        config=config,
        hooks=[sink.trajectory_hook()],
        state=DefaultState(max_steps=config.max_steps),
    )
    out = tmp / "run.html"
    proc = subprocess.run(
        [sys.executable, "-m", "looplet", "show", str(sink.last_path), "--html", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return out, load_trajectory(sink.last_path)


def test_the_page_renders_bars_and_step_details(page: tuple[Path, Any], tmp_path: Path) -> None:
    html, t = page
    proc = chromium(tmp_path, "--dump-dom", html.as_uri())
    dom = proc.stdout
    assert proc.returncode == 0 and "<body" in dom, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="yes"' in body  # the inline script ran to its end without an error
    bars = re.findall(
        r'<div class="bar (llm|tool)( error)?"[^>]*style="left: ([\d.e-]+)%; width: ([\d.e-]+)%;"', dom
    )
    ran = [s for s in t.steps if s.tool_result.error_kind != "denied"]  # a denied call has no tool bar
    assert f'data-bars="{len(t.timeline)}"' in body and len(bars) == len(t.timeline) == t.llm_calls + len(ran)
    assert sum(1 for kind, *_ in bars if kind == "llm") == t.llm_calls
    assert sum(1 for kind, *_ in bars if kind == "tool") == len(ran)
    errors = [b for b in bars if b[1]]
    failed = [s for s in ran if not s.ok]
    assert len(errors) == len(failed) >= 1 and {b[0] for b in errors} == {"tool"}
    assert f'data-error-bars="{len(failed)}"' in body
    lefts = [float(b[2]) for b in bars]
    assert all(0 <= x < 100 for x in lefts) and lefts == sorted(lefts)  # on one time axis, in order
    assert all(float(b[3]) > 0 for b in bars)
    assert dom.count('class="tick"') == 5 and "#2</span> execute_tool fetch_page  ✗" in dom
    # step details: arguments, result, prompt and response of the LLM call behind each step
    assert len(re.findall(r'<details class="step( failed)?" id="r0-step-\d+">', dom)) == len(t.steps)
    step2 = dom[dom.index('id="r0-step-2"') : dom.index('id="r0-step-3"')]
    assert "https://docs.example/looplet/hooks" in step2 and "404 Not Found" in step2
    assert 'id="r0-call-2"' in step2 and "[tool call_1_0]" in step2 and "→ fetch_page(" in step2
    assert "How many hooks and exporters does looplet ship, together?" in dom
    assert f"<b>{t.usage.input_tokens}</b><span>input tokens</span>" in dom


def test_the_screenshot_shows_the_waterfall(page: tuple[Path, Any], tmp_path: Path) -> None:
    html, _t = page
    shot = tmp_path / "shot.png"
    # a 1280x900 window drawn at half scale: a 640x450 image is quick to decode in pure Python
    proc = chromium(
        tmp_path,
        "--window-size=1280,900",
        "--force-device-scale-factor=0.5",
        f"--screenshot={shot}",
        html.as_uri(),
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    width, bpp, rows = read_png(shot)
    assert (width, len(rows)) == (640, 450)
    # bar colours from the page's CSS: LLM calls blue, tools green. Bars are 7 px high here and at least
    # 1 px wide (a sub-millisecond tool bar may be antialiased to fewer full pixels); the legend's 5x5
    # swatch alone stays below these counts, which ask for at least three bars' worth of each colour. (The
    # failed call's red bar may be only a pixel wide, so it is checked in the DOM test.)
    assert count_color(width, bpp, rows, (0x3B, 0x6F, 0xD8)) > 25 + 7 * 3
    assert count_color(width, bpp, rows, (0x2E, 0x9E, 0x6A)) > 25 + 7 * 3
