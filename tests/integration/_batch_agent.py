"""The agent the batch tests run: a scripted model (one tool call, then done) with fixed usage.

``BATCH_LATENCY_S`` sets the mock latency per LLM call; a task with ``"die": PATH`` kills its worker
process the first time it runs (creating PATH), and every time when ``"die_always": true``.
"""

from __future__ import annotations

import os

from looplet import MockLLMBackend, tool, tools_from
from looplet.types import Usage


@tool(description="Echo the word back.")
def echo(word: str) -> str:
    return word


@tool(description="Exit the worker process (crash tests).")
def crash(marker: str, always: bool = False) -> str:
    if always or not os.path.exists(marker):
        open(marker, "a").close()
        os._exit(17)
    return "survived"


def build() -> dict:
    latency = float(os.environ.get("BATCH_LATENCY_S", "0"))
    script = [
        '{"tool": "echo", "args": {"word": "hi"}}',
        '{"tool": "done", "args": {"answer": "ok"}}',
    ]
    llm = MockLLMBackend(script, model="gpt-4o-mini", usage=Usage(100, 20), latency_s=latency)
    return {"llm": llm, "tools": tools_from([echo, crash])}
