from __future__ import annotations

import numpy as np
import pytest

from estimators import CategoryCounts, QuantileSketch
from monitor.config import CovariateDriftPolicy
from monitor.gates import covariate_drift_gate

POLICY = CovariateDriftPolicy(covariates=("difficulty", "domain"), baseline_n=5000)
DOMAINS = np.array(["legal", "code", "math", "chat"])


def numeric(values: np.ndarray) -> QuantileSketch:
    return QuantileSketch(POLICY.relative_accuracy).update(values)


def categorical(values: np.ndarray) -> CategoryCounts:
    return CategoryCounts(POLICY.max_categories).update(values.tolist())


@pytest.mark.parametrize(
    ("shift", "n", "verdict", "band"),
    [
        (0.0, 60_000, "PASS", "minor"),
        (0.25, 60_000, "WARN", "moderate"),  # a KS distance of 0.25
        (0.4, 60_000, "FAIL", "severe"),
        (0.25, 500, "PASS", "minor"),  # the same shift within the noise of 500 values
    ],
)
def test_a_numeric_covariate_in_the_runbooks_bands(
    shift: float, n: int, verdict: str, band: str
) -> None:
    rng = np.random.default_rng(int(shift * 100) + n)
    baseline = numeric(rng.uniform(size=5000))
    result = covariate_drift_gate(
        "p", "difficulty", numeric(rng.uniform(shift, 1 + shift, n)), baseline, POLICY, 2
    )
    assert (result.verdict, result.evidence["band"]) == (verdict, band)
    assert result.gate == "covariate_drift" and result.part == "difficulty"
    assert result.key == "covariate_drift/difficulty"
    evidence = result.evidence
    assert evidence["covariate"] == "difficulty" and evidence["kind"] == "numeric"
    assert evidence["method"] == "time_uniform_dkw" and evidence["threshold"] == 0.2
    assert evidence["ci_low"] <= evidence["estimate"] <= evidence["ci_high"]
    assert evidence["estimate"] == pytest.approx(shift, abs=0.03)


def test_a_categorical_covariate_by_total_variation() -> None:
    rng = np.random.default_rng(11)
    baseline = categorical(rng.choice(DOMAINS, 5000, p=[0.1, 0.4, 0.3, 0.2]))
    moved = categorical(rng.choice(DOMAINS, 60_000, p=[0.35, 0.15, 0.3, 0.2]))
    same = categorical(rng.choice(DOMAINS, 60_000, p=[0.1, 0.4, 0.3, 0.2]))
    warn = covariate_drift_gate("p", "domain", moved, baseline, POLICY, 1)
    calm = covariate_drift_gate("p", "domain", same, baseline, POLICY, 1)
    assert (warn.verdict, warn.reason, warn.action) == ("WARN", "covariate_drift_moderate", "alert")
    assert warn.evidence["method"] == "time_uniform_tv" and warn.evidence["kind"] == "categorical"
    assert warn.evidence["estimate"] == pytest.approx(0.25, abs=0.02)
    assert (calm.verdict, calm.reason, calm.evidence["ci_low"]) == ("PASS", "no_drift", 0.0)


def test_inconclusive_until_the_baseline_is_full_and_min_n_came() -> None:
    rng = np.random.default_rng(12)
    filling = covariate_drift_gate(
        "p", "difficulty", numeric(rng.uniform(size=10)), numeric(rng.uniform(size=4999)), POLICY, 1
    )
    few = covariate_drift_gate(
        "p", "difficulty", numeric(rng.uniform(size=50)), numeric(rng.uniform(size=5000)), POLICY, 1
    )
    assert (filling.verdict, filling.evidence["estimate"]) == ("INCONCLUSIVE", None)
    assert few.verdict == "INCONCLUSIVE" and few.evidence["estimate"] is not None
    assert few.reason == filling.reason == "insufficient_data"


def test_actions_come_from_the_policy() -> None:
    rng = np.random.default_rng(13)
    policy = CovariateDriftPolicy(covariates=("x",), warn_action="hold", fail_action="rollback")
    baseline = numeric(rng.uniform(size=5000))
    fail = covariate_drift_gate(
        "p", "x", numeric(rng.uniform(0.5, 1.5, 20_000)), baseline, policy, 1
    )
    assert (fail.verdict, fail.action, fail.reason) == (
        "FAIL",
        "rollback",
        "covariate_drift_severe",
    )
