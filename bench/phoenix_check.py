"""What a real Arize Phoenix shows of a looplet run: span kinds, status, the agent's input/output, tokens, cost.

    python bench/phoenix_check.py --phoenix http://127.0.0.1:6006

Opt-in: it needs a Phoenix server already running (``pip install arize-phoenix`` in a venv of its own,
then ``phoenix serve``; OTLP/HTTP on the same port). The script runs ``python -m looplet demo --otlp URL``
in a subprocess with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, reads the trace id from
the demo's closing block, waits until Phoenix has stored that trace, then asks Phoenix's GraphQL API
(``/graphql``, the API its own UI uses) what it made of each span, and prints a table. Only the standard
library is used to talk to Phoenix.

Exit status 1 if Phoenix classifies a ``looplet.step`` span as TOOL, or the ``invoke_agent`` span has no
input or no output although content capture is on; 2 if the demo fails or Phoenix cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any, NoReturn

_TRACE = """
query ($traceId: ID!) {
  projects { edges { node { name trace(traceId: $traceId) { traceId
    spans(first: 500) { edges { node {
      name spanKind statusCode statusMessage propagatedStatusCode
      context { spanId } parentId
      input { value } output { value } attributes
      tokenCountPrompt tokenCountCompletion tokenCountTotal
      costSummary { total { cost } }
    } } }
  } } } }
}
"""


def _post(base: str, query: str, variables: dict[str, Any]) -> Any:
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(base.rstrip("/") + "/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    if answer.get("errors"):
        raise RuntimeError(f"Phoenix GraphQL error: {answer['errors']}")
    return answer["data"]


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _run_demo(phoenix: str) -> str:
    """Run the demo against Phoenix with content capture on; return the trace id it printed."""
    env = dict(os.environ, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    cmd = [sys.executable, "-m", "looplet", "demo", "--otlp", phoenix, "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    found = re.search(r"trace ([0-9a-f]{32})", done.stdout)
    if done.returncode != 0 or not found:
        _fail(f"the demo delivered no trace (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return found.group(1)


def _spans(phoenix: str, trace_id: str, deadline_s: float) -> list[dict[str, Any]]:
    """The trace's spans as Phoenix stored them, once their count stops growing (Phoenix inserts in batches)."""
    end, seen, stable = time.monotonic() + deadline_s, -1, 0
    spans: list[dict[str, Any]] = []
    while time.monotonic() < end:
        data = _post(phoenix, _TRACE, {"traceId": trace_id})
        for edge in data["projects"]["edges"]:
            trace = edge["node"]["trace"]
            if trace:
                spans = [e["node"] for e in trace["spans"]["edges"]]
        stable = stable + 1 if spans and len(spans) == seen else 0
        if stable >= 2:
            return spans
        seen = len(spans)
        time.sleep(0.5)
    if not spans:
        _fail(f"Phoenix did not show trace {trace_id} within {deadline_s:.0f} s")
    return spans


def _cost(span: dict[str, Any]) -> str:
    total = ((span.get("costSummary") or {}).get("total") or {}).get("cost")
    return "" if total is None else f"{total:.9f}"


def _short(value: Any, width: int = 300) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _report(spans: list[dict[str, Any]]) -> int:
    rows = [
        (
            s["name"],
            s["spanKind"],
            s["statusCode"],
            s.get("propagatedStatusCode") or "",
            str(s.get("tokenCountTotal") or ""),
            _cost(s),
        )
        for s in spans
    ]
    head = ("span", "Phoenix kind", "status", "shown status", "tokens", "cost USD")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    counts: dict[str, int] = {}
    for s in spans:
        counts[s["spanKind"]] = counts.get(s["spanKind"], 0) + 1
    print("\nkinds:", ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    roots = [s for s in spans if not s.get("parentId")]
    for root in roots:
        print(
            f"trace status (root span {root['name']!r}): {root['statusCode']}, "
            f"shown as {root.get('propagatedStatusCode')}"
        )
    llm = [s for s in spans if s["spanKind"] == "llm"]
    tokens = sum(int(s.get("tokenCountTotal") or 0) for s in llm)
    cost = sum(float(_cost(s) or 0) for s in llm)
    print(f"LLM spans: {len(llm)}, tokens {tokens}, cost USD {cost:.9f}")
    return _verdict(spans)


def _verdict(spans: list[dict[str, Any]]) -> int:
    failures = []
    steps_as_tools = [s for s in spans if s["name"].startswith("looplet.step") and s["spanKind"] == "tool"]
    if steps_as_tools:
        failures.append(f"{len(steps_as_tools)} looplet.step spans shown as TOOL")
    agents = [s for s in spans if s["name"].startswith("invoke_agent")]
    for agent in agents:
        given, answer = (agent.get("input") or {}).get("value"), (agent.get("output") or {}).get("value")
        print(
            f"\n{agent['name']} input.value:  {_short(given)}\n{agent['name']} output.value: {_short(answer)}"
        )
        llm = json.loads(agent.get("attributes") or "{}").get("llm") or {}
        for key in ("input_messages", "output_messages"):
            said = [m.get("message", {}).get("content") for m in llm.get(key) or []]
            print(f"{agent['name']} llm.{key} (Phoenix's messages view): {_short(said)}")
        if not given or not answer:
            failures.append(f"{agent['name']}: input.value or output.value empty with content capture on")
    if not agents:
        failures.append("no invoke_agent span")
    print("\nverdict:", "; ".join(failures) if failures else "ok")
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phoenix", default="http://127.0.0.1:6006", help="Phoenix base URL (OTLP/HTTP too)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the trace in Phoenix")
    args = p.parse_args()
    trace_id = _run_demo(args.phoenix)
    print(f"trace {trace_id} sent to {args.phoenix}\n")
    try:
        spans = _spans(args.phoenix, trace_id, args.wait)
    except OSError as exc:
        _fail(f"cannot query Phoenix at {args.phoenix}/graphql: {exc}")
    return _report(spans)


if __name__ == "__main__":
    sys.exit(main())
