"""Fail when a function in looplet/ is longer than 80 lines or has a cyclomatic complexity above 20.

Run by .ci/run: ``python tools/check_complexity.py [PATH ...]`` (default: looplet). Complexity is radon's
(``radon cc``); length counts the lines from ``def`` to the function's last line, decorators excluded.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from radon.complexity import cc_visit

MAX_LINES = 80
MAX_COMPLEXITY = 20


def problems(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    found = []
    for block in cc_visit(source):
        if block.complexity > MAX_COMPLEXITY:
            found.append(f"{path}:{block.lineno}: {block.fullname} has complexity {block.complexity}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append(f"{path}:{node.lineno}: {node.name} is {length} lines long")
    return found


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("looplet")]
    files = sorted(p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py")))
    found = [line for f in files for line in problems(f)]
    for line in found:
        print(line)
    print(
        f"{len(files)} files: {len(found)} functions over {MAX_LINES} lines or complexity {MAX_COMPLEXITY}",
        file=sys.stderr,
    )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
