"""The looplet 0.4.1 names its coding and data agent examples are built on (looplet._compat_examples):
memory sources, domain adapters, context budgets and their compaction hook, tools with a ``ctx:
ToolContext`` parameter, ``LoopConfig(approval_handler=...)`` and a bare ``ApprovalHook()`` next to it,
``state.step_count``. Each works with one DeprecationWarning naming the 0.5 spelling; 0.5 code is unchanged."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import looplet
from looplet import (
    ApprovalHook,
    DefaultState,
    LoopConfig,
    MockLLMBackend,
    Prune,
    ThresholdCompactHook,
    Truncate,
    composable_loop,
    tool,
    tools_from,
)
from looplet.context import CompactChain

from ._compat_support import one_warning, quiet


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet():
        yield


def old(name: str) -> Any:
    return getattr(looplet, name)


def call(tool_name: str, **args: Any) -> str:
    import json

    return json.dumps({"tool": tool_name, "args": args})


class Recording(MockLLMBackend):
    """The scripted backend, keeping the messages of every call."""

    def __init__(self, responses: list[str]) -> None:
        super().__init__(responses)
        self.prompts: list[str] = []

    def generate(self, messages: list[dict[str, Any]], **options: Any) -> Any:
        self.prompts.append("\n".join(str(m.get("content") or "") for m in messages))
        return super().generate(messages, **options)


def note(text: str) -> str:
    """Write a note."""
    return text


# --- memory sources and domain adapters --------------------------------------------------------------------


def test_static_memory_source_and_domain_briefing_reach_every_prompt() -> None:
    with one_warning("StaticMemorySource(text)", "system_prompt="):
        memory = old("StaticMemorySource")("RULE: snake_case everywhere")
    assert memory.load(None) == "RULE: snake_case everywhere"
    seen: list[tuple[int, Any]] = []

    def briefing(state: Any, session_log: Any, context: Any) -> str:
        seen.append((len(state.steps), context))
        return f"BRIEF: {len(state.steps)} steps so far"

    with one_warning("DomainAdapter(build_briefing=fn)", "pre_prompt"):
        domain = old("DomainAdapter")(build_briefing=briefing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = LoopConfig(max_steps=5, memory_sources=[memory], domain=domain)  # type: ignore[call-arg]
    messages = sorted(str(w.message).split(" is deprecated")[0] for w in caught)
    assert messages == ["LoopConfig(domain=...)", "LoopConfig(memory_sources=[...])"]
    llm = Recording([call("note", text="a"), call("note", text="b"), call("done", answer="ok")])
    steps = list(composable_loop(llm=llm, tools=tools_from([note], include_done=True), config=config))
    assert [s.tool_call.tool for s in steps] == ["note", "note", "done"]
    assert len(llm.prompts) == 3
    for n, prompt in enumerate(llm.prompts):
        assert "RULE: snake_case everywhere" in prompt
        assert f"BRIEF: {n} steps so far" in prompt
    assert [n for n, _ in seen] == [0, 1, 2]


def test_domain_adapter_refuses_what_it_cannot_adapt() -> None:
    adapter = old("DomainAdapter")
    with pytest.raises(TypeError, match="pre_prompt hook"):
        adapter(build_prompt=lambda *a: "x")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        adapter(bogus=1)
    assert adapter(build_trace=None).build_briefing is None  # None, as 0.4.1 code often passed: accepted


def test_domain_adapter_extract_entities_fills_state_metadata() -> None:
    domain = old("DomainAdapter")(extract_entities=lambda data: [str(data).upper()])
    config = LoopConfig(max_steps=4, domain=domain)  # type: ignore[call-arg]
    state = DefaultState(max_steps=4)
    llm = MockLLMBackend([call("note", text="x"), call("note", text="y"), call("done", answer="ok")])
    list(composable_loop(llm=llm, tools=tools_from([note], include_done=True), config=config, state=state))
    assert state.metadata["entities"] == ["X", "Y"]


def test_state_step_count() -> None:
    state = DefaultState(max_steps=3)
    llm = MockLLMBackend([call("note", text="x"), call("done", answer="ok")])
    list(composable_loop(llm=llm, tools=tools_from([note], include_done=True), state=state))
    with one_warning("state.step_count", "len(state.steps)"):
        assert state.step_count == len(state.steps) == 2


# --- context budget and ThresholdCompactHook(budget, fire_tier=) ---------------------------------------------


def test_context_budget_tiers_and_checks() -> None:
    with one_warning("ContextBudget(...)", "ThresholdCompactHook(max_tokens="):
        budget = old("ContextBudget")(context_window=1000, warning_at=500, error_at=700, compact_buffer=100)
    assert budget.blocking_at == 900
    assert [budget.classify(n) for n in (499, 500, 700, 899, 900)] == [
        "ok",
        "warning",
        "error",
        "error",
        "blocking",
    ]
    with pytest.raises(ValueError, match="warning_at < error_at"):
        old("ContextBudget")(context_window=1000, warning_at=800, error_at=700, compact_buffer=0)
    with pytest.raises(ValueError, match="compact_buffer"):
        old("ContextBudget")(context_window=1000, compact_buffer=1000)


def test_threshold_hook_from_a_budget_fires_at_its_tier() -> None:
    budget = old("ContextBudget")(context_window=10_000, warning_at=300, error_at=5_000, compact_buffer=100)
    with one_warning("ThresholdCompactHook(budget, fire_tier=...)", "max_tokens=300"):
        hook = ThresholdCompactHook(budget, fire_tier="warning")  # type: ignore[arg-type,call-arg]
    assert isinstance(hook, ThresholdCompactHook) and hook.max_tokens == 299
    assert ThresholdCompactHook(budget).max_tokens == 4_999  # type: ignore[arg-type]  # "error" by default
    assert (
        ThresholdCompactHook(
            {"context_window": 900, "warning_at": 10, "error_at": 20, "compact_buffer": 0}
        ).budget.error_at
        == 20
    )  # type: ignore[arg-type,attr-defined]
    with pytest.raises(ValueError, match="fire_tier"):
        ThresholdCompactHook(budget, fire_tier="blocking")  # type: ignore[arg-type,call-arg]

    def page(n: int) -> str:
        """A long page."""
        return f"page {n} " + "x" * 800

    script = [call("page", n=i) for i in range(4)]
    llm = MockLLMBackend([*script, call("done", answer="ok")])
    steps = list(
        composable_loop(
            llm=llm,
            tools=tools_from([page], include_done=True),
            config=LoopConfig(max_steps=6),
            hooks=[hook],
        )
    )
    assert len(steps) == 5
    assert hook.fired_at and all(2 <= n <= 5 for n in hook.fired_at)  # type: ignore[attr-defined]
    hook.fired_at.append(99)  # type: ignore[attr-defined]  # a copy, as in 0.4.1
    assert 99 not in hook.fired_at  # type: ignore[attr-defined]


def test_threshold_hook_from_a_budget_compacts_with_the_configs_service() -> None:
    service = old("DefaultCompactService")(keep_recent=2, keep_recent_tool_results=1, use_llm_summary=False)
    config = LoopConfig(max_steps=6, context_window=4_000, compact_service=service)  # type: ignore[call-arg]
    budget = old("ContextBudget")(context_window=4_000, warning_at=600, error_at=2_000, compact_buffer=500)
    hook = ThresholdCompactHook(budget, fire_tier="warning")  # type: ignore[arg-type,call-arg]
    assert isinstance(hook.chain, CompactChain)
    llm = MockLLMBackend([call("note", text="y" * 900) for _ in range(4)] + [call("done", answer="ok")])
    list(composable_loop(llm=llm, tools=tools_from([note], include_done=True), config=config, hooks=[hook]))
    kinds = [type(s) for s in hook.chain.strategies]  # type: ignore[attr-defined]
    assert len(kinds) == 3 and issubclass(kinds[0], Prune) and all(issubclass(k, Truncate) for k in kinds[1:])
    assert hook.fired_at  # type: ignore[attr-defined]


def test_a_05_threshold_hook_is_unchanged() -> None:
    hook = ThresholdCompactHook(5_000, strategy=[Prune(), Truncate()])
    assert type(hook) is ThresholdCompactHook and hook.max_tokens == 5_000
    assert type(ThresholdCompactHook()) is ThresholdCompactHook
    assert type(ThresholdCompactHook(max_tokens=10, target=0.5)) is ThresholdCompactHook


# --- tools with ctx: ToolContext, approval_handler, ApprovalHook() ------------------------------------------


def _delete_tool() -> Any:
    from looplet.types import ToolContext

    rows = ["a", "b", "c"]

    def delete_rows(*, name: str, ctx: ToolContext | None = None) -> dict[str, Any]:
        """Delete one row, after approval."""
        reply = ctx.approve(f"delete {name}?", ["yes", "no"]) if ctx is not None else None
        if reply is None:
            return {"needs_approval": True, "approval_description": f"delete {name}"}
        if reply != "yes":
            return {"deleted": 0}
        rows.remove(name)
        return {"deleted": 1, "left": len(rows)}

    delete_rows.__annotations__["ctx"] = ToolContext | None  # (this file's annotations are strings)
    return delete_rows


def test_tool_with_a_ctx_parameter_leaves_it_out_of_the_schema() -> None:
    fn = _delete_tool()
    with one_warning("ctx: ToolContext", "current_run()"):
        spec = tool(fn)
    assert spec.parameters["properties"].keys() == {"name"}
    assert spec.parameters["required"] == ["name"]
    assert spec.name == "delete_rows" and spec.description == "Delete one row, after approval."


def test_ctx_approve_asks_the_configs_approval_handler() -> None:
    asked: list[tuple[str, Any]] = []

    def handler(prompt: str, options: list[str] | None) -> str:
        asked.append((prompt, options))
        return "yes"

    with one_warning("LoopConfig(approval_handler=...)", "ApprovalHook(tools=[...], handler=...)"):
        config = LoopConfig(max_steps=4, approval_handler=handler)  # type: ignore[call-arg]
    llm = MockLLMBackend([call("delete_rows", name="b"), call("done", answer="ok")])
    tools = tools_from([tool(_delete_tool())], include_done=True)
    steps = list(composable_loop(llm=llm, tools=tools, config=config, hooks=[ApprovalHook()]))
    assert asked == [("delete b?", ["yes", "no"])]
    assert steps[0].tool_result.data == {"deleted": 1, "left": 2}
    assert [s.tool_call.tool for s in steps] == ["delete_rows", "done"]


def test_tool_spec_whose_execute_takes_ctx_gets_it() -> None:
    from looplet import ToolSpec
    from looplet.types import ToolContext

    def confirm(ctx: ToolContext, **kw: Any) -> dict[str, Any]:
        return {"reply": ctx.approve("confirm?", ["y", "n"]), "kw": kw}

    confirm.__annotations__["ctx"] = ToolContext
    with one_warning("ctx: ToolContext", "current_run()"):
        spec = ToolSpec("confirm", "c", {}, confirm)
    assert spec.execute(extra=1) == {"reply": None, "kw": {"extra": 1}}  # outside a run: no handler
    config = LoopConfig(max_steps=3, approval_handler=lambda prompt, options: options[0])  # type: ignore[call-arg]
    llm = MockLLMBackend([call("confirm"), call("done", answer="ok")])
    steps = list(composable_loop(llm=llm, tools=tools_from([spec], include_done=True), config=config))
    assert steps[0].tool_result.data == {"reply": "y", "kw": {}}
    plain = ToolSpec("plain", "p", {}, lambda ctx=None: ctx)  # a ctx parameter that is no ToolContext
    assert plain.execute() is None


def test_async_tool_with_ctx_gets_it_too() -> None:
    import asyncio

    from looplet import async_composable_loop
    from looplet.types import ToolContext

    async def whoami(*, ctx: ToolContext) -> str:
        """The run's id."""
        return str(ctx.session_id)

    whoami.__annotations__["ctx"] = ToolContext
    spec = tool(whoami)
    assert spec.parameters["properties"] == {}

    async def run() -> list[Any]:
        llm = MockLLMBackend([call("whoami"), call("done", answer="ok")])
        return [s async for s in async_composable_loop(llm=llm, tools=tools_from([spec], include_done=True))]

    steps = asyncio.run(run())
    assert len(str(steps[0].tool_result.data)) == 32  # the run's id


