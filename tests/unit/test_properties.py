"""Property tests: @tool schemas against random signatures and payloads; loop invariants under random
hook decisions."""

from __future__ import annotations

import inspect
import json
from typing import Any, Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looplet import (
    DefaultState,
    Deny,
    HookDecision,
    InjectContext,
    MockLLMBackend,
    ToolCall,
    ToolResult,
    tool,
    tools_from,
)

from ._harness import run

# --- random signatures -----------------------------------------------------------------------------

TYPES: dict[str, tuple[Any, Any]] = {
    # name: (annotation, strategy of valid values)
    "str": (str, st.text(max_size=20)),
    "int": (int, st.integers()),
    "float": (float, st.floats(allow_nan=False, allow_infinity=False) | st.integers()),
    "bool": (bool, st.booleans()),
    "list_int": (list[int], st.lists(st.integers(), max_size=4)),
    "list_str": (list[str], st.lists(st.text(max_size=5), max_size=4)),
    "dict": (dict, st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    "opt_str": (Optional[str], st.none() | st.text(max_size=5)),  # noqa: UP045 - the old spelling is what is tested
    "lit": (Literal["a", "b", "c"], st.sampled_from(["a", "b", "c"])),
}
# values that are wrong for each type
WRONG: dict[str, Any] = {
    "str": st.integers() | st.booleans(),
    "int": st.text(max_size=3) | st.booleans() | st.floats(0.5, 0.9),
    "float": st.text(max_size=3) | st.booleans(),
    "bool": st.integers() | st.text(max_size=3),
    "list_int": st.text(max_size=3) | st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=2),
    "list_str": st.integers() | st.lists(st.integers(), min_size=1, max_size=2),
    "dict": st.lists(st.integers()),
    "opt_str": st.integers(),
    "lit": st.sampled_from(["d", "", "A"]),
}

signatures = st.lists(st.tuples(st.sampled_from(sorted(TYPES)), st.booleans()), min_size=0, max_size=5)


def make_tool(sig: list[tuple[str, bool]]):
    params = []
    for i, (kind, has_default) in enumerate(sig):
        ann = TYPES[kind][0]
        default = inspect.Parameter.empty
        if has_default:
            default = (
                None
                if kind == "opt_str"
                else {"str": "", "int": 0, "float": 0.0, "bool": False, "lit": "a"}.get(
                    kind, inspect.Parameter.empty
                )
            )
        params.append(
            inspect.Parameter(f"p{i}", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        )

    def fn(**kwargs: Any) -> dict:
        return {"got": sorted(kwargs)}

    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return tool(fn, name="t", description="generated")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sig=signatures, data=st.data())
def test_valid_payloads_always_pass(sig, data) -> None:
    spec = make_tool(sig)
    registry = tools_from([spec], include_done=False)
    args = {}
    for i, (kind, _d) in enumerate(sig):
        required = f"p{i}" in spec.parameters["required"]
        if required or data.draw(st.booleans()):
            args[f"p{i}"] = data.draw(TYPES[kind][1])
    result = registry.dispatch(ToolCall("t", args, "c1"))
    assert result.error is None, result.error
    assert result.data == {"got": sorted(args)}
    json.loads(json.dumps(spec.parameters))  # the schema itself is JSON


@settings(max_examples=150, deadline=None)
@given(sig=signatures.filter(bool), data=st.data())
def test_invalid_payloads_always_give_an_error_result(sig, data) -> None:
    spec = make_tool(sig)
    registry = tools_from([spec], include_done=False)
    args = {f"p{i}": data.draw(TYPES[kind][1]) for i, (kind, _d) in enumerate(sig)}
    how = data.draw(st.sampled_from(["wrong_type", "extra", "missing"]))
    if how == "wrong_type":
        i = data.draw(st.integers(0, len(sig) - 1))
        args[f"p{i}"] = data.draw(WRONG[sig[i][0]])
        expected = "invalid_argument"
    elif how == "extra":
        args["unexpected"] = 1
        expected = "unexpected_argument"
    else:
        required = spec.parameters["required"]
        if not required:
            return
        del args[data.draw(st.sampled_from(required))]
        expected = "missing_argument"
    result = registry.dispatch(ToolCall("t", args, "c1"))
    assert result.error_kind == expected, (args, result.error)


