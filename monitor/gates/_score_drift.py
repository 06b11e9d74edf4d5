"""The score drift gate: do the live scores still look like the calibration scores?"""

from __future__ import annotations

from typing import Any

from estimators import SEVERITY_THRESHOLDS, QuantileSketch, severity_band, sketch_ks_bounds

from .._config import ScoreDriftPolicy
from ._verdict import Verdict, finite_or_none

__all__ = ["score_drift_gate"]

GATE = "score_drift"


def score_drift_gate(
    subject: str,
    live: QuantileSketch,
    baseline: QuantileSketch,
    policy: ScoreDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    """KS distance of the live scores from the calibration scores, in severity bands.

    The band is read off the lower bound of :func:`estimators.sketch_ks_bounds`, so
    sampling noise on few scores does not flip it: minor -> PASS, moderate (>= 0.2) ->
    WARN, severe (>= 0.3) -> FAIL.
    """
    evidence: dict[str, Any] = {
        "n": live.n,
        "baseline_n": baseline.n,
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "threshold": SEVERITY_THRESHOLDS["moderate"],
        "method": "ks_sketch",
        "calibrator_version": calibrator_version,
    }
    if live.n == 0 or baseline.n == 0:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    bounds = sketch_ks_bounds(live, baseline, policy.alpha)
    evidence.update(
        estimate=finite_or_none(bounds.distance),
        ci_low=bounds.low,
        ci_high=bounds.high,
        sketch_error=finite_or_none(bounds.sketch_error),
    )
    if live.n < policy.min_n:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    band = severity_band(bounds.low)
    if band == "severe":
        return Verdict(GATE, subject, "FAIL", policy.fail_action, "score_drift_severe", evidence)
    if band == "moderate":
        return Verdict(GATE, subject, "WARN", policy.warn_action, "score_drift_moderate", evidence)
    return Verdict(GATE, subject, "PASS", "none", "no_drift", evidence)