def test_bare_approval_hook_next_to_an_approval_handler_stops_on_needs_approval() -> None:
    hook = ApprovalHook()
    config = LoopConfig(max_steps=4, approval_handler=lambda prompt, options: None)  # type: ignore[call-arg]
    llm = MockLLMBackend([call("delete_rows", name="a"), call("done", answer="ok")])
    tools = tools_from([tool(_delete_tool())], include_done=True)
    with one_warning("ApprovalHook() with LoopConfig(approval_handler=...)", "ApprovalHook(tools=[...]"):
        gen = composable_loop(llm=llm, tools=tools, config=config, hooks=[hook])
        steps = list(gen)
    assert [s.tool_call.tool for s in steps] == ["delete_rows"]
    assert steps[0].tool_result.data["needs_approval"] is True
    pending = hook.pending  # type: ignore[attr-defined]
    assert (pending.step, pending.tool, pending.description) == (1, "delete_rows", "delete a")
    state = DefaultState(max_steps=4)
    llm = MockLLMBackend([call("delete_rows", name="a"), call("done", answer="ok")])
    list(composable_loop(llm=llm, tools=tools, config=config, hooks=[ApprovalHook()], state=state))
    assert state.result is not None and "waiting_for_approval" in state.result.stop_reason


def test_a_bare_approval_hook_in_a_05_run_still_asks_before_every_call() -> None:
    state = DefaultState(max_steps=4)
    llm = MockLLMBackend([call("note", text="x"), call("done", answer="ok")])
    steps = list(
        composable_loop(
            llm=llm, tools=tools_from([note], include_done=True), hooks=[ApprovalHook()], state=state
        )
    )
    assert [s.tool_result.error_kind for s in steps] == ["not_run"]  # the call waits for a decision
    assert state.result is not None and state.result.stop_reason == "awaiting_approval"


def test_a_05_run_with_these_hooks_loads_no_compat_module() -> None:
    code = (
        "import sys\n"
        "from looplet import ApprovalHook, LoopConfig, MockLLMBackend, ThresholdCompactHook, Prune, Truncate\n"
        "from looplet import composable_loop, tool, tools_from\n"
        "@tool\n"
        "def note(text: str) -> str:\n"
        "    return text\n"
        "hooks = [ThresholdCompactHook(900, strategy=[Prune(), Truncate()]), ApprovalHook(['x'], handler=lambda c: True)]\n"
        'llm = MockLLMBackend([\'{"tool": "note", "args": {"text": "a"}}\', \'{"tool": "done", "args": {"answer": "x"}}\'])\n'
        "list(composable_loop(llm=llm, tools=tools_from([note], include_done=True), hooks=hooks,\n"
        "                     config=LoopConfig(context_window=2000)))\n"
        "print(sorted(m for m in sys.modules if m.startswith('looplet._compat')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
