"""Fixed-horizon experiment statistics for A/B tests and canaries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ._interval import Interval

__all__ = [
    "Comparison",
    "CupedResult",
    "SrmResult",
    "benjamini_hochberg",
    "cuped",
    "difference_in_means",
    "difference_in_proportions",
    "hedges_g",
    "non_inferiority",
    "sample_ratio_mismatch",
    "two_proportion_power",
    "two_proportion_sample_size",
]


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control, with a two-sided interval and p-value."""

    estimate: float
    interval: Interval
    p_value: float
    standard_error: float
    method: str


def _arrays(*values: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if any(a.size < 2 for a in arrays):
        raise ValueError("each group needs at least 2 values")
    return arrays


def difference_in_means(
    treatment: ArrayLike, control: ArrayLike, alpha: float = 0.05
) -> Comparison:
    """Welch's t interval for ``mean(treatment) - mean(control)``.

    >>> result = difference_in_means([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 2.0])
    >>> result.estimate, round(result.p_value, 4)  # scipy.stats.ttest_ind(equal_var=False)
    (2.5, 0.0217)

    References
    ----------
    Welch, B. L. (1947). The generalization of Student's problem when several different
    population variances are involved. Biometrika 34.
    """
    a, b = _arrays(treatment, control)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    estimate = float(a.mean() - b.mean())
    q = stats.t.ppf(1 - alpha / 2, dof)
    p = 2 * stats.t.sf(abs(estimate) / se, dof) if se > 0 else float(estimate == 0)
    return Comparison(
        estimate, Interval(estimate, estimate - q * se, estimate + q * se), float(p), se, "welch_t"
    )


def difference_in_proportions(
    successes_treatment: int,
    n_treatment: int,
    successes_control: int,
    n_control: int,
    alpha: float = 0.05,
) -> Comparison:
    """Wald interval for ``p_treatment - p_control``; the p-value is the pooled z test.

    >>> r = difference_in_proportions(60, 1000, 40, 1000)
    >>> round(r.estimate, 3), round(r.p_value, 4)
    (0.02, 0.0402)
    """
    pa, pb = successes_treatment / n_treatment, successes_control / n_control
    se = math.sqrt(pa * (1 - pa) / n_treatment + pb * (1 - pb) / n_control)
    pooled = (successes_treatment + successes_control) / (n_treatment + n_control)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_treatment + 1 / n_control))
    estimate = pa - pb
    z = stats.norm.ppf(1 - alpha / 2)
    p = 2 * stats.norm.sf(abs(estimate) / se0) if se0 > 0 else 1.0
    return Comparison(
        estimate, Interval(estimate, estimate - z * se, estimate + z * se), float(p), se, "wald_z"
    )


def hedges_g(treatment: ArrayLike, control: ArrayLike) -> float:
    """Standardized mean difference with Hedges' small-sample correction.

    ``g = J (mean_a - mean_b) / s_pooled`` with ``J = 1 - 3 / (4 (n_a + n_b) - 9)``.

    >>> round(hedges_g([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 2.0]), 4)
    2.0127

    References
    ----------
    Hedges, L. V. (1981). Distribution theory for Glass's estimator of effect size and
    related estimators. Journal of Educational Statistics 6(2).
    """
    a, b = _arrays(treatment, control)
    pooled = math.sqrt(
        ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    )
    correction = 1 - 3 / (4 * (a.size + b.size) - 9)
    return float(correction * (a.mean() - b.mean()) / pooled)


@dataclass(frozen=True)
class CupedResult:
    comparison: Comparison
    theta: float
    r2: float
    """Share of the outcome's variance the pre-period covariate explains."""
    variance_reduction: float


def cuped(
    outcome_treatment: ArrayLike,
    outcome_control: ArrayLike,
    pre_treatment: ArrayLike,
    pre_control: ArrayLike,
    alpha: float = 0.05,
) -> CupedResult:
    """CUPED: compare ``y - theta (x - mean x)`` with ``theta = cov(y, x) / var(x)`` pooled.

    The pre-period covariate ``x`` is unaffected by treatment, so the adjustment keeps
    the estimate unbiased and removes the share ``R^2`` of the variance it explains.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2000); y = x + rng.normal(0, 0.5, 2000)
    >>> result = cuped(y[:1000] + 0.1, y[1000:], x[:1000], x[1000:])
    >>> round(result.r2, 2), round(result.variance_reduction, 2)
    (0.8, 0.8)

    References
    ----------
    Deng, A., Xu, Y., Kohavi, R. and Walker, T. (2013). Improving the sensitivity of
    online controlled experiments by utilizing pre-experiment data. WSDM.
    """
    ya, yb, xa, xb = _arrays(outcome_treatment, outcome_control, pre_treatment, pre_control)
    if ya.shape != xa.shape or yb.shape != xb.shape:
        raise ValueError("each outcome needs its pre-period value")
    y, x = np.concatenate([ya, yb]), np.concatenate([xa, xb])
    theta = float(np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)) if x.var() > 0 else 0.0
    r2 = float(np.corrcoef(y, x)[0, 1] ** 2) if x.var() > 0 and y.var() > 0 else 0.0
    center = x.mean()
    adjusted = difference_in_means(ya - theta * (xa - center), yb - theta * (xb - center), alpha)
    raw = difference_in_means(ya, yb, alpha)
    reduction = (
        1 - (adjusted.standard_error / raw.standard_error) ** 2 if raw.standard_error else 0.0
    )
    return CupedResult(
        Comparison(
            adjusted.estimate,
            adjusted.interval,
            adjusted.p_value,
            adjusted.standard_error,
            "cuped_welch_t",
        ),
        theta,
        r2,
        float(reduction),
    )


