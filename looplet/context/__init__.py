"""Context management: keep a long run's transcript inside the model's context window.

``ThresholdCompactHook(max_tokens=..., strategy=compact_chain(Prune(), Summarize(llm), Truncate()))``
compacts before a prompt once the transcript passes the threshold; ``ContextPressureHook`` tells the
model how much room is left. Each compaction is reported with ``emit_event("compaction", strategy=...,
tokens_before=..., tokens_after=...)`` and a log line on the ``looplet`` logger.
"""

from looplet.context.compaction import CompactChain, Prune, Summarize, Truncate, compact_chain
from looplet.context.hooks import ContextPressureHook, ThresholdCompactHook
from looplet.context.tokens import TokenMeter, estimate_tokens

__all__ = [
    "compact_chain",
    "CompactChain",
    "Prune",
    "Summarize",
    "Truncate",
    "ThresholdCompactHook",
    "ContextPressureHook",
    "TokenMeter",
    "estimate_tokens",
]
