"""The small agent the backend and streaming tests drive through the fake provider server."""

from __future__ import annotations

from typing import Any

from looplet import LoopConfig, tool, tools_from
from tests.fakeserver import tool_call
from tests.unit._harness import run


@tool(description="Search the docs.")
def search(query: str) -> dict:
    return {"results": [f"about {query}"]}


@tool(description="Always fails.")
def broken(x: int) -> int:
    raise RuntimeError("disk full")


TOOLS = tools_from([search, broken])
TASK = {"goal": "What is looplet?"}


def done(**kw: Any) -> Any:
    """The fake server's answer that ends the run with ``done``."""
    return tool_call("done", {"answer": "an agent loop"}, **kw)


def go(mode: str, llm: Any, *, hooks: Any = (), state: Any = None, **config: Any) -> tuple[list[Any], Any]:
    """Run the agent in ``mode`` on ``llm`` with ``LoopConfig(**config)`` (retries back off 10 ms)."""
    config.setdefault("llm_backoff_s", 0.01)
    return run(
        mode, llm=llm, task=TASK, tools=TOOLS, hooks=list(hooks), state=state, config=LoopConfig(**config)
    )
