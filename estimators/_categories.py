"""Counts of a categorical variable, and its total variation distance to a baseline,
bounded uniformly over time."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

from ._base import StatefulEstimator
from ._drift import KSBounds
from ._ks_sequence import dkw_radius, sequential_ks_margin

__all__ = [
    "OTHER_CATEGORY",
    "CategoryCounts",
    "sequential_tv_bounds",
    "tv_bounds",
    "tv_event_count",
]

OTHER_CATEGORY = "other"
"""The pooled cell: every category beyond the ``max_categories`` counted one by one."""


def _rank(category: str) -> int:
    """A category's place in a fixed pseudo-random order (63 bits of BLAKE2b): the order
    that decides which categories are counted one by one, the same in every process."""
    digest = hashlib.blake2b(category.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


_Part = TypeVar("_Part")


def _pop_ranked_last(
    named: dict[str, _Part], keep: int, pooled_from: int | None
) -> tuple[list[_Part], int | None]:
    """Pop the categories ranked last until ``keep`` are left: what they held (in the
    order popped), and the lowest rank pooled (``pooled_from``'s, or a popped one's)."""
    popped = []
    while len(named) > keep:
        last = max(named, key=_rank)
        popped.append(named.pop(last))
        rank = _rank(last)
        pooled_from = rank if pooled_from is None else min(pooled_from, rank)
    return popped, pooled_from


class CategoryCounts(StatefulEstimator):
    """How often each category occurred: at most ``max_categories`` by name, the rest
    pooled as :data:`OTHER_CATEGORY`.

    The categories counted by name are the ``max_categories`` seen so far that come first
    in a fixed hash order (a bottom-k sample of the categories): which ones they are does
    not depend on the order the values came in, so counts merge exactly, however a stream
    is batched or split, and memory stays bounded when a producer sends a new value per
    event. ``pooled_from`` is the rank of the first category pooled (``None`` while none
    was): every category ranked below it is counted by name, exactly.

    Parameters
    ----------
    max_categories
        How many categories are counted by name (at least 1).

    Examples
    --------
    >>> a = CategoryCounts(3).update(["legal", "code", "legal"])
    >>> b = CategoryCounts(3).update(["math", "chat", "legal"])
    >>> merged = a + b
    >>> merged == CategoryCounts(3).update(["legal", "code", "legal", "math", "chat", "legal"])
    True
    >>> merged.n, sum(merged.fractions().values())
    (6, 1.0)
    """

    __slots__ = ("counts", "max_categories", "n", "pooled", "pooled_from")

    def __init__(self, max_categories: int = 10) -> None:
        if max_categories < 1:
            raise ValueError("max_categories must be at least 1")
        self.max_categories = int(max_categories)
        self.counts: dict[str, int] = {}
        self.pooled = 0
        self.pooled_from: int | None = None
        self.n = 0

    def update(self, values: Iterable[str]) -> CategoryCounts:
        """Count ``values`` (strings; the caller names missing values its own way)."""
        seen = Counter(values)
        for category, count in seen.items():
            self._add(category, count)
        return self

    def _add(self, category: str, count: int) -> None:
        self.n += count
        if category in self.counts:
            self.counts[category] += count
            return
        if self.pooled_from is not None and _rank(category) >= self.pooled_from:
            self.pooled += count
            return
        self.counts[category] = count
        self._trim()

    def _trim(self) -> None:
        """Pool the categories ranked last until ``max_categories`` are left."""
        popped, self.pooled_from = _pop_ranked_last(
            self.counts, self.max_categories, self.pooled_from
        )
        self.pooled += sum(popped)

    def _check_compatible(self, other: CategoryCounts) -> None:
        if other.max_categories != self.max_categories:
            raise ValueError("cannot merge counts of different max_categories")

    def __iadd__(self, other: CategoryCounts) -> CategoryCounts:
        self._check_compatible(other)
        limits = [r for r in (self.pooled_from, other.pooled_from) if r is not None]
        self.pooled_from = min(limits) if limits else None
        self.n += other.n
        self.pooled += other.pooled
        for category, count in other.counts.items():
            self.counts[category] = self.counts.get(category, 0) + count
        if self.pooled_from is not None:
            for category in [c for c in self.counts if _rank(c) >= self.pooled_from]:
                self.pooled += self.counts.pop(category)
        self._trim()
        return self

    def fractions(self) -> dict[str, float]:
        """Each category's share, the pooled ones under :data:`OTHER_CATEGORY`."""
        if self.n == 0:
            return {}
        shares = {category: count / self.n for category, count in self.counts.items()}
        if self.pooled:
            shares[OTHER_CATEGORY] = shares.get(OTHER_CATEGORY, 0.0) + self.pooled / self.n
        return shares

    def tv_distance(self, other: CategoryCounts) -> float:
        """Total variation distance ``max_A |P(A) - Q(A)| = sum |p - q| / 2`` of the two
        counts, over the categories both count by name (the rest pooled in both alike).

        Both count every category ranked below ``min(pooled_from)`` by name, so those
        cells, and the pooled rest, are one partition for both: the distance over it is
        at most the distance of the uncoarsened distributions.
        """
        self._check_compatible(other)
        if self.n == 0 or other.n == 0:
            raise ValueError("both counts need at least one value")
        limits = [r for r in (self.pooled_from, other.pooled_from) if r is not None]
        limit = min(limits) if limits else None
        cells = {c for c in (*self.counts, *other.counts) if limit is None or _rank(c) < limit}
        ordered = sorted(cells)
        mine = np.array([self.counts.get(c, 0) for c in ordered], dtype=np.float64) / self.n
        theirs = np.array([other.counts.get(c, 0) for c in ordered], dtype=np.float64) / other.n
        rest = abs((1.0 - mine.sum()) - (1.0 - theirs.sum()))
        return float(0.5 * (np.abs(mine - theirs).sum() + rest))

    def to_state(self) -> dict[str, Any]:
        return {
            "max_categories": self.max_categories,
            "counts": dict(sorted(self.counts.items())),
            "pooled": self.pooled,
            "pooled_from": self.pooled_from,
            "n": self.n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CategoryCounts:
        counts = cls(int(state["max_categories"]))
        counts.counts = {str(c): int(k) for c, k in state["counts"].items()}
        counts.pooled = int(state["pooled"])
        pooled_from = state["pooled_from"]
        counts.pooled_from = None if pooled_from is None else int(pooled_from)
        counts.n = int(state["n"])
        return counts


def tv_event_count(max_categories: int) -> int:
    """How many events ``A`` the distance's union bound covers: the ``2^(K-1) - 1`` ways
    to split ``K = max_categories + 1`` cells in two (an event and its complement deviate
    alike; the empty split never does)."""
    return 2**max_categories - 1


def _event_alpha(alpha: float, max_categories: int) -> float:
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    return alpha / tv_event_count(max_categories)


def sequential_tv_bounds(live: CategoryCounts, baseline: CategoryCounts, alpha: float) -> KSBounds:
    """TV distance of ``live`` from ``baseline``, with bounds valid however often read.

    ``TV(P_n, Q_m) - TV(P, Q)`` is at most ``TV(P_n, P) + TV(Q_m, Q)`` (the triangle
    inequality), and ``TV(P_n, P) = max_A |P_n(A) - P(A)|`` over the events of the
    partition: for each event the indicator's empirical CDF stays within the time-uniform
    DKW band (Howard and Ramdas 2022) at ``alpha / E`` for every ``n`` at once, so by a
    union bound over the ``E`` events (:func:`tv_event_count`) so does the maximum. The
    baseline's fixed-``m`` deviation is Weissman et al.'s (2003) L1 bound, which is the
    fixed-``m`` DKW radius at ``alpha / E`` (:func:`estimators.dkw_radius`). So the margin
    is :func:`estimators.sequential_ks_margin` at ``alpha / E``: with probability at least
    ``1 - alpha``, ``low`` never exceeds the true distance while the baseline stays.

    The partition is exact while the categories number at most ``max_categories`` (the
    usual case for a domain or a difficulty level); beyond that the pooled cell's edge is
    drawn from the categories seen, and the bound is for that partition.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> domains = np.array(["legal", "code", "math", "chat"])
    >>> base = CategoryCounts(10).update(rng.choice(domains, 20_000, p=[.1, .4, .3, .2]))
    >>> same = CategoryCounts(10).update(rng.choice(domains, 20_000, p=[.1, .4, .3, .2]))
    >>> sequential_tv_bounds(same, base, 0.05).low
    0.0
    >>> moved = CategoryCounts(10).update(rng.choice(domains, 20_000, p=[.35, .15, .3, .2]))
    >>> round(sequential_tv_bounds(moved, base, 0.05).low, 2)
    0.21

    References
    ----------
    Weissman, T., Ordentlich, E., Seroussi, G., Verdu, S. and Weinberger, M. J. (2003).
    Inequalities for the L1 deviation of the empirical distribution. HP Labs HPL-2003-97.
    Howard, S. R. and Ramdas, A. (2022). Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification. Bernoulli 28(3).
    """
    level = _event_alpha(alpha, live.max_categories)
    return _bounds(live, baseline, float(sequential_ks_margin(live.n, baseline.n, level)))


def tv_bounds(live: CategoryCounts, baseline: CategoryCounts, alpha: float) -> KSBounds:
    """TV distance with the fixed-size bounds of one look: the DKW radius of each sample at
    ``alpha / (2 E)`` (Weissman et al. 2003), for a test read once per window.

    >>> a = CategoryCounts(10).update(["x"] * 500 + ["y"] * 500)
    >>> tv_bounds(a, a.copy(), 0.05).low
    0.0
    """
    level = _event_alpha(alpha, live.max_categories) / 2
    noise = float(dkw_radius(live.n, level) + dkw_radius(baseline.n, level))
    return _bounds(live, baseline, noise)


def _bounds(live: CategoryCounts, baseline: CategoryCounts, noise: float) -> KSBounds:
    distance = live.tv_distance(baseline)
    return KSBounds(
        distance=distance,
        low=max(0.0, distance - noise),
        high=min(1.0, distance + noise),
        noise=noise,
        sketch_error=0.0,
    )
