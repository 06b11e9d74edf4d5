"""The canary gate: a bundle on a share of the traffic, judged against control over its life."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from estimators import (
    CoMoments,
    DifferenceInterval,
    Moments,
    PairedDifferenceSequence,
    mean_difference_sequence,
)

from ..config import CanaryPolicy
from ._verdict import Verdict, finite_or_none

__all__ = ["ArmStatistics", "CanaryFacts", "Comparison", "canary_gate", "compare"]

GATE = "canary"


@dataclass(frozen=True)
class CanaryFacts:
    """What the gate knows of the canary's lifecycle (from the canary events)."""

    bundle_id: str
    phase: str
    canary_percent: float
    hours_running: float
    seconds_without_data: float
    rollback_reason: str | None
    rollback_published: bool
    next_percent: float | None


@dataclass(frozen=True)
class Comparison:
    """Canary against control on quality and latency (anytime-valid, two-sample)."""

    quality: DifferenceInterval | None
    """Of ``quality_canary - (1 - quality_drop_max) quality_control``: below 0 surely is
    a regression; above 0 surely is non-inferiority."""
    latency: DifferenceInterval | None
    """Of ``latency_canary - (1 + latency_increase_max) latency_control`` (mean latency:
    it grows when the canary's latencies spread out, at an equal median)."""
    log_latency: DifferenceInterval | None = None
    """Of the difference of mean ``log(1 + latency)``: above ``log(1 + max)`` surely is a
    geometric mean more than ``latency_increase_max`` above control's (robust to a heavy
    tail)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            name: None
            if interval is None
            else {
                "estimate": finite_or_none(interval.estimate),
                "ci_low": finite_or_none(interval.low),
                "ci_high": finite_or_none(interval.high),
                "ratio": interval.ratio,
                "method": interval.method,
                "theta": interval.theta,
                "variance_reduction": interval.variance_reduction,
                "n_canary": interval.n_treatment,
                "n_control": interval.n_control,
            }
            for name, interval in (
                ("quality", self.quality),
                ("latency", self.latency),
                ("log_latency", self.log_latency),
            )
        }


class ArmStatistics(Protocol):
    """What the comparison reads of canary and control."""

    @property
    def primary(self) -> Moments: ...
    @property
    def primary_pre(self) -> CoMoments:
        """The outcome with the pre-period covariate (events that carry both)."""
        ...

    @property
    def latency_moments(self) -> Moments: ...
    @property
    def log_latency(self) -> Moments: ...


def compare(
    canary: ArmStatistics | None,
    control: ArmStatistics | None,
    policy: CanaryPolicy,
    quality_pairs: PairedDifferenceSequence | None = None,
) -> Comparison:
    """Quality and mean latency of the canary against control.

    ``policy.alpha`` is the total of a false rollback: a rollback reads one side of each
    two-sided sequence, so quality's (at ``alpha``) spends ``alpha / 2`` and each
    latency comparison's (at ``alpha / 2``) ``alpha / 4``.

    Quality outcomes within ``policy.quality_range`` are compared on ``quality_pairs``,
    the stage's block-paired empirical-Bernstein sequence: valid at every sample size
    (a 0/1 outcome at 5% leaves a small canary arm with a sample variance of 0). Others
    use the asymptotic sequence, CUPED-adjusted when every event with the outcome
    carried the covariate, in both arms.
    """
    if canary is None or control is None:
        return Comparison(None, None)
    quality = None
    primary_c, primary_k = canary.primary, control.primary
    if quality_pairs is not None and quality_pairs.in_range:
        quality = quality_pairs.interval
    elif primary_c.n and primary_k.n:
        pre_c, pre_k = canary.primary_pre, control.primary_pre
        adjust = pre_c.n == primary_c.n and pre_k.n == primary_k.n
        quality = mean_difference_sequence(
            pre_c if adjust else primary_c,
            pre_k if adjust else primary_k,
            ratio=1 - policy.quality_drop_max,
            alpha=policy.alpha,
            target_time=policy.target_time,
            adjust=adjust,
        )
    latency = log_latency = None
    latency_c, latency_k = canary.latency_moments, control.latency_moments
    if latency_c.n and latency_k.n:
        latency = mean_difference_sequence(
            latency_c,
            latency_k,
            ratio=1 + policy.latency_increase_max,
            alpha=policy.alpha / 2,
            target_time=policy.target_time,
        )
        log_latency = mean_difference_sequence(
            canary.log_latency,
            control.log_latency,
            alpha=policy.alpha / 2,
            target_time=policy.target_time,
        )
    return Comparison(quality, latency, log_latency)


def _evidence(facts: CanaryFacts, comparison: Comparison, policy: CanaryPolicy) -> dict[str, Any]:
    quality = comparison.quality
    return {
        "n": quality.n_treatment if quality else 0,
        "estimate": finite_or_none(quality.estimate) if quality else None,
        "ci_low": finite_or_none(quality.low) if quality else None,
        "ci_high": finite_or_none(quality.high) if quality else None,
        "threshold": 1 - policy.quality_drop_max,
        "method": quality.method if quality else "asymptotic_cs_difference",
        "alpha": policy.alpha,
        "bundle_id": facts.bundle_id,
        "canary_percent": facts.canary_percent,
        "hours_running": facts.hours_running,
        "comparison": comparison.to_dict(),
    }


def canary_gate(
    agent: str,
    facts: CanaryFacts,
    comparison: Comparison,
    guardrails_pass: bool,
    srm_pass: bool,
    enough_data: bool,
    policy: CanaryPolicy,
) -> Verdict:
    """Roll back, hold, promote or keep monitoring: in that order of precedence.

    * rolled back (by driftgate or by hand): FAIL, ``rollback`` until announced once;
    * quality surely more than ``quality_drop_max`` below control, or latency (the mean,
      or the geometric mean) surely more than ``latency_increase_max`` above: FAIL,
      ``quality_regression`` /
      ``latency_regression`` (compared with control, on confidence sequences, so
      continuous monitoring does not inflate false rollbacks; a canary with too little
      traffic has infinite intervals and is never rolled back for it);
    * paused by a person: HOLD (``paused``), and the stale-data clock stops;
    * no canary data for ``stale_after_seconds``: HOLD; for
      ``stale_rollback_after_seconds``: FAIL (``stale_data``): never promote blind;
    * quality surely non-inferior, every guardrail passing, no sample ratio mismatch
      and ``min_n`` events in each arm: PASS, ``promote`` (to the next ladder step);
    * monitoring for over ``stall_hours``: WARN, ``alert`` (``stalled``: a person must
      decide, as the runbook says);
    * otherwise INCONCLUSIVE (``monitoring``).
    """
    evidence = _evidence(facts, comparison, policy)
    if facts.phase == "rolled_back":
        action = "none" if facts.rollback_published else "rollback"
        return Verdict(
            GATE, agent, "FAIL", action, facts.rollback_reason or "rolled_back", evidence
        )
    if facts.phase == "promoted":
        return Verdict(GATE, agent, "PASS", "none", "promoted", evidence)
    quality, latency = comparison.quality, comparison.latency
    if quality is not None and quality.high < 0:
        return Verdict(
            GATE, agent, "FAIL", policy.regression_action, "quality_regression", evidence
        )
    log_latency = comparison.log_latency
    if (latency is not None and latency.low > 0) or (
        log_latency is not None and log_latency.low > math.log1p(policy.latency_increase_max)
    ):
        return Verdict(
            GATE, agent, "FAIL", policy.regression_action, "latency_regression", evidence
        )
    if facts.phase == "paused":  # paused by a person: the fail-safe's clock stops
        return Verdict(GATE, agent, "HOLD", "hold", "paused", evidence)
    if facts.seconds_without_data >= policy.stale_rollback_after_seconds:
        return Verdict(GATE, agent, "FAIL", "rollback", "stale_data", evidence)
    if facts.seconds_without_data >= policy.stale_after_seconds:
        return Verdict(GATE, agent, "HOLD", "hold", "stale_data", evidence)
    if (
        quality is not None
        and quality.low > 0
        and guardrails_pass
        and srm_pass
        and enough_data
        and facts.next_percent is not None
    ):
        evidence["next_percent"] = facts.next_percent
        return Verdict(GATE, agent, "PASS", "promote", "promotion_ready", evidence)
    if facts.hours_running > policy.stall_hours:
        return Verdict(GATE, agent, "WARN", "alert", "stalled", evidence)
    reason = "monitoring" if enough_data else "insufficient_data"
    return Verdict(GATE, agent, "INCONCLUSIVE", "none", reason, evidence)
