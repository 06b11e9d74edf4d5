from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from estimators import Moments, QuantileSketch
from monitor import Policy
from monitor.config import ConfigError, GuardrailPolicy, load_policy
from monitor.gates import Verdict
from monitor.gates._guardrails import (
    GUARDRAILS,
    GuardrailReading,
    guardrail_gate,
    read_guardrails,
)
from monitor.subjects._experiments import (
    ExperimentModel,
    ExperimentState,
    Lifecycle,
    VariantStats,
)

POLICY = GuardrailPolicy()
NOW = 1_795_341_600.0


def by_name(stats: VariantStats, policy: GuardrailPolicy = POLICY) -> dict[str, GuardrailReading]:
    readings = read_guardrails(stats, policy)
    names = [r.guardrail for r in readings]
    assert len(names) == len(set(names))
    return {r.guardrail: r for r in readings}


def latencies(mean_log: float, n: int, seed: int = 0) -> QuantileSketch:
    return QuantileSketch().update(np.random.default_rng(seed).lognormal(mean_log, 0.3, n))


def moments(mean: float, sd: float, n: int, seed: int = 0) -> Moments:
    return Moments().update(np.random.default_rng(seed).normal(mean, sd, n))


# --- which readings exist -------------------------------------------------------------------------


def test_fields_never_sent_give_no_reading() -> None:
    assert read_guardrails(VariantStats(), POLICY) == []
    # Events were counted, but none carried a guardrail or an outcome.
    assert read_guardrails(VariantStats(n=5000), POLICY) == []
    only_toxicity = VariantStats(n=3000, toxicity_n=3000, toxic=3)
    assert list(by_name(only_toxicity)) == ["toxicity_rate"]
    only_latency = VariantStats(n=300, latency=latencies(6.0, 300))
    assert list(by_name(only_latency)) == ["latency_p95_ms"]


def test_every_guardrail_that_has_data_is_read_in_the_contract_order() -> None:
    stats = VariantStats(
        n=5000,
        toxicity_n=5000,
        toxic=5,
        pii_n=3000,
        pii=0,
        latency=latencies(6.0, 3000),
        cost=moments(0.004, 0.001, 3000),
        primary=moments(0.8, 0.1, 3000),
        segments={"en": moments(0.8, 0.1, 1500, 1), "de": moments(0.79, 0.1, 1500, 2)},
    )
    readings = read_guardrails(stats, POLICY)
    order = [r.guardrail for r in readings]
    assert sorted(order, key=GUARDRAILS.index) == sorted(GUARDRAILS, key=GUARDRAILS.index)
    assert {r.guardrail: r.status for r in readings} == {
        "pii_rate": "pass",
        "toxicity_rate": "pass",
        "latency_p95_ms": "pass",
        "unit_cost_mean": "pass",
        "disparity_ratio": "pass",
        "primary_outcome_mean": "info",
    }
    primary = next(r for r in readings if r.guardrail == "primary_outcome_mean")
    assert primary.threshold is None and primary.n == 3000
    assert primary.low is not None and primary.high is not None
    assert primary.low < 0.8 < primary.high
    as_dict = primary.to_dict()
    assert set(as_dict) == {"value", "ci_low", "ci_high", "threshold", "n", "status"}


# --- PII: zero tolerance --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pii_n", "pii", "status"),
    [
        (1, 1, "breach"),  # one event is enough: no statistics
        (100_000, 1, "breach"),
        (50, 0, "unknown"),  # fewer than min_n clean events
        (100, 0, "pass"),
        (5000, 0, "pass"),
    ],
)
def test_pii_has_zero_tolerance(pii_n: int, pii: int, status: str) -> None:
    reading = by_name(VariantStats(n=pii_n, pii_n=pii_n, pii=pii))["pii_rate"]
    assert reading.status == status
    assert (reading.threshold, reading.n) == (0.0, pii_n)
    assert reading.value == pytest.approx(pii / pii_n)


# --- toxicity: a rate, judged on its anytime-valid bounds -----------------------------------------


