"""The score drift gate: do the live scores still look like the calibration scores?"""

from __future__ import annotations

from typing import Any

from estimators import (
    SEVERITY_THRESHOLDS,
    KSBounds,
    QuantileSketch,
    sequential_ks_bounds,
    severity_band,
    sketch_ks_bounds,
)

from ..config import ScoreDriftPolicy
from ._verdict import Verdict, finite_or_none

__all__ = ["BASELINE_WINDOW_PER_MIN_N", "baseline_may_advance", "score_drift_gate"]

GATE = "score_drift"

# The baseline moves forward in windows of this many times score_drift.min_n scores (1,000
# by default): enough for a KS test to see a moderate shift, few enough to follow a slow,
# harmless change of the traffic within hours.
BASELINE_WINDOW_PER_MIN_N = 10


def score_drift_gate(
    subject: str,
    live: QuantileSketch,
    baseline: QuantileSketch,
    policy: ScoreDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    """KS distance of the live scores from the calibration scores, in severity bands.

    The band is read off the lower bound of :func:`estimators.sequential_ks_bounds`: the
    distance less the live scores' time-uniform DKW radius (Howard and Ramdas 2022,
    Theorem 2), the baseline's fixed-size DKW radius and the sketches' bucketing error.
    The gate runs after every batch, so the bound must hold at every look at once, not
    at one: with probability at least ``1 - alpha`` it never exceeds the true distance
    while the baseline stays, however often it is read. minor -> PASS, moderate (>= 0.2)
    -> WARN, severe (>= 0.3) -> FAIL. A change of band is a change of verdict, so it is
    published as a ``score_drift`` decision; the evidence names the ``band``, whether the
    drift is ``significant`` (the lower bound above 0) at all, and the method
    (``time_uniform_dkw``).
    """
    evidence = drift_evidence(live.n, baseline.n, "time_uniform_dkw", calibrator_version)
    if live.n == 0 or baseline.n == 0:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    bounds = sequential_ks_bounds(live, baseline, policy.alpha)
    evidence.update(distance_evidence(bounds))
    if live.n < policy.min_n:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    band = drift_band(bounds, evidence)
    if band == "severe":
        return Verdict(GATE, subject, "FAIL", policy.fail_action, "score_drift_severe", evidence)
    if band == "moderate":
        return Verdict(GATE, subject, "WARN", policy.warn_action, "score_drift_moderate", evidence)
    return Verdict(GATE, subject, "PASS", "none", "no_drift", evidence)


def drift_evidence(
    n: int, baseline_n: int, method: str, calibrator_version: int, **named: Any
) -> dict[str, Any]:
    """A drift gate's evidence before its distance is bounded: the counts, the method,
    what ``named`` adds (a covariate's name and kind), no estimate yet."""
    return {
        "n": n,
        "baseline_n": baseline_n,
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "threshold": SEVERITY_THRESHOLDS["moderate"],
        "method": method,
        **named,
        "calibrator_version": calibrator_version,
    }


def distance_evidence(bounds: KSBounds) -> dict[str, Any]:
    """A distance's estimate and time-uniform bounds, as a drift gate's evidence."""
    return {
        "estimate": finite_or_none(bounds.distance),
        "ci_low": bounds.low,
        "ci_high": bounds.high,
        "sketch_error": finite_or_none(bounds.sketch_error),
    }


def drift_band(bounds: KSBounds, evidence: dict[str, Any]) -> str:
    """The runbook's band of the distance's lower bound (minor, moderate, severe), noted
    in ``evidence`` with whether the bound excludes 0."""
    band = severity_band(bounds.low)
    evidence.update(band=band, significant=bounds.low > 0.0)
    return band


def baseline_may_advance(
    recent: QuantileSketch, baseline: QuantileSketch, policy: ScoreDriftPolicy
) -> bool:
    """Whether the recent scores may become the baseline: a full window of them
    (``BASELINE_WINDOW_PER_MIN_N * min_n``) with no significant drift from the baseline
    (the KS distance within its noise and sketch error, so its lower bound is 0).

    A baseline that follows the traffic only while it looks like the baseline keeps a
    drift from ever becoming the reference: once the drift is significant the baseline
    stays, and the gate keeps judging against it. A drift too slow to be significant
    within any one window is followed rather than flagged; the calibrator's own fitting
    scores are the reference again when a new calibrator version starts.

    This test is read once per window, at a fixed size, so it uses the fixed-n two-sample
    critical distance (:func:`estimators.sketch_ks_bounds`), not the gate's time-uniform
    band: the narrower band keeps a real drift from becoming the baseline, and its own
    false alarms only keep a harmless baseline one window longer.
    """
    if recent.n < BASELINE_WINDOW_PER_MIN_N * policy.min_n or baseline.n == 0:
        return False
    return sketch_ks_bounds(recent, baseline, policy.alpha).low <= 0.0
