#!/usr/bin/env bash
# Run looplet 0.4.1's own tests of its core public API against THIS package, and print the pass figure.
#
#   tools/run_041_suite.sh            # prints "N of M core-API tests that pass on 0.4.1 pass here (P%)"
#   tools/run_041_suite.sh --by-file  # the same, one line per test file
#   tools/run_041_suite.sh --failing  # also lists the tests that fail here
#   tools/run_041_suite.sh --causes   # the failures here grouped by their first error line
#
# Everything of 0.4.1 (its sdist, its tests, the two virtual environments) lives in a scratch folder
# OUTSIDE the repository ($LOOPLET041_DIR, default /tmp/looplet041); nothing of it is ever committed.
# The reference run (0.4.1 against itself) is done once and cached there; the run against this package
# is redone each time. What "core-API tests" means is the list CORE_FILES below (see docs/migration.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRATCH="${LOOPLET041_DIR:-/tmp/looplet041}"
case "$(realpath -m "$SCRATCH")/" in
"$REPO"/*) echo "refusing: the scratch folder $SCRATCH is inside the repository" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"

# The core public API of 0.4.1: the loop, tools, backends, hooks, decisions, compaction, permissions,
# approval, checkpoints, provenance, evals. Chosen by subject (file name), not by what passes.
CORE_FILES=(
  test_loop test_async_loop_smoke test_types
  test_tools test_tools_json_schema test_tool_decorator_smoke test_tool_error_taxonomy
  test_tool_validation_error_smoke
  test_backends test_testing_smoke
  test_hook_decision_smoke test_thread_rewrite
  test_compact_smoke test_compact_strategies_smoke test_llm_compact_smoke
  test_permission_engine test_permission_hook_smoke
  test_approval_hook_smoke test_approval_protocol
  test_checkpoint
  test_provenance_smoke
  test_eval_smoke
)

mkdir -p "$SCRATCH"
SRC="$SCRATCH/looplet-0.4.1"
if [ ! -d "$SRC" ]; then
  (cd "$SCRATCH" && "$PY" -m pip download -q "looplet==0.4.1" --no-binary :all: --no-deps -d . \
    && tar xzf looplet-0.4.1.tar.gz)
fi

venv() {  # venv DIR PACKAGE...: a scratch virtual environment with PACKAGEs and the test tools
  if [ ! -x "$1/bin/python" ]; then
    "$PY" -m venv "$1"
    "$1/bin/pip" install -q "${@:2}" pytest pytest-asyncio pytest-timeout
  fi
}

files=()
for f in "${CORE_FILES[@]}"; do files+=("tests/$f.py"); done
run() {  # run PYTHON XML: 0.4.1's core tests under PYTHON, results as JUnit XML
  (cd "$SRC" && "$1" -m pytest -q -p no:cacheprovider -o addopts= --timeout=60 --continue-on-collection-errors \
    --junitxml="$2" "${files[@]}" >"$2.log" 2>&1) || true
}

venv "$SCRATCH/venv041" "$SRC"
venv "$SCRATCH/venv-here" -e "$REPO"
# The scratch venv may have been made from another checkout: make sure it measures THIS one.
# Asked from outside the repository (from inside it, `import looplet` finds the checkout itself, whatever
# the venv has installed), and pip run as a module (a copied venv's bin/pip names another venv's python).
here_pkg="$(cd / && "$SCRATCH/venv-here/bin/python" -c 'import looplet, os; print(os.path.dirname(looplet.__file__))' 2>/dev/null || true)"
if [ "$here_pkg" != "$REPO/looplet" ]; then
  "$SCRATCH/venv-here/bin/python" -m pip install -q --no-deps --force-reinstall -e "$REPO"
fi
stamp="$(printf '%s\n' "${CORE_FILES[@]}" | sha1sum | cut -c1-12)"
if [ ! -s "$SCRATCH/ref-$stamp.xml" ]; then
  run "$SCRATCH/venv041/bin/python" "$SCRATCH/ref-$stamp.xml"
fi
run "$SCRATCH/venv-here/bin/python" "$SCRATCH/here.xml"

"$PY" - "$SCRATCH/ref-$stamp.xml" "$SCRATCH/here.xml" "$@" <<'EOF'
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter

def outcomes(path, why=None):
    out = {}
    try:
        cases = list(ET.parse(path).iter("testcase"))
    except (OSError, ET.ParseError):  # pytest stopped before writing (e.g. conftest failed to import)
        cases = []
    for case in cases:
        key = f"{case.get('classname')}::{case.get('name')}"
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        out[key] = not bad
        if bad and why is not None:
            text = (bad[0].get("message") or bad[0].text or "").strip().splitlines()
            why[key] = re.sub(r"0x[0-9a-f]+|'[^']{40,}'", "…", text[0] if text else "?")[:150]
    return out

why = {}
ref, here = outcomes(sys.argv[1]), outcomes(sys.argv[2], why)
core = [k for k, ok in ref.items() if ok]
passing = [k for k in core if here.get(k)]
if "--by-file" in sys.argv:
    total, good = Counter(), Counter()
    for k in core:
        f = k.split("::")[0].split(".")[1]
        total[f] += 1
        good[f] += bool(here.get(k))
    for f in sorted(total):
        print(f"{f:40s} {good[f]:4d} / {total[f]:4d}")
if "--failing" in sys.argv:
    for k in core:
        if not here.get(k):
            print("FAIL", k)
if "--causes" in sys.argv:
    causes = Counter(why.get(k, "collection error (the file did not import)") for k in core if not here.get(k))
    for cause, n in causes.most_common(40):
        print(f"{n:5d}  {cause}")
pct = 100.0 * len(passing) / max(1, len(core))
print(f"{len(passing)} of {len(core)} core-API tests that pass on looplet 0.4.1 pass here ({pct:.1f}%)")
EOF
