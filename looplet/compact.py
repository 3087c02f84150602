"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.compact`` module. Compaction lives in ``looplet.context``.

Its old names resolve through :mod:`looplet.compat`: a deprecated alias, or an error that says what
to use in 0.5 (see docs/migration.md).
"""

from looplet.compat import module_getattr

__getattr__ = module_getattr(
    "looplet.compact",
    (
        "TruncateCompact",
        "SummarizeCompact",
        "PruneToolResults",
        "compact_chain",
        "CompactOutcome",
        "CompactService",
        "DefaultCompactService",
        "run_compact",
        "apply_thread_rewrite",
    ),
)
