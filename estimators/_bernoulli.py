"""Beta-binomial mixture confidence sequence for a rate (toxicity, PII leaks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import betaln, xlog1py

from ._base import StatefulEstimator
from ._interval import Interval

__all__ = ["BernoulliSequence"]


class BernoulliSequence(StatefulEstimator):
    """Anytime-valid confidence sequence for a Bernoulli rate ``p``.

    Robbins' conjugate mixture: for each candidate ``p``, the likelihood ratio of a
    ``Beta(a, b)`` mixture against ``p`` is a nonnegative martingale under ``p``,

        ``M_t(p) = B(a + S_t, b + t - S_t) / B(a, b) / (p^S_t (1 - p)^(t - S_t))``,

    so by Ville's inequality ``{p : M_t(p) < 1/alpha}`` covers the true rate at all
    times at once with probability at least ``1 - alpha``. The state is the count and
    the number of successes: merging workers is exact addition.

    Parameters
    ----------
    alpha
        Error probability over the whole horizon.
    prior_a, prior_b
        The mixing Beta distribution; ``(1, 1)`` is uniform. A prior that puts its mass
        on small rates (e.g. ``(0.5, 20)``) tightens the sequence for rare events such as
        PII leaks, and stays valid whatever the truth.

    Examples
    --------
    >>> cs = BernoulliSequence().update([0] * 990 + [1] * 10)
    >>> ci = cs.interval
    >>> ci.estimate, ci.low < 0.01 < ci.high < 0.03
    (0.01, True)

    References
    ----------
    Robbins, H. (1970). Statistical methods related to the law of the iterated logarithm.
    Annals of Mathematical Statistics 41(5).
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2),
    Section 3 (conjugate mixtures).
    """

    def __init__(self, alpha: float = 0.05, prior_a: float = 1.0, prior_b: float = 1.0) -> None:
        if not 0 < alpha < 1 or prior_a <= 0 or prior_b <= 0:
            raise ValueError("alpha must be in (0, 1) and the prior parameters positive")
        self.alpha, self.prior_a, self.prior_b = alpha, prior_a, prior_b
        self.n = 0
        self.successes = 0

    @classmethod
    def from_counts(
        cls, n: int, successes: int, alpha: float = 0.05, prior_a: float = 1.0, prior_b: float = 1.0
    ) -> BernoulliSequence:
        """The sequence after ``n`` outcomes of which ``successes`` were 1 (its sufficient
        statistics: the order does not matter).

        >>> counted = BernoulliSequence().update([0] * 990 + [1] * 10)
        >>> BernoulliSequence.from_counts(1000, 10) == counted
        True
        """
        if not 0 <= successes <= n:
            raise ValueError("need 0 <= successes <= n")
        sequence = cls(alpha, prior_a, prior_b)
        sequence.n, sequence.successes = int(n), int(successes)
        return sequence

    def update(self, outcomes: ArrayLike) -> BernoulliSequence:
        x = np.asarray(outcomes).ravel()
        if x.size == 0:
            return self
        if not np.isin(x, (0, 1)).all():
            raise ValueError("outcomes must be 0/1 or booleans")
        self.n += int(x.size)
        self.successes += int(np.count_nonzero(x))
        return self

    def __iadd__(self, other: BernoulliSequence) -> BernoulliSequence:
        if (other.alpha, other.prior_a, other.prior_b) != (self.alpha, self.prior_a, self.prior_b):
            raise ValueError("cannot merge sequences with different alpha or prior")
        self.n += other.n
        self.successes += other.successes
        return self

    def _log_mixture(self) -> float:
        """``log B(a + S_t, b + t - S_t) - log B(a, b)``: the part of ``log M_t(p)`` that
        does not depend on ``p`` (computed once per interval, not per root-finding step)."""
        s, f = self.successes, self.n - self.successes
        return float(
            betaln(self.prior_a + s, self.prior_b + f) - betaln(self.prior_a, self.prior_b)
        )

    def log_mixture_ratio(self, p: float) -> float:
        """``log M_t(p)``; the sequence is where this stays below ``log(1/alpha)``."""
        return _log_ratio(self._log_mixture(), self.successes, self.n - self.successes, p)

    @property
    def interval(self) -> Interval:
        if self.n == 0:
            return Interval(math.nan, 0.0, 1.0)
        estimate = self.successes / self.n
        level = math.log(1.0 / self.alpha)
        log_mixture, s, f = self._log_mixture(), self.successes, self.n - self.successes

        def excess(p: float) -> float:
            return _log_ratio(log_mixture, s, f, p) - level

        # log M is convex in p with its minimum (< 0) at the MLE; one root on each side.
        tiny = 1e-15
        low = 0.0 if estimate == 0 or excess(tiny) < 0 else brentq(excess, tiny, estimate)
        high = 1.0 if estimate == 1 or excess(1 - tiny) < 0 else brentq(excess, estimate, 1 - tiny)
        return Interval(estimate, float(low), float(high))

    def to_state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "prior_a": self.prior_a,
            "prior_b": self.prior_b,
            "n": self.n,
            "successes": self.successes,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BernoulliSequence:
        sequence = cls(state["alpha"], state["prior_a"], state["prior_b"])
        sequence.n, sequence.successes = int(state["n"]), int(state["successes"])
        return sequence


def _log_ratio(log_mixture: float, s: int, f: int, p: float) -> float:
    """``log M_t(p)`` from its ``p``-free part. ``s log p`` is ``xlogy(s, p)`` to the bit
    (both are the C library's ``log``), without a scalar ufunc call; ``xlog1py`` stays,
    as its ``log1p`` (cephes) can differ from the C library's in the last bit."""
    successes = s * math.log(p) if s else 0.0
    return float(log_mixture - successes - xlog1py(f, -p))
