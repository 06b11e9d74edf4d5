"""Mergeable first and second moments of a stream of values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator

__all__ = ["Moments"]


class Moments(StatefulEstimator):
    """Count, mean and sum of squared deviations, updated by batch and merged exactly.

    A batch is reduced with numpy (two-pass, so each batch is as accurate as
    ``np.mean`` / ``np.var``) and folded into the running state with the
    pairwise update of Chan, Golub and LeVeque, which is also how two workers'
    states are merged. Optional weights make it the weighted (frequency) version.

    Attributes
    ----------
    n : int
        Number of values seen.
    weight : float
        Sum of the weights (equals ``n`` when unweighted).
    mean : float
        Weighted mean, 0.0 when empty.
    m2 : float
        Weighted sum of squared deviations from the mean.

    Examples
    --------
    >>> a = Moments().update([1.0, 2.0, 3.0])
    >>> b = Moments().update([4.0, 5.0])
    >>> a += b
    >>> a.n, a.mean, round(a.variance, 12)
    (5, 3.0, 2.5)
    >>> Moments.from_state(a.to_state()) == a
    True

    References
    ----------
    Chan, T. F., Golub, G. H. and LeVeque, R. J. (1979). Updating formulae and a
    pairwise algorithm for computing sample variances. Stanford CS-TR-79-773.
    West, D. H. D. (1979). Updating mean and variance estimates: an improved
    method. Communications of the ACM 22(9).
    """

    __slots__ = ("m2", "mean", "n", "weight")

    def __init__(self) -> None:
        self.n = 0
        self.weight = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: ArrayLike, weights: ArrayLike | None = None) -> Moments:
        """Fold a batch of finite values (and optional non-negative weights) in."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        if weights is None:
            if x.size == 1:  # a look after every event: what the two passes give, directly
                batch = Moments()
                batch.n, batch.weight, batch.mean = 1, 1.0, float(x[0])
                return self._merge(batch)
            batch = _from_sums(x.size, float(x.size), float(x.mean()), x)
            return self._merge(batch)
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise ValueError(f"weights have shape {w.shape}, values {x.shape}")
        if np.any(w < 0):
            raise ValueError("weights must be non-negative")
        total = float(w.sum())
        if total == 0.0:
            self.n += x.size
            return self
        mean = float(np.dot(w, x) / total)
        batch = Moments()
        batch.n, batch.weight, batch.mean = x.size, total, mean
        batch.m2 = float(np.dot(w, (x - mean) ** 2))
        return self._merge(batch)

    def _merge(self, other: Moments) -> Moments:
        if other.weight == 0.0:
            self.n += other.n
            return self
        if self.weight == 0.0:
            self.n += other.n
            self.weight, self.mean, self.m2 = other.weight, other.mean, other.m2
            return self
        total = self.weight + other.weight
        delta = other.mean - self.mean
        self.mean += delta * other.weight / total
        self.m2 += other.m2 + delta * delta * self.weight * other.weight / total
        self.weight = total
        self.n += other.n
        return self

    def __iadd__(self, other: Moments) -> Moments:
        return self._merge(other)

    @property
    def variance(self) -> float:
        """Unbiased (``ddof=1``) variance for unit weights; NaN below two values."""
        if self.weight <= 1.0:
            return math.nan
        return self.m2 / (self.weight - 1.0)

    @property
    def population_variance(self) -> float:
        return self.m2 / self.weight if self.weight > 0 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def to_state(self) -> dict[str, Any]:
        return {"n": self.n, "weight": self.weight, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Moments:
        moments = cls()
        moments.n = int(state["n"])
        moments.weight = float(state["weight"])
        moments.mean = float(state["mean"])
        moments.m2 = float(state["m2"])
        return moments

    def __repr__(self) -> str:
        return f"Moments(n={self.n}, mean={self.mean!r}, variance={self.variance!r})"


def _from_sums(n: int, weight: float, mean: float, x: np.ndarray) -> Moments:
    moments = Moments()
    moments.n, moments.weight, moments.mean = n, weight, mean
    deviations = x - mean
    moments.m2 = float(np.dot(deviations, deviations))
    return moments
