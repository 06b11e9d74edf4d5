"""Mergeable bivariate moments of pairs ``(x, y)``: means, variances and the co-moment."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import paired
from ._base import StatefulEstimator
from ._moments import Moments

__all__ = ["CoMoments"]


class CoMoments(StatefulEstimator):
    """Count, means, sums of squared deviations and sum of co-deviations of pairs.

    The bivariate version of :class:`Moments`: a batch of pairs is reduced with numpy
    (two-pass: means first, then the deviations' dot products) and folded into the
    running state with the pairwise update of Chan, Golub and LeVeque, extended to the
    co-moment as in Bennett et al. (2009):

        ``C = C_a + C_b + (mean_x_b - mean_x_a) (mean_y_b - mean_y_a) n_a n_b / n``,

    which is also how two workers' states merge. In driftgate ``x`` is a pre-period
    covariate and ``y`` the outcome (CUPED, see :func:`mean_difference_sequence`).

    Attributes
    ----------
    n : int
        Number of pairs seen.
    mean_x, mean_y : float
        Means of each coordinate, 0.0 when empty.
    m2_x, m2_y : float
        Sums of squared deviations from each mean.
    c_xy : float
        Sum of co-deviations ``sum (x_i - mean_x) (y_i - mean_y)``.

    Examples
    --------
    >>> a = CoMoments().update([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    >>> a += CoMoments().update([4.0, 5.0], [8.0, 9.0])
    >>> a.n, a.mean_x, a.mean_y, round(a.cov, 12)
    (5, 3.0, 6.0, 4.5)
    >>> import numpy as np
    >>> round(float(np.cov([1, 2, 3, 4, 5], [2, 4, 7, 8, 9])[0, 1]), 12)
    4.5
    >>> round(a.y_moments().variance, 12), float(np.var([2, 4, 7, 8, 9], ddof=1))
    (8.5, 8.5)
    >>> CoMoments.from_state(a.to_state()) == a
    True

    References
    ----------
    Chan, T. F., Golub, G. H. and LeVeque, R. J. (1979). Updating formulae and a
    pairwise algorithm for computing sample variances. Stanford CS-TR-79-773.
    Bennett, J., Grout, R., Pébay, P., Roe, D. and Thompson, D. (2009). Numerically
    stable, single-pass, parallel statistics algorithms. IEEE International Conference
    on Cluster Computing.
    """

    __slots__ = ("c_xy", "m2_x", "m2_y", "mean_x", "mean_y", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean_x = 0.0
        self.mean_y = 0.0
        self.m2_x = 0.0
        self.m2_y = 0.0
        self.c_xy = 0.0

    def update(self, x: ArrayLike, y: ArrayLike) -> CoMoments:
        """Fold a batch of pairs in: ``x[i]`` goes with ``y[i]``."""
        xs, ys = paired(x, y)
        if xs.size == 0:
            return self
        batch = CoMoments()
        batch.n = int(xs.size)
        batch.mean_x, batch.mean_y = float(xs.mean()), float(ys.mean())
        dx, dy = xs - batch.mean_x, ys - batch.mean_y
        batch.m2_x = float(np.dot(dx, dx))
        batch.m2_y = float(np.dot(dy, dy))
        batch.c_xy = float(np.dot(dx, dy))
        return self._merge(batch)

    def _merge(self, other: CoMoments) -> CoMoments:
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean_x, self.mean_y = other.n, other.mean_x, other.mean_y
            self.m2_x, self.m2_y, self.c_xy = other.m2_x, other.m2_y, other.c_xy
            return self
        total = self.n + other.n
        dx, dy = other.mean_x - self.mean_x, other.mean_y - self.mean_y
        weight = self.n * other.n / total
        self.mean_x += dx * other.n / total
        self.mean_y += dy * other.n / total
        self.m2_x += other.m2_x + dx * dx * weight
        self.m2_y += other.m2_y + dy * dy * weight
        self.c_xy += other.c_xy + dx * dy * weight
        self.n = total
        return self

    def __iadd__(self, other: CoMoments) -> CoMoments:
        return self._merge(other)

    @property
    def var_x(self) -> float:
        """Sample (``ddof=1``) variance of ``x``; NaN below two pairs."""
        return self.m2_x / (self.n - 1) if self.n > 1 else math.nan

    @property
    def var_y(self) -> float:
        """Sample (``ddof=1``) variance of ``y``; NaN below two pairs."""
        return self.m2_y / (self.n - 1) if self.n > 1 else math.nan

    @property
    def cov(self) -> float:
        """Sample (``ddof=1``) covariance of ``x`` and ``y``; NaN below two pairs."""
        return self.c_xy / (self.n - 1) if self.n > 1 else math.nan

    @property
    def correlation(self) -> float:
        """Pearson correlation; NaN below two pairs or when a coordinate is constant."""
        if self.n < 2 or self.m2_x <= 0.0 or self.m2_y <= 0.0:
            return math.nan
        return max(-1.0, min(1.0, self.c_xy / math.sqrt(self.m2_x * self.m2_y)))

    def x_moments(self) -> Moments:
        """The :class:`Moments` of ``x`` alone (a copy: updating it leaves this untouched)."""
        return _moments(self.n, self.mean_x, self.m2_x)

    def y_moments(self) -> Moments:
        """The :class:`Moments` of ``y`` alone (a copy: updating it leaves this untouched)."""
        return _moments(self.n, self.mean_y, self.m2_y)

    def to_state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_x": self.mean_x,
            "mean_y": self.mean_y,
            "m2_x": self.m2_x,
            "m2_y": self.m2_y,
            "c_xy": self.c_xy,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CoMoments:
        moments = cls()
        moments.n = int(state["n"])
        moments.mean_x, moments.mean_y = float(state["mean_x"]), float(state["mean_y"])
        moments.m2_x, moments.m2_y = float(state["m2_x"]), float(state["m2_y"])
        moments.c_xy = float(state["c_xy"])
        return moments

    def __repr__(self) -> str:
        return (
            f"CoMoments(n={self.n}, mean_x={self.mean_x!r}, mean_y={self.mean_y!r}, "
            f"cov={self.cov!r})"
        )


def _moments(n: int, mean: float, m2: float) -> Moments:
    moments = Moments()
    moments.n, moments.weight, moments.mean, moments.m2 = n, float(n), mean, m2
    return moments
