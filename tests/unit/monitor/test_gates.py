from __future__ import annotations

import numpy as np
import pytest

from estimators import NormalMixtureSequence
from monitor import ResidualDriftPolicy, residual_drift_gate
from monitor._gates import decision_id, should_publish

POLICY = ResidualDriftPolicy()


def gate(residuals: np.ndarray) -> str:
    sequence = NormalMixtureSequence().update(residuals)
    return residual_drift_gate("s", sequence, POLICY, 0).verdict


def test_verdict_bands() -> None:
    rng = np.random.default_rng(0)
    assert gate(rng.normal(0, 0.1, 5000)) == "PASS"
    assert gate(rng.normal(0.02, 0.1, 5000)) == "WARN"
    assert gate(rng.normal(0.2, 0.1, 5000)) == "FAIL"
    assert gate(rng.normal(-0.2, 0.1, 5000)) == "FAIL"
    assert gate(rng.normal(0.2, 0.1, 10)) == "INCONCLUSIVE"


def test_evidence_carries_the_contract_fields() -> None:
    verdict = residual_drift_gate("s", NormalMixtureSequence().update(np.full(100, 0.3)), POLICY, 4)
    assert (
        verdict.verdict == "FAIL"
        and verdict.reason == "residual_bias"
        and verdict.action == "alert"
    )
    assert verdict.evidence["n"] == 100
    assert verdict.evidence["estimate"] == pytest.approx(0.3)
    assert verdict.evidence["ci_low"] == pytest.approx(0.3) == verdict.evidence["ci_high"]
    assert verdict.evidence["threshold"] == 0.05
    assert verdict.evidence["calibrator_version"] == 4


def test_publish_only_on_change_with_a_quiet_start() -> None:
    assert not should_publish(None, "PASS")
    assert not should_publish(None, "INCONCLUSIVE")
    assert should_publish(None, "WARN")
    assert should_publish("FAIL", "PASS")
    assert not should_publish("FAIL", "FAIL")


def test_decision_id_is_deterministic_in_the_evidence() -> None:
    sequence = NormalMixtureSequence().update(np.full(100, 0.3))
    first = residual_drift_gate("s", sequence, POLICY, 1)
    again = residual_drift_gate(
        "s", NormalMixtureSequence.from_state(sequence.to_state()), POLICY, 1
    )
    other_version = residual_drift_gate("s", sequence, POLICY, 2)
    assert decision_id(first) == decision_id(again)
    assert decision_id(first) != decision_id(other_version)


def test_a_late_shift_is_judged_on_the_data_after_the_detector_alarm() -> None:
    from monitor import Policy
    from monitor._streams import StreamState

    rng = np.random.default_rng(3)
    policy = Policy()
    state = StreamState.empty(0, policy)
    for _ in range(20):  # 20,000 calibrated labels
        state.update(rng.uniform(size=1000), rng.normal(0, 0.1, 1000), policy.residual_drift)
    assert state.changes == 0 and state.recent is None
    for _ in range(6):  # then a bias of 0.08, 100 labels a batch
        state.update(rng.uniform(size=100), rng.normal(0.08, 0.1, 100), policy.residual_drift)
    overall = residual_drift_gate("s", state.residuals, POLICY, 0)
    combined = residual_drift_gate("s", state.residuals, POLICY, 0, state.recent)
    assert overall.verdict != "FAIL"  # the all-time mean is diluted by the quiet past
    assert abs(overall.evidence["estimate"]) < 0.01
    assert combined.verdict == "FAIL"
    assert combined.evidence["estimate"] == pytest.approx(0.08, abs=0.02)
    assert combined.evidence["method"] == "normal_mixture_cs_after_change"
    assert state.changes == 1 and state.last_change_at is not None
    assert 20_000 < state.last_change_at < 20_600
    assert StreamState.from_json(state.to_json()).to_state() == state.to_state()


def test_score_drift_bands_are_guarded_against_small_samples() -> None:
    from estimators import QuantileSketch
    from monitor import ScoreDriftPolicy
    from monitor._gates import score_drift_gate

    rng = np.random.default_rng(4)
    baseline = QuantileSketch(0.01).update(rng.uniform(size=2000))
    policy = ScoreDriftPolicy()

    def verdict(live: np.ndarray) -> str:
        return score_drift_gate("s", QuantileSketch(0.01).update(live), baseline, policy, 1).verdict

    assert verdict(rng.uniform(size=50)) == "INCONCLUSIVE"
    assert verdict(rng.uniform(size=5000)) == "PASS"
    # The band reads a lower bound: KS distance less sampling noise (~0.036 at these sizes)
    # less the sketch's error (~0.03 with 1% buckets near 1), so it errs towards calm.
    assert verdict(rng.uniform(0.35, 1.0, 5000)) == "WARN"  # KS distance 0.35
    assert verdict(rng.uniform(0.5, 1.0, 5000)) == "FAIL"  # KS distance 0.5
    assert verdict(rng.uniform(0.5, 1.0, 120)) == "WARN"  # the same shift, seen on few scores
    assert verdict(rng.uniform(0.25, 1.0, 120)) == "PASS"  # 0.25 is within the noise at n=120
