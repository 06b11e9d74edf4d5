"""Transport audit: does a calibrator still hold on a probe slice of a new policy or group?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ._arrays import paired
from ._interval import Interval

__all__ = ["AuditResult", "DecileResidual", "residuals_by_decile", "transport_audit"]


@dataclass(frozen=True)
class DecileResidual:
    decile: int
    score_low: float
    score_high: float
    n: int
    mean_residual: float


@dataclass(frozen=True)
class AuditResult:
    """``delta = mean(Y - f(S))`` on the probe, its interval and the verdict."""

    status: str
    delta: float
    interval: Interval
    n: int
    clusters: int | None
    alpha: float
    method: str
    margin: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "delta": self.delta,
            "ci_low": self.interval.low,
            "ci_high": self.interval.high,
            "n": self.n,
            "clusters": self.clusters,
            "alpha": self.alpha,
            "method": self.method,
            "margin": self.margin,
        }


def transport_audit(
    residuals: ArrayLike,
    alpha: float = 0.05,
    clusters: ArrayLike | None = None,
    margin: float | None = None,
    family_size: int = 1,
    bias_threshold: float = 0.05,
) -> AuditResult:
    """Audit residuals ``y - f(s)`` of a probe slice.

    Difference mode (default): PASS when the ``1 - alpha`` t interval holds 0; WARN when
    it excludes 0 and ``|delta| < bias_threshold``; FAIL otherwise. Equivalence mode
    (``margin=m``): PASS when the interval lies inside ``(-m, m)``, FAIL when it lies
    wholly outside, INCONCLUSIVE otherwise (two one-sided tests at ``alpha`` use the
    ``1 - 2 alpha`` interval). ``family_size`` applies Bonferroni over a family of audits.
    With ``clusters`` (e.g. prompt ids), the standard error is cluster-robust (CR1) with
    ``G - 1`` degrees of freedom.

    Examples
    --------
    >>> import numpy as np
    >>> transport_audit(np.random.default_rng(0).normal(0.0, 0.1, 50)).status
    'PASS'
    >>> transport_audit(np.random.default_rng(0).normal(0.2, 0.1, 50)).status
    'FAIL'

    References
    ----------
    Cameron, A. C. and Miller, D. L. (2015). A practitioner's guide to cluster-robust
    inference. Journal of Human Resources 50(2).
    Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the
    power approach for assessing the equivalence of average bioavailability. Journal of
    Pharmacokinetics and Biopharmaceutics 15(6).
    """
    r = np.asarray(residuals, dtype=np.float64).ravel()
    if r.size < 2:
        raise ValueError("an audit needs at least 2 labeled probe items")
    level = alpha / family_size
    delta = float(r.mean())
    if clusters is None:
        se = float(r.std(ddof=1) / math.sqrt(r.size))
        dof, method, groups = r.size - 1, "t", None
    else:
        ids = np.asarray(clusters).ravel()
        if ids.shape != r.shape:
            raise ValueError("clusters and residuals differ in length")
        _, index = np.unique(ids, return_inverse=True)
        groups = int(index.max()) + 1
        if groups < 2:
            raise ValueError("cluster-robust audit needs at least 2 clusters")
        cluster_sums = np.bincount(index, weights=r - delta)
        correction = groups / (groups - 1)  # CR1 with one regressor: G/(G-1) (N-1)/(N-1)
        se = math.sqrt(correction * float(np.dot(cluster_sums, cluster_sums))) / r.size
        dof, method = groups - 1, "t_cluster_robust"
    two_sided = level if margin is None else 2 * level
    quantile = float(stats.t.ppf(1 - two_sided / 2, dof))
    interval = Interval(delta, delta - quantile * se, delta + quantile * se)
    if margin is None:
        if interval.contains(0.0):
            status = "PASS"
        elif abs(delta) < bias_threshold:
            status = "WARN"
        else:
            status = "FAIL"
    elif -margin < interval.low and interval.high < margin:
        status = "PASS"
    elif interval.low >= margin or interval.high <= -margin:
        status = "FAIL"
    else:
        status = "INCONCLUSIVE"
    return AuditResult(status, delta, interval, int(r.size), groups, alpha, method, margin)


def residuals_by_decile(scores: ArrayLike, residuals: ArrayLike) -> list[DecileResidual]:
    """Mean residual in each score decile: where along the score the calibrator is off.

    >>> [d.n for d in residuals_by_decile(range(20), [0.0] * 20)]
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    s, r = paired(scores, residuals, ("scores", "residuals"))
    order = np.argsort(s, kind="stable")
    rows = []
    for decile, part in enumerate(np.array_split(order, 10)):
        if part.size:
            rows.append(
                DecileResidual(
                    decile + 1,
                    float(s[part].min()),
                    float(s[part].max()),
                    int(part.size),
                    float(r[part].mean()),
                )
            )
    return rows
