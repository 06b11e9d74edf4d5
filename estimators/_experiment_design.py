"""An A/B experiment's design and analysis read off each arm's mergeable moments: sample
sizes (the two-proportion and mean formulas, CUPED's reduction, the anytime-valid
interval's own), power, Hedges' g, CUPED's theta and R^2, the ratio interval and balance.

Restored from the fixed-horizon ``_experiment`` module as functions of
:class:`Moments` / :class:`CoMoments` rather than raw arrays, so a streaming state feeds
them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from scipy import optimize

from ._co_moments import CoMoments
from ._moments import Moments
from ._normal_mixture import normal_mixture_half_width, optimal_rho
from ._two_sample import DifferenceInterval, mean_difference_sequence

__all__ = [
    "CupedFit",
    "RatioInterval",
    "achieved_power",
    "anytime_power",
    "anytime_sample_size",
    "bernoulli_moments",
    "cuped_fit",
    "cuped_sample_size",
    "fixed_power",
    "hedges_g",
    "mean_sample_size",
    "ratio_sequence",
    "standardized_difference",
    "two_proportion_sample_size",
]


# The standard normal, by math.erf: scipy.stats' is ~50 times slower per call, and the
# analysis runs with every write of an experiment's view.
_NORMAL = NormalDist()
_cdf, _ppf = _NORMAL.cdf, _NORMAL.inv_cdf


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    return _ppf(1 - alpha / 2), _ppf(power)


def two_proportion_sample_size(
    baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Units per arm to detect an absolute change ``mde`` of a proportion ``baseline``.

    The experimentation guide's approximation, two-sided at ``alpha``:
    ``n = 2 (z_{1-alpha/2} + z_{power})^2 pbar (1 - pbar) / MDE^2`` with ``pbar`` the
    baseline proportion.

    >>> two_proportion_sample_size(0.6, 0.05)
    1507

    References
    ----------
    Kohavi, R., Tang, D. and Xu, Y. (2020). Trustworthy Online Controlled Experiments,
    ch. 17 (the rule of thumb ``16 sigma^2 / delta^2`` for two arms at 0.05 and 0.8).
    """
    if not 0 < baseline < 1:
        raise ValueError(f"baseline must be a proportion in (0, 1), got {baseline}")
    return mean_sample_size(math.sqrt(baseline * (1 - baseline)), mde, alpha, power)


