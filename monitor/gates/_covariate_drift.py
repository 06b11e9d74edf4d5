"""The covariate drift gate: does a covariate of the label events still look as it did?"""

from __future__ import annotations

from estimators import (
    CategoryCounts,
    QuantileSketch,
    sequential_ks_bounds,
    sequential_tv_bounds,
)

from ..config import CovariateDriftPolicy
from ._score_drift import distance_evidence, drift_band, drift_evidence
from ._verdict import Verdict

__all__ = ["GATE", "covariate_drift_gate"]

GATE = "covariate_drift"

# What each kind of covariate is measured by, as the evidence names it.
_METHODS = {"numeric": "time_uniform_dkw", "categorical": "time_uniform_tv"}


def covariate_drift_gate(
    subject: str,
    covariate: str,
    live: QuantileSketch | CategoryCounts,
    baseline: QuantileSketch | CategoryCounts,
    policy: CovariateDriftPolicy,
    calibrator_version: int,
) -> Verdict:
    """The distance of a covariate's values since its baseline from the baseline's, in the
    drift runbook's bands.

    A number is measured by the KS distance of the two sketches
    (:func:`estimators.sequential_ks_bounds`), a category by the total variation distance
    of the two counts (:func:`estimators.sequential_tv_bounds`); both bounds hold at every
    look at once, with probability at least ``1 - alpha``, while the baseline stays. The
    band is read off the lower bound, as the score drift gate's: minor (< 0.2) -> PASS,
    moderate (>= 0.2) -> WARN, severe (>= 0.3) -> FAIL; a change of band is a change of
    verdict, so it is published as a ``covariate_drift`` decision. The verdict's ``part``
    and ``evidence.covariate`` name the covariate; INCONCLUSIVE while the baseline is
    still filling or fewer than ``min_n`` values came after it.
    """
    kind = "numeric" if isinstance(live, QuantileSketch) else "categorical"
    evidence = drift_evidence(
        live.n, baseline.n, _METHODS[kind], calibrator_version, covariate=covariate, kind=kind
    )

    def verdict(outcome: str, action: str, reason: str) -> Verdict:
        return Verdict(GATE, subject, outcome, action, reason, evidence, part=covariate)

    if baseline.n < policy.baseline_n or live.n == 0:
        return verdict("INCONCLUSIVE", "none", "insufficient_data")
    if isinstance(live, QuantileSketch):
        assert isinstance(baseline, QuantileSketch)
        # The edges' distance is at most the samples': the lower bound needs no sketch
        # error, which an integer-valued covariate (a few levels) would make large.
        bounds = sequential_ks_bounds(live, baseline, policy.alpha, low_from_edges=True)
    else:
        assert isinstance(baseline, CategoryCounts)
        bounds = sequential_tv_bounds(live, baseline, policy.alpha)
    evidence.update(distance_evidence(bounds))
    if live.n < policy.min_n:
        return verdict("INCONCLUSIVE", "none", "insufficient_data")
    band = drift_band(bounds, evidence)
    if band == "severe":
        return verdict("FAIL", policy.fail_action, "covariate_drift_severe")
    if band == "moderate":
        return verdict("WARN", policy.warn_action, "covariate_drift_moderate")
    return verdict("PASS", "none", "no_drift")
