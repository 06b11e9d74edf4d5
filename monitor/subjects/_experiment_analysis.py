"""An A/B experiment's analysis, as the memo shows it (written with the view, so the memo
shows what the monitor saw): each variant against control under the locked plan.

Effect sizes with anytime-valid intervals (difference, CUPED-adjusted when every outcome
has its pre-period value; ratio; Hedges' g), CUPED's theta and R^2, the power reached
against the registered MDE, balance (the split test, the pre-period covariate) and
missingness checks, subgroup reads by ``covariates.segment`` under Benjamini-Hochberg,
non-inferiority where a margin is declared, cost deltas, and the recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from estimators import (
    CoMoments,
    DifferenceInterval,
    Moments,
    RatioInterval,
    achieved_power,
    benjamini_hochberg,
    bernoulli_moments,
    cuped_fit,
    hedges_g,
    mean_difference_sequence,
    ratio_sequence,
    standardized_difference,
)

from ..config import ExperimentPolicy
from ..gates import Verdict, finite_or_none
from ._experiment_plan import plan_experiment
from ._experiment_state import ExperimentState, VariantStats
from ._registration import locked_policy

__all__ = ["BALANCE_LIMIT", "analyse", "recommend"]

# |standardized difference| of the pre-period covariate under which arms count as balanced.
BALANCE_LIMIT = 0.1


def analyse(
    subject: str,
    state: ExperimentState,
    live: ExperimentPolicy,
    control: str,
    verdicts: Sequence[Verdict],
    fallback_target_time: float,
) -> dict[str, Any] | None:
    """The analysis of an A/B experiment (None for a canary, or before control and a
    variant have events)."""
    control_stats = state.variants.get(control)
    treated = sorted(name for name in state.variants if name != control)
    if state.lifecycle is not None or control_stats is None or not treated:
        return None
    policy = locked_policy(state, live)
    plan = plan_experiment(subject, policy) if policy.registered else None
    alpha = policy.alpha / max(1, len(treated))
    target = plan.target_time if plan else fallback_target_time
    rows = {
        name: _variant(state.variants[name], control_stats, policy, alpha, target)
        for name in treated
    }
    _adjust_subgroups(rows, policy.subgroup_q)
    by_gate = {v.gate: v.verdict for v in verdicts}
    analysis: dict[str, Any] = {
        "registered": policy.registered,
        "plan": plan.to_dict() if plan else None,
        "registered_at": state.registered_at,
        "hypothesis": policy.hypothesis or None,
        "owner": policy.owner or None,
        "planned": {"start": policy.start or None, "end": policy.end or None},
        "deviations": state.deviations,
        "first_ts": state.first_ts,
        "last_ts": state.last_ts,
        "alpha_per_comparison": alpha,
        "control": {
            "n": control_stats.n,
            "primary_n": control_stats.primary.n,
            "primary_mean": _mean(control_stats.primary),
            "unit_cost_mean": _mean(control_stats.cost),
        },
        "variants": rows,
        "guardrails": by_gate.get("guardrail"),
        "srm": {"verdict": by_gate.get("srm"), "p_value": state.srm.p_value if state.srm else None},
    }
    analysis["recommendation"] = recommend(analysis, policy)
    return analysis


def _variant(
    stats: VariantStats,
    control: VariantStats,
    policy: ExperimentPolicy,
    alpha: float,
    target: float,
) -> dict[str, Any]:
    adjust = (
        stats.primary_pre.n == stats.primary.n
        and control.primary_pre.n == control.primary.n
        and stats.primary.n > 0
    )
    arms: tuple[Moments | CoMoments, Moments | CoMoments] = (
        (stats.primary_pre, control.primary_pre) if adjust else (stats.primary, control.primary)
    )
    compare = _Design(alpha, target)
    difference = compare.difference(arms[0], arms[1], adjust=adjust)
    raw = compare.difference(stats.primary, control.primary)
    ratio = compare.ratio(arms[0], arms[1], adjust=adjust)
    fit = cuped_fit(stats.primary_pre, control.primary_pre)
    reduction = difference.variance_reduction or 0.0
    fixed, anytime = achieved_power(
        stats.primary, control.primary, policy.mde, alpha, target, reduction
    )
    row: dict[str, Any] = {
        "n": stats.n,
        "primary_n": stats.primary.n,
        "primary_mean": _mean(stats.primary),
        "difference": _interval(difference),
        "unadjusted": _interval(raw),
        "ratio": {
            "estimate": finite_or_none(ratio.estimate),
            "ci_low": finite_or_none(ratio.low),
            "ci_high": finite_or_none(ratio.high),
            "method": ratio.method,
        },
        "hedges_g": finite_or_none(hedges_g(stats.primary, control.primary)),
        "cuped": None
        if fit is None
        else {
            "theta": fit.theta,
            "r2": fit.r2,
            "n": fit.n,
            "applied": adjust,
            "variance_reduction": difference.variance_reduction,
        },
        "power": {
            "registered": policy.power if policy.registered else None,
            "mde": policy.mde if policy.registered else None,
            "fixed_horizon": finite_or_none(fixed) if policy.registered else None,
            "anytime": finite_or_none(anytime) if policy.registered else None,
        },
        "missingness": _missingness(stats, control, compare),
        "balance": _balance(stats, control),
        "subgroups": _subgroups(stats, control, compare),
        "cost": _cost(stats, control, compare),
    }
    margin = policy.non_inferiority_margin
    if margin > 0:
        low, high = difference.low, difference.high
        verdict = (
            "non_inferior" if low > -margin else "inferior" if high < -margin else "inconclusive"
        )
        row["non_inferiority"] = {
            "margin": margin,
            "verdict": verdict,
            "ci_low": finite_or_none(low),
        }
    return row


@dataclass(frozen=True)
class _Design:
    """The level and the tightest time of every interval of the analysis."""

    alpha: float
    target_time: float

    def difference(
        self, treatment: Moments | CoMoments, control: Moments | CoMoments, adjust: bool = False
    ) -> DifferenceInterval:
        return mean_difference_sequence(
            treatment, control, alpha=self.alpha, target_time=self.target_time, adjust=adjust
        )

    def ratio(
        self, treatment: Moments | CoMoments, control: Moments | CoMoments, adjust: bool = False
    ) -> RatioInterval:
        return ratio_sequence(
            treatment, control, alpha=self.alpha, target_time=self.target_time, adjust=adjust
        )


def _interval(difference: DifferenceInterval) -> dict[str, Any]:
    return {
        "estimate": finite_or_none(difference.estimate),
        "ci_low": finite_or_none(difference.low),
        "ci_high": finite_or_none(difference.high),
        "p_value": difference.p_value,
        "method": difference.method,
    }


def _mean(moments: Moments) -> float | None:
    return moments.mean if moments.n else None


def _missingness(stats: VariantStats, control: VariantStats, compare: _Design) -> dict[str, Any]:
    """Shares of events without the primary outcome, and whether they differ between the
    arms (the anytime-valid interval of the difference of the shares excludes 0)."""
    mine = bernoulli_moments(stats.n, stats.n - stats.primary.n)
    theirs = bernoulli_moments(control.n, control.n - control.primary.n)
    difference = compare.difference(mine, theirs)
    return {
        "primary_missing": mine.mean if mine.n else None,
        "control_primary_missing": theirs.mean if theirs.n else None,
        "pre_period_missing": 1 - stats.primary_pre.n / stats.primary.n
        if stats.primary.n
        else None,
        "difference": _interval(difference),
        "differential": difference.low > 0 or difference.high < 0,
    }


def _balance(stats: VariantStats, control: VariantStats) -> dict[str, Any]:
    smd = standardized_difference(stats.primary_pre.x_moments(), control.primary_pre.x_moments())
    return {
        "pre_period_smd": finite_or_none(smd),
        "balanced": None if math.isnan(smd) else abs(smd) < BALANCE_LIMIT,
    }


def _subgroups(
    stats: VariantStats, control: VariantStats, compare: _Design
) -> list[dict[str, Any]]:
    rows = []
    for segment in sorted(set(stats.segments) & set(control.segments)):
        difference = compare.difference(stats.segments[segment], control.segments[segment])
        rows.append(
            {
                "segment": segment,
                "n": stats.segments[segment].n,
                "control_n": control.segments[segment].n,
                **_interval(difference),
            }
        )
    return rows


def _adjust_subgroups(rows: Mapping[str, dict[str, Any]], q: float) -> None:
    """Benjamini-Hochberg over every subgroup read of every variant (the anytime-valid
    p-values are valid at whatever time the memo is read)."""
    cells = [cell for row in rows.values() for cell in row["subgroups"]]
    if not cells:
        return
    adjusted, rejected = benjamini_hochberg(np.array([cell["p_value"] for cell in cells]), q)
    for cell, flag, q_value in zip(cells, rejected.tolist(), adjusted.tolist(), strict=True):
        cell["q_value"], cell["discovery"] = q_value, bool(flag)


def _cost(stats: VariantStats, control: VariantStats, compare: _Design) -> dict[str, Any] | None:
    if not (stats.cost.n and control.cost.n):
        return None
    ratio = compare.ratio(stats.cost, control.cost)
    return {
        "unit_cost_mean": stats.cost.mean,
        "control_unit_cost_mean": control.cost.mean,
        "difference": _interval(compare.difference(stats.cost, control.cost)),
        "relative": {
            "estimate": finite_or_none(ratio.estimate - 1),
            "ci_low": finite_or_none(ratio.low - 1),
            "ci_high": finite_or_none(ratio.high - 1),
        },
    }


def recommend(analysis: Mapping[str, Any], policy: ExperimentPolicy) -> dict[str, Any]:
    """Ship, hold or iterate, with the reasons, from the analysis and the gates.

    Hold: a guardrail breached, the split is broken, missingness differs between the arms
    (each: stop and look), or the data do not decide yet. Ship: a variant is surely better
    than control (surely non-inferior, where a margin is declared) and the guardrails
    pass. Iterate: every variant is surely below control + MDE (or below control): the
    change does not deliver what it was registered to.
    """
    reasons: list[str] = []
    variants = analysis["variants"]
    if analysis["guardrails"] == "FAIL":
        reasons.append("a guardrail is breached: halt and roll back")
    if analysis["srm"]["verdict"] == "FAIL":
        reasons.append("sample ratio mismatch: the split is broken and the effects suspect")
    skewed = [name for name, row in variants.items() if row["missingness"]["differential"]]
    if skewed:
        reasons.append(
            f"the primary outcome is missing more often in one arm ({', '.join(skewed)})"
        )
    if reasons:
        return {"decision": "hold", "variant": None, "reasons": reasons}

    def low(row: Mapping[str, Any]) -> float:
        value = row["difference"]["ci_low"]
        return -math.inf if value is None else float(value)

    def high(row: Mapping[str, Any]) -> float:
        value = row["difference"]["ci_high"]
        return math.inf if value is None else float(value)

    margin = policy.non_inferiority_margin
    better = {name: row for name, row in variants.items() if low(row) > 0}
    if margin > 0:
        better |= {name: row for name, row in variants.items() if low(row) > -margin}
    if better:
        best = max(better, key=lambda name: better[name]["difference"]["estimate"])
        how = "surely better than control" if low(better[best]) > 0 else "non-inferior"
        if analysis["guardrails"] == "PASS":
            return {"decision": "ship", "variant": best, "reasons": [f"{best} is {how}"]}
        reasons.append(f"{best} is {how}, but the guardrails are not yet all within bounds")
        return {"decision": "hold", "variant": best, "reasons": reasons}
    floor = policy.mde if policy.registered else 0.0
    if all(high(row) < floor for row in variants.values()):
        what = f"control + the MDE ({floor:g})" if floor else "control"
        return {
            "decision": "iterate",
            "variant": None,
            "reasons": [f"every variant is surely below {what}"],
        }
    return {
        "decision": "hold",
        "variant": None,
        "reasons": ["no variant is decided yet: keep the experiment running"],
    }
