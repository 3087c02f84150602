"""The agent the batch tests run: a scripted model (one tool call, then done) with fixed usage.

``BATCH_LATENCY_S`` sets the mock latency per LLM call; a task with ``"die": PATH`` kills its worker
process the first time it runs (creating PATH), and every time when ``"die_always": true``.
"""

from __future__ import annotations

import os
from typing import Any

from looplet import MockLLMBackend, tool, tools_from
from looplet.hooks import current_run
from looplet.types import LLMResponse, ToolCall, Usage


@tool(description="Echo the word back.")
def echo(word: str) -> str:
    return word


@tool(description="Exit the worker process (crash tests).")
def crash(marker: str, always: bool = False) -> str:
    if always or not os.path.exists(marker):
        open(marker, "a").close()
        os._exit(17)
    return "survived"


def build() -> dict[str, Any]:
    latency = float(os.environ.get("BATCH_LATENCY_S", "0"))
    script = [
        '{"tool": "echo", "args": {"word": "hi"}}',
        '{"tool": "done", "args": {"answer": "ok"}}',
    ]
    llm = MockLLMBackend(script, model="gpt-4o-mini", usage=Usage(100, 20), latency_s=latency)
    return {"llm": llm, "tools": tools_from([echo, crash])}


class PerTaskBackend:
    """First answer: the task's ``crash`` call when it has one (``{"marker": PATH, "always": bool}``),
    else ``echo``; then ``done``. The task is read from the run being executed."""

    provider = "mock"
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, messages: list[Any], *, tools: object = None, **options: object) -> LLMResponse:
        self.calls += 1
        run = current_run()
        task = run.task if run is not None else {}
        if self.calls == 1:
            call = (
                ToolCall("crash", task["crash"], "c1")
                if "crash" in task
                else ToolCall("echo", {"word": "x"}, "c1")
            )
        else:
            call = ToolCall("done", {"answer": "ok"}, f"c{self.calls}")
        return LLMResponse(tool_calls=[call], usage=Usage(100, 20), model=self.model, provider=self.provider)


def per_task() -> dict[str, Any]:
    return {"llm": PerTaskBackend(), "tools": tools_from([echo, crash])}


class AsyncOnlyBackend:
    """A backend with only ``agenerate`` (as an async-only client would be): the batch runs it with the async
    loop in its worker."""

    provider = "mock"
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.inner = build()["llm"]

    async def agenerate(self, messages: list[Any], *, tools: object = None, **options: Any) -> LLMResponse:
        response: LLMResponse = await self.inner.agenerate(messages, tools=tools, **options)
        return response


def async_only() -> dict[str, Any]:
    return {"llm": AsyncOnlyBackend(), "tools": tools_from([echo, crash])}
