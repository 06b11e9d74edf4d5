from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from estimators import CoMoments, DifferenceInterval, Moments, mean_difference_sequence
from monitor.config import CanaryPolicy
from monitor.gates._canary import CanaryFacts, Comparison, canary_gate, compare

POLICY = CanaryPolicy()
INF = math.inf

FACTS = CanaryFacts(
    bundle_id="v2",
    phase="monitoring",
    canary_percent=10.0,
    hours_running=1.0,
    seconds_without_data=0.0,
    rollback_reason=None,
    rollback_published=False,
    next_percent=50.0,
)


def interval(low: float, high: float, estimate: float | None = None) -> DifferenceInterval:
    middle = (low + high) / 2 if estimate is None else estimate
    return DifferenceInterval(middle, low, high, 1000, 9000, 1.0, "asymptotic_cs")


NON_INFERIOR = interval(0.01, 0.05)  # quality surely above 95% of control's
REGRESSED = interval(-0.06, -0.01)  # quality surely below 95% of control's
UNSURE = interval(-0.02, 0.02)
SLOWER = interval(5.0, 40.0)  # mean latency surely above 110% of control's
NOT_SLOWER = interval(-40.0, -5.0)
READY = Comparison(NON_INFERIOR, NOT_SLOWER)


def gate(
    facts: CanaryFacts = FACTS,
    comparison: Comparison = READY,
    guardrails_pass: bool = True,
    srm_pass: bool = True,
    enough_data: bool = True,
    policy: CanaryPolicy = POLICY,
) -> tuple[str, str, str]:
    verdict = canary_gate(
        "agent", facts, comparison, guardrails_pass, srm_pass, enough_data, policy
    )
    assert (verdict.gate, verdict.subject) == ("canary", "agent")
    return verdict.verdict, verdict.action, verdict.reason


# --- the order of precedence ----------------------------------------------------------------------

EVERYTHING_WRONG: dict[str, Any] = {
    "comparison": Comparison(REGRESSED, SLOWER),
    "guardrails_pass": False,
    "srm_pass": False,
}


def test_a_rolled_back_canary_fails_with_rollback_until_it_is_announced() -> None:
    rolled = replace(FACTS, phase="rolled_back", rollback_reason="toxicity_rate")
    assert gate(rolled, **EVERYTHING_WRONG) == ("FAIL", "rollback", "toxicity_rate")
    assert gate(rolled) == ("FAIL", "rollback", "toxicity_rate")  # even when all is well now
    announced = replace(rolled, rollback_published=True)
    assert gate(announced, **EVERYTHING_WRONG) == ("FAIL", "none", "toxicity_rate")
    stale = replace(announced, seconds_without_data=1e9, hours_running=1e4)
    assert gate(stale) == ("FAIL", "none", "toxicity_rate")
    # Without a recorded reason (a hand-made state): "rolled_back".
    assert gate(replace(FACTS, phase="rolled_back")) == ("FAIL", "rollback", "rolled_back")


def test_a_promoted_canary_passes_quietly() -> None:
    promoted = replace(FACTS, phase="promoted", canary_percent=100.0, next_percent=None)
    assert gate(promoted, **EVERYTHING_WRONG) == ("PASS", "none", "promoted")


def test_quality_regression_comes_before_everything_but_a_rollback() -> None:
    stale_paused = replace(FACTS, phase="paused", seconds_without_data=1e6, hours_running=100.0)
    expected = ("FAIL", "rollback", "quality_regression")
    assert gate(comparison=Comparison(REGRESSED, SLOWER)) == expected
    assert gate(stale_paused, Comparison(REGRESSED, None), False, False, False) == expected
    assert gate(comparison=Comparison(REGRESSED, None)) == expected


