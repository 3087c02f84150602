"""What the loop expects of the objects you hand it, as :class:`typing.Protocol` classes.

These are for type checkers and readers; the loop itself never checks ``isinstance`` against them. A
backend needs ``generate`` (sync loop) or ``agenerate`` (async loop). A hook is any object: the loop calls
only the methods it has, so each hook method has its own protocol and a hook "implements" the ones whose
methods it defines. Hook methods may also be ``async def`` in the async loop.

>>> from looplet.protocols import LLMBackend
>>> from looplet import MockLLMBackend
>>> backend: LLMBackend = MockLLMBackend(['{"tool": "done", "args": {"answer": "ok"}}'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from looplet.types import LLMCall, LLMResponse, RunResult, Step, ToolCall, ToolResult

__all__ = [
    "AsyncLLMBackend",
    "CheckDoneHook",
    "LLMBackend",
    "OnLoopEndHook",
    "OnLoopStartHook",
    "OnStepHook",
    "PostDispatchHook",
    "PreDispatchHook",
    "PrePromptHook",
    "ShouldStopHook",
    "WrapLLMCallHook",
    "WrapToolHook",
]


@runtime_checkable
class LLMBackend(Protocol):
    """A model the sync loop can call: one request in, one :class:`~looplet.LLMResponse` out."""

    def generate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse: ...


@runtime_checkable
class AsyncLLMBackend(Protocol):
    """A model the async loop can await."""

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse: ...


class OnLoopStartHook(Protocol):
    def on_loop_start(self, state: Any, session_log: list[dict[str, Any]], context: Any) -> None: ...


class PrePromptHook(Protocol):
    """May return None, a string of extra context, ``InjectContext(...)`` or ``HookDecision(stop=...)``."""

    def pre_prompt(
        self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int
    ) -> object: ...


class PreDispatchHook(Protocol):
    """May return None, ``Deny(...)``, ``Allow()``, ``HookDecision(updated_args=...)`` or a ToolResult."""

    def pre_dispatch(
        self, state: Any, session_log: list[dict[str, Any]], tool_call: ToolCall, step_num: int
    ) -> object: ...


class PostDispatchHook(Protocol):
    """May return None, a note for the model, or ``HookDecision(updated_result=..., stop=...)``."""

    def post_dispatch(
        self,
        state: Any,
        session_log: list[dict[str, Any]],
        tool_call: ToolCall,
        tool_result: ToolResult,
        step_num: int,
    ) -> object: ...


class CheckDoneHook(Protocol):
    """None accepts ``done``; a string rejects it with that reason."""

    def check_done(
        self, state: Any, session_log: list[dict[str, Any]], context: Any, step_num: int
    ) -> str | None: ...


class ShouldStopHook(Protocol):
    """False/None goes on; True or ``HookDecision(stop="reason")`` stops the run."""

    def should_stop(self, state: Any, step_num: int, new_entities: Any) -> object: ...


class OnStepHook(Protocol):
    def on_step(self, state: Any, step: Step) -> None: ...


class OnLoopEndHook(Protocol):
    def on_loop_end(
        self, state: Any, session_log: list[dict[str, Any]], context: Any, result: RunResult
    ) -> None: ...


class WrapLLMCallHook(Protocol):
    """An around-hook: the model call runs inside it; it returns what ``call_next(call)`` returned (or not)."""

    def wrap_llm_call(self, call: LLMCall, call_next: Callable[[LLMCall], LLMResponse]) -> LLMResponse: ...


class WrapToolHook(Protocol):
    """An around-hook: the tool runs inside it; it returns what ``call_next(tool_call)`` returned (or not)."""

    def wrap_tool(self, tool_call: ToolCall, call_next: Callable[[ToolCall], ToolResult]) -> ToolResult: ...
