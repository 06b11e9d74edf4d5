"""Online, from mergeable moments: the augmented value estimate, its plan and its wait."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._budget import VarianceModel, _mde_multiplier
from ._moments import Moments
from ._normal_mixture import (
    Interval,
    normal_mixture_half_width,
    optimal_rho,
)

__all__ = [
    "OnlineLabelPlan",
    "ValueEstimate",
    "labels_to_exclude_zero",
    "online_label_plan",
    "online_value_estimate",
]

# Past this many more labels the answer is "not in any useful time": the search stops.
_LABELS_SEARCH_LIMIT = 10**12


@dataclass(frozen=True)
class ValueEstimate:
    """The augmented value estimate of a stream and its anytime-valid interval."""

    estimate: float
    """``plug_in + residual_correction`` (NaN with no scored event)."""
    interval: Interval
    """Infinite until there are enough labels (``min_labeled``) to trust a variance."""
    plug_in: float
    """Mean calibrated score ``f(S)`` over every scored event."""
    residual_correction: float
    """Mean residual ``Y - f(S)`` over the labeled events (0.0 with none)."""
    standard_error: float
    """``sqrt(Var f(S) / n + Var(Y - f(S)) / m + 2 Cov / n)``; NaN while the interval is
    infinite."""
    n_scored: int
    n_labeled: int


def online_value_estimate(
    predictions: Moments,
    residuals: Moments,
    covariance: float = 0.0,
    alpha: float = 0.05,
    target_time: float = 1000.0,
    min_labeled: int = 30,
) -> ValueEstimate:
    """``mean f(S)`` over all scored events ``+ mean (Y - f(S))`` over the labeled ones.

    The online form of :func:`augmented_estimate` for a calibrator that is fixed while
    the stream runs (a new calibrator starts new moments), computed from the mergeable
    moments of ``f(S)`` over the ``n`` scored events and of the residual over the ``m``
    labeled ones, so workers' partial sums merge exactly.

    The interval is a normal-mixture confidence sequence, as the residual interval is
    (:class:`NormalMixtureSequence`), so it may be read after every batch. With labels
    missing at random at the rate ``pi = m / n``, the estimate is the mean over the ``n``
    scored events of the augmented terms ``psi_i = f(S_i) + L_i (Y_i - f(S_i)) / pi``
    (``L_i`` = 1 if labeled), whose variance per event is ``n SE^2`` with

        ``SE^2 = Var f(S) / n + Var(Y - f(S)) / m + 2 Cov(f(S), Y - f(S)) / n``

    (the covariance over the labeled events: zero for a calibrated ``f``, the residual
    gate's null, and a term of order ``m / n`` of the residual one otherwise, but not
    negligible when most events are labeled). The mixture boundary in the intrinsic time
    ``n`` of that stream gives the half-width ``SE u(n) / sqrt(n)`` (the asymptotic
    confidence sequences of Waudby-Smith et al.); the simulation in
    ``tests/unit/estimators/test_online_value.py`` checks its coverage at every look.

    Parameters
    ----------
    predictions
        Moments of ``f(S)`` over every scored event (labeled or not).
    residuals
        Moments of ``Y - f(S)`` over the labeled events, under the same calibrator.
    covariance
        ``Cov(f(S), Y - f(S))`` over the labeled events (see :class:`CoMoments`); 0 drops
        the term.
    alpha, target_time
        Of the mixture boundary (``rho`` from :func:`optimal_rho`), as for the residuals.
    min_labeled
        Fewer labels than this (or fewer than two scored events): an infinite interval.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> s = rng.uniform(size=20_000); y = s**2 + rng.normal(0, 0.1, s.size)  # E[Y] = 1/3
    >>> f = s  # an identity calibrator: biased, the residual term corrects it
    >>> labeled = rng.uniform(size=s.size) < 0.1
    >>> value = online_value_estimate(Moments().update(f), Moments().update((y - f)[labeled]))
    >>> round(value.plug_in, 2), value.interval.contains(1 / 3)
    (0.5, True)

    References
    ----------
    Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of regression
    coefficients when some regressors are not always observed. JASA 89(427).
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2).
    Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H. and Ramdas, A. (2024).
    Time-uniform central limit theory and asymptotic confidence sequences. Annals of
    Statistics.
    """
    n, m = predictions.n, residuals.n
    plug_in = predictions.mean if n else math.nan
    correction = residuals.mean if m else 0.0
    estimate = plug_in + correction
    if n < 2 or m < max(min_labeled, 2):
        unknown = Interval(estimate, -math.inf, math.inf)
        return ValueEstimate(estimate, unknown, plug_in, correction, math.nan, n, m)
    variance = (
        max(predictions.variance, 0.0) / n
        + max(residuals.variance, 0.0) / m
        + 2.0 * (covariance if math.isfinite(covariance) else 0.0) / n
    )
    # Estimated pieces can make the sum negative in a freak sample: no width is no answer.
    if variance <= 0.0:
        unknown = Interval(estimate, -math.inf, math.inf)
        return ValueEstimate(estimate, unknown, plug_in, correction, math.nan, n, m)
    standard_error = math.sqrt(variance)
    rho = optimal_rho(target_time, alpha)
    # In units of one scored event: a mean of n values whose deviation is se * sqrt(n).
    half = normal_mixture_half_width(standard_error * math.sqrt(n), n, rho, alpha)
    interval = Interval(estimate, estimate - half, estimate + half)
    return ValueEstimate(estimate, interval, plug_in, correction, standard_error, n, m)


def labels_to_exclude_zero(
    mean: float,
    std: float,
    n: int,
    alpha: float = 0.05,
    target_time: float = 1000.0,
    min_n: int = 30,
) -> int | None:
    """How many more values until the normal-mixture interval would exclude 0.

    Assumes the mean and the standard deviation stay as they are now: the smallest
    ``k >= 0`` with ``n + k >= min_n`` and ``std u(n + k) / (n + k) < |mean|`` (the
    half-width of :class:`NormalMixtureSequence`). ``None`` when it would take more than
    ``10**12`` values, or ``mean`` is 0 or not finite (a mean of 0 is never excluded).

    >>> labels_to_exclude_zero(0.1, 1.0, 0)  # about (3 / 0.1)^2 in all
    922
    >>> labels_to_exclude_zero(0.1, 1.0, 2_000)
    0
    >>> labels_to_exclude_zero(0.0, 1.0, 100) is None
    True
    """
    size = abs(mean)
    if not (math.isfinite(size) and math.isfinite(std)) or size == 0.0:
        return None
    rho = optimal_rho(target_time, alpha)

    def excludes(total: int) -> bool:
        return total >= max(min_n, 2) and normal_mixture_half_width(std, total, rho, alpha) < size

    if excludes(n):
        return 0
    # The half-width falls with the count (u(t) grows like sqrt(t log t)): double, then bisect.
    low, high = n, max(2 * n, min_n, 2)
    while not excludes(high):
        if high - n > _LABELS_SEARCH_LIMIT:
            return None
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if excludes(middle) else (middle, high)
    return high - n


@dataclass(frozen=True)
class OnlineLabelPlan:
    """The label plan of ``driftgate plan``, re-estimated from a stream's own moments."""

    target_mde: float
    current_mde: float
    """The MDE of the value estimate with the labels and scored events so far."""
    labels_needed: int | None
    """Labels in all for ``target_mde``, scoring going on at today's share of labels;
    ``None`` beyond ``10**12`` (not in any useful time, and no count to store)."""
    more_labels: int | None
    """``labels_needed`` less the labels already in."""
    sigma2_eval: float
    sigma2_cal: float