@dataclass(frozen=True)
class SrmResult:
    chi2: float
    p_value: float
    mismatch: bool


def sample_ratio_mismatch(
    counts: ArrayLike, expected_ratios: ArrayLike, threshold: float = 0.001
) -> SrmResult:
    """Chi-square goodness of fit of the variant counts to the planned split.

    A p-value below ``threshold`` (0.001 by convention: SRM checks run all the time)
    means the assignment or logging is broken and the experiment's results are suspect.

    >>> sample_ratio_mismatch([5000, 5500], [0.5, 0.5]).mismatch
    True

    References
    ----------
    Fabijan, A. et al. (2019). Diagnosing sample ratio mismatch in online controlled
    experiments. KDD.
    """
    observed = np.asarray(counts, dtype=np.float64).ravel()
    ratios = np.asarray(expected_ratios, dtype=np.float64).ravel()
    if observed.shape != ratios.shape or observed.size < 2:
        raise ValueError("need a count and a ratio for each of at least 2 variants")
    expected = observed.sum() * ratios / ratios.sum()
    result = stats.chisquare(observed, expected)
    return SrmResult(float(result.statistic), float(result.pvalue), bool(result.pvalue < threshold))


def two_proportion_sample_size(
    p_control: float, p_treatment: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Units per group to detect ``p_control -> p_treatment`` (two-sided, pooled null).

    ``n = (z_{1-a/2} sqrt(2 pbar qbar) + z_power sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2``.

    >>> two_proportion_sample_size(0.10, 0.12)
    3841

    References
    ----------
    Fleiss, J. L., Levin, B. and Paik, M. C. (2003). Statistical Methods for Rates and
    Proportions, 3rd ed., eq. (4.14) (without continuity correction).
    """
    if p_control == p_treatment:
        raise ValueError("the two proportions must differ")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    mean = (p_control + p_treatment) / 2
    numerator = za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(
        p_control * (1 - p_control) + p_treatment * (1 - p_treatment)
    )
    return math.ceil(numerator**2 / (p_control - p_treatment) ** 2)


def two_proportion_power(
    p_control: float, p_treatment: float, n_per_group: int, alpha: float = 0.05
) -> float:
    """Power of the two-sided pooled z test with ``n_per_group`` units in each group.

    >>> round(two_proportion_power(0.10, 0.12, 3841), 3)
    0.8
    """
    za = stats.norm.ppf(1 - alpha / 2)
    mean = (p_control + p_treatment) / 2
    spread = math.sqrt(p_control * (1 - p_control) + p_treatment * (1 - p_treatment))
    z = (
        abs(p_control - p_treatment) * math.sqrt(n_per_group)
        - za * math.sqrt(2 * mean * (1 - mean))
    ) / spread
    return float(stats.norm.cdf(z))


def benjamini_hochberg(p_values: ArrayLike, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values (scipy's ``false_discovery_control``) and which are discoveries.

    >>> adjusted, reject = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    >>> adjusted.round(3).tolist(), reject.tolist()
    ([0.04, 0.053, 0.053, 0.2], [True, False, False, False])

    References
    ----------
    Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57.
    """
    adjusted = stats.false_discovery_control(np.asarray(p_values, dtype=np.float64), method="bh")
    return adjusted, adjusted <= q


def non_inferiority(
    treatment: ArrayLike,
    control: ArrayLike,
    margin: float,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> tuple[bool, Comparison]:
    """Is the treatment no worse than control by more than ``margin``? (one-sided Welch)

    Non-inferior when the one-sided ``1 - alpha`` bound of the difference clears
    ``-margin`` (or ``+margin`` for metrics where lower is better, like latency).

    >>> ok, _ = non_inferiority([1.0, 1.1, 0.9, 1.0] * 50, [1.0, 1.05, 0.95, 1.0] * 50, 0.1)
    >>> bool(ok)
    True
    """
    comparison = difference_in_means(treatment, control, 2 * alpha)
    if higher_is_better:
        return bool(comparison.interval.low > -margin), comparison
    return bool(comparison.interval.high < margin), comparison
