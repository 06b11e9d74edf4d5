from __future__ import annotations

import numpy as np
import pytest

from estimators import QuantileSketch
from monitor import ScoreDriftPolicy, score_drift_gate
from monitor.gates import Verdict

POLICY = ScoreDriftPolicy()


@pytest.fixture(scope="module")
def baseline() -> QuantileSketch:
    return QuantileSketch(0.01).update(np.random.default_rng(4).uniform(size=2000))


def judge(live: np.ndarray, baseline: QuantileSketch, policy: ScoreDriftPolicy = POLICY) -> Verdict:
    return score_drift_gate("s", QuantileSketch(0.01).update(live), baseline, policy, 1)


@pytest.mark.parametrize(
    ("low", "n", "verdict"),
    [
        (0.0, 50, "INCONCLUSIVE"),  # fewer than min_n
        (0.0, 5000, "PASS"),
        # The band reads a lower bound: KS distance less the time-uniform sampling margin
        # (~0.07 at these sizes) less the sketch's error (~0.03 with 1% buckets near 1).
        (0.35, 5000, "WARN"),  # KS distance 0.35
        (0.5, 5000, "FAIL"),  # KS distance 0.5
        (0.5, 300, "WARN"),  # the same shift, seen on few scores (margin ~0.19)
        (0.5, 120, "PASS"),  # and on fewer: within the margin (~0.29) at n=120
        (0.25, 120, "PASS"),  # 0.25 is within the noise at n=120
    ],
)
def test_bands_are_guarded_against_small_samples(
    baseline: QuantileSketch, low: float, n: int, verdict: str
) -> None:
    rng = np.random.default_rng(int(low * 100) + n)
    assert judge(rng.uniform(low, 1.0, n), baseline).verdict == verdict


def test_reasons_and_actions(baseline: QuantileSketch) -> None:
    rng = np.random.default_rng(8)
    policy = ScoreDriftPolicy(warn_action="hold", fail_action="rollback")
    warn = judge(rng.uniform(0.35, 1.0, 5000), baseline, policy)
    fail = judge(rng.uniform(0.5, 1.0, 5000), baseline, policy)
    calm = judge(rng.uniform(size=5000), baseline, policy)
    assert (warn.reason, warn.action) == ("score_drift_moderate", "hold")
    assert (fail.reason, fail.action) == ("score_drift_severe", "rollback")
    assert (calm.reason, calm.action) == ("no_drift", "none")


def test_evidence_carries_the_contract_fields(baseline: QuantileSketch) -> None:
    verdict = judge(np.random.default_rng(9).uniform(0.5, 1.0, 5000), baseline)
    evidence = verdict.evidence
    assert (verdict.gate, verdict.subject) == ("score_drift", "s")
    assert (evidence["n"], evidence["baseline_n"]) == (5000, 2000)
    assert evidence["ci_low"] <= evidence["estimate"] <= evidence["ci_high"]
    assert evidence["estimate"] == pytest.approx(0.5, abs=0.05)
    assert evidence["threshold"] == 0.2 and evidence["method"] == "time_uniform_dkw"
    assert evidence["calibrator_version"] == 1 and evidence["sketch_error"] > 0


def test_few_scores_still_show_their_evidence(baseline: QuantileSketch) -> None:
    verdict = judge(np.random.default_rng(10).uniform(0.5, 1.0, 50), baseline)
    assert verdict.verdict == "INCONCLUSIVE" and verdict.reason == "insufficient_data"
    assert verdict.evidence["estimate"] is not None and verdict.evidence["n"] == 50


@pytest.mark.parametrize("empty", ["live", "baseline"])
def test_an_empty_sketch_is_inconclusive(baseline: QuantileSketch, empty: str) -> None:
    live = QuantileSketch(0.01) if empty == "live" else QuantileSketch(0.01).update([0.5] * 200)
    reference = QuantileSketch(0.01) if empty == "baseline" else baseline
    verdict = score_drift_gate("s", live, reference, POLICY, 1)
    assert (verdict.verdict, verdict.action) == ("INCONCLUSIVE", "none")
    assert verdict.evidence["estimate"] is None and verdict.evidence["ci_low"] is None
