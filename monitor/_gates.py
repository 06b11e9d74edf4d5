"""Gates: pure functions from estimator state and policy to a verdict."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from estimators import (
    SEVERITY_THRESHOLDS,
    NormalMixtureSequence,
    QuantileSketch,
    ks_critical_distance,
    severity_band,
)

from ._config import ResidualDriftPolicy, ScoreDriftPolicy

__all__ = [
    "GATE_STATUS_CODES",
    "Verdict",
    "decision_id",
    "residual_drift_gate",
    "score_drift_gate",
    "should_publish",
]

GATE_STATUS_CODES = {"PASS": 0, "WARN": 1, "FAIL": 2, "INCONCLUSIVE": 3, "HOLD": 3}


@dataclass(frozen=True)
class Verdict:
    gate: str
    subject: str
    verdict: str
    action: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


_SEVERITY = {"INCONCLUSIVE": 0, "PASS": 0, "WARN": 1, "FAIL": 2}


def residual_drift_gate(
    subject: str,
    residuals: NormalMixtureSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    recent: NormalMixtureSequence | None = None,
) -> Verdict:
    """PASS when the confidence sequence holds 0; WARN / FAIL on |mean| vs the threshold.

    The interval is anytime-valid, so evaluating this after every batch keeps the
    false-alarm rate at ``alpha`` over the whole life of the calibrator version.
    ``recent`` is the interval restarted by the change detector's last alarm: when it is
    the more severe of the two, it decides (a late shift, not yet visible in the
    all-time mean), and the evidence says so.
    """
    overall = _interval_verdict(subject, residuals, policy, calibrator_version, "normal_mixture_cs")
    if recent is None:
        return overall
    since_change = _interval_verdict(
        subject, recent, policy, calibrator_version, "normal_mixture_cs_after_change"
    )
    if _SEVERITY[since_change.verdict] > _SEVERITY[overall.verdict]:
        return since_change
    return overall


def _interval_verdict(
    subject: str,
    residuals: NormalMixtureSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    method: str,
) -> Verdict:
    interval = residuals.interval
    evidence = {
        "n": residuals.n,
        "estimate": _finite_or_none(interval.estimate),
        "ci_low": _finite_or_none(interval.low),
        "ci_high": _finite_or_none(interval.high),
        "threshold": policy.bias_threshold,
        "method": method,
        "alpha": policy.alpha,
        "calibrator_version": calibrator_version,
    }
    if residuals.n < policy.min_labeled or not math.isfinite(interval.low):
        return Verdict(
            "residual_drift", subject, "INCONCLUSIVE", "none", "insufficient_data", evidence
        )
    if interval.contains(0.0):
        return Verdict("residual_drift", subject, "PASS", "none", "no_drift", evidence)
    if abs(interval.estimate) < policy.bias_threshold:
        return Verdict(
            "residual_drift", subject, "WARN", policy.warn_action, "residual_bias", evidence
        )
    return Verdict("residual_drift", subject, "FAIL", policy.fail_action, "residual_bias", evidence)


def score_drift_gate(
    subject: str,
    live: QuantileSketch,
    baseline: QuantileSketch,
    policy: ScoreDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    """KS distance of the live scores from the calibration scores, in severity bands.

    The band is read off ``D - critical(n, m) - sketch error``, a lower bound of the
    distance, so sampling noise on few scores does not flip it: minor -> PASS,
    moderate (>= 0.2) -> WARN, severe (>= 0.3) -> FAIL.
    """
    distance, sketch_error = live.ks_distance(baseline)
    evidence: dict[str, Any] = {
        "n": live.n,
        "baseline_n": baseline.n,
        "estimate": _finite_or_none(distance),
        "ci_low": None,
        "ci_high": None,
        "threshold": SEVERITY_THRESHOLDS["moderate"],
        "method": "ks_sketch",
        "sketch_error": _finite_or_none(sketch_error),
        "calibrator_version": calibrator_version,
    }
    if live.n < policy.min_n or baseline.n == 0:
        return Verdict(
            "score_drift", subject, "INCONCLUSIVE", "none", "insufficient_data", evidence
        )
    noise = ks_critical_distance(live.n, baseline.n, policy.alpha)
    low = max(0.0, distance - noise - sketch_error)
    evidence.update(ci_low=low, ci_high=min(1.0, distance + sketch_error + noise))
    band = severity_band(low)
    if band == "severe":
        return Verdict(
            "score_drift", subject, "FAIL", policy.fail_action, "score_drift_severe", evidence
        )
    if band == "moderate":
        return Verdict(
            "score_drift", subject, "WARN", policy.warn_action, "score_drift_moderate", evidence
        )
    return Verdict("score_drift", subject, "PASS", "none", "no_drift", evidence)


def should_publish(last_published: str | None, verdict: str) -> bool:
    """A decision goes out when the verdict changes.

    A gate starts quiet: PASS or INCONCLUSIVE before anything was published is no news.
    """
    if last_published is None:
        return verdict not in ("PASS", "INCONCLUSIVE")
    return verdict != last_published


def decision_id(verdict: Verdict) -> str:
    """Deterministic id: the same verdict on the same evidence gives the same id."""
    evidence = verdict.evidence
    key = "|".join(
        str(part)
        for part in (
            verdict.gate,
            verdict.subject,
            verdict.verdict,
            verdict.action,
            evidence.get("calibrator_version", ""),
            evidence.get("n", ""),
            evidence.get("bundle_id", ""),
        )
    )
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
