"""driftgate's service side: Faust agents, Redis state, gates, decisions, metrics, CLI."""

from ._config import Policy, ResidualDriftPolicy, ScoreDriftPolicy, Settings
from ._events import EventValidationError, LabelEvent, decode_message, parse_label_event
from ._gates import Verdict, residual_drift_gate
from ._labels import LabelBatchProcessor, RawMessage

__all__ = [
    "EventValidationError",
    "LabelBatchProcessor",
    "LabelEvent",
    "Policy",
    "RawMessage",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "Verdict",
    "decode_message",
    "parse_label_event",
    "residual_drift_gate",
]
