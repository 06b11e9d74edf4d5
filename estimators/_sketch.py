"""A mergeable relative-error quantile sketch (DDSketch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator

__all__ = ["QuantileSketch"]


def _add_counts(store: dict[int, int], keys: np.ndarray) -> None:
    unique, counts = np.unique(keys, return_counts=True)
    for key, count in zip(unique.tolist(), counts.tolist(), strict=True):
        store[key] = store.get(key, 0) + count


class QuantileSketch(StatefulEstimator):
    """Quantiles with relative error at most ``relative_accuracy``, merged exactly.

    Values fall into logarithmic buckets ``(gamma^(k-1), gamma^k]`` with
    ``gamma = (1 + a) / (1 - a)`` (negatives mirrored, zeros counted apart). A quantile is
    answered by its bucket's representative ``2 gamma^k / (gamma + 1)``, which is within
    a relative ``a`` of every value in the bucket. Bucket counts add, so merging two
    workers' sketches is exact: the merge equals the sketch of the union. The same
    buckets give the two-sample Kolmogorov-Smirnov distance with a stated error bound,
    see :meth:`ks_distance`.

    Parameters
    ----------
    relative_accuracy
        ``a`` in ``(0, 1)``; 0.01 keeps p95 latency within 1%.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).lognormal(5, 1, 100_000)
    >>> sketch = QuantileSketch(0.01).update(x[:50_000])
    >>> sketch += QuantileSketch(0.01).update(x[50_000:])
    >>> true = np.quantile(x, 0.95, method="inverted_cdf")
    >>> bool(abs(sketch.quantile(0.95) - true) <= 0.01 * true)
    True

    References
    ----------
    Masson, C., Rim, J. E. and Lee, H. K. (2019). DDSketch: a fast and fully-mergeable
    quantile sketch with relative-error guarantees. PVLDB 12(12).
    """

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zeros = 0
        self.n = 0

    def update(self, values: ArrayLike) -> QuantileSketch:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        if not np.isfinite(x).all():
            raise ValueError("values must be finite")
        positive, negative = x[x > 0], -x[x < 0]
        if positive.size:
            _add_counts(self.positive, np.ceil(np.log(positive) / self._log_gamma).astype(np.int64))
        if negative.size:
            _add_counts(self.negative, np.ceil(np.log(negative) / self._log_gamma).astype(np.int64))
        self.zeros += int(x.size - positive.size - negative.size)
        self.n += int(x.size)
        return self

    def _check_compatible(self, other: QuantileSketch) -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("sketches with different relative accuracy do not merge")

    def __iadd__(self, other: QuantileSketch) -> QuantileSketch:
        self._check_compatible(other)
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.zeros += other.zeros
        self.n += other.n
        return self

    def _buckets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Buckets in increasing order: (upper edge, representative value, count)."""
        neg_keys = np.array(sorted(self.negative, reverse=True), dtype=np.float64)
        pos_keys = np.array(sorted(self.positive), dtype=np.float64)
        g = self.gamma
        edges = np.concatenate([-(g ** (neg_keys - 1)), [0.0] if self.zeros else [], g**pos_keys])
        values = np.concatenate(
            [-2 * g**neg_keys / (g + 1), [0.0] if self.zeros else [], 2 * g**pos_keys / (g + 1)]
        )
        counts = np.concatenate(
            [
                [self.negative[int(k)] for k in neg_keys],
                [self.zeros] if self.zeros else [],
                [self.positive[int(k)] for k in pos_keys],
            ]
        ).astype(np.float64)
        return edges, values, counts

    def quantile(self, q: float) -> float:
        """The value at quantile ``q`` (lower quantile: the ``ceil(q n)``-th smallest)."""
        if self.n == 0:
            return math.nan
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        _, values, counts = self._buckets()
        rank = max(math.ceil(q * self.n), 1)
        return float(values[np.searchsorted(np.cumsum(counts), rank)])

    def bounds_at_ranks(self, ranks: Sequence[int]) -> list[tuple[float, float]]:
        """For each ``rank`` in ``1..n``, the lowest and the highest value the ``rank``-th
        smallest value can have: the edges of the bucket that holds it.

        >>> sketch = QuantileSketch(0.01).update([1.0, 2.0, 3.0, 0.0, -5.0])
        >>> [(round(low, 3), round(high, 3)) for low, high in sketch.bounds_at_ranks([1, 2, 4])]
        [(-5.053, -4.953), (0.0, 0.0), (1.974, 2.014)]
        """
        if not all(1 <= rank <= self.n for rank in ranks):
            raise ValueError(f"ranks must be in 1..{self.n}")
        g = self.gamma
        neg_keys = np.array(sorted(self.negative, reverse=True), dtype=np.float64)
        pos_keys = np.array(sorted(self.positive), dtype=np.float64)
        zero = [0.0] if self.zeros else []
        lows = np.concatenate([-(g**neg_keys), zero, g ** (pos_keys - 1)])
        highs = np.concatenate([-(g ** (neg_keys - 1)), zero, g**pos_keys])
        counts = np.concatenate(
            [
                [self.negative[int(k)] for k in neg_keys],
                [self.zeros] if self.zeros else [],
                [self.positive[int(k)] for k in pos_keys],
            ]
        )
        where = np.searchsorted(np.cumsum(counts), np.asarray(ranks, dtype=np.int64))
        return [(float(lows[i]), float(highs[i])) for i in where]

    def _key(self, magnitude: float) -> int:
        """The bucket key of ``magnitude > 0``, computed exactly as :meth:`update` does."""
        array = np.array([magnitude], dtype=np.float64)
        return int(np.ceil(np.log(array) / self._log_gamma).astype(np.int64)[0])

    def count_above(self, x: float) -> int:
        """How many values are certainly greater than ``x``: those in higher buckets.

        The values in the bucket that contains ``x`` are not counted (they may lie on
        either side of it), so the true count is between this and this plus that
        bucket's count. The key of ``x`` is computed with the same numpy expression as
        :meth:`update`'s and the mapping is monotone, so every counted value is ``> x``.

        >>> sketch = QuantileSketch(0.01).update([-3.0, 0.0, 0.0, 1.0, 5.0, 5.01, 9.0])
        >>> sketch.count_above(5.0), sketch.count_above(0.0), sketch.count_above(-3.0)
        (1, 4, 6)
        >>> sketch.count_above(-100.0), sketch.count_above(100.0)
        (7, 0)
        """
        value = float(x)
        if math.isnan(value):
            raise ValueError("x must not be NaN")
        if value == math.inf:
            return 0
        if value == -math.inf:
            return self.n
        if value > 0:
            key = self._key(value)
            return sum(count for k, count in self.positive.items() if k > key)
        above_zero = sum(self.positive.values())
        if value == 0:
            return above_zero
        # Negative x: smaller magnitudes are greater values, then the zeros and positives.
        key = self._key(-value)
        closer = sum(count for k, count in self.negative.items() if k < key)
        return closer + self.zeros + above_zero

    def count_maybe_above(self, x: float) -> int:
        """How many values may be greater than ``x``: :meth:`count_above` and the values of
        the bucket that holds ``x`` (at least the true count).

        >>> sketch = QuantileSketch(0.01).update([-3.0, 0.0, 0.0, 1.0, 5.0, 5.01, 9.0])
        >>> sketch.count_maybe_above(5.0), sketch.count_maybe_above(0.0)
        (3, 4)
        >>> sketch.count_maybe_above(-3.0), sketch.count_maybe_above(-2.99)
        (7, 7)
        """
        value = float(x)
        surely = self.count_above(value)
        if value == 0 or not math.isfinite(value):
            return surely  # zeros are counted exactly; no bucket holds an infinity
        if value > 0:
            return surely + self.positive.get(self._key(value), 0)
        return surely + self.negative.get(self._key(-value), 0)

    def cdf_at_edges(self, edges: np.ndarray) -> np.ndarray:
        """Exact fraction of values ``<= e`` for every bucket edge ``e`` of this accuracy."""
        own_edges, _, counts = self._buckets()
        cumulative = np.concatenate([[0.0], np.cumsum(counts)])
        return cumulative[np.searchsorted(own_edges, edges, side="right")] / max(self.n, 1)

    def ks_distance(self, other: QuantileSketch) -> tuple[float, float]:
        """Two-sample KS distance from the sketches, and a bound on its error.

        Both CDFs are exact at the shared bucket edges, so ``D_edges <= D``; inside one
        bucket each CDF moves by at most that bucket's mass, so
        ``D <= D_edges + max bucket mass``. Returns ``(D_edges, bound)``.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(1, 1, 5000), rng.normal(1.2, 1, 5000)
        >>> d, bound = QuantileSketch(0.01).update(a).ks_distance(QuantileSketch(0.01).update(b))
        >>> from scipy.stats import ks_2samp
        >>> bool(d <= ks_2samp(a, b).statistic <= d + bound)
        True
        """
        self._check_compatible(other)
        if self.n == 0 or other.n == 0:
            return math.nan, math.nan
        mine, _, my_counts = self._buckets()
        theirs, _, their_counts = other._buckets()
        edges = np.union1d(mine, theirs)
        distance = float(np.max(np.abs(self.cdf_at_edges(edges) - other.cdf_at_edges(edges))))
        bound = max(float(my_counts.max()) / self.n, float(their_counts.max()) / other.n)
        return distance, bound

    def bucket_fractions(self, edges: ArrayLike) -> np.ndarray:
        """Fractions of values in ``(-inf, e_1], (e_1, e_2], ..., (e_k, inf)`` (for PSI),
        exact up to the bucket that straddles each edge."""
        cdf = self.cdf_at_edges(np.asarray(edges, dtype=np.float64))
        return np.diff(np.concatenate([[0.0], cdf, [1.0]]))

    def to_state(self) -> dict[str, Any]:
        # Buckets in the order they appeared (no sort: this is written after every
        # batch); equality compares the buckets as mappings, whatever their order.
        return {
            "relative_accuracy": self.relative_accuracy,
            "positive": list(self.positive.items()),
            "negative": list(self.negative.items()),
            "zeros": self.zeros,
            "n": self.n,
        }

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, QuantileSketch)
        return (
            self.relative_accuracy == other.relative_accuracy
            and self.positive == other.positive
            and self.negative == other.negative
            and (self.zeros, self.n) == (other.zeros, other.n)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QuantileSketch:
        sketch = cls(state["relative_accuracy"])
        sketch.positive = {int(k): int(c) for k, c in state["positive"]}
        sketch.negative = {int(k): int(c) for k, c in state["negative"]}
        sketch.zeros, sketch.n = int(state["zeros"]), int(state["n"])
        return sketch