def mean_sample_size(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per arm to detect a change ``mde`` of a mean whose unit SD is ``sd``:
    ``n = 2 (z_{1-alpha/2} + z_{power})^2 sd^2 / MDE^2``.

    >>> mean_sample_size(1.0, 0.2)
    393
    """
    if not (sd > 0 and mde > 0):
        raise ValueError(f"sd and mde must be positive, got {sd} and {mde}")
    za, zb = _z(alpha, power)
    return math.ceil(2 * (za + zb) ** 2 * sd**2 / mde**2)


def cuped_sample_size(n: int, r2: float) -> int:
    """CUPED's units for ``n`` unadjusted ones: the pre-period covariate removes the share
    ``R^2`` of the outcome's variance, so ``n (1 - R^2)``.

    >>> cuped_sample_size(1507, 0.1)
    1357
    """
    if not 0 <= r2 < 1:
        raise ValueError(f"r2 must be in [0, 1), got {r2}")
    return math.ceil(n * (1 - r2))


def fixed_power(mde: float, standard_error: float, alpha: float = 0.05) -> float:
    """Power of the two-sided fixed-horizon z test at ``alpha`` against a true difference
    ``mde`` estimated with ``standard_error``.

    >>> round(fixed_power(0.05, 0.05 / (1.959964 + 0.841621)), 3)
    0.8
    """
    za = _ppf(1 - alpha / 2)
    if not standard_error > 0 or not math.isfinite(standard_error):
        return math.nan
    shift = abs(mde) / standard_error
    return _cdf(shift - za) + _cdf(-shift - za)


def anytime_power(
    mde: float, sigma: float, total: float, alpha: float = 0.05, target_time: float = 1000.0
) -> float:
    """Power of :func:`mean_difference_sequence`'s interval to exclude 0 at ``total`` units
    when the difference is ``mde``: ``sigma`` is its per-unit standard deviation
    (``sqrt(var_T / p + var_C / (1 - p))``), so the estimate has standard error
    ``sigma / sqrt(N)`` and the interval's half-width is the normal mixture's.

    >>> round(anytime_power(0.2, 2.0, 1000, target_time=1000), 3)
    0.551
    """
    if not (sigma > 0 and total > 0 and math.isfinite(sigma)):
        return math.nan
    half = normal_mixture_half_width(sigma, total, optimal_rho(target_time, alpha), alpha)
    se = sigma / math.sqrt(total)
    return _cdf((abs(mde) - half) / se) + _cdf((-abs(mde) - half) / se)


def anytime_sample_size(
    sd: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    target_time: float | None = None,
) -> int:
    """Units per arm (equal allocation) at which the anytime-valid interval excludes 0
    with probability ``power`` when the difference is ``mde``: the price of looking at
    every batch, over :func:`mean_sample_size`'s one look. ``target_time`` (units of both
    arms) defaults to the fixed-horizon plan's total.

    >>> mean_sample_size(1.0, 0.2), anytime_sample_size(1.0, 0.2)
    (393, 761)
    """
    fixed = mean_sample_size(sd, mde, alpha, power)
    target = 2.0 * fixed if target_time is None else target_time
    sigma = 2.0 * sd  # sqrt(sd^2 / 0.5 + sd^2 / 0.5)

    def short(per_arm: float) -> float:
        return anytime_power(mde, sigma, 2 * per_arm, alpha, target) - power

    high = fixed
    while short(high) < 0:
        high *= 2
    low = high // 2 if high > fixed else 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if short(middle) < 0 else (low, middle)
    return high


def hedges_g(treatment: Moments, control: Moments) -> float:
    """Standardized mean difference with Hedges' small-sample correction, from moments:
    ``g = J (mean_T - mean_C) / s_pooled`` with ``J = 1 - 3 / (4 (n_T + n_C) - 9)``.

    >>> g = hedges_g(Moments().update([3.0, 4.0, 5.0, 6.0]), Moments().update([1.0, 2.0, 3.0, 2.0]))
    >>> round(g, 4)  # J (4.5 - 2) / s_pooled = 0.8696 x 2.5 / 1.0801
    2.0127

    References
    ----------
    Hedges, L. V. (1981). Distribution theory for Glass's estimator of effect size and
    related estimators. Journal of Educational Statistics 6(2).
    """
    n_t, n_c = treatment.n, control.n
    if n_t < 2 or n_c < 2:
        return math.nan
    pooled = (treatment.m2 + control.m2) / (n_t + n_c - 2)
    if pooled <= 0:
        return math.nan
    correction = 1 - 3 / (4 * (n_t + n_c) - 9)
    return float(correction * (treatment.mean - control.mean) / math.sqrt(pooled))


@dataclass(frozen=True)
class CupedFit:
    """CUPED's pooled within-arm fit of the outcome on the pre-period covariate."""

    theta: float
    """``cov(Y, X) / var(X)``, pooled within arms."""
    r2: float
    """The share of the outcome's within-arm variance the covariate explains."""
    n: int
    """Units with both the outcome and the covariate."""


def cuped_fit(*arms: CoMoments) -> CupedFit | None:
    """``theta`` and ``R^2`` of the outcome ``y`` on the covariate ``x``, pooled within the
    arms (the treatment moves ``y``'s mean, not its slope on ``x``); None while the
    covariate or the outcome is constant.

    >>> a = CoMoments().update([1.0, 2.0, 3.0], [1.0, 2.5, 3.0])
    >>> b = CoMoments().update([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    >>> fit = cuped_fit(a, b)
    >>> round(fit.theta, 3), round(fit.r2, 3)
    (1.0, 0.96)

    References
    ----------
    Deng, A., Xu, Y., Kohavi, R. and Walker, T. (2013). Improving the sensitivity of
    online controlled experiments by utilizing pre-experiment data. WSDM.
    """
    m2_x = sum(arm.m2_x for arm in arms)
    m2_y = sum(arm.m2_y for arm in arms)
    c_xy = sum(arm.c_xy for arm in arms)
    if not (m2_x > 0 and m2_y > 0):
        return None
    return CupedFit(c_xy / m2_x, min(1.0, c_xy * c_xy / (m2_x * m2_y)), sum(a.n for a in arms))


@dataclass(frozen=True)
class RatioInterval:
    """The confidence sequence of ``mu_T / mu_C``: the ratios ``r`` whose difference
    ``mu_T - r mu_C`` the sequence does not rule out at ``alpha``."""

    estimate: float
    low: float
    high: float
    method: str


