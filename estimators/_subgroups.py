"""A mean-zero e-process for bounded values, and one per category of a covariate (the
residuals of a stream by subgroup), mergeable exactly."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator
from ._categories import OTHER_CATEGORY, _pop_ranked_last, _rank
from ._interval import Interval

__all__ = ["BoundedMeanEProcess", "GroupedMeans", "default_bets"]


def default_bets() -> tuple[float, ...]:
    """The fixed bets the e-process mixes: ``0.9 / sqrt(2)^k`` for ``k = 0..17`` (0.9 down
    to 0.0016), so a mean of any size from about 0.005 of the range up has a bet within a
    factor ``sqrt(2)`` of its best, losing at most 6% of the log-evidence to the grid."""
    return tuple(round(0.9 / math.sqrt(2.0) ** k, 12) for k in range(18))


@functools.lru_cache(maxsize=8)
def _bet_arrays(bets: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The bets and Fan et al.'s exponential penalty ``-log(1 - l) - l`` of each (read-only,
    shared by every e-process of the same bets)."""
    lam = np.asarray(bets, dtype=np.float64)
    psi = -np.log1p(-lam) - lam
    lam.flags.writeable = psi.flags.writeable = False
    return lam, psi


class BoundedMeanEProcess(StatefulEstimator):
    """An e-process for the null "every value has mean ``mu`` given the past", for values
    in ``[low, high]``, from three sums: ``n``, ``sum x`` and ``sum x^2``.

    For ``xi >= -1`` and ``lambda`` in ``[0, 1)``, ``exp(lambda xi - psi(lambda) xi^2) <=
    1 + lambda xi`` with ``psi(l) = -log(1 - l) - l`` (Fan, Grama and Liu 2012), so under
    the null ``exp(lambda S_t - psi(lambda) V_t)`` is a nonnegative supermartingale, with
    ``S_t`` the sum of ``(x_i - mu) / (mu - low)`` and ``V_t`` the sum of their squares
    (Howard et al. 2021's empirical-Bernstein supermartingale with the fixed predictor
    ``mu``); the same with ``(mu - x_i) / (high - mu)`` for means below. The e-process is
    the average of both over a fixed grid of bets (:func:`default_bets`): a test
    supermartingale, so ``P(E_t >= 1/alpha for some t) <= alpha`` (Ville), and an e-value
    at every stopping time. It is variance-adaptive (``V_t`` is about ``t`` times the
    variance) and, the bets being fixed, a function of the sums alone: merging adds them,
    exactly, however a stream is batched or split, and every null ``mu`` is tested from
    the same sums, so :meth:`interval` inverts it into a confidence sequence.

    Parameters
    ----------
    low, high
        Known bounds of the values (a residual ``y - f(s)`` with labels and predictions
        in ``[0, 1]`` lies in ``[-1, 1]``).
    bets
        The grid of bets, each in ``(0, 1)``.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> null = BoundedMeanEProcess(-1, 1).update(rng.uniform(-0.5, 0.5, 2_000))
    >>> null.e_value() < 1
    True
    >>> biased = BoundedMeanEProcess(-1, 1).update(rng.uniform(-0.5, 0.5, 2_000) + 0.1)
    >>> biased.e_value() > 1e6, biased.interval(20).contains(0.1)
    (True, True)

    References
    ----------
    Fan, X., Grama, I. and Liu, Q. (2012). Hoeffding's inequality for supermartingales.
    Stochastic Processes and their Applications 122(10).
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2).
    """

    __slots__ = ("_lam", "_pairs", "_psi", "bets", "high", "low", "n", "sum_sq", "sum_x")

    def __init__(
        self, low: float = -1.0, high: float = 1.0, bets: Iterable[float] | None = None
    ) -> None:
        if not high > low:
            raise ValueError("high must exceed low")
        self.low, self.high = float(low), float(high)
        self.bets = tuple(float(b) for b in (default_bets() if bets is None else bets))
        if not self.bets or not all(0 < b < 1 for b in self.bets):
            raise ValueError("bets must be in (0, 1)")
        self._lam, self._psi = _bet_arrays(self.bets)
        self._pairs = tuple(zip(self._lam.tolist(), self._psi.tolist(), strict=True))
        self.n = 0
        self.sum_x = 0.0
        self.sum_sq = 0.0

    def update(self, values: ArrayLike) -> BoundedMeanEProcess:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        if not (x.min() >= self.low and x.max() <= self.high):
            raise ValueError(f"values must lie in [{self.low}, {self.high}]")
        self.n += int(x.size)
        self.sum_x += float(x.sum())
        self.sum_sq += float(np.dot(x, x))
        return self

    def _design(self) -> tuple[float, float, tuple[float, ...]]:
        return (self.low, self.high, self.bets)

    def __iadd__(self, other: BoundedMeanEProcess) -> BoundedMeanEProcess:
        if other._design() != self._design():
            raise ValueError("cannot merge e-processes of different bounds or bets")
        self.n += other.n
        self.sum_x += other.sum_x
        self.sum_sq += other.sum_sq
        return self

    @property
    def mean(self) -> float:
        """The plain mean of the values (``nan`` before any)."""
        return self.sum_x / self.n if self.n else math.nan

    def log_e_values(self, mu: ArrayLike) -> np.ndarray:
        """``log E_t`` against each null mean in ``mu`` (each strictly inside the bounds)."""
        m = np.atleast_1d(np.asarray(mu, dtype=np.float64))[:, None]
        if self.n == 0:
            return np.zeros(m.shape[0])
        lam, psi = self._lam[None, :], self._psi[None, :]
        centred = self.sum_x - self.n * m  # sum (x - mu)
        squares = np.maximum(self.sum_sq - 2.0 * m * self.sum_x + self.n * m * m, 0.0)
        up, down = m - self.low, self.high - m  # how far below / above mu a value can lie
        terms = np.concatenate(
            [
                lam * centred / up - psi * squares / up**2,
                -lam * centred / down - psi * squares / down**2,
            ],
            axis=1,
        )
        top = terms.max(axis=1, keepdims=True)
        mixed = top[:, 0] + np.log(np.exp(terms - top).mean(axis=1))
        return np.asarray(mixed)

    def e_value(self, mu: float = 0.0) -> float:
        """``E_t`` against the null mean ``mu`` (at most ``exp(709)``, the float range)."""
        if not self.low < mu < self.high:
            raise ValueError(f"mu must lie strictly inside ({self.low}, {self.high})")
        return math.exp(min(self._log_e(mu), 709.0))

    def _log_e(self, mu: float) -> float:
        """``log E_t`` at one null mean, in plain floats (a few dozen terms: numpy's
        per-call overhead would be most of the time)."""
        if self.n == 0:
            return 0.0
        centred = self.sum_x - self.n * mu
        squares = max(self.sum_sq - 2.0 * mu * self.sum_x + self.n * mu * mu, 0.0)
        up, down = mu - self.low, self.high - mu
        a, b, c, d = centred / up, squares / up**2, -centred / down, squares / down**2
        terms = [lam * a - psi * b for lam, psi in self._pairs] + [
            lam * c - psi * d for lam, psi in self._pairs
        ]
        top = max(terms)
        return top + math.log(math.fsum(math.exp(t - top) for t in terms) / len(terms))

    def interval(self, threshold: float, resolution: float = 1e-4) -> Interval:
        """The means around the estimate not rejected at ``threshold``: with ``threshold =
        1/alpha`` a ``1 - alpha`` confidence sequence. Found on a grid of 400 means, walked
        outwards from the estimate to the first rejected one on each side, and refined by
        bisection; each end moved outwards by ``resolution`` of the range (conservative).

        Only the stretch around the estimate: near the bounds, far from the data, the
        quadratic penalty keeps ``E_t`` small (a mean of 0.99 is not rejected by its
        supermartingale from values near 0 once ``(x - mu) / (high - mu)`` is large), so
        the set of all means not rejected is no interval there."""
        if threshold <= 1:
            raise ValueError("threshold must exceed 1")
        if self.n == 0:
            return Interval(math.nan, self.low, self.high)
        log_threshold = math.log(threshold)
        span = self.high - self.low
        eps = span * 1e-9
        grid = np.linspace(self.low + eps, self.high - eps, 401)
        centre = min(max(self.mean, grid[0]), grid[-1])
        grid = np.unique(np.concatenate([grid, [centre]]))
        at = int(np.searchsorted(grid, centre))
        rejected = self.log_e_values(grid) >= log_threshold
        if rejected[at]:  # the estimate itself rejected: only past the float range
            return Interval(self.mean, self.mean, self.mean)
        step = resolution * span
        below = np.flatnonzero(rejected[:at])
        above = np.flatnonzero(rejected[at:])
        low = (
            grid[0]
            if below.size == 0
            else self._edge(grid[below[-1]], grid[below[-1] + 1], log_threshold, step)
        )
        high = (
            grid[-1]
            if above.size == 0
            else self._edge(grid[at + above[0]], grid[at + above[0] - 1], log_threshold, step)
        )
        return Interval(
            self.mean, float(max(self.low, low - step)), float(min(self.high, high + step))
        )

    def _edge(self, rejected: float, kept: float, log_threshold: float, tolerance: float) -> float:
        """Bisection between a rejected and a kept mean: the kept end, to ``tolerance``."""
        while abs(kept - rejected) > tolerance:
            middle = 0.5 * (kept + rejected)
            if self._log_e(middle) < log_threshold:
                kept = middle
            else:
                rejected = middle
        return kept

    def to_state(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "bets": list(self.bets),
            "n": self.n,
            "sum_x": self.sum_x,
            "sum_sq": self.sum_sq,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BoundedMeanEProcess:
        process = cls(state["low"], state["high"], state["bets"])
        process.n = int(state["n"])
        process.sum_x = float(state["sum_x"])
        process.sum_sq = float(state["sum_sq"])
        return process


class GroupedMeans(StatefulEstimator):
    """A :class:`BoundedMeanEProcess` per category: at most ``max_groups`` by name, the
    rest pooled as :data:`OTHER_CATEGORY`, chosen as :class:`CategoryCounts` chooses (the
    first ``max_groups`` categories in a fixed hash order), so they merge exactly however
    the values were batched and memory stays bounded.

    A category pooled after it had its own e-process hands its sums to the pooled one: the
    pooled cell's null is that of all it holds (each has mean 0 given the past), which
    every value in it keeps, so its sums make one e-process still.

    Examples
    --------
    >>> a = GroupedMeans(2).update(["legal", "code"], [0.1, -0.2])
    >>> b = GroupedMeans(2).update(["math", "legal"], [0.3, 0.0])
    >>> (a + b) == GroupedMeans(2).update(["legal", "code", "math", "legal"], [.1, -.2, .3, 0])
    True
    >>> sorted(n for _, n in (a + b).counts())
    [1, 1, 2]
    """

    __slots__ = ("bets", "groups", "high", "low", "max_groups", "pooled", "pooled_from")

    def __init__(
        self,
        max_groups: int = 10,
        low: float = -1.0,
        high: float = 1.0,
        bets: Iterable[float] | None = None,
    ) -> None:
        if max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        self.max_groups = int(max_groups)
        self.low, self.high = float(low), float(high)
        self.bets = tuple(default_bets() if bets is None else bets)
        self.groups: dict[str, BoundedMeanEProcess] = {}
        self.pooled = self._fresh()
        self.pooled_from: int | None = None

    def _fresh(self) -> BoundedMeanEProcess:
        return BoundedMeanEProcess(self.low, self.high, self.bets)

    def update(self, categories: Iterable[str], values: ArrayLike) -> GroupedMeans:
        """Fold ``values`` in by their ``categories`` (one string per value)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        names = list(categories)
        if len(names) != x.size:
            raise ValueError("one category per value")
        if x.size == 0:
            return self
        if not (x.min() >= self.low and x.max() <= self.high):
            raise ValueError(f"values must lie in [{self.low}, {self.high}]")
        codes: dict[str, int] = {}
        inverse = np.fromiter(
            (codes.setdefault(str(name), len(codes)) for name in names), np.int64, x.size
        )
        counts = np.bincount(inverse, minlength=len(codes))
        sums = np.bincount(inverse, weights=x, minlength=len(codes))
        squares = np.bincount(inverse, weights=x * x, minlength=len(codes))
        for category, index in codes.items():
            part = self._fresh()
            part.n, part.sum_x = int(counts[index]), float(sums[index])
            part.sum_sq = float(squares[index])
            self._add(category, part)
        return self

    def _add(self, category: str, part: BoundedMeanEProcess) -> None:
        if category in self.groups:
            self.groups[category] += part
        elif self.pooled_from is not None and _rank(category) >= self.pooled_from:
            self.pooled += part
        else:
            self.groups[category] = part
            self._trim()

    def _trim(self) -> None:
        popped, self.pooled_from = _pop_ranked_last(self.groups, self.max_groups, self.pooled_from)
        for part in popped:  # in the order popped, as the pooled e-process folds them
            self.pooled += part

    def __iadd__(self, other: GroupedMeans) -> GroupedMeans:
        if (other.max_groups, other.low, other.high, other.bets) != (
            self.max_groups,
            self.low,
            self.high,
            self.bets,
        ):
            raise ValueError("cannot merge groups of different max_groups, bounds or bets")
        limits = [r for r in (self.pooled_from, other.pooled_from) if r is not None]
        self.pooled_from = min(limits) if limits else None
        self.pooled += other.pooled
        for category, part in other.groups.items():
            if category in self.groups:
                self.groups[category] += part
            else:
                self.groups[category] = part.copy()
        if self.pooled_from is not None:
            for category in [c for c in self.groups if _rank(c) >= self.pooled_from]:
                self.pooled += self.groups.pop(category)
        self._trim()
        return self

    def items(self) -> Iterator[tuple[str, BoundedMeanEProcess]]:
        """Each group with values, by name, then the pooled rest as ``other`` (a category
        named ``other`` itself shares that cell)."""
        pooled = self.pooled
        for category in sorted(self.groups):
            if category == OTHER_CATEGORY:
                pooled = pooled + self.groups[category]
            else:
                yield category, self.groups[category]
        if pooled.n:
            yield OTHER_CATEGORY, pooled

    def counts(self) -> list[tuple[str, int]]:
        return [(category, process.n) for category, process in self.items()]

    def to_state(self) -> dict[str, Any]:
        return {
            "max_groups": self.max_groups,
            "low": self.low,
            "high": self.high,
            "bets": list(self.bets),
            "groups": {c: p.to_state() for c, p in sorted(self.groups.items())},
            "pooled": self.pooled.to_state(),
            "pooled_from": self.pooled_from,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GroupedMeans:
        grouped = cls(state["max_groups"], state["low"], state["high"], state["bets"])
        grouped.groups = {
            str(c): BoundedMeanEProcess.from_state(p) for c, p in state["groups"].items()
        }
        grouped.pooled = BoundedMeanEProcess.from_state(state["pooled"])
        pooled_from = state["pooled_from"]
        grouped.pooled_from = None if pooled_from is None else int(pooled_from)
        return grouped
