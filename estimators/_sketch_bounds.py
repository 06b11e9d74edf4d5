"""Anytime-valid bounds on tails and quantiles of a sketched distribution."""

from __future__ import annotations

import math

from ._bernoulli import BernoulliSequence
from ._interval import Interval
from ._sketch import QuantileSketch

__all__ = ["exceedance_sequence", "quantile_interval", "quantile_rank_bounds"]


def exceedance_sequence(
    sketch: QuantileSketch,
    threshold: float,
    alpha: float,
    prior_a: float = 1.0,
    prior_b: float = 1.0,
) -> Interval:
    """Confidence sequence for ``P(X > threshold)`` from a sketch of the values seen.

    "The 95th percentile exceeds 1,200 ms" is "more than 5% of the values exceed 1,200 ms",
    so a quantile ceiling is tested on a rate: Robbins' beta-binomial mixture
    (:class:`BernoulliSequence`) on the count of values above the threshold, valid
    under continuous monitoring. The sketch cannot place the values of the bucket that
    holds the threshold, so the lower end counts only the values certainly above it and
    the upper end counts them all: bucketing can only widen the interval.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sketch = QuantileSketch().update(rng.lognormal(6.8, 0.3, 4000))  # p95 ~ 1,470 ms
    >>> tail = exceedance_sequence(sketch, 1200.0, 0.05)
    >>> tail.low > 0.05  # the p95 is surely above 1,200 ms
    True

    References
    ----------
    Howard, S. R. and Ramdas, A. (2022). Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification. Bernoulli 28(3).
    """
    if sketch.n == 0:
        return Interval(math.nan, 0.0, 1.0)
    prior = (alpha, prior_a, prior_b)  # the mixture (see BernoulliSequence)
    low = BernoulliSequence.from_counts(sketch.n, sketch.count_above(threshold), *prior).interval
    maybe_above = sketch.count_maybe_above(threshold)
    high = BernoulliSequence.from_counts(sketch.n, maybe_above, *prior).interval
    return Interval(low.estimate, low.low, high.high)


def quantile_rank_bounds(n: int, q: float, alpha: float) -> tuple[int, int] | None:
    """The counts ``j`` of values at most the ``q``-quantile that are consistent with it:
    the ``j`` in ``0..n`` whose Robbins mixture at ``q`` stays below ``1/alpha``.

    They form an interval around ``q n`` (the mixture is convex in the count), found by
    binary search; None when no count fits (too few values). The ranks depend on ``n``,
    ``q`` and ``alpha`` only, not on the values.

    >>> quantile_rank_bounds(10_000, 0.95, 0.05)
    (9410, 9586)
    """
    level = math.log(1.0 / alpha)

    def consistent(rank: int) -> bool:
        return BernoulliSequence.from_counts(n, rank, alpha).log_mixture_ratio(q) < level

    center = min(n, max(0, round(q * n)))
    if not consistent(center):
        return None
    lowest, inside = 0, center
    if consistent(0):
        inside = 0
    while inside - lowest > 1:
        middle = (lowest + inside) // 2
        lowest, inside = (lowest, middle) if consistent(middle) else (middle, inside)
    j_lo = inside
    inside, highest = center, n
    if consistent(n):
        inside = n
    while highest - inside > 1:
        middle = (inside + highest) // 2
        inside, highest = (middle, highest) if consistent(middle) else (inside, middle)
    return j_lo, inside


def quantile_interval(sketch: QuantileSketch, q: float, alpha: float) -> Interval:
    """The ``q``-quantile of the values seen, with an anytime-valid interval.

    The count of values at most ``x`` is binomial in ``F(x)``, so the quantile's
    interval holds every ``x`` whose count is consistent with ``F(x) = q`` under Robbins'
    mixture sequence: with the ranks ``j`` of the sample for which ``q`` is inside the
    sequence of ``j`` successes in ``n``, ``j_lo..j_hi``, the interval runs from the
    ``j_lo``-th smallest value to the ``(j_hi + 1)``-th, infinite where that rank falls
    outside the sample (too few values to bound the quantile on that side), taken at the
    outer edges of the sketch's buckets that hold those values.

    >>> import numpy as np
    >>> sketch = QuantileSketch().update(np.arange(1.0, 10_001.0))
    >>> p95 = quantile_interval(sketch, 0.95, 0.05)
    >>> p95.low < 9500 < p95.high, abs(p95.estimate / 9500 - 1) < 0.02  # 1% buckets
    (True, True)
    >>> few = quantile_interval(QuantileSketch().update(np.arange(1.0, 21.0)), 0.95, 0.05)
    >>> few.high  # 20 values cannot bound the p95 from above
    inf

    References
    ----------
    Howard, S. R. and Ramdas, A. (2022). Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification. Bernoulli 28(3).
    """
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    n = sketch.n
    if n == 0:
        return Interval(math.nan, -math.inf, math.inf)
    estimate = sketch.quantile(q)
    ranks = quantile_rank_bounds(n, q, alpha)
    if ranks is None:  # no rank fits yet: nothing bounds the quantile
        return Interval(estimate, -math.inf, math.inf)
    j_lo, j_hi = ranks
    low = -math.inf if j_lo == 0 else sketch.bounds_at_ranks([j_lo])[0][0]
    high = math.inf if j_hi >= n else sketch.bounds_at_ranks([j_hi + 1])[0][1]
    return Interval(estimate, low, high)
