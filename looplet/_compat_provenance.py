"""looplet 0.4.1's recorders, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

0.5 records a run with ``ProvenanceSink(dir)``: ``sink.wrap_llm(llm)`` around the backend,
``sink.trajectory_hook()`` in ``hooks=[...]``, or as an OpenTelemetry span exporter; every route writes
the same folder (docs/provenance.md). This module keeps 0.4.1's own recorders working for code that
still builds them: :class:`RecordingLLMBackend` / :class:`AsyncRecordingLLMBackend` (a backend with
``generate(prompt) -> str`` whose calls are kept as :class:`LLMCall` records and saved as
``call_NN_prompt.txt`` / ``call_NN_response.txt`` / ``manifest.jsonl``, one line per call) and
:class:`TrajectoryRecorder` (a 0.4.1 hook keeping :class:`StepRecord` s, saved as ``trajectory.json``
and ``steps/step_NN.json``). Steps are recorded as 0.5 writes them (``Step.pretty()``,
``ToolCall.to_dict()``, ``ToolResult.to_dict()``) and the stop reason is the 0.5 run's
(``state.result.stop_reason``). Nothing here is loaded unless an old name is used.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looplet.compat import warn_renamed

__all__ = [
    "AsyncRecordingLLMBackend",
    "LLMCall",
    "RecordingLLMBackend",
    "StepRecord",
    "TrajectoryRecorder",
    "save_eval_run",
]

Redact = Callable[[str], str]

_WRAP = "ProvenanceSink(dir).wrap_llm(llm) (folders as docs/provenance.md describes)"
_HOOK = "ProvenanceSink(dir).trajectory_hook() in hooks=[...] (folders as docs/provenance.md describes)"
_CALL_FILE = re.compile(r"call_\d+_(prompt|response)\.txt")
_STEP_FILE = re.compile(r"step_\d+\.json")


# ---------------------------------------------------------------- records


@dataclass
class LLMCall:
    """0.4.1's record of one call of a recording backend (0.5's is :class:`looplet.types.LLMCall`).

    ``response`` is what the backend returned: the text, or the content blocks of ``generate_with_tools``.
    ``error`` is ``"<ExceptionType>: <message>"`` when the backend raised."""

    index: int
    timestamp: float
    duration_ms: float
    method: str
    prompt: str
    system_prompt: str
    response: Any
    temperature: float = 0.2
    max_tokens: int = 2000
    tools: list[dict[str, Any]] | None = None
    step_num: int | None = None
    error: str | None = None
    scope: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The summary written as one line of ``manifest.jsonl`` (sizes, not the texts)."""
        text = self.response if isinstance(self.response, str) else None
        blocks = self.response if isinstance(self.response, list) else None
        return {
            "index": self.index,
            "timestamp": self.timestamp,
            "duration_ms": round(self.duration_ms, 2),
            "method": self.method,
            "prompt_chars": len(self.prompt),
            "response_chars": None if text is None else len(text),
            "response_blocks": None if blocks is None else len(blocks),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "tool_count": len(self.tools or ()),
            "step_num": self.step_num,
            "error": self.error,
            "scope": self.scope,
            "metadata": dict(self.metadata),
        }


@dataclass
class StepRecord:
    """0.4.1's record of one step (0.5: :class:`looplet.Step`, and ``load_trajectory(dir).steps``)."""

    step_num: int
    timestamp: float
    duration_ms: float
    pretty: str
    tool_call: dict[str, Any]
    tool_result: dict[str, Any]
    context_before: str = ""
    llm_call_indices: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_num": self.step_num,
            "timestamp": self.timestamp,
            "duration_ms": round(self.duration_ms, 2),
            "pretty": self.pretty,
            "tool_call": self.tool_call,
            "tool_result": self.tool_result,
            "context_before": self.context_before,
            "llm_call_indices": list(self.llm_call_indices),
            "metadata": dict(self.metadata),
        }


