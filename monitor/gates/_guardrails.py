"""The guardrail gate: safety, fairness, latency and cost of a variant, on anytime-valid bounds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from estimators import (
    BernoulliSequence,
    Moments,
    NormalMixtureSequence,
    QuantileSketch,
    disparity_ratio_sequence,
    exceedance_sequence,
    quantile_interval,
)

from ..config import GuardrailPolicy
from ._verdict import Verdict, finite_or_none

__all__ = [
    "GUARDRAILS",
    "TESTED",
    "GuardrailReading",
    "VariantStatistics",
    "guardrail_alpha",
    "guardrail_gate",
    "rate_prior",
    "read_guardrails",
]

GATE = "guardrail"

# The contract's guardrail names, in the order a breach is reported (most severe first).
GUARDRAILS = (
    "pii_rate",
    "toxicity_rate",
    "latency_p95_ms",
    "unit_cost_mean",
    "disparity_ratio",
    "primary_outcome_mean",
)
# The guardrails judged on statistics: the gate's alpha is split evenly among them (and
# the variants judged), so that all of them together FAIL falsely with probability at
# most alpha. PII is a breach on its first leak, no statistics.
TESTED = ("toxicity_rate", "latency_p95_ms", "unit_cost_mean", "disparity_ratio")
# The reason a breach of each carries in a decision.
REASONS = {
    "pii_rate": "pii_leak",
    "toxicity_rate": "toxicity_rate",
    "latency_p95_ms": "latency_p95",
    "unit_cost_mean": "unit_cost",
    "disparity_ratio": "disparity_ratio",
}


class VariantStatistics(Protocol):
    """What the gate reads of one variant's production telemetry."""

    @property
    def toxicity_n(self) -> int: ...
    @property
    def toxic(self) -> int: ...
    @property
    def pii_n(self) -> int: ...
    @property
    def pii(self) -> int: ...
    @property
    def latency(self) -> QuantileSketch: ...
    @property
    def cost(self) -> Moments: ...
    @property
    def primary(self) -> Moments: ...
    @property
    def segments(self) -> Mapping[str, Moments]: ...


@dataclass(frozen=True)
class GuardrailReading:
    """One guardrail of one variant: the value, its interval and what it says.

    ``status`` is ``breach`` (surely past the threshold), ``pass`` (surely within it),
    ``unknown`` (not enough data either way) or ``info`` (no threshold: shown only).
    """

    guardrail: str
    value: float | None
    low: float | None
    high: float | None
    threshold: float | None
    n: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "threshold": self.threshold,
            "n": self.n,
            "status": self.status,
        }


def _judge(low: float, high: float, threshold: float, ceiling: bool, enough: bool) -> str:
    """A ceiling is breached when even the low end is above it; it passes when the high end
    is below it (with enough data); a floor the other way round."""
    if ceiling:
        if low > threshold:
            return "breach"
        return "pass" if enough and high <= threshold else "unknown"
    if high < threshold:
        return "breach"
    return "pass" if enough and low >= threshold else "unknown"


def _reading(
    name: str,
    estimate: float,
    low: float,
    high: float,
    threshold: float | None,
    n: int,
    status: str,
) -> GuardrailReading:
    return GuardrailReading(
        name,
        finite_or_none(estimate),
        finite_or_none(low),
        finite_or_none(high),
        threshold,
        n,
        status,
    )


def guardrail_alpha(policy: GuardrailPolicy, variants: int = 1) -> float:
    """What one guardrail of one judged variant spends of the gate's alpha."""
    return policy.alpha / (len(TESTED) * max(1, variants))


def rate_prior(ceiling: float) -> tuple[float, float]:
    """Robbins' mixing Beta for a rate held to ``ceiling``: ``Beta(1, 1 / (2 ceiling))``,
    its mass on rates near twice the ceiling, where a breach is to be seen. Any mixture
    keeps the sequence valid; this one finds a toxicity rate of 1.5x its 0.5% ceiling in a
    median of ~10,600 events at alpha / 4, where the uniform mixture took ~15,300 at alpha
    (``bench/validity.py``)."""
    return 1.0, 0.5 / ceiling


