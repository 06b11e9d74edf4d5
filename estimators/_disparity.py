"""Anytime-valid bounds on the disparity ratio (lowest group mean over highest)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ._moments import Moments
from ._normal_mixture import (
    Interval,
    normal_mixture_half_width,
    optimal_rho,
)

__all__ = ["DisparityInterval", "disparity_ratio_sequence"]

_TINY = 1e-300


@dataclass(frozen=True)
class DisparityInterval:
    """One time of the confidence sequence for ``min_g mu_g / max_g mu_g``."""

    estimate: float
    """Lowest group mean over highest; NaN with fewer than 2 groups (or all means 0)."""
    low: float
    """Lower end in ``[0, 1]``; ``-inf`` with fewer than 2 groups."""
    high: float
    """Upper end in ``[0, 1]``; ``+inf`` with fewer than 2 groups."""
    lowest_group: str | None
    """The group with the lowest mean, ``None`` with fewer than 2 groups."""
    highest_group: str | None
    """The group with the highest mean, ``None`` with fewer than 2 groups."""
    groups: int
    """How many groups had at least ``min_n`` values and entered the comparison."""

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high)


def disparity_ratio_sequence(
    groups: Mapping[str, Moments],
    *,
    alpha: float = 0.05,
    target_time: float = 1000.0,
    min_n: int = 30,
    planned_groups: int = 1,
) -> DisparityInterval:
    """Confidence sequence for the disparity ratio ``R = min_g mu_g / max_g mu_g``.

    ``R`` is the "four-fifths rule" ratio of fairness audits: below 0.8, the worst-served
    group gets less than 80% of the best-served group's outcome. The outcomes must be
    non-negative (rates, scores, success indicators), so that every ``mu_g >= 0`` and
    ``R`` lies in ``[0, 1]``; a group with a negative mean is refused.

    Each of the ``G`` groups with at least ``min_n`` values gets the interval of
    :class:`NormalMixtureSequence` at level ``alpha / K``, with ``K = max(planned_groups,
    G)``,

        ``[low_g, high_g] = mean_g -+ sigma_g * u(n_g; rho, alpha / K) / n_g``

    with ``rho = optimal_rho(target_time, alpha / K)``. On the event that every group's
    mean is inside its interval at all times, ``min_g mu_g`` lies in
    ``[min_g low_g, min_g high_g]`` and ``max_g mu_g`` in ``[max_g low_g, max_g high_g]``,
    hence

        ``R >= max(0, min_g low_g) / max_g high_g``  (numerator at least its lower bound
        and at least 0, denominator at most its upper bound), and
        ``R <= min_g high_g / max_g low_g``  (when ``max_g low_g > 0``),

    both clipped to ``[0, 1]`` where ``R`` lives (``R <= 1`` always, which is also the
    upper bound when ``max_g low_g <= 0``).

    Groups enter as they reach ``min_n``, so ``G`` grows over the stream. Each group's
    level is fixed at ``alpha / planned_groups`` as long as ``G <= planned_groups``, so
    when no more than ``planned_groups`` groups ever enter, the union bound gives
    coverage ``1 - alpha`` at all times and for all groups at once. Beyond that the level
    tightens to ``alpha / G`` (a group that entered as the ``k``-th misses with
    probability at most ``alpha / max(planned_groups, k)``), so the total error can reach
    ``alpha (1 + ln(G / planned_groups))``: set ``planned_groups`` to the number of
    segments you expect. With the default 1, only a fixed set of groups present from the
    start is covered exactly.

    Parameters
    ----------
    groups
        Each group's unweighted :class:`Moments` of a non-negative outcome.
    alpha
        Error probability over the whole horizon and all groups together.
    target_time
        Group size at which each group's boundary is tightest.
    min_n
        Groups with fewer values are left out; with fewer than 2 groups left the
        interval is infinite.
    planned_groups
        The most groups expected over the stream: each group is tested at level
        ``alpha / max(planned_groups, G)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> groups = {"en": Moments().update(rng.binomial(1, 0.80, 5000)),
    ...           "de": Moments().update(rng.binomial(1, 0.78, 5000)),
    ...           "sw": Moments().update(rng.binomial(1, 0.55, 5000))}
    >>> result = disparity_ratio_sequence(groups)
    >>> result.lowest_group, result.highest_group, result.groups
    ('sw', 'en', 3)
    >>> bool(result.high < 0.8), bool(result.contains(0.55 / 0.80))
    (True, True)

    References
    ----------
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2).
    Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H. and Ramdas, A. (2024).
    Time-uniform central limit theory and asymptotic confidence sequences. Annals of
    Statistics.
    Feldman, M., Friedler, S. A., Moeller, J., Scheidegger, C. and Venkatasubramanian, S.
    (2015). Certifying and removing disparate impact. KDD (the 80% rule).
    """
    optimal_rho(target_time, alpha)  # validates alpha and target_time
    if planned_groups < 1:
        raise ValueError(f"planned_groups must be at least 1, got {planned_groups}")
    used: dict[str, Moments] = {}
    for name, moments in groups.items():
        if moments.weight != moments.n:
            raise ValueError(f"group {name!r}: weighted Moments are not supported")
        if moments.n and moments.mean < 0:
            raise ValueError(f"group {name!r} has a negative mean: outcomes must be >= 0")
        if moments.n >= max(min_n, 2) and math.isfinite(moments.variance):
            used[name] = moments
    count = len(used)
    if count < 2:
        return DisparityInterval(math.nan, -math.inf, math.inf, None, None, count)

    level = alpha / max(planned_groups, count)
    rho = optimal_rho(target_time, level)
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for name, moments in used.items():
        half = normal_mixture_half_width(
            math.sqrt(max(moments.variance, 0.0)), moments.n, rho, level
        )
        lows[name], highs[name] = moments.mean - half, moments.mean + half
    lowest = min(used, key=lambda name: used[name].mean)
    highest = max(used, key=lambda name: used[name].mean)
    top = used[highest].mean
    estimate = used[lowest].mean / top if top > 0 else math.nan
    max_high, max_low = max(highs.values()), max(lows.values())
    low = max(0.0, min(lows.values())) / max_high if max_high > 0 else 0.0
    high = min(highs.values()) / max(max_low, _TINY)
    return DisparityInterval(estimate, _unit(low), _unit(high), lowest, highest, count)


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))
