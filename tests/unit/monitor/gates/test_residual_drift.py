from __future__ import annotations

import numpy as np
import pytest

from estimators import RestartingMeanSequence
from monitor import ResidualDriftPolicy, residual_drift_gate
from monitor.gates import Verdict

POLICY = ResidualDriftPolicy()
CONTRACT_FIELDS = {"n", "estimate", "ci_low", "ci_high", "threshold", "method"}


def residuals(*batches: np.ndarray, policy: ResidualDriftPolicy = POLICY) -> RestartingMeanSequence:
    sequence = RestartingMeanSequence(
        policy.alpha,
        policy.target_time,
        policy.min_labeled,
        policy.change_alpha,
        policy.change_horizon,
    )
    for batch in batches:
        sequence.update(batch)
    return sequence


def gate(*batches: np.ndarray, policy: ResidualDriftPolicy = POLICY, version: int = 0) -> Verdict:
    return residual_drift_gate("s", residuals(*batches, policy=policy), policy, version)


@pytest.mark.parametrize(
    ("mean", "n", "verdict"),
    [
        (0.0, 5000, "PASS"),
        (0.02, 5000, "WARN"),
        (0.2, 5000, "FAIL"),
        (-0.2, 5000, "FAIL"),
        (0.2, 10, "INCONCLUSIVE"),
    ],
)
def test_verdict_bands(mean: float, n: int, verdict: str) -> None:
    rng = np.random.default_rng(0)
    assert gate(rng.normal(mean, 0.1, n)).verdict == verdict


def test_a_verdict_that_shows_bias_says_the_playbook_s_next_step() -> None:
    """FAIL: collect target labels and recalibrate (the command named); WARN: enlarge the
    probe, look at the deciles; a detected change: prepare labels; PASS: nothing."""
    rng = np.random.default_rng(0)
    fail = residual_drift_gate("judge a", residuals(rng.normal(0.2, 0.1, 500)), POLICY, 1)
    assert fail.verdict == "FAIL" and fail.evidence["next_step"].startswith("recalibrate: ")
    assert "collect 100-200 target labels stratified by score decile" in fail.evidence["next_step"]
    assert fail.evidence["next_step"].endswith(
        "driftgate calibrate TARGET_LABELS.jsonl --stream 'judge a'"
    )
    warn = gate(rng.normal(0.02, 0.1, 5000))
    assert warn.verdict == "WARN" and "enlarge the next audit probe" in warn.evidence["next_step"]
    # A bias of 1 sd after a quiet past, caught by the detector before the interval
    # restarted after it holds the 30 labels it needs.
    changed = gate(rng.normal(0.0, 0.1, 20_000), *rng.normal(0.1, 0.1, (6, 10)))
    assert changed.reason == "change_detected", changed
    assert changed.evidence["next_step"].startswith("a change was detected")
    assert "next_step" not in gate(rng.normal(0.0, 0.1, 5000)).evidence
    assert "next_step" not in gate().evidence


def test_no_labels_is_inconclusive_with_empty_evidence() -> None:
    verdict = gate()
    assert (verdict.verdict, verdict.action, verdict.reason) == (
        "INCONCLUSIVE",
        "none",
        "insufficient_data",
    )
    assert verdict.evidence["n"] == 0
    assert verdict.evidence["estimate"] is None and verdict.evidence["ci_low"] is None


def test_evidence_carries_the_contract_fields() -> None:
    verdict = gate(np.full(100, 0.3), version=4)
    assert (verdict.gate, verdict.subject) == ("residual_drift", "s")
    assert (verdict.verdict, verdict.reason, verdict.action) == ("FAIL", "residual_bias", "alert")
    evidence = verdict.evidence
    assert evidence.keys() >= CONTRACT_FIELDS
    assert evidence["n"] == 100
    assert evidence["estimate"] == pytest.approx(0.3)
    assert evidence["ci_low"] == pytest.approx(0.3) == evidence["ci_high"]
    assert evidence["threshold"] == 0.05 and evidence["alpha"] == 0.05
    assert evidence["method"] == "normal_mixture_cs"
    assert evidence["calibrator_version"] == 4


def test_actions_come_from_the_policy() -> None:
    rng = np.random.default_rng(1)
    policy = ResidualDriftPolicy(warn_action="hold", fail_action="rollback")
    assert gate(rng.normal(0.02, 0.1, 5000), policy=policy).action == "hold"
    assert gate(rng.normal(0.2, 0.1, 5000), policy=policy).action == "rollback"
    assert gate(rng.normal(0.0, 0.1, 5000), policy=policy).action == "none"


def test_min_labeled_holds_back_a_verdict() -> None:
    policy = ResidualDriftPolicy(min_labeled=200)
    assert gate(np.full(150, 0.3), policy=policy).verdict == "INCONCLUSIVE"
    assert gate(np.full(200, 0.3), policy=policy).verdict == "FAIL"