@pytest.mark.parametrize(
    ("n", "toxic", "status"),
    [
        # At alpha / 4 (four guardrails share the gate's alpha), with the mixture tuned to
        # the 0.5% ceiling (Beta(1, 100)):
        (2000, 30, "breach"),  # 1.5%: the lower bound (~0.73%) is above 0.5%
        (2000, 25, "breach"),  # 1.25%: ~0.57%
        (2000, 20, "unknown"),  # 1.0%: ~0.41%, not yet
        (1000, 15, "breach"),  # 1.5% on 1,000 events: ~0.53%
        (1000, 12, "unknown"),  # 1.2% on 1,000 events: ~0.37%, not yet
        (10_000, 20, "pass"),  # 0.2%: the upper bound (~0.41%) is below 0.5%
        (10_000, 10, "pass"),
        (5000, 10, "unknown"),  # 0.2% on 5,000 events: upper bound ~0.52%, not below 0.5%
        (50, 0, "unknown"),  # fewer than min_n
    ],
)
def test_toxicity_breaches_on_the_lower_bound_and_passes_on_the_upper(
    n: int, toxic: int, status: str
) -> None:
    reading = by_name(VariantStats(n=n, toxicity_n=n, toxic=toxic))["toxicity_rate"]
    assert reading.status == status
    assert reading.threshold == POLICY.toxicity_rate_max
    assert reading.value == pytest.approx(toxic / n)
    assert reading.low is not None and reading.high is not None
    if status == "breach":
        assert reading.low > POLICY.toxicity_rate_max
    if status == "pass":
        assert reading.high <= POLICY.toxicity_rate_max


def test_toxicity_threshold_comes_from_the_policy() -> None:
    stats = VariantStats(n=10_000, toxicity_n=10_000, toxic=20)
    assert by_name(stats)["toxicity_rate"].status == "pass"
    strict = GuardrailPolicy(toxicity_rate_max=0.0005)
    assert by_name(stats, strict)["toxicity_rate"].status == "breach"


# --- latency: the p95 ceiling as the share of latencies above it ----------------------------------


@pytest.mark.parametrize(
    ("mean_log", "n", "status"),
    [
        (6.8, 4000, "breach"),  # p95 ~1,470 ms
        (7.5, 200, "breach"),  # p95 ~2,950 ms: obvious on few events
        (6.0, 2000, "pass"),  # p95 ~660 ms
        (6.0, 60, "unknown"),  # well below, but fewer than min_n
        (6.6, 150, "unknown"),  # p95 ~1,200 ms: either way on 150 events
    ],
)
def test_latency_p95_ceiling(mean_log: float, n: int, status: str) -> None:
    reading = by_name(VariantStats(n=n, latency=latencies(mean_log, n)))["latency_p95_ms"]
    assert reading.status == status
    assert (reading.threshold, reading.n) == (POLICY.latency_p95_ms_max, n)
    # What is shown is the p95 and its interval (in ms), not the rate judged.
    true_p95 = float(np.exp(mean_log + 0.3 * 1.6449))
    assert reading.value is not None and reading.value == pytest.approx(true_p95, rel=0.15)
    assert reading.low is not None and reading.low <= reading.value
    if reading.high is not None:
        assert reading.value <= reading.high


# --- unit cost ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "n", "status"),
    [
        (0.02, 500, "breach"),
        (0.004, 500, "pass"),
        (0.004, 50, "unknown"),  # fewer than min_n
        (0.012, 5000, "unknown"),  # right at the ceiling
    ],
)
def test_unit_cost_ceiling(mean: float, n: int, status: str) -> None:
    cost = moments(mean, 0.002, n)
    reading = by_name(VariantStats(n=n, cost=cost))["unit_cost_mean"]
    assert reading.status == status
    assert (reading.threshold, reading.n) == (POLICY.unit_cost_max, n)
    assert reading.value == cost.mean


# --- disparity across segments --------------------------------------------------------------------


def test_disparity_below_the_four_fifths_floor_breaches() -> None:
    stats = VariantStats(
        n=9000,
        primary=moments(0.7, 0.1, 9000),
        segments={
            "en": moments(0.80, 0.1, 3000, 1),
            "de": moments(0.78, 0.1, 3000, 2),
            "sw": moments(0.50, 0.1, 3000, 3),
        },
    )
    reading = by_name(stats)["disparity_ratio"]
    assert reading.status == "breach"
    assert reading.threshold == POLICY.disparity_ratio_min
    assert reading.value == pytest.approx(0.5 / 0.8, rel=0.02)
    assert reading.high is not None and reading.high < 0.8
    assert reading.n == 9000


def test_disparity_of_similar_segments_passes_and_one_segment_gives_none() -> None:
    similar = {"en": moments(0.80, 0.1, 3000, 1), "de": moments(0.79, 0.1, 3000, 2)}
    stats = VariantStats(n=6000, primary=moments(0.8, 0.1, 6000), segments=similar)
    assert by_name(stats)["disparity_ratio"].status == "pass"
    lonely = VariantStats(n=3000, primary=moments(0.8, 0.1, 3000), segments={"en": similar["en"]})
    assert "disparity_ratio" not in by_name(lonely)
    # Segments too small for the comparison give no reading either.
    tiny = {"en": moments(0.8, 0.1, 10, 1), "de": moments(0.5, 0.1, 10, 2)}
    assert "disparity_ratio" not in by_name(VariantStats(n=20, segments=tiny))


