"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.checkpoint`` module. Checkpoints live in ``looplet.control``.

Its old names resolve through :mod:`looplet.compat`: 0.4.1's checkpoint format (``Checkpoint``,
``FileCheckpointStore``, the store-based ``CheckpointHook``, ``resume_loop_state``) still works, from
``looplet._compat_checkpoint``, with a deprecation warning; the rest raise an error that says what to
use in 0.5 (see docs/migration.md).
"""

from typing import Any

from looplet.compat import module_getattr

_OLD = module_getattr("looplet.checkpoint", ("Checkpoint", "FileCheckpointStore"))
_WORKING = frozenset(
    """Checkpoint CheckpointHook CheckpointIdentityError CheckpointStore FileCheckpointStore
    UncertainToolEffect resume_loop_state validate_checkpoint_identity""".split()
)


def __getattr__(name: str) -> Any:
    if name in _WORKING:
        from looplet import _compat_checkpoint

        return getattr(_compat_checkpoint, name)
    return _OLD(name)