def test_a_late_shift_is_judged_on_the_data_after_the_detector_alarm() -> None:
    rng = np.random.default_rng(3)
    quiet = [rng.normal(0, 0.1, 1000) for _ in range(20)]  # 20,000 calibrated labels
    shifted = [rng.normal(0.08, 0.1, 100) for _ in range(6)]  # then a bias of 0.08
    sequence = residuals(*quiet, *shifted)
    assert sequence.changes == 1 and sequence.change_at is not None
    assert 20_000 < sequence.change_at < 20_600

    verdict = residual_drift_gate("s", sequence, POLICY, 0)
    assert verdict.verdict == "FAIL"
    assert verdict.evidence["method"] == "normal_mixture_cs_after_change"
    assert verdict.evidence["estimate"] == pytest.approx(0.08, abs=0.02)
    assert verdict.evidence["n"] == 20_600 - sequence.change_at
    assert verdict.evidence["since_labeled_n"] == sequence.change_at

    # The all-time interval alone is diluted by the quiet past.
    all_time = sequence.all_time
    assert abs(all_time.mean) < 0.01
    assert not (all_time.interval.low > 0 and abs(all_time.mean) >= POLICY.bias_threshold)


def test_the_all_time_verdict_stands_when_the_restarted_one_is_no_worse() -> None:
    rng = np.random.default_rng(2)
    sequence = residuals(rng.normal(0.2, 0.1, 5000))
    assert sequence.since_change is not None  # the detector alarms on a shift from the start
    verdict = residual_drift_gate("s", sequence, POLICY, 0)
    assert verdict.verdict == "FAIL"
    assert verdict.evidence["method"] == "normal_mixture_cs"
    assert verdict.evidence["n"] == 5000
    assert "since_labeled_n" not in verdict.evidence


def test_the_alarm_itself_is_a_warn_before_the_restarted_interval_fills() -> None:
    rng = np.random.default_rng(4)
    quiet = [rng.normal(0, 0.1, 1000) for _ in range(20)]
    sequence = residuals(*quiet)
    assert residual_drift_gate("s", sequence, POLICY, 2).verdict == "PASS"
    batches = 0
    while sequence.since_change is None:  # a bias of 0.1 (1 sd), 10 labels a batch
        sequence.update(rng.normal(0.1, 0.1, 10))
        batches += 1
    assert batches <= 5

    verdict = residual_drift_gate("s", sequence, POLICY, 2)
    assert (verdict.verdict, verdict.reason, verdict.action) == ("WARN", "change_detected", "alert")
    evidence = verdict.evidence
    assert evidence.keys() >= CONTRACT_FIELDS
    assert evidence["method"] == "e_detector"
    assert evidence["since_labeled_n"] == sequence.change_at
    assert 20_000 < sequence.change_at <= 20_000 + 10 * batches
    assert evidence["n"] == sequence.since_change.n < POLICY.min_labeled
    assert evidence["change_shift"] == pytest.approx(0.04, rel=0.05)  # 0.4 sd of ~0.1
    assert evidence["change_alpha"] == POLICY.change_alpha
    assert evidence["change_horizon"] == POLICY.change_horizon
    assert evidence["calibrator_version"] == 2

    # Once the restarted interval has the labels to size it, the bias fails the gate.
    sequence.update(rng.normal(0.1, 0.1, 100))
    verdict = residual_drift_gate("s", sequence, POLICY, 2)
    assert (verdict.verdict, verdict.reason) == ("FAIL", "residual_bias")
    assert verdict.evidence["method"] == "normal_mixture_cs_after_change"


def test_an_alarm_stands_while_the_restarted_interval_holds_zero() -> None:
    # A change that went away again: the restarted interval holds 0, but the gate does
    # not flip back to PASS (a new calibrator version starts a new interval).
    rng = np.random.default_rng(5)
    sequence = residuals(*(rng.normal(0, 0.1, 1000) for _ in range(20)))
    while sequence.since_change is None:
        sequence.update(rng.normal(0.1, 0.1, 10))
    for _ in range(10):
        sequence.update(rng.normal(0.0, 0.1, 100))
        verdict = residual_drift_gate("s", sequence, POLICY, 0)
        assert sequence.since_change.interval.contains(0.0)
        assert (verdict.verdict, verdict.reason) == ("WARN", "change_detected")


def test_a_quiet_stream_stays_pass_over_a_long_life() -> None:
    # 100,000 labels in batches of 500 with no change: neither the interval nor the
    # detector (chance of a false alarm within its horizon at most change_alpha) fires.
    rng = np.random.default_rng(6)
    sequence = residuals()
    for _ in range(200):
        sequence.update(rng.standard_t(3, 500) * 0.1)
        assert residual_drift_gate("s", sequence, POLICY, 0).verdict == "PASS"
    assert sequence.since_change is None