def test_latency_regression_comes_next() -> None:
    stale_paused = replace(FACTS, phase="paused", seconds_without_data=1e6, hours_running=100.0)
    expected = ("FAIL", "rollback", "latency_regression")
    assert gate(comparison=Comparison(UNSURE, SLOWER)) == expected
    assert gate(comparison=Comparison(NON_INFERIOR, SLOWER)) == expected  # not promoted
    assert gate(stale_paused, Comparison(None, SLOWER)) == expected


def test_the_regression_action_is_the_policys() -> None:
    alerting = CanaryPolicy(regression_action="alert")
    assert gate(comparison=Comparison(REGRESSED, None), policy=alerting) == (
        "FAIL",
        "alert",
        "quality_regression",
    )
    assert gate(comparison=Comparison(None, SLOWER), policy=alerting)[:2] == ("FAIL", "alert")


def test_too_little_traffic_is_never_rolled_back() -> None:
    """A canary with few events has infinite intervals, whatever its estimate."""
    blind = Comparison(interval(-INF, INF, -0.5), interval(-INF, INF, 300.0))
    assert gate(comparison=blind, enough_data=False) == (
        "INCONCLUSIVE",
        "none",
        "insufficient_data",
    )


@pytest.mark.parametrize(
    ("seconds", "phase", "expected"),
    [
        (899.0, "monitoring", ("PASS", "promote", "promotion_ready")),
        (900.0, "monitoring", ("HOLD", "hold", "stale_data")),  # never promote blind
        (3599.0, "monitoring", ("HOLD", "hold", "stale_data")),
        (3600.0, "monitoring", ("FAIL", "rollback", "stale_data")),
        # Paused by a person: HOLD, and the stale-data clock stops.
        (0.0, "paused", ("HOLD", "hold", "paused")),
        (900.0, "paused", ("HOLD", "hold", "paused")),
        (3600.0, "paused", ("HOLD", "hold", "paused")),
        (1e7, "paused", ("HOLD", "hold", "paused")),
    ],
)
def test_stale_data_holds_then_rolls_back_and_pause_holds(
    seconds: float, phase: str, expected: tuple[str, str, str]
) -> None:
    facts = replace(FACTS, phase=phase, seconds_without_data=seconds)
    assert gate(facts) == expected


def test_stale_rollback_does_not_follow_the_regression_action() -> None:
    stale = replace(FACTS, seconds_without_data=3600.0)
    assert gate(stale, policy=CanaryPolicy(regression_action="alert"))[:2] == ("FAIL", "rollback")
    custom = CanaryPolicy(stale_after_seconds=10.0, stale_rollback_after_seconds=20.0)
    assert gate(replace(FACTS, seconds_without_data=10.0), policy=custom)[0] == "HOLD"
    assert gate(replace(FACTS, seconds_without_data=20.0), policy=custom)[0] == "FAIL"


def test_promotion_when_everything_is_ready() -> None:
    verdict = canary_gate("agent", FACTS, READY, True, True, True, POLICY)
    assert (verdict.verdict, verdict.action, verdict.reason) == (
        "PASS",
        "promote",
        "promotion_ready",
    )
    assert verdict.evidence["next_percent"] == 50.0
    # Latency need not be surely better, only not surely worse; nor measured at all.
    assert gate(comparison=Comparison(NON_INFERIOR, UNSURE))[1] == "promote"
    assert gate(comparison=Comparison(NON_INFERIOR, None))[1] == "promote"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"comparison": Comparison(UNSURE, NOT_SLOWER)}, "monitoring"),
        ({"comparison": Comparison(interval(0.0, 0.04), NOT_SLOWER)}, "monitoring"),  # low == 0
        ({"comparison": Comparison(None, NOT_SLOWER)}, "monitoring"),
        ({"guardrails_pass": False}, "monitoring"),
        ({"srm_pass": False}, "monitoring"),
        ({"enough_data": False}, "insufficient_data"),
        ({"facts": replace(FACTS, canary_percent=100.0, next_percent=None)}, "monitoring"),
    ],
)
def test_promotion_needs_every_condition(change: dict, reason: str) -> None:
    assert gate(**change) == ("INCONCLUSIVE", "none", reason)
    # ... and past stall_hours, the runbook's stall alert instead.
    stalled = {**change, "facts": replace(change.get("facts", FACTS), hours_running=72.5)}
    assert gate(**stalled) == ("WARN", "alert", "stalled")


