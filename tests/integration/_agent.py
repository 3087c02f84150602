"""The small agent the backend and streaming tests drive through the fake provider server."""

from __future__ import annotations

from looplet import tool, tools_from


@tool(description="Search the docs.")
def search(query: str) -> dict:
    return {"results": [f"about {query}"]}


@tool(description="Always fails.")
def broken(x: int) -> int:
    raise RuntimeError("disk full")


TOOLS = tools_from([search, broken])
TASK = {"goal": "What is looplet?"}
