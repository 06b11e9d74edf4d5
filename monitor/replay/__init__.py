"""``driftgate replay``: the worker's gates on history, offline, with what-if policies."""

from ._calibrators import StoredCalibrator, read_calibrator_file, save_calibrator
from ._engine import Replay, RunResult
from ._input import EventLog, read_events

__all__ = [
    "EventLog",
    "Replay",
    "RunResult",
    "StoredCalibrator",
    "read_calibrator_file",
    "read_events",
    "save_calibrator",
]