def test_stalled_after_72_hours_unless_promotable() -> None:
    assert gate(replace(FACTS, hours_running=72.0), guardrails_pass=False)[0] == "INCONCLUSIVE"
    assert gate(replace(FACTS, hours_running=72.01), guardrails_pass=False) == (
        "WARN",
        "alert",
        "stalled",
    )
    assert gate(replace(FACTS, hours_running=500.0))[1] == "promote"
    assert (
        gate(
            replace(FACTS, hours_running=10.0),
            guardrails_pass=False,
            policy=CanaryPolicy(stall_hours=8.0),
        )[0]
        == "WARN"
    )


def test_evidence_carries_the_bundle_and_the_comparison() -> None:
    verdict = canary_gate("agent", FACTS, Comparison(UNSURE, None), True, True, False, POLICY)
    evidence = verdict.evidence
    assert evidence["bundle_id"] == "v2" and evidence["canary_percent"] == 10.0
    assert evidence["hours_running"] == 1.0
    assert evidence["threshold"] == pytest.approx(0.95)
    assert (evidence["n"], evidence["ci_low"], evidence["ci_high"]) == (1000, -0.02, 0.02)
    assert evidence["comparison"]["latency"] is None
    assert evidence["comparison"]["quality"]["n_control"] == 9000
    assert "next_percent" not in evidence
    empty = canary_gate("agent", FACTS, Comparison(None, None), True, True, False, POLICY)
    assert (empty.evidence["n"], empty.evidence["estimate"], empty.evidence["ci_low"]) == (
        0,
        None,
        None,
    )
    infinite = Comparison(interval(-INF, INF, 0.1), None).to_dict()["quality"]
    assert (infinite["estimate"], infinite["ci_low"], infinite["ci_high"]) == (0.1, None, None)


# --- compare: canary against control --------------------------------------------------------------


@dataclass
class Arm:
    primary: Moments = field(default_factory=Moments)
    primary_pre: CoMoments = field(default_factory=CoMoments)
    latency_moments: Moments = field(default_factory=Moments)
    log_latency: Moments = field(default_factory=Moments)


def arm(rng: np.random.Generator, n: int, quality: float, covered: int | None = None) -> Arm:
    """``n`` outcomes correlated with a pre-period covariate; ``covered`` of them carry it."""
    pre = rng.normal(0.8, 0.1, n)
    outcome = quality + 0.8 * (pre - 0.8) + rng.normal(0, 0.05, n)
    covered = n if covered is None else covered
    latency = rng.lognormal(6.0, 0.3, n)
    return Arm(
        Moments().update(outcome),
        CoMoments().update(pre[:covered], outcome[:covered]),
        Moments().update(latency),
        Moments().update(np.log1p(latency)),
    )


def test_cuped_is_used_when_every_outcome_carries_the_covariate_in_both_arms() -> None:
    rng = np.random.default_rng(1)
    canary, control = arm(rng, 500, 0.8), arm(rng, 4500, 0.8)
    comparison = compare(canary, control, POLICY)
    assert comparison.quality is not None and comparison.latency is not None
    quality = comparison.quality
    assert quality.method == "asymptotic_cs_cuped"
    assert quality.theta is not None and quality.variance_reduction is not None
    assert quality.variance_reduction > 0.5
    assert quality == mean_difference_sequence(
        canary.primary_pre,
        control.primary_pre,
        ratio=0.95,
        alpha=POLICY.alpha,
        target_time=POLICY.target_time,
        adjust=True,
    )
    # A rollback reads one side of each: quality spends alpha / 2, each latency alpha / 4.
    assert comparison.latency == mean_difference_sequence(
        canary.latency_moments,
        control.latency_moments,
        ratio=1.10,
        alpha=POLICY.alpha / 2,
        target_time=POLICY.target_time,
    )
    document = comparison.to_dict()
    assert document["quality"]["method"] == "asymptotic_cs_cuped"
    assert document["quality"]["ratio"] == pytest.approx(0.95)
    assert document["latency"]["ratio"] == pytest.approx(1.10)
    assert (document["quality"]["n_canary"], document["quality"]["n_control"]) == (500, 4500)