def test_the_disparity_bounds_allow_for_the_segments_planned(tmp_path: Path) -> None:
    segments = {"en": moments(0.80, 0.1, 3000, 1), "sw": moments(0.60, 0.1, 3000, 2)}
    stats = VariantStats(n=6000, primary=moments(0.7, 0.1, 6000), segments=segments)
    few, many = (
        by_name(stats, GuardrailPolicy(disparity_segments=k))["disparity_ratio"] for k in (2, 50)
    )
    assert few.value == many.value
    assert many.low is not None and few.low is not None and many.low < few.low
    assert many.high is not None and few.high is not None and many.high > few.high
    policy = tmp_path / "policy.yaml"
    policy.write_text("guardrails: {disparity_segments: 1}\n")
    with pytest.raises(ConfigError, match=r"guardrails\.disparity_segments must be at least 2"):
        load_policy(str(policy))


def test_negative_primary_outcomes_in_segments_do_not_crash_the_guardrails() -> None:
    segments = {"en": moments(-0.2, 0.1, 500, 1), "de": moments(0.3, 0.1, 500, 2)}
    stats = VariantStats(n=1000, primary=moments(0.05, 0.3, 1000), segments=segments)
    readings = by_name(stats)
    assert readings["primary_outcome_mean"].status == "info"


# --- the gate -------------------------------------------------------------------------------------


def reading(guardrail: str, status: str, n: int = 1000) -> GuardrailReading:
    return GuardrailReading(guardrail, 0.5, 0.4, 0.6, 0.3, n, status)


BREACHABLE = [g for g in GUARDRAILS if g != "primary_outcome_mean"]


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.permutations(BREACHABLE, 2)),
)
def test_the_most_severe_breach_names_the_reason(first: str, second: str) -> None:
    """pii_leak before toxicity_rate before latency_p95 before unit_cost before disparity,
    whatever the order of the readings and the variants."""
    worse = min(first, second, key=GUARDRAILS.index)
    reasons = {
        "pii_rate": "pii_leak",
        "toxicity_rate": "toxicity_rate",
        "latency_p95_ms": "latency_p95",
        "unit_cost_mean": "unit_cost",
        "disparity_ratio": "disparity_ratio",
    }
    readings = {
        "b": [reading("toxicity_rate", "pass"), reading(second, "breach", 7)],
        "a": [reading(first, "breach", 5), reading("unit_cost_mean", "unknown")],
    }
    verdict = guardrail_gate("agent", readings, POLICY, "rollback")
    assert (verdict.gate, verdict.subject) == ("guardrail", "agent")
    assert (verdict.verdict, verdict.action, verdict.reason) == ("FAIL", "rollback", reasons[worse])
    assert verdict.evidence["guardrail"] == worse
    assert verdict.evidence["variant"] == ("a" if worse == first else "b")
    assert verdict.evidence["n"] == (5 if worse == first else 7)


def test_breach_evidence_follows_the_contract_and_keeps_the_context() -> None:
    verdict = guardrail_gate(
        "agent",
        {"canary": [GuardrailReading("toxicity_rate", 0.02, 0.01, 0.03, 0.005, 2000, "breach")]},
        POLICY,
        "rollback",
        {"bundle_id": "v2", "canary_percent": 10.0},
    )
    assert verdict.evidence == {
        "method": "anytime_valid_bounds",
        "alpha": POLICY.alpha,
        "alpha_each": POLICY.alpha / 4,  # four tested guardrails, one variant judged
        "bundle_id": "v2",
        "canary_percent": 10.0,
        "n": 2000,
        "estimate": 0.02,
        "ci_low": 0.01,
        "ci_high": 0.03,
        "threshold": 0.005,
        "guardrail": "toxicity_rate",
        "variant": "canary",
    }


@pytest.mark.parametrize("action", ["rollback", "alert", "hold"])
def test_the_action_is_the_callers(action: str) -> None:
    verdict = guardrail_gate("s", {"v": [reading("pii_rate", "breach")]}, POLICY, action)
    assert (verdict.verdict, verdict.action) == ("FAIL", action)