@settings(max_examples=60, deadline=None)
@given(
    args=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=4,
    )
)
def test_arbitrary_payloads_never_raise(args) -> None:
    @tool
    def f(a: int, b: list[str] | None = None) -> int:
        return a

    result = tools_from([f]).dispatch(ToolCall("f", args, "x"))
    assert (result.error is None) == (set(args) <= {"a", "b"} and "a" in args and result.data == args["a"])


# --- random hook decisions ----------------------------------------------------------------------

decisions = st.sampled_from(["none", "deny", "inject", "stop", "update", "replace", "raise", "wrong"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(decisions, decisions, st.booleans()), min_size=1, max_size=12),
    mode=st.sampled_from(["sync", "async"]),
)
def test_loop_invariants_under_random_decisions(plan, mode) -> None:
    ends: list[str] = []

    class Chaos:
        def pre_prompt(self, state, session_log, context, step_num):
            return self._act(plan[(step_num - 1) % len(plan)][0], step_num)

        def pre_dispatch(self, state, session_log, tool_call, step_num):
            return self._act(plan[(step_num - 1) % len(plan)][1], step_num)

        def should_stop(self, state, step_num, new):
            return plan[(step_num - 1) % len(plan)][2] and step_num > 6

        def on_loop_end(self, state, session_log, context, result):
            ends.append(result.stop_reason)

        def _act(self, what, n):
            return (
                {
                    "none": None,
                    "deny": Deny("no"),
                    "inject": InjectContext("note"),
                    "stop": None if n < 3 else HookDecision(stop="chaos"),
                    "update": HookDecision(updated_args={"text": "u"}),
                    "replace": ToolResult(data="r"),
                    "wrong": 42,
                }.get(what)
                if what != "raise"
                else 1 / 0
            )

    @tool
    def echo(text: str) -> str:
        return text

    llm = MockLLMBackend(
        [
            '{"tool": "echo", "args": {"text": "a"}}',
            '[{"tool": "echo", "args": {"text": "b"}}, {"tool": "echo", "args": {"text": "c"}}]',
        ],
        cycle=True,
    )
    state = DefaultState(max_steps=10)
    steps, result = run(
        mode, llm=llm, tools=tools_from([echo]), task={"goal": "x"}, hooks=[Chaos()], state=state
    )
    assert len(ends) == 1 and ends[0] == result.stop_reason  # exactly one stop reason
    assert result.stop_reason in ("max_steps", "done") or result.stop_reason.startswith("hook_stop:")
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    assert state.steps == steps and len(steps) <= 10
    calls = {c["id"] for m in state.transcript if m["role"] == "assistant" for c in m.get("tool_calls") or ()}
    answered = {m["tool_call_id"] for m in state.transcript if m["role"] == "tool"}
    assert calls == answered  # every proposed call has exactly one answer in the transcript


# --- the redactor's marker scan -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    words=st.sets(st.text(alphabet="ab-@(?.*", min_size=1, max_size=4), min_size=1, max_size=8),
    text=st.text(alphabet="ab-@(?.*xy", max_size=30),
)
def test_the_marker_trie_finds_a_marker_exactly_when_one_is_in_the_text(words, text) -> None:
    import re

    from looplet.telemetry.redact import _trie

    assert (re.search(_trie(words), text) is not None) == any(w in text for w in words)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    secret=st.sampled_from(
        ["sk-proj-" + "a" * 24, "AKIA" + "B" * 16, "alice@example.com", "ghp_" + "c" * 36]
    ),
)
def test_a_secret_is_redacted_wherever_it_sits(prefix, suffix, secret) -> None:
    from looplet.telemetry.redact import Redactor

    assert secret not in Redactor()(f"{prefix} {secret} {suffix}")