@pytest.mark.parametrize(("canary_covered", "control_covered"), [(499, 4500), (500, 4499), (0, 0)])
def test_without_the_covariate_on_every_outcome_the_comparison_is_unadjusted(
    canary_covered: int, control_covered: int
) -> None:
    rng = np.random.default_rng(2)
    canary = arm(rng, 500, 0.8, canary_covered)
    control = arm(rng, 4500, 0.8, control_covered)
    quality = compare(canary, control, POLICY).quality
    assert quality is not None
    assert quality.method == "asymptotic_cs" and quality.theta is None
    assert quality == mean_difference_sequence(
        canary.primary,
        control.primary,
        ratio=0.95,
        alpha=POLICY.alpha,
        target_time=POLICY.target_time,
    )


def test_compare_with_a_missing_arm_or_field() -> None:
    rng = np.random.default_rng(3)
    control = arm(rng, 1000, 0.8)
    assert compare(None, control, POLICY) == Comparison(None, None)
    assert compare(control, None, POLICY) == Comparison(None, None)
    no_latency = Arm(control.primary, control.primary_pre)
    result = compare(no_latency, control, POLICY)
    assert result.quality is not None and result.latency is None
    no_outcome = Arm(latency_moments=control.latency_moments, log_latency=control.log_latency)
    result = compare(no_outcome, control, POLICY)
    assert result.quality is None and result.latency is not None
    assert Comparison(None, None).to_dict() == {
        "quality": None,
        "latency": None,
        "log_latency": None,
    }


def test_compare_sees_a_regression_and_the_gate_rolls_it_back() -> None:
    rng = np.random.default_rng(4)
    worse, control = arm(rng, 1000, 0.72), arm(rng, 9000, 0.80)
    comparison = compare(worse, control, POLICY)
    assert comparison.quality is not None and comparison.quality.high < 0
    assert gate(comparison=comparison) == ("FAIL", "rollback", "quality_regression")
    same = compare(arm(rng, 1000, 0.8), control, POLICY)
    assert same.quality is not None and same.quality.low > 0
    assert gate(comparison=same) == ("PASS", "promote", "promotion_ready")


def test_a_heavy_tailed_latency_shift_is_caught_on_the_geometric_mean() -> None:
    """Log-normal latencies with sigma 2: the mean is dominated by a few huge values and
    its interval stays wide, while the geometric mean, 30% higher, is surely above 10%."""
    rng = np.random.default_rng(11)

    def latencies(n: int, log_mean: float) -> Arm:
        values = rng.lognormal(log_mean, 2.0, n)
        return Arm(
            latency_moments=Moments().update(values), log_latency=Moments().update(np.log1p(values))
        )

    canary, control = latencies(3000, 6.0 + np.log(1.3)), latencies(27_000, 6.0)
    comparison = compare(canary, control, POLICY)
    assert comparison.latency is not None and comparison.log_latency is not None
    assert comparison.latency.low <= 0  # the mean alone does not show it yet
    assert comparison.log_latency.low > np.log1p(POLICY.latency_increase_max)
    verdict = canary_gate("a", FACTS, comparison, True, True, True, POLICY)
    assert (verdict.verdict, verdict.reason) == ("FAIL", "latency_regression")
