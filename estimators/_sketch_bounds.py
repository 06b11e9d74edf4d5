"""Anytime-valid bounds on tails and quantiles of a sketched distribution."""

from __future__ import annotations

import math

from ._bernoulli import BernoulliSequence
from ._normal_mixture import Interval
from ._sketch import QuantileSketch

__all__ = ["exceedance_sequence", "quantile_interval"]


def exceedance_sequence(sketch: QuantileSketch, threshold: float, alpha: float) -> Interval:
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
    surely_above = sketch.count_above(threshold)
    maybe_above = sketch.count_above(threshold * (1 - 2 * sketch.relative_accuracy))
    low = BernoulliSequence.from_counts(sketch.n, surely_above, alpha).interval
    high = BernoulliSequence.from_counts(sketch.n, maybe_above, alpha).interval
    return Interval(low.estimate, low.low, high.high)


def quantile_interval(sketch: QuantileSketch, q: float, alpha: float) -> Interval:
    """The ``q``-quantile of the values seen, with an anytime-valid interval.

    The interval is read off the sketch at the ends of a confidence sequence for the
    share of values below the quantile (a rate, as in :func:`exceedance_sequence`),
    widened by the sketch's relative accuracy.

    >>> import numpy as np
    >>> sketch = QuantileSketch().update(np.arange(1.0, 10_001.0))
    >>> p95 = quantile_interval(sketch, 0.95, 0.05)
    >>> p95.low < 9500 < p95.high, abs(p95.estimate / 9500 - 1) < 0.02  # 1% buckets
    (True, True)
    """
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    if sketch.n == 0:
        return Interval(math.nan, -math.inf, math.inf)
    ends = BernoulliSequence.from_counts(sketch.n, round(q * sketch.n), alpha).interval
    accuracy = sketch.relative_accuracy
    low = sketch.quantile(max(ends.low, 0.0)) if ends.low > 0 else -math.inf
    high = sketch.quantile(min(ends.high, 1.0)) if ends.high < 1 else math.inf
    return Interval(
        sketch.quantile(q),
        low - abs(low) * accuracy if math.isfinite(low) else low,
        high + abs(high) * accuracy if math.isfinite(high) else high,
    )
