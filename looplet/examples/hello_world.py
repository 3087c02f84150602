"""Hello world: one tool, one task, a step line per tool call.

python -m looplet.examples.hello_world --scripted          # no key, no network
OPENAI_API_KEY=sk-... OPENAI_MODEL=gpt-4o-mini python -m looplet.examples.hello_world
"""

from __future__ import annotations

from typing import Any

from looplet import composable_loop, tool, tools_from
from looplet.examples._common import SetupError, backend, cli, exit_code, fail, parser, run


@tool(description="Say hello to someone; returns the greeting.")
def greet(name: str) -> str:
    return f"Hello, {name}!"


TASK = {"goal": "Greet Ada and then Alan, then finish with both greetings as the answer."}
SCRIPT = [
    '{"tool": "greet", "args": {"name": "Ada"}}',
    '{"tool": "greet", "args": {"name": "Alan"}}',
    '{"tool": "done", "args": {"answer": "Hello, Ada! Hello, Alan!"}}',
]


def agent(scripted: bool = False, latency_s: float = 0.0) -> dict[str, Any]:
    """The agent as a factory: ``looplet run looplet.examples.hello_world:agent "Greet Grace"``."""
    return {"llm": backend(scripted, SCRIPT, latency_s=latency_s), "tools": tools_from([greet])}


def main(argv: list[str] | None = None) -> int:
    args = parser("python -m looplet.examples.hello_world", __doc__).parse_args(argv)
    try:
        a = agent(args.scripted, args.latency)
    except SetupError as exc:
        return fail(str(exc))
    steps = composable_loop(llm=a["llm"], tools=a["tools"], task=TASK, max_steps=args.max_steps or 5)
    return exit_code(run(steps, quiet=args.quiet))


if __name__ == "__main__":
    raise SystemExit(cli(main))
