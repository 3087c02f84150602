"""Provenance: each run as a trajectory folder on disk, read back by ``looplet show``, evals and replay.

``ProvenanceSink`` writes the folders (as an OpenTelemetry span exporter, as a hook, or around a backend);
``load_trajectory`` / ``find_trajectories`` read them; ``replay_loop`` re-runs one against current tools.
"""

from __future__ import annotations

from looplet._lazy import lazy_getattr

_LAZY = {
    "ProvenanceSink": "looplet.provenance.sink",
    "TrajectoryHook": "looplet.provenance.capture",
    "replay_loop": "looplet.provenance.replay",
    "ReplayReport": "looplet.provenance.replay",
    "Trajectory": "looplet.provenance.format",
    "TrajectoryError": "looplet.provenance.format",
    "load_trajectory": "looplet.provenance.format",
    "find_trajectories": "looplet.provenance.format",
    "SCHEMA_VERSION": "looplet.provenance.format",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr("looplet.provenance", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
