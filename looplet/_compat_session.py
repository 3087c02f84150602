"""looplet 0.4.1's ``SessionLog``, deprecated (removed in looplet 0.7; see :mod:`looplet.compat`).

In 0.4.1 the loop kept a log of one entry per step (the model's working theory, the tool, entities and
findings) and rendered it into the prompt. In 0.5 the loop keeps a chat transcript, and hooks receive
it as ``session_log`` (a list of messages). This record survives for code that builds, saves and
restores the old log itself (0.4.1 checkpoints hold one): it records entries and round-trips them
through ``to_list()``, and compacts in place (``compact``, what 0.4.1's compaction services do to it,
see :mod:`looplet._compat_compact`); nothing in the 0.5 loop reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from looplet.compat import warn_renamed

__all__ = ["LogEntry", "SessionLog", "SUMMARY_TOOL"]

#: The ``tool`` of the entry a compaction leaves in place of the entries it folded.
SUMMARY_TOOL = "__summary__"


@dataclass
class LogEntry:
    """One step of a 0.4.1 session log."""

    step: int
    theory: str
    tool: str
    reasoning: str = ""
    entities_seen: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    highlights: list[str] = field(default_factory=list)
    recall_key: str = ""


class SessionLog:
    """0.4.1's step log; in 0.5 ``session_log`` is the run's list of chat messages, and a run's steps
    are ``state.steps`` (``Step.tool_call``, ``Step.tool_result``)."""

    def __init__(self) -> None:
        warn_renamed("SessionLog()", "state.steps (the Steps of the run) and session_log (its chat messages)")
        self.entries: list[LogEntry] = []
        self.current_theory = ""

    def record(
        self,
        step: int,
        theory: str,
        tool: str,
        reasoning: str = "",
        entities: list[str] | None = None,
        findings: list[str] | None = None,
        highlights: list[str] | None = None,
        recall_key: str = "",
    ) -> None:
        """Add an entry; a blank ``theory`` keeps the current one."""
        if theory:
            self.current_theory = theory
        self.entries.append(
            LogEntry(
                step,
                theory or self.current_theory,
                tool,
                reasoning,
                list(entities or []),
                list(findings or []),
                list(highlights or []),
                recall_key,
            )
        )

    def all_entities(self) -> set[str]:
        return {e for entry in self.entries for e in entry.entities_seen}

    def to_list(self) -> list[dict[str, Any]]:
        """The entries as JSON-safe dicts (what a 0.4.1 checkpoint stores)."""
        return [asdict(e) for e in self.entries]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SessionLog:
        """A log from a checkpoint's ``session_log_data`` (``{"entries": [...], "current_theory": ...}``)."""
        log = cls.__new__(cls)
        log.entries, log.current_theory = [], ""
        for e in data.get("entries", []):
            log.record(
                e["step"],
                e.get("theory", ""),
                e["tool"],
                e.get("reasoning", ""),
                e.get("entities_seen", []),
                e.get("findings", []),
                e.get("highlights", []),
                e.get("recall_key", ""),
            )
        log.current_theory = data.get("current_theory", log.current_theory)
        return log

    def __len__(self) -> int:
        return len(self.entries)

    def render(self) -> str:
        """The log as plain text, one block per entry (what a summarizer reads)."""
        return "\n".join(_entry_text(e) for e in self.entries)

    def compact(self, max_entries_to_keep: int = 5) -> bool:
        """Fold every entry but the last ``max_entries_to_keep`` into one summary entry (earlier summaries
        are merged into it). Nothing happens with fewer than three entries to fold; returns whether the
        log changed. No LLM call: the summary lists the steps, tools, findings and entities folded."""
        keep = max(0, max_entries_to_keep)
        old = self.entries[: len(self.entries) - keep]
        folded = [e for e in old if e.tool != SUMMARY_TOOL]
        if len(folded) < 3:
            return False
        earlier = [e for e in old if e.tool == SUMMARY_TOOL]
        entities = {x for e in [*earlier, *folded] for x in (*e.entities_seen, *e.highlights)}
        findings = [f for e in earlier for f in e.findings]
        tools = sorted({e.tool for e in folded})
        facts = [f for e in folded for f in e.findings]
        findings.append(
            f"steps {folded[0].step}-{folded[-1].step} ({len(folded)} entries): tools {', '.join(tools)}"
            + (f"; found: {'; '.join(facts)}" if facts else "")
        )
        summary = LogEntry(
            0,
            "",
            SUMMARY_TOOL,
            f"[Compressed steps {folded[0].step}-{folded[-1].step}]",
            sorted(entities),
            findings,
        )
        self.entries = [summary, *self.entries[len(old) :]]
        return True


def _entry_text(e: LogEntry) -> str:
    lines = [f"S{e.step}: {e.tool} - {e.reasoning}"]
    if e.theory:
        lines.append(f"  theory: {e.theory}")
    if e.entities_seen:
        lines.append(f"  entities: {', '.join(e.entities_seen)}")
    lines.extend(f"  -> {f}" for f in e.findings)
    return "\n".join(lines)
