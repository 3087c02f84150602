"""LoopConfig: the knobs of one run, with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from looplet.compat import LOOP_CONFIG_KEYWORDS, old_keywords

#: ``LoopConfig.tool_timeout_s`` by default: a tool that blocks (a read on a FIFO, a hung socket) ends
#: as a timeout error the model sees instead of hanging the agent.
DEFAULT_TOOL_TIMEOUT_S = 120.0

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent that completes the user's task by calling tools. "
    "Call a tool at every turn; when the task is complete, call `{done}` with your final answer."
)


#: 0.4.1 fields that still work (deprecated): given one, LoopConfig(...) makes looplet._compat_loop's subclass.
_CARRIED = frozenset(
    {
        "checkpoint_dir",
        "run_envelope",
        "extract_entities",
        "compact_service",
        "approval_handler",
        "domain",
        "memory_sources",
    }
)


@old_keywords(LOOP_CONFIG_KEYWORDS)  # looplet 0.4.1's fields: renamed, ignored, or refused with advice
@dataclass(slots=True)
class LoopConfig:
    """Settings of a run.

    max_steps: tool calls allowed in the run (>= 1). When a ``DefaultState`` with a smaller
        ``max_steps`` is given, the smaller limit wins.
    system_prompt: the system message; None uses a short default that names the done tool.
    temperature, max_tokens: passed to the backend when set.
    done_tool: the tool whose accepted call ends the run with stop reason ``done``.
    parallel_tools: run the ``concurrent_safe`` calls of one response together.
    tool_timeout_s: timeout for tools that set none of their own (default 120 s; None: no timeout). A
        tool that times out becomes an error result the model sees (``error_kind="timeout"``). In the
        sync loop on the main thread a sync tool runs inline and a ``SIGALRM`` timer interrupts it at its
        timeout (unless the program has its own SIGALRM handler); otherwise it runs on a worker thread,
        which cannot be killed: it is abandoned. A tool that holds the GIL in C is stopped only when
        that call returns (see ``docs/reliability.md``).
    run_timeout_s: bound on the whole run (default None: unbounded). Checked between phases, and it caps
        tool timeouts and retry sleeps (and, in the async loop, the LLM call itself); a run past it ends
        with stop reason ``timeout``. A sync LLM call is bounded by the backend's own ``timeout``.
    llm_retries: extra attempts after a retryable LLM error (429, 5xx, timeout), with backoff and jitter.
    llm_backoff_s: first backoff delay; it doubles each attempt (±50% jitter, at most 20 s); a
        ``Retry-After`` from the server is honoured up to 60 s.
    agent_name: ``gen_ai.agent.name`` in telemetry and the ``agent`` metric label.
    context_window: the model's context size in tokens, for compaction and pressure hooks.
    strict_hooks: let an exception in a hook end the run (default: report it and go on).
    max_tool_output_chars: longer tool results are cut (with a note) before the model sees them.
    max_malformed: consecutive answers without a usable tool call that are fed back before ``llm_error``.
    stream: ask the backend to stream (``on_llm_chunk`` hooks see the pieces).
    """

    max_steps: int = 15
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    done_tool: str = "done"
    parallel_tools: bool = False
    tool_timeout_s: float | None = DEFAULT_TOOL_TIMEOUT_S
    llm_retries: int = 2
    llm_backoff_s: float = 0.5
    agent_name: str = "looplet"
    context_window: int | None = None
    strict_hooks: bool = False
    max_tool_output_chars: int = 50_000
    max_malformed: int = 1
    stream: bool = False
    run_timeout_s: float | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> LoopConfig:
        if kwargs and cls is LoopConfig and not _CARRIED.isdisjoint(kwargs):
            # looplet 0.4.1's checkpoint_dir= / run_envelope= / extract_entities=: a subclass carries them
            from looplet._compat_loop import old_loop_config

            cls = old_loop_config()
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(
                f"LoopConfig(max_steps={self.max_steps!r}): max_steps must be a positive integer (an int >= 1)"
            )
        if self.llm_retries < 0:
            raise ValueError(f"LoopConfig(llm_retries={self.llm_retries!r}): must be >= 0")
        if self.tool_timeout_s is not None and self.tool_timeout_s <= 0:
            raise ValueError(f"LoopConfig(tool_timeout_s={self.tool_timeout_s!r}): must be > 0 or None")
        if self.run_timeout_s is not None and self.run_timeout_s <= 0:
            raise ValueError(f"LoopConfig(run_timeout_s={self.run_timeout_s!r}): must be > 0 or None")

    def llm_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.temperature is not None:
            opts["temperature"] = self.temperature
        if self.max_tokens is not None:
            opts["max_tokens"] = self.max_tokens
        if self.stream:
            opts["stream"] = True
        return opts