def ratio_sequence(
    treatment: Moments | CoMoments,
    control: Moments | CoMoments,
    *,
    alpha: float = 0.05,
    target_time: float = 1000.0,
    adjust: bool = False,
) -> RatioInterval:
    """The anytime-valid interval of the ratio of means, by test inversion (Fieller's
    construction over :func:`mean_difference_sequence`): at the true ratio ``r0`` the
    difference ``mu_T - r0 mu_C`` is 0, so ``{r : 0 in CS(r)}`` holds ``r0`` at all times
    with the difference sequence's probability. Infinite ends while control's mean is not
    surely away from 0 (or the difference's interval is infinite).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> t = Moments().update(rng.normal(1.1, 0.2, 4000))
    >>> c = Moments().update(rng.normal(1.0, 0.2, 4000))
    >>> r = ratio_sequence(t, c)
    >>> bool(r.low < 1.1 < r.high), bool(r.low > 1.0)
    (True, True)
    """

    def at(ratio: float) -> DifferenceInterval:
        return mean_difference_sequence(
            treatment, control, ratio=ratio, alpha=alpha, target_time=target_time, adjust=adjust
        )

    center = at(1.0)
    base = at(0.0)  # mu_T alone, centred as the ratio's estimate is
    control_mean = base.estimate - center.estimate  # (A_T - 0 A_C) - (A_T - A_C)
    method = center.method.replace("asymptotic_cs", "asymptotic_cs_ratio")
    if not control_mean or not math.isfinite(control_mean):
        return RatioInterval(math.nan, -math.inf, math.inf, method)
    estimate = base.estimate / control_mean
    if not math.isfinite(center.low):
        return RatioInterval(estimate, -math.inf, math.inf, method)

    def crossed(r: float) -> str | None:
        """Which end of the difference's interval left 0 behind at ``r``, if one did."""
        interval = at(r)
        return "low" if interval.low > 0 else "high" if interval.high < 0 else None

    ends = []
    for side in (-1, 1):
        near, width = estimate, max(1.0, abs(estimate))
        far = near + side * width
        for _ in range(60):
            bound = crossed(far)
            if bound is not None:
                break
            near, width = far, 2 * width
            far = near + side * width
        else:  # control's mean is not surely away from 0: no end on this side
            ends.append(side * math.inf)
            continue

        def end(r: float, bound: str = bound) -> float:
            return float(getattr(at(r), bound))

        ends.append(float(optimize.brentq(end, min(near, far), max(near, far), xtol=1e-9)))
    return RatioInterval(estimate, ends[0], ends[1], method)


def bernoulli_moments(n: int, successes: int) -> Moments:
    """The :class:`Moments` of ``n`` zeros and ones with ``successes`` ones (a rate kept as
    counts, compared by :func:`mean_difference_sequence`).

    >>> m = bernoulli_moments(4, 1)
    >>> m.mean, m.variance == Moments().update([1, 0, 0, 0]).variance
    (0.25, True)
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    moments = Moments()
    if n:
        rate = successes / n
        moments.n, moments.weight, moments.mean = n, float(n), rate
        moments.m2 = successes * (1 - rate)
    return moments


def standardized_difference(treatment: Moments, control: Moments) -> float:
    """The balance check's standardized mean difference of a pre-treatment covariate,
    ``(mean_T - mean_C) / sqrt((var_T + var_C) / 2)``; ``|d| < 0.1`` is the usual mark of
    balance. NaN below two values in an arm or with no spread.

    >>> a, b = Moments().update([1.0, 2, 3]), Moments().update([1.5, 2.5, 3.5])
    >>> d = standardized_difference(a, b)
    >>> round(d, 2)
    -0.5

    References
    ----------
    Austin, P. C. (2009). Balance diagnostics for comparing the distribution of baseline
    covariates between treatment groups. Statistics in Medicine 28(25).
    """
    spread = (treatment.variance + control.variance) / 2
    if not spread > 0:
        return math.nan
    return float((treatment.mean - control.mean) / math.sqrt(spread))


def achieved_power(
    treatment: Moments,
    control: Moments,
    mde: float,
    alpha: float = 0.05,
    target_time: float = 1000.0,
    variance_reduction: float = 0.0,
) -> tuple[float, float]:
    """The power reached so far against a true difference ``mde``, from the arms' counts
    and variances (CUPED's ``variance_reduction`` taken off): ``(fixed, anytime)``, that of
    one fixed-horizon z test at ``alpha`` now, and that of the anytime-valid interval
    (:func:`anytime_power`) to exclude 0 now. NaN below two values in an arm.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = Moments().update(rng.normal(size=393)), Moments().update(rng.normal(size=393))
    >>> fixed, anytime = achieved_power(a, b, 0.2, target_time=786)
    >>> round(fixed, 1), bool(anytime < fixed)
    (0.8, True)
    """
    if treatment.n < 2 or control.n < 2:
        return math.nan, math.nan
    variance = treatment.variance / treatment.n + control.variance / control.n
    standard_error = math.sqrt(max(variance * (1 - variance_reduction), 0.0))
    total = treatment.n + control.n
    return (
        fixed_power(mde, standard_error, alpha),
        anytime_power(mde, standard_error * math.sqrt(total), total, alpha, target_time),
    )
