"""Sequential sample-ratio-mismatch test: a Dirichlet-multinomial mixture e-process, and
the bounded distinct-unit counts it is fed with."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, xlogy

from ._base import StatefulEstimator

__all__ = ["SampleRatioSequence", "SplitCounts"]


class SampleRatioSequence(StatefulEstimator):
    """Anytime-valid test that traffic is split in the ``expected`` proportions.

    Lindon and Malek's (2022) test of ``H0: p = expected`` for multinomial counts: the
    Bayes factor of a Dirichlet-multinomial mixture against the null multinomial,

        ``E_n = B(a + x) / B(a) / prod_i expected_i^x_i``,

    where ``x`` are the cumulative counts, ``a = concentration * expected`` the
    Dirichlet parameters and ``B(a) = prod_i Gamma(a_i) / Gamma(sum_i a_i)`` (the
    multinomial coefficients of numerator and denominator cancel). Under ``H0`` it is
    a nonnegative martingale with mean 1 in the units, so by Ville's inequality
    ``P(sup_n E_n >= 1/alpha) <= alpha``: ``p_n = min(1, 1 / max_{m <= n} E_m)`` is a
    p-value valid at every update and at any data-dependent stopping time. The batches
    are only the times it is looked at; the test stays valid however they are cut.

    It does not merge (no ``+=``): the counts add, but the sequential p-value is a
    running maximum over the times the pooled counts were looked at, and two workers'
    maxima do not give the maximum of the pooled process (nor does any other function
    of them). Add the workers' counts first and feed one sequence.

    Parameters
    ----------
    expected
        The planned split, positive and summing to 1 (e.g. ``[0.1, 0.9]``).
    concentration
        Total mass of the Dirichlet mixing prior, ``a = concentration * expected``: the
        prior is centred on the null; smaller values spread it and favour detecting
        gross mismatches sooner, larger values small ones. The default of 100 is the
        one of the authors' reference implementation.

    Examples
    --------
    >>> srm = SampleRatioSequence([0.1, 0.9])
    >>> srm.update([98, 902]).rejects(0.001)  # on plan
    False
    >>> srm.update([300, 700]).rejects(0.001)  # the canary gets 30% of the next 1,000
    True
    >>> srm.p_value < 0.001, srm.n
    (True, 2000)
    >>> SampleRatioSequence.from_state(srm.to_state()) == srm
    True

    References
    ----------
    Lindon, M. and Malek, A. (2022). Anytime-valid inference for multinomial count data.
    Advances in Neural Information Processing Systems 35. Reference implementation:
    https://gist.github.com/michaellindon/5ce04c744d20755c3f653fbb58c2f4dd
    Ville, J. (1939). Étude critique de la notion de collectif. Gauthier-Villars.
    """

    def __init__(self, expected: Sequence[float] | ArrayLike, concentration: float = 100.0) -> None:
        probabilities = np.asarray(expected, dtype=np.float64).ravel()
        if probabilities.size < 2:
            raise ValueError("need at least 2 categories")
        if not np.all(np.isfinite(probabilities)) or np.any(probabilities <= 0):
            raise ValueError("expected proportions must be positive")
        if abs(float(probabilities.sum()) - 1.0) > 1e-9:
            raise ValueError(f"expected proportions must sum to 1, not {probabilities.sum()}")
        if not (concentration > 0 and math.isfinite(concentration)):
            raise ValueError("concentration must be positive")
        self.expected: list[float] = probabilities.tolist()
        self.concentration = float(concentration)
        self._counts = np.zeros(probabilities.size, dtype=np.int64)
        self.max_log_e_value = 0.0

    # Sequential by nature: the running maximum does not merge (see the class docstring).
    __add__ = None  # type: ignore[assignment]

    def update(self, counts: ArrayLike) -> SampleRatioSequence:
        """Add one batch's per-category counts and look at the e-process."""
        batch = np.asarray(counts).ravel()
        if batch.shape != self._counts.shape:
            raise ValueError(f"expected {self._counts.size} counts, got shape {batch.shape}")
        as_int = batch.astype(np.int64)
        if np.any(as_int != batch) or np.any(as_int < 0):
            raise ValueError("counts must be non-negative integers")
        self._counts += as_int
        self.max_log_e_value = max(self.max_log_e_value, self.log_e_value)
        return self

    @property
    def counts(self) -> list[int]:
        return self._counts.tolist()

    @property
    def n(self) -> int:
        return int(self._counts.sum())

    @property
    def log_e_value(self) -> float:
        """``log E_n`` at the current counts."""
        x = self._counts.astype(np.float64)
        p = np.asarray(self.expected)
        a = self.concentration * p
        log_mixture = (
            gammaln(self.concentration)
            - gammaln(self.concentration + x.sum())
            + float(np.sum(gammaln(a + x) - gammaln(a)))
        )
        return float(log_mixture - np.sum(xlogy(x, p)))

    @property
    def p_value(self) -> float:
        """``min(1, exp(-max log E))``: the sequential p-value, valid at every update."""
        return min(1.0, math.exp(-self.max_log_e_value))

    def rejects(self, alpha: float) -> bool:
        """Has the e-process ever reached ``1 / alpha`` (``p_value <= alpha``)?"""
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        return self.max_log_e_value >= math.log(1.0 / alpha)

    def to_state(self) -> dict[str, Any]:
        return {
            "expected": list(self.expected),
            "concentration": self.concentration,
            "counts": self.counts,
            "max_log_e_value": self.max_log_e_value,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SampleRatioSequence:
        sequence = cls(state["expected"], float(state["concentration"]))
        counts = np.asarray(state["counts"], dtype=np.int64)
        if counts.shape != sequence._counts.shape:
            raise ValueError("counts and expected have different lengths")
        sequence._counts = counts
        sequence.max_log_e_value = float(state["max_log_e_value"])
        return sequence

    def __repr__(self) -> str:
        return (
            f"SampleRatioSequence(expected={self.expected}, counts={self.counts}, "
            f"p_value={self.p_value:.3g})"
        )


class SplitCounts(StatefulEstimator):
    """Counts per category of distinct units (or of events), in bounded memory.

    A sample-ratio test counts units, not events: a user who sends ten requests is one
    draw of the assignment, and counting their ten events would test the assignment with
    ten times the weight of a user who sent one. Units are remembered as 64-bit digests
    of (category, unit) (the caller hashes them, e.g. with XXH3), in one sorted array of
    at most ``cap`` digests, 8 bytes each; two pairs collide with probability about
    ``n^2 / 2^65`` (7e-11 for 50,000). When the cap is reached the counts stop moving
    (``full``) and the digests are dropped: a sequential test frozen at a stopping time
    stays valid, it only stops gaining power. Without digests it counts events, with no
    memory to bound.

    Parameters
    ----------
    cap
        Most distinct (category, unit) pairs remembered before the counts freeze.
    units
        Count distinct units (``update`` gets their digests) or, when False, events.

    Examples
    --------
    >>> split = SplitCounts(cap=4)
    >>> split.update(["b", "a", "b"], np.array([7, 3, 7], dtype=np.uint64))
    {'a': 1, 'b': 1}
    >>> split.update(["a", "a", "b", "b"], np.array([3, 4, 5, 6], dtype=np.uint64))
    {'a': 1, 'b': 1}
    >>> split.counts, split.full, split.counted
    ({'a': 2, 'b': 2}, True, 'units')
    >>> SplitCounts.from_state(split.to_state()) == split
    True
    """

    def __init__(self, cap: int = 50_000, units: bool = True) -> None:
        if cap < 1:
            raise ValueError("cap must be positive")
        self.cap = int(cap)
        self.units = units
        self.full = False
        self.counts: dict[str, int] = {}
        self._seen = np.zeros(0, dtype=np.uint64)  # sorted, distinct

    __add__ = None  # type: ignore[assignment]  # a frozen count does not merge

    @property
    def counted(self) -> str:
        """``units`` or ``events``: what one count is."""
        return "units" if self.units else "events"

    @property
    def remembered(self) -> int:
        """How many (category, unit) digests are held."""
        return int(self._seen.size)

    def update(self, categories: Sequence[str], digests: ArrayLike | None = None) -> dict[str, int]:
        """Count one batch (in arrival order); returns what it added per category.

        ``digests``: one 64-bit digest of (category, unit) per event, required when
        counting units. A pair already remembered adds nothing; past the cap, nothing
        does."""
        if self.full or not len(categories):
            return {}
        labels = np.asarray(categories, dtype=object)
        if self.units:
            if digests is None:
                raise ValueError("counting units needs one digest per event")
            labels = labels[self._fresh(np.asarray(digests, dtype=np.uint64), labels.size)]
        names, added = np.unique(labels.astype(str), return_counts=True)
        batch = dict(zip(names.tolist(), added.tolist(), strict=True))
        for name, count in batch.items():
            self.counts[name] = self.counts.get(name, 0) + count
        return batch

    def _fresh(self, digests: np.ndarray, size: int) -> np.ndarray:
        """Indices (in batch order) of the first sighting of each new pair, up to the cap."""
        if digests.shape != (size,):
            raise ValueError(f"expected {size} digests, got shape {digests.shape}")
        distinct, first = np.unique(digests, return_index=True)
        known = _sorted_contains(self._seen, distinct)
        fresh = np.sort(first[~known])
        room = self.cap - self._seen.size
        if fresh.size >= room:
            fresh, self.full = fresh[:room], True
        self._seen = (
            np.zeros(0, dtype=np.uint64) if self.full else _merged(self._seen, digests[fresh])
        )
        return fresh

    def to_state(self) -> dict[str, Any]:
        return {
            "cap": self.cap,
            "units": self.units,
            "full": self.full,
            "counts": dict(self.counts),
            # Sorted little-endian uint64, base64: a third of the JSON of a list of ints.
            "seen": base64.b64encode(self._seen.astype("<u8").tobytes()).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SplitCounts:
        split = cls(int(state["cap"]), bool(state["units"]))
        split.full = bool(state["full"])
        split.counts = {str(k): int(v) for k, v in state["counts"].items()}
        raw = base64.b64decode(state["seen"])
        split._seen = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        return split

    def __repr__(self) -> str:
        return (
            f"SplitCounts(counted={self.counted!r}, counts={self.counts}, "
            f"remembered={self.remembered}, full={self.full})"
        )


def _merged(seen: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The sorted ``seen`` with the distinct ``new`` digests (none of them in it) inserted
    in place: ``union1d`` without hashing the whole array again (a look after every event
    adds one digest to up to ``cap``)."""
    new = np.sort(new)
    return np.insert(seen, np.searchsorted(seen, new), new)


def _sorted_contains(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Which needles are in the sorted ``haystack`` (one binary search each)."""
    if not haystack.size:
        return np.zeros(needles.shape, dtype=bool)
    at = np.minimum(np.searchsorted(haystack, needles), haystack.size - 1)
    return haystack[at] == needles
