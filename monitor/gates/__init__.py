"""Gates: pure functions from estimator state and policy to a verdict, one file per gate."""

from ._covariate_drift import covariate_drift_gate
from ._residual_drift import residual_drift_gate
from ._score_drift import score_drift_gate
from ._verdict import (
    GATE_STATUS_CODES,
    SEVERITY,
    Verdict,
    decision_id,
    decision_record,
    finite_or_none,
    record_key,
    rfc3339,
    should_publish,
)

__all__ = [
    "GATE_STATUS_CODES",
    "SEVERITY",
    "Verdict",
    "covariate_drift_gate",
    "decision_id",
    "decision_record",
    "finite_or_none",
    "record_key",
    "residual_drift_gate",
    "rfc3339",
    "score_drift_gate",
    "should_publish",
]