@pytest.mark.parametrize(
    ("readings", "verdict", "reason"),
    [
        ({}, "INCONCLUSIVE", "insufficient_data"),
        ({"canary": []}, "INCONCLUSIVE", "insufficient_data"),
        (
            {"canary": [reading("primary_outcome_mean", "info")]},
            "INCONCLUSIVE",
            "insufficient_data",
        ),
        (
            {"canary": [reading("toxicity_rate", "pass"), reading("latency_p95_ms", "unknown")]},
            "INCONCLUSIVE",
            "insufficient_data",
        ),
        (
            {"a": [reading("toxicity_rate", "pass")], "b": [reading("toxicity_rate", "unknown")]},
            "INCONCLUSIVE",
            "insufficient_data",
        ),
        (
            {
                "canary": [
                    reading("toxicity_rate", "pass", 900),
                    reading("primary_outcome_mean", "info", 10),
                    reading("latency_p95_ms", "pass", 800),
                ]
            },
            "PASS",
            "within_guardrails",
        ),
    ],
)
def test_pass_needs_every_judged_guardrail_to_pass(
    readings: dict[str, list[GuardrailReading]], verdict: str, reason: str
) -> None:
    result = guardrail_gate("s", readings, POLICY, "rollback")
    assert (result.verdict, result.action, result.reason) == (verdict, "none", reason)
    assert {"n", "estimate", "ci_low", "ci_high", "threshold", "method"} <= set(result.evidence)
    if verdict == "PASS":
        assert result.evidence["n"] == 800  # the least-informed guardrail judged


def test_too_little_data_is_inconclusive_from_real_statistics() -> None:
    stats = VariantStats(
        n=40,
        toxicity_n=40,
        toxic=0,
        pii_n=40,
        pii=0,
        latency=latencies(6.0, 40),
        cost=moments(0.004, 0.001, 40),
    )
    readings = read_guardrails(stats, POLICY)
    assert {r.status for r in readings} == {"unknown"}
    verdict = guardrail_gate("s", {"canary": readings}, POLICY, "rollback")
    assert (verdict.verdict, verdict.reason, verdict.evidence["n"]) == (
        "INCONCLUSIVE",
        "insufficient_data",
        40,
    )


# --- through the experiment model: a canary rolls back, an A/B test alerts ------------------------


def toxic(n: int = 2000, toxic: int = 40) -> VariantStats:
    return VariantStats(n=n, toxicity_n=n, toxic=toxic)


def clean(n: int = 10_000) -> VariantStats:
    return VariantStats(n=n, toxicity_n=n, toxic=0)


def guardrail_verdict(
    state: ExperimentState, subject: str = "agent", policy: Policy | None = None
) -> Verdict:
    verdicts = ExperimentModel(policy or Policy()).evaluate(subject, state, NOW).verdicts
    return next(v for v in verdicts if v.gate == "guardrail")


def canary_state(phase: str = "monitoring", **variants: VariantStats) -> ExperimentState:
    lifecycle = Lifecycle("v2", phase, 10.0, deployed_at=NOW - 600, stage_started_at=NOW - 600)
    return ExperimentState(variants=dict(variants), lifecycle=lifecycle)


@pytest.mark.parametrize("phase", ["monitoring", "paused"])
def test_a_breach_of_an_active_canary_takes_the_policy_action(phase: str) -> None:
    verdict = guardrail_verdict(canary_state(phase, canary=toxic(), control=clean()))
    assert (verdict.verdict, verdict.action, verdict.reason) == (
        "FAIL",
        "rollback",
        "toxicity_rate",
    )
    assert verdict.evidence["bundle_id"] == "v2" and verdict.evidence["canary_percent"] == 10.0
    assert verdict.evidence["variant"] == "canary"
    custom = Policy(guardrails=GuardrailPolicy(action="hold"))
    held = guardrail_verdict(canary_state(phase, canary=toxic(), control=clean()), policy=custom)
    assert (held.verdict, held.action) == ("FAIL", "hold")


@pytest.mark.parametrize("phase", ["rolled_back", "promoted"])
def test_a_breach_of_a_finished_canary_only_alerts(phase: str) -> None:
    verdict = guardrail_verdict(canary_state(phase, canary=toxic(), control=clean()))
    assert (verdict.verdict, verdict.action) == ("FAIL", "alert")


def test_an_ab_test_breach_only_alerts() -> None:
    state = ExperimentState(variants={"control": clean(), "b": clean(), "c": toxic()})
    verdict = guardrail_verdict(state, "exp")
    assert (verdict.verdict, verdict.action, verdict.reason) == ("FAIL", "alert", "toxicity_rate")
    assert verdict.evidence["variant"] == "c"
    assert "bundle_id" not in verdict.evidence


def test_only_the_judged_variants_decide() -> None:
    """The canary's guardrails decide for a canary, not control's; every A/B variant but
    control's for an experiment."""
    canary = guardrail_verdict(canary_state(canary=clean(), control=toxic()))
    assert (canary.verdict, canary.reason) == ("PASS", "within_guardrails")
    ab = guardrail_verdict(ExperimentState(variants={"control": toxic(), "b": clean()}), "exp")
    assert ab.verdict == "PASS"
    # No canary data yet: nothing to judge.
    waiting = guardrail_verdict(canary_state(control=toxic()))
    assert (waiting.verdict, waiting.reason) == ("INCONCLUSIVE", "insufficient_data")