@dataclass
class RecordedRun:
    """What a :class:`TrajectoryRecorder` holds (``recorder.trajectory``): 0.4.1's ``Trajectory``.
    0.5's :class:`looplet.provenance.Trajectory` is a saved run read back from its folder."""

    run_id: str
    started_at: float
    ended_at: float | None = None
    task: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    llm_calls: list[LLMCall] = field(default_factory=list)
    termination_reason: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)
    session_log_text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``trajectory.json``."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "task": self.task,
            "termination_reason": self.termination_reason,
            "session_log_text": self.session_log_text,
            "metadata": self.metadata,
            "step_count": len(self.steps),
            "llm_call_count": len(self.llm_calls),
            "steps": [s.to_dict() for s in self.steps],
            "llm_calls": [c.to_dict() for c in self.llm_calls],
        }


# ---------------------------------------------------------------- redaction and files


def scrubbed(value: Any, redact: Redact | None) -> Any:
    """A JSON-ready copy of ``value`` with ``redact`` applied to every string, dict keys included;
    tuples become lists, other objects their ``str`` (redacted). The value itself is left as it is."""
    if isinstance(value, str):
        return redact(value) if redact is not None else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {scrubbed(str(k), redact): scrubbed(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v, redact) for v in value]
    return scrubbed(str(value), redact)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut said in the text (``limit <= 0``: no cut)."""
    if limit <= 0 or len(text) <= limit:
        return text
    note = f"\n[... truncated: {len(text)} chars ...]"
    return text[: limit - len(note)] + note if limit > len(note) else text[:limit]


def _write(path: Path, text: str) -> None:
    """One file, whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(directory: str | os.PathLike[str]) -> Path:
    """The folder made, with a ``.gitignore`` of ``*`` when it has none (recorded prompts are private
    data: they stay out of the user's repository), and 0.4.1's call files of an earlier save removed."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with (root / ".gitignore").open("x", encoding="utf-8") as ignore:
            ignore.write("*\n")
    except FileExistsError:
        pass
    for path in root.iterdir():
        if _CALL_FILE.fullmatch(path.name) and path.is_file():
            path.unlink()
    (root / "manifest.jsonl").unlink(missing_ok=True)
    return root


def _prompt_file(c: LLMCall) -> str:
    lines = [f"# LLM call {c.index:02d}: {c.method}" + ("" if c.step_num is None else f", step {c.step_num}")]
    lines.append(f"# temperature={c.temperature} max_tokens={c.max_tokens} tools={len(c.tools or ())}")
    if c.system_prompt:
        lines += ["", "## SYSTEM PROMPT", c.system_prompt]
    lines += ["", "## USER PROMPT", c.prompt]
    if c.tools:  # last: a reader takes everything after the header as the JSON list
        lines += ["", "## TOOLS", json.dumps(c.tools, indent=2, ensure_ascii=False)]
    return "\n".join(lines)


def _response_file(c: LLMCall) -> str:
    lines = [f"# LLM call {c.index:02d}: {c.duration_ms:.1f} ms, " + ("failed" if c.error else "ok")]
    if c.error:
        lines += ["", "## ERROR", c.error]
    if isinstance(c.response, list):
        lines += ["", "## RESPONSE (content blocks)", json.dumps(c.response, indent=2, default=str)]
    elif c.response is None or isinstance(c.response, str):
        lines += ["", "## RESPONSE", c.response or "(empty)"]
    else:
        lines += ["", "## RESPONSE (repr)", repr(c.response)]
    return "\n".join(lines)


# ---------------------------------------------------------------- the recording backends


class _Pending:
    """A call in progress: what was sent (redacted when ``redact_upstream``), and when it started."""

    __slots__ = ("method", "prompt", "system", "temperature", "max_tokens", "tools", "started", "out")

    def __init__(
        self, method: str, prompt: str, system: str, temperature: Any, max_tokens: Any, tools: Any
    ) -> None:
        self.method, self.prompt, self.system, self.tools = method, prompt, system, tools
        self.temperature, self.max_tokens, self.started = temperature, max_tokens, time.time()
        self.out: Any = None  # the answer, set by the caller of _Recording._call


class _Recording:
    """What the sync and async recorders share: the records, the request and the save."""

    def __init__(
        self,
        backend: Any,
        *,
        max_chars_per_call: int = 200_000,
        redact: Redact | None = None,
        redact_upstream: bool = True,
    ) -> None:
        warn_renamed(f"looplet.provenance.{type(self).__name__}(llm)", _WRAP)
        self._backend = backend
        self._max_chars = max_chars_per_call
        self._redact = redact
        self._redact_upstream = redact_upstream
        self.calls: list[LLMCall] = []
        self.current_step_num: int | None = None  # set by a TrajectoryRecorder before each prompt
        try:
            params = inspect.signature(backend.generate).parameters
            self._any_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
            self._keywords = set(params)
        except (TypeError, ValueError, AttributeError):
            self._any_keyword, self._keywords = True, set()
        if hasattr(backend, "generate_with_tools"):  # only then: hasattr() tells native-tool backends
            self.generate_with_tools: Callable[..., Any] = self._generate_with_tools

    def __getattr__(self, name: str) -> Any:  # the wrapped backend's other attributes (model, ...)
        if name.startswith("__") or name in ("_backend", "generate_with_tools"):
            raise AttributeError(name)
        return getattr(self._backend, name)

    def _generate_with_tools(self, prompt: str, *, tools: list[dict[str, Any]], **options: Any) -> Any:
        raise NotImplementedError  # pragma: no cover - each recorder has its own

    @contextmanager
    def _call(
        self, method: str, prompt: str, options: dict[str, Any], tools: Any = None
    ) -> Iterator[_Pending]:
        """Record one call, sync or async: the block sends ``call.prompt`` (redacted when
        ``redact_upstream``; ``options["system_prompt"]`` too) and sets ``call.out`` to the answer; a call
        that raises is recorded with an empty answer and its error."""
        system = options.get("system_prompt", "")
        if self._redact is not None and self._redact_upstream:
            prompt, system = self._redact(prompt), self._redact(system)
            options["system_prompt"] = system
        call = _Pending(method, prompt, system, options.get("temperature"), options.get("max_tokens"), tools)
        try:
            yield call
        except Exception as exc:
            self._end(call, "" if method == "generate" else [], exc)
            raise
        self._end(call, call.out, None)

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The keywords the wrapped backend takes (a 0.4.1 backend may take none of them)."""
        if self._any_keyword:
            return options
        return {k: v for k, v in options.items() if k in self._keywords}

    def _text(self, text: str) -> str:
        return _clip(self._redact(text) if self._redact is not None else text, self._max_chars)

    def _end(self, p: _Pending, response: Any, error: BaseException | None) -> None:
        stored = self._text(response) if isinstance(response, str) else scrubbed(response, self._redact)
        self.calls.append(
            LLMCall(
                index=len(self.calls),
                timestamp=p.started,
                duration_ms=(time.time() - p.started) * 1000.0,
                method=p.method,
                prompt=self._text(p.prompt),
                system_prompt=self._text(p.system),
                response=stored,
                temperature=0.2 if p.temperature is None else p.temperature,
                max_tokens=2000 if p.max_tokens is None else p.max_tokens,
                tools=None if p.tools is None else scrubbed(p.tools, self._redact),
                step_num=self.current_step_num,
                error=None if error is None else self._text(f"{type(error).__name__}: {error}"),
            )
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the calls into ``directory`` as 0.4.1 did: ``call_NN_prompt.txt``, ``call_NN_response.txt``
        and ``manifest.jsonl`` (one summary line per call), replacing the call files of an earlier save."""
        root = _prepare(directory)
        for c in self.calls:
            _write(root / f"call_{c.index:02d}_prompt.txt", _prompt_file(c))
            _write(root / f"call_{c.index:02d}_response.txt", _response_file(c))
        lines = (json.dumps(scrubbed(c.to_dict(), self._redact)) + "\n" for c in self.calls)
        _write(root / "manifest.jsonl", "".join(lines))
        return root

    def reset(self) -> None:
        self.calls.clear()
        self.current_step_num = None


class RecordingLLMBackend(_Recording):
    """0.4.1's recording wrapper around a ``generate(prompt) -> str`` backend (deprecated: use
    ``ProvenanceSink(dir).wrap_llm(llm)``). ``generate_with_tools`` exists only when the backend has it."""

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        **options: Any,
    ) -> Any:
        options.update(max_tokens=max_tokens, system_prompt=system_prompt, temperature=temperature)
        with self._call("generate", prompt, options) as call:
            call.out = self._backend.generate(call.prompt, **self._options(options))
        return call.out

    def _generate_with_tools(self, prompt: str, *, tools: list[dict[str, Any]], **options: Any) -> Any:
        with self._call("generate_with_tools", prompt, options, tools) as call:
            call.out = self._backend.generate_with_tools(call.prompt, tools=tools, **options)
        return call.out


class AsyncRecordingLLMBackend(_Recording):
    """:class:`RecordingLLMBackend` for a backend whose ``generate`` is ``async def`` (deprecated: use
    ``ProvenanceSink(dir).wrap_llm(llm)``, which records ``agenerate`` too)."""

    async def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 2000,
        system_prompt: str = "",
        temperature: float = 0.2,
        **options: Any,
    ) -> Any:
        options.update(max_tokens=max_tokens, system_prompt=system_prompt, temperature=temperature)
        with self._call("generate", prompt, options) as call:
            call.out = await self._backend.generate(call.prompt, **self._options(options))
        return call.out

    async def _generate_with_tools(self, prompt: str, *, tools: list[dict[str, Any]], **options: Any) -> Any:
        with self._call("generate_with_tools", prompt, options, tools) as call:
            call.out = await self._backend.generate_with_tools(call.prompt, tools=tools, **options)
        return call.out


# ---------------------------------------------------------------- the trajectory hook


def _as_dict(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if obj is None:
        return {}
    return {"tool": getattr(obj, "tool", "?"), "error": getattr(obj, "error", None)}


def _stop_reason(state: Any) -> str | None:
    """How the run ended, as the loop said: the 0.5 run's ``stop_reason`` (or a 0.4.1 state's)."""
    result = getattr(state, "result", None)
    reason = getattr(result, "stop_reason", None) or getattr(state, "_stop_reason", None)
    return None if not reason else str(reason)


class TrajectoryRecorder:
    """0.4.1's trajectory hook (deprecated: use ``ProvenanceSink(dir).trajectory_hook()``).

    ``recording_llm``: a :class:`RecordingLLMBackend` whose calls are linked to the steps (and saved
    with them). ``output_dir``: save there when the run ends. ``redact``: applied to what is saved only.
    """

    def __init__(
        self,
        *,
        recording_llm: _Recording | None = None,
        capture_context: bool = True,
        tracer: Any = None,
        output_dir: str | os.PathLike[str] | None = None,
        harness_snapshot: dict[str, Any] | None = None,
        redact: Redact | None = None,
    ) -> None:
        warn_renamed("looplet.provenance.TrajectoryRecorder()", _HOOK)
        self.trajectory = RecordedRun(run_id=uuid.uuid4().hex[:12], started_at=time.time())
        self._llm = recording_llm
        self._capture_context = capture_context
        self._output_dir = None if output_dir is None else Path(output_dir)
        self._snapshot = None if harness_snapshot is None else dict(harness_snapshot)
        self._redact = redact
        self._context = ""
        self._first_call = 0
        self._step_started = time.time()

    @property
    def redact(self) -> Redact | None:
        """What :meth:`save` applies to the saved copy."""
        return self._redact

    def pre_loop(self, state: Any, session_log: Any, context: Any, **_: Any) -> None:
        from looplet.hooks import current_run  # a 0.5 run keeps the task on the run, not the state

        run = current_run()
        task = getattr(state, "task", None) or getattr(run, "task", None)
        if isinstance(task, dict):
            self.trajectory.task = dict(task)

    def pre_prompt(self, state: Any, session_log: Any, context: Any, step_num: int) -> None:
        if self._llm is not None:
            self._llm.current_step_num = step_num
            self._first_call = len(self._llm.calls)
        if self._capture_context and context is not None:
            self._context = str(context)
        self._step_started = time.time()

    def post_dispatch(
        self, state: Any, session_log: Any, tool_call: Any, tool_result: Any, step_num: int
    ) -> None:
        steps = getattr(state, "steps", None)
        pretty = getattr(steps[-1], "pretty", None) if steps else None
        calls = [] if self._llm is None else list(range(self._first_call, len(self._llm.calls)))
        self.trajectory.steps.append(
            StepRecord(
                step_num=step_num,
                timestamp=self._step_started,
                duration_ms=(time.time() - self._step_started) * 1000.0,
                pretty=pretty() if callable(pretty) else "",
                tool_call=_as_dict(tool_call),
                tool_result=_as_dict(tool_result),
                context_before=self._context,
                llm_call_indices=calls,
            )
        )
        self._context = ""

    def on_loop_end(self, state: Any, session_log: Any, context: Any, llm: Any = None) -> None:
        t = self.trajectory
        t.ended_at = time.time()
        render = getattr(session_log, "render", None)
        if callable(render):
            t.session_log_text = str(render() or "")
        if self._snapshot is not None:
            t.metadata["harness_snapshot"] = dict(self._snapshot)
        if self._llm is not None:
            t.llm_calls = list(self._llm.calls)
        self._sweep(getattr(state, "steps", None) or [])
        t.termination_reason = _stop_reason(state) or self._inferred_reason()
        if state is not None:
            self._state_metadata(state)
        if self._output_dir is not None:
            self.save(self._output_dir)

    def _sweep(self, steps: list[Any]) -> None:
        """Steps the loop made without a ``post_dispatch`` (0.4.1's ``done``) are added at the end."""
        seen = {s.step_num for s in self.trajectory.steps}
        for step in steps:
            number = getattr(step, "number", None)
            if number is None or number in seen:
                continue
            self.trajectory.steps.append(
                StepRecord(
                    step_num=number,
                    timestamp=0.0,
                    duration_ms=0.0,
                    pretty=step.pretty() if hasattr(step, "pretty") else "",
                    tool_call=_as_dict(getattr(step, "tool_call", None)),
                    tool_result=_as_dict(getattr(step, "tool_result", None)),
                    metadata=dict(getattr(step, "metadata", None) or {}),
                )
            )
        self.trajectory.steps.sort(key=lambda s: s.step_num)

    def _inferred_reason(self) -> str:
        """0.4.1's guess, for a recorder driven by hand (no loop said how the run ended)."""
        if not self.trajectory.steps:
            return "no_steps"
        last = self.trajectory.steps[-1]
        if last.tool_call.get("tool") == "done":
            return "done"
        return "error" if last.tool_result.get("error") else "max_steps_or_stop"

    def _state_metadata(self, state: Any) -> None:
        meta = self.trajectory.metadata
        for key in ("run_status", "run_phase"):
            value = getattr(state, key, None)
            if value is not None:
                meta[key] = getattr(value, "value", str(value))
        meta["termination_reason"] = self.trajectory.termination_reason
        extra = getattr(state, "metadata", None)
        for key in ("run_envelope", "policy_decisions"):
            value = getattr(state, key, None)
            if value is None and isinstance(extra, dict):
                value = extra.get(key)
            if value is not None:
                meta[key] = value.to_dict() if hasattr(value, "to_dict") else value

    def summary(self) -> str:
        """``"5 steps, 2 failed, done, 12.3s"``."""
        t = self.trajectory
        failed = sum(1 for s in t.steps if s.tool_result.get("error"))
        parts = [f"{len(t.steps)} steps"] + ([f"{failed} failed"] if failed else [])
        parts.append(t.termination_reason or "running")
        if t.ended_at and t.ended_at > t.started_at:
            parts.append(f"{t.ended_at - t.started_at:.1f}s")
        return ", ".join(parts)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``trajectory.json`` and ``steps/step_NN.json`` (and the linked backend's calls) into
        ``directory`` as 0.4.1 did, replacing the step and call files of an earlier save."""
        root = _prepare(directory)
        steps = root / "steps"
        steps.mkdir(exist_ok=True)
        for path in steps.iterdir():
            if _STEP_FILE.fullmatch(path.name) and path.is_file():
                path.unlink()
        doc = scrubbed(self.trajectory.to_dict(), self._redact)
        for record in doc["steps"]:
            _write(steps / f"step_{record['step_num']:02d}.json", json.dumps(record, indent=2))
        if self._llm is not None:
            self._llm.save(root)
        _write(root / "trajectory.json", json.dumps(doc, indent=2))  # last: a reader sees a whole run
        return root


# ---------------------------------------------------------------- save_eval_run


def _context_steps(ctx: Any) -> list[dict[str, Any]]:
    out = []
    for i, step in enumerate(getattr(ctx, "steps", None) or (), 1):
        call, result = getattr(step, "tool_call", None), getattr(step, "tool_result", None)
        out.append(
            {
                "step_num": getattr(step, "number", i),
                "tool_call": {"tool": getattr(call, "tool", None), "args": getattr(call, "args", None) or {}},
                "tool_result": {
                    "data": getattr(result, "data", None),
                    "error": getattr(result, "error", None),
                },
            }
        )
    return out


def _context_run(ctx: Any, expected: dict[str, Any] | None) -> dict[str, Any]:
    """An eval context as 0.4.1's ``trajectory.json`` (what ``EvalContext.from_trajectory_dir`` reads)."""
    task = getattr(ctx, "task", None)
    task = dict(task) if isinstance(task, dict) else {}
    if expected is not None:
        task.pop("expected", None)  # the grader's data stays in expected.json, out of the agent's task
    metadata = dict(getattr(ctx, "metadata", None) or {})
    steps = _context_steps(ctx)
    return {
        "run_id": metadata.get("run_id") or getattr(ctx, "run_id", None) or None,
        "task": task,
        "termination_reason": getattr(ctx, "stop_reason", None),
        "final_output": getattr(ctx, "final_output", None),
        "session_log_text": getattr(ctx, "session_log_text", ""),
        "metadata": metadata,
        "step_count": len(steps),
        "steps": steps,
    }


def _sidecar(root: Path, name: str, value: Any, redact: Redact | None) -> None:
    if value is None:
        (root / name).unlink(missing_ok=True)
    else:
        _write(root / name, json.dumps(scrubbed(value, redact), indent=2))


def save_eval_run(
    directory: str | os.PathLike[str],
    *,
    recorder: Any = None,
    context: Any = None,
    eval_hook: Any = None,
    case: Any = None,
    results: list[Any] | None = None,
    redact: Redact | None = None,
) -> Path:
    """0.4.1's eval-run folder: the run (from ``recorder``, else ``context``, else ``eval_hook.context``)
    as ``trajectory.json`` and ``steps/``, plus ``artifacts.json``, ``evals.json`` and, when known,
    ``expected.json`` and ``case.json``. 0.5: ``ProvenanceSink(dir)`` writes the run and
    ``python -m looplet eval DIR`` grades it."""
    warn_renamed(
        "looplet.save_eval_run(dir, ...)",
        "ProvenanceSink(dir) to write the run and `python -m looplet eval DIR` to grade it",
    )
    ctx = context if context is not None else getattr(eval_hook, "context", None)
    if recorder is None and ctx is None:
        raise ValueError("save_eval_run needs the run: pass recorder=, context= or an eval_hook that has run")
    given = case.expected if case is not None else getattr(eval_hook, "expected", None)
    expected = None if given is None else dict(given)
    redact = redact or getattr(recorder, "redact", None)
    with warnings.catch_warnings():  # 0.4.1's context attributes (metadata, artifacts): this call warned
        warnings.simplefilter("ignore", DeprecationWarning)
        return _save_eval_run(Path(directory), recorder, ctx, eval_hook, case, results, expected, redact)


def _save_eval_run(
    directory: Path,
    recorder: Any,
    ctx: Any,
    eval_hook: Any,
    case: Any,
    results: list[Any] | None,
    expected: dict[str, Any] | None,
    redact: Redact | None,
) -> Path:
    if recorder is not None:
        root = Path(recorder.save(directory))
    else:
        root = _prepare(directory)
        run = scrubbed(_context_run(ctx, expected), redact)
        (root / "steps").mkdir(exist_ok=True)
        for path in (root / "steps").iterdir():
            if _STEP_FILE.fullmatch(path.name) and path.is_file():
                path.unlink()
        for record in run["steps"]:
            _write(root / "steps" / f"step_{record['step_num']:02d}.json", json.dumps(record, indent=2))
        _write(root / "trajectory.json", json.dumps(run, indent=2))
    source = eval_hook if eval_hook is not None else ctx
    _sidecar(root, "artifacts.json", dict(getattr(source, "artifacts", None) or {}), redact)
    scores = results if results is not None else list(getattr(eval_hook, "results", None) or [])
    _sidecar(root, "evals.json", [r.to_dict() if hasattr(r, "to_dict") else r for r in scores], redact)
    _sidecar(root, "expected.json", expected, redact)
    _sidecar(root, "case.json", case.to_dict() if hasattr(case, "to_dict") else None, redact)
    return root