def online_label_plan(
    predictions: Moments,
    residuals: Moments,
    target_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> OnlineLabelPlan | None:
    """How many more labels ``target_mde`` needs, from the stream's own variances.

    The variance model of :func:`plan_for_budget` (``Var = s2_eval / n + s2_cal / m``)
    with ``s2_eval`` the variance of ``f(S)`` over the scored events and ``s2_cal`` the
    variance of the labeled residuals, and the same MDE (``(z_{1-alpha/2} + z_power)
    sqrt(2) SE``). Online the costs are unknown but the share of events that get a label,
    ``pi = m / n``, is seen: scoring goes on at that share, so ``m`` labels come with
    ``m / pi`` scored events and ``m = (pi s2_eval + s2_cal) / SE^2``. ``None`` below two
    labels or two scored events (no variance yet).

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> f, r = rng.normal(0.5, 0.2, 10_000), rng.normal(0.0, 0.1, 1_000)
    >>> plan = online_label_plan(Moments().update(f), Moments().update(r), target_mde=0.01)
    >>> plan.labels_needed > 1_000 > plan.labels_needed - plan.more_labels - 1
    True
    >>> round(plan.current_mde, 3)
    0.015
    """
    if target_mde <= 0:
        raise ValueError("target_mde must be positive")
    n, m = predictions.n, residuals.n
    if n < 2 or m < 2:
        return None
    model = VarianceModel(max(predictions.variance, 0.0), max(residuals.variance, 0.0), "stream")
    multiplier = float(_mde_multiplier(alpha, power))
    current_mde = multiplier * math.sqrt(model.variance(n, m))
    share = min(m / n, 1.0)
    target_se = target_mde / multiplier
    exact = (share * model.s2_eval + model.s2_cal) / target_se**2
    # Huge variances (scores near the 1e100 bound) give counts no store can hold.
    needed = math.ceil(exact) if exact <= _LABELS_SEARCH_LIMIT else None
    return OnlineLabelPlan(
        target_mde,
        current_mde,
        needed,
        None if needed is None else max(needed - m, 0),
        model.s2_eval,
        model.s2_cal,
    )
