"""Provenance: each run as a trajectory folder on disk, read back by ``looplet show``, evals and replay.

``ProvenanceSink`` writes the folders (as an OpenTelemetry span exporter, as a hook, or around a backend);
``load_trajectory`` / ``find_trajectories`` read them; ``replay_loop`` re-runs one against current tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from looplet._lazy import lazy_getattr

_FORMAT = ("Trajectory", "TrajectoryError", "load_trajectory", "find_trajectories", "SCHEMA_VERSION")
_LAZY = {
    "ProvenanceSink": "looplet.provenance.sink",
    "TrajectoryHook": "looplet.provenance.sink",
    "replay_loop": "looplet.provenance.replay",
    "ReplayReport": "looplet.provenance.replay",
    **dict.fromkeys(_FORMAT, "looplet.provenance.format"),
}
__all__ = list(_LAZY)
__getattr__ = lazy_getattr(
    "looplet.provenance", globals(), _LAZY, old_names=True
)  # 0.4.1 names: looplet.compat


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - explicit re-exports for type checkers
    from looplet.provenance.format import SCHEMA_VERSION as SCHEMA_VERSION
    from looplet.provenance.format import Trajectory as Trajectory
    from looplet.provenance.format import TrajectoryError as TrajectoryError
    from looplet.provenance.format import find_trajectories as find_trajectories
    from looplet.provenance.format import load_trajectory as load_trajectory
    from looplet.provenance.replay import ReplayReport as ReplayReport
    from looplet.provenance.replay import replay_loop as replay_loop
    from looplet.provenance.sink import ProvenanceSink as ProvenanceSink
    from looplet.provenance.sink import TrajectoryHook as TrajectoryHook
