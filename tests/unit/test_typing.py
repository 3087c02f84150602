"""A user's `mypy --strict` accepts looplet's public API, and no public name is typed `Any`.

These run the real mypy on scripts written to a temporary folder, as a user's project would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import looplet

pytest.importorskip("mypy")

USER_SCRIPT = """
from looplet import DefaultState, LoopConfig, MockLLMBackend, RunResult, composable_loop, tool, tools_from

@tool(description="Search the docs.")
def search(query: str) -> dict[str, list[str]]:
    return {"results": [f"result for {query}"]}

llm = MockLLMBackend(['{"tool": "search", "args": {"query": "x"}}', '{"tool": "done", "args": {"answer": "ok"}}'])
tools = tools_from([search], include_done=True)
run = composable_loop(llm=llm, tools=tools, state=DefaultState(max_steps=5), config=LoopConfig(max_steps=5),
                      task={"goal": "What is looplet?"})
for step in run:
    print(step.pretty(), step.tool_call.tool, step.cost_usd)
result: RunResult = looplet.run_loop(llm=llm, tools=tools, task={"goal": "again"})
print(result.stop_reason, result.usage.total_tokens)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes", script.name],
        cwd=tmp_path,
        # the editable install is an import hook mypy cannot follow: point it at the package's folder,
        # which is what an installed wheel gives it
        env={**os.environ, "MYPYPATH": str(Path(looplet.__file__).parent.parent)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _errors_in(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(name) and ": error:" in line]


def test_quickstart_script_passes_mypy_strict(tmp_path: Path) -> None:
    source = "import looplet\n" + USER_SCRIPT + "reveal_type(search)\n"
    proc = _mypy(tmp_path, source)
    assert not _errors_in(proc.stdout, "user_script.py"), proc.stdout
    revealed = [line for line in proc.stdout.splitlines() if "Revealed type" in line]
    assert revealed and "looplet.tools.ToolSpec" in revealed[0], proc.stdout


def test_no_public_name_is_typed_any(tmp_path: Path) -> None:
    names = [n for n in looplet.__all__ if n != "__version__"]
    source = "import looplet\n" + "".join(f"reveal_type(looplet.{n})\n" for n in names)
    proc = _mypy(tmp_path, source)
    revealed = re.findall(r'user_script\.py:(\d+): note: Revealed type is "(.*)"', proc.stdout)
    assert len(revealed) == len(names), proc.stdout
    loose = []
    for line, text in revealed:
        name = names[int(line) - 2]
        returns = text.rsplit("->", 1)[-1].strip() if "->" in text else text
        if text == "Any" or returns == "Any":
            loose.append(f"{name}: {text}")
    assert not loose, "public names typed Any:\n" + "\n".join(loose)


def test_backends_satisfy_the_backend_protocol() -> None:
    from looplet import MockLLMBackend
    from looplet.protocols import AsyncLLMBackend, LLMBackend

    backend = MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}'])
    assert isinstance(backend, LLMBackend)
    assert isinstance(backend, AsyncLLMBackend)
    assert not isinstance(object(), LLMBackend)
