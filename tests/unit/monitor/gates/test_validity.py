"""The fast lane of the validity matrix (``bench/validity.py`` has all of it): the two
hardest null cells, through the gates' own code, a few hundred paths each. Each also
computes the plug-in interval the gates used before on the same paths, which the cell
must catch out (a check that could not fail would prove nothing)."""

from __future__ import annotations

import math

import numpy as np

from estimators import Moments, NormalMixtureSequence, PairedDifferenceSequence
from monitor.config import CanaryPolicy, Policy
from monitor.gates._canary import canary_gate, compare
from monitor.gates._residual_drift import residual_drift_gate
from monitor.subjects._experiments import VariantStats
from monitor.subjects._labels import ActiveCalibrator, LabelModel

from .test_canary import FACTS  # a canary monitoring at 10%

PATHS = 300
ALPHA = 0.05


def wilson_low(k: int, n: int, z: float = 1.959964) -> float:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return centre - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def plug_in_high(canary: Moments, control: Moments, ratio: float, policy: CanaryPolicy) -> float:
    """The previous sequence's upper end: each arm's own variance from 30 events on."""
    if min(canary.n, control.n) < 30:
        return math.inf
    total, p = canary.n + control.n, canary.n / (canary.n + control.n)
    sigma = math.sqrt(canary.variance / p + ratio**2 * control.variance / (1 - p))
    rho = policy.target_time / (2 * math.log(1 / ALPHA) + math.log1p(2 * math.log(1 / ALPHA)))
    u = math.sqrt((total + rho) * (math.log1p(total / rho) + 2 * math.log(1 / ALPHA)))
    return canary.mean - ratio * control.mean + sigma * u / total


def test_identical_canary_arms_with_a_rare_binary_quality_are_not_rolled_back() -> None:
    """Quality a 0/1 outcome at 5% in both arms, 10% of 3,000 units to the canary, a look
    every 50 units: the gate rolls back at most alpha of the paths."""
    policy = CanaryPolicy()
    ratio = 1 - policy.quality_drop_max
    rng = np.random.default_rng(18)
    rolled_back = plug_in = 0
    for _ in range(PATHS):
        canary, control = VariantStats(), VariantStats()
        pairs = PairedDifferenceSequence(0.1, ratio, policy.alpha, target_time=policy.target_time)
        assigned = rng.random(3000) < 0.1
        quality = (rng.random(3000) < 0.05).astype(float)
        failed = caught_plug_in = False
        for look in range(50, 3001, 50):
            units = slice(look - 50, look)
            arm_t, arm_c = quality[units][assigned[units]], quality[units][~assigned[units]]
            canary.primary.update(arm_t)
            control.primary.update(arm_c)
            pairs.update(arm_t, arm_c)
            comparison = compare(canary, control, policy, pairs)
            verdict = canary_gate("agent", FACTS, comparison, True, True, False, policy)
            failed = failed or verdict.reason == "quality_regression"
            caught_plug_in = (
                caught_plug_in or plug_in_high(canary.primary, control.primary, ratio, policy) < 0
            )
        rolled_back += failed
        plug_in += caught_plug_in
    assert rolled_back / PATHS <= ALPHA, rolled_back
    assert wilson_low(plug_in, PATHS) > ALPHA, plug_in  # the previous gate: ~20%


def test_a_stream_of_rare_binary_labels_without_a_prior_does_not_alarm() -> None:
    """0/1 labels at 10% under a calibrator right on average and without a prior
    variance (the identity's case), checked every 10 labels up to 600: the residual gate
    alarms (WARN or FAIL) on at most alpha of the paths."""
    policy = Policy()
    model = LabelModel(policy)
    rng = np.random.default_rng(10)
    alarmed = plug_in = 0
    for _ in range(PATHS):
        residuals = model.new_residuals(ActiveCalibrator.from_fields(None, None))  # the identity
        previous = NormalMixtureSequence(policy.residual_drift.alpha)
        labels = (rng.random(600) < 0.1) - 0.1
        alarm = caught_plug_in = False
        for batch in np.split(labels, 60):
            residuals.update(batch)
            previous.update(batch)
            verdict = residual_drift_gate("stream", residuals, policy.residual_drift, 0)
            alarm = alarm or verdict.verdict in ("WARN", "FAIL")
            caught_plug_in = caught_plug_in or not previous.interval.contains(0.0)
        alarmed += alarm
        plug_in += caught_plug_in
    assert alarmed / PATHS <= ALPHA, alarmed
    assert wilson_low(plug_in, PATHS) > ALPHA, plug_in  # 30 labels of 0: width 0
