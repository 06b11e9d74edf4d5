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
