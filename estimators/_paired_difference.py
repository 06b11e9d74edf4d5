"""Nonasymptotic confidence sequence for a two-arm difference of bounded outcomes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator
from ._empirical_bernstein import EmpiricalBernsteinSequence
from ._two_sample import DifferenceInterval

__all__ = ["PairedDifferenceSequence"]

METHOD = "empirical_bernstein_pairs"


def _block(share: float) -> int:
    """Values of an arm with ``share`` of the traffic per block (1 for the smaller arm)."""
    return max(1, round(share / (1.0 - share)))


class PairedDifferenceSequence(StatefulEstimator):
    """Anytime-valid, nonasymptotic sequence for ``delta = mu_T - ratio * mu_C`` of outcomes
    in ``[low, high]``, valid at every sample size.

    Each arm's values are cut, in the order they arrive, into blocks sized by the planned
    split (with 10% to the treatment: one treatment value against nine control values),
    and the ``k``-th treatment block is paired with the ``k``-th control block:

        ``D_k = mean(treatment block k) - ratio * mean(control block k)``.

    Blocks are cut by counts alone, so the ``D_k`` are independent with mean ``delta``
    (values independent within each arm, as in any A/B comparison) and bounded by
    ``[low - ratio high, high - ratio low]``; the predictable plug-in empirical-Bernstein
    sequence of :class:`EmpiricalBernsteinSequence` on them covers ``delta`` at all times
    at once with probability at least ``1 - alpha``, from the first pair on: no plug-in
    variance of a handful of events, no normal approximation. The block of nine control
    values makes the variance of a pair ``var_T + ratio^2 var_C / 9``, within a few
    percent of the asymptotic sequence's per-unit variance, so the price of exactness is
    small (``bench/validity.py``). A wrong split only changes the block sizes' fit to the
    traffic, never the validity.

    Values waiting for their partner block are kept (the most recent ``max_pending`` of
    each arm: a control arm that runs ahead of a starved canary drops its oldest, by
    count, which keeps the pairs independent of the values). A value outside
    ``[low, high]`` stops the pairing for good: the outcome is not what was declared and
    the caller falls back to another method (:attr:`in_range` is ``False``).

    Parameters
    ----------
    treatment_share
        The planned share of the treatment arm in ``(0, 1)`` (it sizes the blocks).
    ratio
        The multiplier of the control mean in ``delta`` (0.95: "below 95% of control").
    alpha
        Error probability over the whole horizon (two-sided).
    low, high
        Known bounds of the outcome.
    target_time
        Pairs at which the sequence is tightest (see :class:`EmpiricalBernsteinSequence`).
    max_pending
        Values of each arm kept while waiting for a partner block.

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> pairs = PairedDifferenceSequence(0.1, ratio=0.95)
    >>> for _ in range(20):  # batches of 1,000 units, 10% to the canary
    ...     canary = rng.random(1_000) < 0.1
    ...     quality = rng.random(1_000) < np.where(canary, 0.60, 0.80)
    ...     _ = pairs.update(quality[canary], quality[~canary])
    >>> result = pairs.interval
    >>> result.method, bool(result.high < 0)  # surely below 95% of control
    ('empirical_bernstein_pairs', True)

    References
    ----------
    Waudby-Smith, I. and Ramdas, A. (2024). Estimating means of bounded random variables
    by betting. Journal of the Royal Statistical Society, Series B 86(1).
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2).
    """

    def __init__(
        self,
        treatment_share: float,
        ratio: float = 1.0,
        alpha: float = 0.05,
        low: float = 0.0,
        high: float = 1.0,
        target_time: float = 2000.0,
        max_pending: int = 10_000,
    ) -> None:
        if not 0.0 < treatment_share < 1.0:
            raise ValueError("treatment_share must be in (0, 1)")
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError("ratio must be finite and >= 0")
        self.treatment_share, self.ratio = float(treatment_share), float(ratio)
        self.low, self.high, self.max_pending = float(low), float(high), int(max_pending)
        self.block_treatment = _block(treatment_share)
        self.block_control = _block(1.0 - treatment_share)
        self.pairs = EmpiricalBernsteinSequence(
            alpha, low - ratio * high, high - ratio * low, target_time=target_time
        )
        self.pending_treatment: list[float] = []
        self.pending_control: list[float] = []
        self.in_range = True
        self.dropped = 0

    # The pairs are cut in arrival order: sequential by nature, there is no merge.
    __add__ = None  # type: ignore[assignment]

    def update(self, treatment: ArrayLike, control: ArrayLike) -> PairedDifferenceSequence:
        """Add one batch of each arm's outcomes (each in arrival order) and pair what can be."""
        new_t = np.asarray(treatment, dtype=np.float64).ravel()
        new_c = np.asarray(control, dtype=np.float64).ravel()
        if not self.in_range:
            return self
        for values in (new_t, new_c):
            if values.size and not (values.min() >= self.low and values.max() <= self.high):
                self.in_range = False
                return self
        waiting_t = np.concatenate((self.pending_treatment, new_t))
        waiting_c = np.concatenate((self.pending_control, new_c))
        k = min(waiting_t.size // self.block_treatment, waiting_c.size // self.block_control)
        if k:
            used_t, used_c = k * self.block_treatment, k * self.block_control
            means_t = waiting_t[:used_t].reshape(k, self.block_treatment).mean(axis=1)
            means_c = waiting_c[:used_c].reshape(k, self.block_control).mean(axis=1)
            differences = means_t - self.ratio * means_c
            bound_low, bound_high = self.pairs.low, self.pairs.high
            self.pairs.update(np.clip(differences, bound_low, bound_high))  # rounding only
            waiting_t, waiting_c = waiting_t[used_t:], waiting_c[used_c:]
        self.pending_treatment = self._keep(waiting_t)
        self.pending_control = self._keep(waiting_c)
        return self

    def _keep(self, waiting: np.ndarray) -> list[float]:
        excess = waiting.size - self.max_pending
        if excess > 0:
            self.dropped += excess
            waiting = waiting[excess:]
        return waiting.tolist()

    @property
    def n_pairs(self) -> int:
        return self.pairs.n

    @property
    def interval(self) -> DifferenceInterval:
        """The sequence now, as a :class:`DifferenceInterval` (``n_treatment`` and
        ``n_control``: the values paired so far; the estimate: the pairs' mean)."""
        n_t = self.pairs.n * self.block_treatment
        n_c = self.pairs.n * self.block_control
        if self.pairs.n == 0:
            return DifferenceInterval(
                math.nan, -math.inf, math.inf, n_t, n_c, self.ratio, METHOD, p_value=1.0
            )
        interval = self.pairs.interval
        return DifferenceInterval(
            self.pairs.mean,
            interval.low,
            interval.high,
            n_t,
            n_c,
            self.ratio,
            METHOD,
            p_value=math.nan,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "treatment_share": self.treatment_share,
            "ratio": self.ratio,
            "low": self.low,
            "high": self.high,
            "max_pending": self.max_pending,
            "pairs": self.pairs.to_state(),
            "pending_treatment": self.pending_treatment,
            "pending_control": self.pending_control,
            "in_range": self.in_range,
            "dropped": self.dropped,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PairedDifferenceSequence:
        pairs = EmpiricalBernsteinSequence.from_state(state["pairs"])
        sequence = cls(
            state["treatment_share"],
            state["ratio"],
            pairs.alpha,
            state["low"],
            state["high"],
            pairs.target_time or 2000.0,
            state["max_pending"],
        )
        sequence.pairs = pairs
        sequence.pending_treatment = [float(v) for v in state["pending_treatment"]]
        sequence.pending_control = [float(v) for v in state["pending_control"]]
        sequence.in_range = bool(state["in_range"])
        sequence.dropped = int(state["dropped"])
        return sequence