def read_guardrails(
    stats: VariantStatistics, policy: GuardrailPolicy, alpha: float | None = None
) -> list[GuardrailReading]:
    """Every guardrail of one variant that its telemetry carries data for.

    PII has zero tolerance: one production event with ``pii: true`` is a breach, no
    statistics needed. Toxicity and the share of latencies above the p95 ceiling are
    rates (Robbins' mixture, tuned to the ceiling by :func:`rate_prior`); unit cost and
    the primary outcome are means (normal mixture with the running variance); the
    disparity ratio is the lowest segment's primary outcome over the highest's
    (Bonferroni over segments). Each is judged at ``alpha``, this variant's share of the
    gate's (:func:`guardrail_alpha` of one variant by default).
    """
    alpha = guardrail_alpha(policy) if alpha is None else alpha
    enough = policy.min_n
    readings = []
    if stats.pii_n:
        rate = BernoulliSequence.from_counts(stats.pii_n, stats.pii, alpha).interval
        status = "breach" if stats.pii else ("pass" if stats.pii_n >= enough else "unknown")
        readings.append(
            _reading("pii_rate", rate.estimate, rate.low, rate.high, 0.0, stats.pii_n, status)
        )
    if stats.toxicity_n:
        rate = BernoulliSequence.from_counts(
            stats.toxicity_n, stats.toxic, alpha, *rate_prior(policy.toxicity_rate_max)
        ).interval
        status = _judge(
            rate.low, rate.high, policy.toxicity_rate_max, True, stats.toxicity_n >= enough
        )
        readings.append(
            _reading(
                "toxicity_rate",
                rate.estimate,
                rate.low,
                rate.high,
                policy.toxicity_rate_max,
                stats.toxicity_n,
                status,
            )
        )
    if stats.latency.n:
        # "p95 <= ceiling" is "at most 5% of the latencies exceed the ceiling": judged on that
        # rate; the p95 and its interval are what is shown.
        tail = exceedance_sequence(
            stats.latency, policy.latency_p95_ms_max, alpha, *rate_prior(0.05)
        )
        status = _judge(tail.low, tail.high, 0.05, True, stats.latency.n >= enough)
        p95 = quantile_interval(stats.latency, 0.95, alpha)
        readings.append(
            _reading(
                "latency_p95_ms",
                p95.estimate,
                p95.low,
                p95.high,
                policy.latency_p95_ms_max,
                stats.latency.n,
                status,
            )
        )
    for name, moments, threshold in (
        ("unit_cost_mean", stats.cost, policy.unit_cost_max),
        ("primary_outcome_mean", stats.primary, None),
    ):
        if not moments.n:
            continue
        sequence = NormalMixtureSequence(alpha, policy.target_time, min(30, enough))
        sequence.moments = moments
        interval = sequence.interval
        status = (
            "info"
            if threshold is None
            else _judge(interval.low, interval.high, threshold, True, moments.n >= enough)
        )
        readings.append(
            _reading(
                name, interval.estimate, interval.low, interval.high, threshold, moments.n, status
            )
        )
    # The disparity ratio is a ratio of means: it needs outcomes that are not negative.
    if len(stats.segments) >= 2 and all(m.mean >= 0 for m in stats.segments.values()):
        ratio = disparity_ratio_sequence(
            stats.segments,
            alpha=alpha,
            target_time=policy.target_time,
            min_n=min(30, enough),
            planned_groups=policy.disparity_segments,
        )
        if ratio.groups >= 2 and math.isfinite(ratio.estimate):
            status = _judge(ratio.low, ratio.high, policy.disparity_ratio_min, False, True)
            readings.append(
                _reading(
                    "disparity_ratio",
                    ratio.estimate,
                    ratio.low,
                    ratio.high,
                    policy.disparity_ratio_min,
                    sum(m.n for m in stats.segments.values()),
                    status,
                )
            )
    return readings


def guardrail_gate(
    subject: str,
    readings: Mapping[str, Sequence[GuardrailReading]],
    policy: GuardrailPolicy,
    action: str,
    context: Mapping[str, Any] | None = None,
) -> Verdict:
    """The worst guardrail of the judged variants (``readings`` by variant).

    FAIL on any breach (the most severe guardrail names the reason; ``action`` is the
    policy's for a production canary, ``alert`` for an A/B test); PASS when every
    guardrail that has data passes for every judged variant; INCONCLUSIVE otherwise.
    """
    evidence: dict[str, Any] = {
        "method": "anytime_valid_bounds",
        "alpha": policy.alpha,
        "alpha_each": guardrail_alpha(policy, len(readings)),
    }
    evidence.update(context or {})
    breaches = [
        (GUARDRAILS.index(r.guardrail), variant, r)
        for variant, rows in readings.items()
        for r in rows
        if r.status == "breach"
    ]
    if breaches:
        _, variant, worst = min(breaches, key=lambda item: item[0])
        evidence.update(
            n=worst.n,
            estimate=worst.value,
            ci_low=worst.low,
            ci_high=worst.high,
            threshold=worst.threshold,
            guardrail=worst.guardrail,
            variant=variant,
        )
        return Verdict(GATE, subject, "FAIL", action, REASONS[worst.guardrail], evidence)
    judged = [r for rows in readings.values() for r in rows if r.status != "info"]
    n = min((r.n for r in judged), default=0)
    evidence.update(n=n, estimate=None, ci_low=None, ci_high=None, threshold=None)
    if judged and all(r.status == "pass" for r in judged):
        return Verdict(GATE, subject, "PASS", "none", "within_guardrails", evidence)
    return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
