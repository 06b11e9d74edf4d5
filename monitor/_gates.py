"""Gates: pure functions from estimator state and policy to a verdict."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from estimators import NormalMixtureSequence

from ._config import ResidualDriftPolicy

__all__ = ["GATE_STATUS_CODES", "Verdict", "decision_id", "residual_drift_gate", "should_publish"]

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


def residual_drift_gate(
    subject: str,
    residuals: NormalMixtureSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    """PASS when the confidence sequence holds 0; WARN / FAIL on |mean| vs the threshold.

    The interval is anytime-valid, so evaluating this after every batch keeps the
    false-alarm rate at ``alpha`` over the whole life of the calibrator version.
    """
    interval = residuals.interval
    evidence = {
        "n": residuals.n,
        "estimate": _finite_or_none(interval.estimate),
        "ci_low": _finite_or_none(interval.low),
        "ci_high": _finite_or_none(interval.high),
        "threshold": policy.bias_threshold,
        "method": "normal_mixture_cs",
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
