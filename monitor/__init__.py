"""driftgate's service side: Faust agents, the batch runner, Redis state, gates, metrics, CLI."""

from ._config import Policy, ResidualDriftPolicy, ScoreDriftPolicy, Settings
from .gates import Verdict, residual_drift_gate, score_drift_gate
from .pipeline import BatchResult, BatchRunner, Handler, RawMessage, SubjectModel
from .subjects import HANDLERS, LabelHandler

__all__ = [
    "HANDLERS",
    "BatchResult",
    "BatchRunner",
    "Handler",
    "LabelHandler",
    "Policy",
    "RawMessage",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "SubjectModel",
    "Verdict",
    "residual_drift_gate",
    "score_drift_gate",
]
