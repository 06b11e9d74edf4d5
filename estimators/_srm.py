"""Sequential sample-ratio-mismatch test: a Dirichlet-multinomial mixture e-process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, xlogy

from ._base import StatefulEstimator

__all__ = ["SampleRatioSequence"]


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
