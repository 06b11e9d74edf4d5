"""The residual drift gate: is the mean residual ``y - f(s)`` still 0?"""

from __future__ import annotations

import math
import shlex

from estimators import NormalMixtureSequence, RestartingMeanSequence

from ..config import ResidualDriftPolicy
from ._verdict import Verdict, finite_or_none

__all__ = ["CHANGE_METHOD", "RECALIBRATION_LABELS", "residual_drift_gate"]

GATE = "residual_drift"

# The evidence's method when the change detector's alarm is what the verdict stands on.
CHANGE_METHOD = "e_detector"

# How much bias each verdict shows: an interval with too few labels shows none.
_BIAS = {"INCONCLUSIVE": 0, "PASS": 0, "WARN": 1, "FAIL": 2}

RECALIBRATION_LABELS = "100-200"
"""Target labels to collect before recalibrating after a FAIL (the calibration playbook)."""


def _next_step(subject: str, verdict: str, reason: str) -> str | None:
    """The calibration playbook's next step for a verdict that shows bias, in words: the
    monitor says what to do and recalibrates nothing by itself."""
    if verdict == "FAIL":
        return (
            f"recalibrate: do not rely on this calibrator; collect {RECALIBRATION_LABELS} "
            "target labels stratified by score decile (driftgate status shows the residuals "
            f"by decile), then driftgate calibrate TARGET_LABELS.jsonl --stream {subject}"
        )
    if verdict == "WARN" and reason == "change_detected":
        return (
            "a change was detected: the interval restarted after it sizes the change; "
            f"prepare {RECALIBRATION_LABELS} target labels in case it turns to FAIL"
        )
    if verdict == "WARN":
        return (
            "a small but detectable bias: enlarge the next audit probe and look at the "
            "residuals by decile; if WARN persists, pool the probes that pass (driftgate "
            f"audit PROBE.jsonl --stream {subject} --pool) and refit on the calibration "
            f"history with them: driftgate calibrate --stream {subject} --pool"
        )
    return None


def residual_drift_gate(
    subject: str,
    residuals: RestartingMeanSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    restarted: bool = False,
) -> Verdict:
    """PASS when the confidence sequence holds 0; WARN / FAIL on |mean| vs the threshold.

    The interval is anytime-valid, so evaluating this after every batch keeps the
    false-alarm rate at ``alpha`` over the whole life of the calibrator version. A long
    calibrated past dilutes it, so the change detector's alarm is evidence of its own:
    from the batch in which it alarms the verdict is at least WARN (reason
    ``change_detected``, method ``e_detector``; the detector's false alarms within
    ``change_horizon`` labels are at most ``change_alpha``), and an interval restarted
    after the alarm sizes the change: the more severe of the all-time and the restarted
    verdicts decides (FAIL once the restarted interval shows |mean| >= the threshold).
    The alarm stands until a new calibrator version starts a new interval, so a small
    change never flips back to PASS while the restarted interval fills. The evidence
    says which interval the verdict used (``method``), and for WARN and FAIL the
    calibration playbook's next step in words (``next_step``). ``restarted``: the
    interval was started afresh (a stored state from before exact intervals), which an
    undecided verdict names (reason ``interval_restarted``).
    """
    verdict = _judge(subject, residuals, policy, calibrator_version)
    if restarted and verdict.verdict == "INCONCLUSIVE":
        verdict = Verdict(
            GATE, subject, "INCONCLUSIVE", "none", "interval_restarted", verdict.evidence
        )
    step = _next_step(shlex.quote(subject), verdict.verdict, verdict.reason)
    if step is not None:
        verdict.evidence["next_step"] = step
    return verdict


def _judge(
    subject: str,
    residuals: RestartingMeanSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    overall = _interval_verdict(
        subject, residuals.all_time, policy, calibrator_version, residuals.all_time.method
    )
    if residuals.since_change is None:
        return overall
    since_change = _interval_verdict(
        subject,
        residuals.since_change,
        policy,
        calibrator_version,
        f"{residuals.since_change.method}_after_change",
    )
    since_change.evidence["since_labeled_n"] = residuals.change_at
    since_change.evidence["change_shift"] = residuals.alarm_shift
    worst = since_change if _BIAS[since_change.verdict] > _BIAS[overall.verdict] else overall
    if _BIAS[worst.verdict] >= _BIAS["WARN"]:
        return worst
    evidence = {
        **since_change.evidence,
        "method": CHANGE_METHOD,
        "change_alpha": residuals.detector.alpha,
        "change_horizon": residuals.detector.horizon,
    }
    return Verdict(GATE, subject, "WARN", policy.warn_action, "change_detected", evidence)


def _interval_verdict(
    subject: str,
    sequence: NormalMixtureSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    method: str,
) -> Verdict:
    interval = sequence.interval
    evidence = {
        "n": sequence.n,
        "estimate": finite_or_none(interval.estimate),
        "ci_low": finite_or_none(interval.low),
        "ci_high": finite_or_none(interval.high),
        "threshold": policy.bias_threshold,
        "method": method,
        "alpha": policy.alpha,
        "interval_alpha": sequence.alpha,
        "calibrator_version": calibrator_version,
    }
    if sequence.n < policy.min_labeled or not math.isfinite(interval.low):
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    if interval.contains(0.0):
        return Verdict(GATE, subject, "PASS", "none", "no_drift", evidence)
    if abs(interval.estimate) < policy.bias_threshold:
        return Verdict(GATE, subject, "WARN", policy.warn_action, "residual_bias", evidence)
    return Verdict(GATE, subject, "FAIL", policy.fail_action, "residual_bias", evidence)
