"""Two-sided normal-mixture confidence sequence for a mean."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator
from ._empirical_bernstein import EmpiricalBernsteinSequence
from ._interval import Interval
from ._moments import Moments

__all__ = [
    "Interval",
    "NormalMixtureSequence",
    "normal_mixture_boundary",
    "normal_mixture_half_width",
    "optimal_rho",
]


METHOD = "normal_mixture_cs"
BOUNDED_METHOD = "empirical_bernstein_cs"


def optimal_rho(target_time: float, alpha: float) -> float:
    """Mixture precision that makes the boundary tightest at intrinsic time ``target_time``.

    The closed-form approximation of Howard et al. (2021, Section 3.5), also the one
    used by their ``confseq`` package: ``rho = m / (2 log(1/alpha) + log(1 + 2 log(1/alpha)))``.

    >>> round(optimal_rho(1000, 0.05), 1)
    126.0
    """
    if target_time <= 0 or not 0 < alpha < 1:
        raise ValueError("target_time must be > 0 and alpha in (0, 1)")
    log_term = 2.0 * math.log(1.0 / alpha)
    return target_time / (log_term + math.log1p(log_term))


def normal_mixture_boundary(intrinsic_time: float, rho: float, alpha: float) -> float:
    """Two-sided normal-mixture boundary ``u(V)`` on the standardized sum ``|S_t|``.

    ``u(V) = sqrt((V + rho) (log(1 + V/rho) + 2 log(1/alpha)))``: with probability at
    least ``1 - alpha``, ``|S_t| < u(V_t)`` for all ``t`` at once (sub-Gaussian increments).

    >>> round(normal_mixture_boundary(1000, optimal_rho(1000, 0.05), 0.05), 1)
    96.0
    """
    v = max(float(intrinsic_time), 0.0)
    return math.sqrt((v + rho) * (math.log1p(v / rho) + 2.0 * math.log(1.0 / alpha)))


def normal_mixture_half_width(sigma: float, n: float, rho: float, alpha: float) -> float:
    """Half-width ``sigma u(n) / n`` of the normal-mixture confidence sequence for a mean
    of ``n`` values with standard deviation ``sigma`` (:func:`normal_mixture_boundary`).

    The one place the mean's interval is sized: the stream's residual, a two-sample
    difference, disparity groups and the online value estimate all use it.

    >>> round(normal_mixture_half_width(1.0, 1000, optimal_rho(1000, 0.05), 0.05), 4)
    0.096
    """
    return sigma * normal_mixture_boundary(n, rho, alpha) / n


PRIOR_WEIGHT = 50.0
"""How many values a known variance counts as (see :class:`NormalMixtureSequence`)."""


class NormalMixtureSequence(StatefulEstimator):
    """Anytime-valid confidence sequence for the mean of a stream (normal mixture).

    The boundary is Howard et al.'s two-sided normal mixture with the running sample
    variance plugged in for the variance process, ``V_t = t``, in standardized units,
    as in the asymptotic confidence sequences of Waudby-Smith et al.: the interval

        ``mean_t +- sigma_t * u(t) / t``

    may be checked after every batch, for ever, and keeps the true mean at all times
    with probability about ``1 - alpha``, where a fixed-n interval checked after each
    batch would not (20 looks: ~25% false alarms instead of 5%). The state is the
    mergeable :class:`Moments`, so workers' sequences merge exactly.

    Parameters
    ----------
    alpha
        Error probability over the whole (infinite) horizon.
    target_time
        Number of observations at which the boundary is tightest; ``rho`` is tuned to it
        with :func:`optimal_rho`.
    min_n
        Below this many values the interval is infinite: a plug-in variance from a
        handful of points is not to be trusted.
    prior_variance, prior_weight
        A variance known from elsewhere (for residuals: the calibrator's out-of-fold
        mean squared error), counted as ``prior_weight`` values: the plug-in variance is
        the larger of the sample variance and ``(sum of squared deviations +
        prior_weight * prior_variance) / (n - 1 + prior_weight)``. In the first few
        hundred values of a skewed stream the sample variance is low exactly when the
        mean is (the rare large values have not come yet), so the plain plug-in
        interval is too narrow there; the prior holds it until the stream's own
        variance is known, and fades as it is. It only ever widens the interval: a
        calibration sample quieter than the stream does not narrow it. None: no prior.
    bounds
        Known bounds ``(low, high)`` of the values (residuals of labels in ``[0, 1]``:
        ``(-1, 1)``). While every value lies within them, :attr:`interval` is the
        nonasymptotic predictable plug-in empirical-Bernstein sequence
        (:class:`EmpiricalBernsteinSequence`, tightest near ``target_time``), valid at
        every sample size: 30 labels of 0 in a stream of 0/1 labels at 10% no longer
        give a sample variance of 0 and an interval of width 0. A value outside them
        turns the sequence to the normal mixture for good (:attr:`method` says which),
        and from then on it needs ``unbounded_min_n`` values: no interval for the mean of
        unbounded values is valid at every sample size without an assumption on their
        tails, and a skewed stream's plug-in interval needs many (lognormal residuals of
        sigma 1.5 without a prior: 30% false alarms from 30 values on, 3% from 3,000 on,
        in ``bench/validity.py``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> cs = NormalMixtureSequence(alpha=0.05).update(rng.normal(0.3, 1.0, 2_000))
    >>> ci = cs.interval
    >>> ci.low > 0, ci.contains(0.3)
    (True, True)

    References
    ----------
    Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics 49(2).
    Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H. and Ramdas, A. (2024).
    Time-uniform central limit theory and asymptotic confidence sequences. Annals of
    Statistics.
    """

    def __init__(
        self,
        alpha: float = 0.05,
        target_time: float = 1000.0,
        min_n: int = 30,
        prior_variance: float | None = None,
        prior_weight: float = PRIOR_WEIGHT,
        bounds: tuple[float, float] | None = None,
        unbounded_min_n: int | None = None,
    ) -> None:
        if prior_variance is not None and not (prior_variance >= 0 and prior_weight >= 0):
            raise ValueError("prior_variance and prior_weight must be >= 0")
        self.bounded: EmpiricalBernsteinSequence | None = None
        if bounds is not None:
            self.bounded = EmpiricalBernsteinSequence(
                alpha, bounds[0], bounds[1], target_time=target_time
            )
        self.in_bounds = True
        self.unbounded_min_n = min_n if unbounded_min_n is None else unbounded_min_n
        self.alpha = alpha
        self.target_time = target_time
        self.min_n = min_n
        self.prior_variance = prior_variance
        self.prior_weight = prior_weight
        self.rho = optimal_rho(target_time, alpha)
        self.moments = Moments()

    def update(self, values: ArrayLike) -> NormalMixtureSequence:
        x = np.asarray(values, dtype=np.float64).ravel()
        self.moments.update(x)
        bounded = self.bounded
        if bounded is not None and self.in_bounds and x.size:
            outside = (x < bounded.low) | (x > bounded.high)
            if not outside.any():
                bounded.update(x)
            else:
                # As if the values came one by one: those before the first outside the
                # bounds still count, so the state does not depend on where batches end.
                first = int(np.argmax(outside))
                if first:
                    bounded.update(x[:first])
                self.in_bounds = False
        return self

    def __iadd__(self, other: NormalMixtureSequence) -> NormalMixtureSequence:
        if self._design() != other._design():
            raise ValueError(
                "cannot merge sequences with different alpha, target_time, prior or bounds"
            )
        self.moments += other.moments
        if self.bounded is not None and other.bounded is not None:
            # Two workers' disjoint streams: the product of their capital processes.
            self.bounded += other.bounded
        self.in_bounds = self.in_bounds and other.in_bounds
        return self

    def _design(self) -> tuple[Any, ...]:
        bounds = None if self.bounded is None else (self.bounded.low, self.bounded.high)
        return (self.alpha, self.target_time, self.prior_variance, self.prior_weight, bounds)

    @property
    def method(self) -> str:
        """``empirical_bernstein_cs`` while the values keep to known bounds, else
        ``normal_mixture_cs``."""
        return BOUNDED_METHOD if self.bounded is not None and self.in_bounds else METHOD

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def variance(self) -> float:
        """The plug-in variance of the interval: the sample variance, or the one pooled
        with the prior where that is larger."""
        sample = self.moments.variance
        if self.prior_variance is None or not math.isfinite(sample):
            return sample
        moments, weight = self.moments, self.prior_weight
        pooled = (moments.m2 + weight * self.prior_variance) / (moments.weight - 1.0 + weight)
        return max(sample, pooled)

    @property
    def mean(self) -> float:
        return self.moments.mean

    @property
    def decides_from(self) -> int:
        """The count from which :attr:`interval` is finite."""
        least = self.min_n if self.bounded is None or self.in_bounds else self.unbounded_min_n
        return max(least, 2)

    @property
    def interval(self) -> Interval:
        n = self.moments.n
        if n < self.decides_from:
            return Interval(self.moments.mean if n else math.nan, -math.inf, math.inf)
        if self.bounded is not None and self.in_bounds:
            bounded = self.bounded.interval
            return Interval(self.moments.mean, bounded.low, bounded.high)
        sigma = math.sqrt(max(self.variance, 0.0))
        half = normal_mixture_half_width(sigma, n, self.rho, self.alpha)
        return Interval(self.moments.mean, self.moments.mean - half, self.moments.mean + half)

    def to_state(self) -> dict[str, Any]:
        state = {
            "alpha": self.alpha,
            "target_time": self.target_time,
            "min_n": self.min_n,
            "moments": self.moments.to_state(),
        }
        if self.prior_variance is not None:
            state["prior"] = {"variance": self.prior_variance, "weight": self.prior_weight}
        if self.bounded is not None:
            state["bounded"] = {
                **self.bounded.to_state(),
                "in_bounds": self.in_bounds,
                "unbounded_min_n": self.unbounded_min_n,
            }
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NormalMixtureSequence:
        prior = state.get("prior")  # absent in states written before priors
        sequence = cls(
            float(state["alpha"]),
            float(state["target_time"]),
            int(state["min_n"]),
            float(prior["variance"]) if prior else None,
            float(prior["weight"]) if prior else PRIOR_WEIGHT,
        )
        sequence.moments = Moments.from_state(state["moments"])
        bounded = state.get("bounded")  # absent in states written before bounds
        if bounded is not None:
            sequence.bounded = EmpiricalBernsteinSequence.from_state(bounded)
            sequence.in_bounds = bool(bounded["in_bounds"])
            sequence.unbounded_min_n = int(bounded["unbounded_min_n"])
        return sequence

    def __repr__(self) -> str:
        return f"NormalMixtureSequence(alpha={self.alpha}, n={self.n}, interval={self.interval})"
