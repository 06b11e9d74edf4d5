"""KS distance to a baseline, bounded uniformly over time (a time-uniform DKW band)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._drift import KSBounds, bounds_with_margin
from ._sketch import QuantileSketch

__all__ = [
    "BASELINE_ALPHA_SHARE",
    "dkw_radius",
    "sequential_ks_bounds",
    "sequential_ks_margin",
    "time_uniform_dkw_radius",
]

BASELINE_ALPHA_SHARE = 0.5
"""The share of ``alpha`` spent on the baseline's fixed-n band; the live scores' time-
uniform band gets the rest. Halves: neither sample is known in advance to be the larger."""

# Theorem 2's closed form, checked against the theorem's own crossing bound
# (tests/unit/estimators/test_ks_sequence.py), holds for alpha up to 0.45; above that the
# band of 0.45 is used, which is wider than needed and so still valid.
_LARGEST_ALPHA = 0.45


def time_uniform_dkw_radius(t: ArrayLike, alpha: float) -> np.ndarray:
    """Radius that the empirical CDF of ``t`` i.i.d. draws stays within, for all ``t`` at once.

    With probability at least ``1 - alpha``, for every ``t >= 1`` simultaneously,
    ``sup_x |F_t(x) - F(x)| <= 0.85 sqrt((log log(e t) + 0.8 log(1612 / alpha)) / t)``:
    a finite law of the iterated logarithm for the empirical process, so the distance may
    be looked at after every event without raising the chance of ever straying. The fixed-
    ``t`` band (:func:`dkw_radius`) holds at one ``t`` only; looked at after every batch it
    is crossed far more often than ``alpha``.

    Parameters
    ----------
    t
        Sample sizes, at least 1 (any shape).
    alpha
        The probability of ever leaving the band, in ``(0, 1)``.

    Examples
    --------
    >>> [round(float(r), 4) for r in time_uniform_dkw_radius([100, 1000, 10_000], 0.05)]
    [0.2692, 0.0866, 0.0277]

    References
    ----------
    Howard, S. R. and Ramdas, A. (2022). Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification. Bernoulli 28(3), Theorem 2
    and its closed form (7); ``confseq.quantiles.empirical_process_lil_bound`` computes
    the same band with the optimal constant in place of ``0.8 log(1612 / alpha)``.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    n = np.asarray(t, dtype=np.float64)
    if np.any(n < 1):
        raise ValueError("t must be at least 1")
    level = 0.8 * np.log(1612.0 / min(alpha, _LARGEST_ALPHA))
    return 0.85 * np.sqrt((np.log(1.0 + np.log(n)) + level) / n)


def dkw_radius(m: ArrayLike, alpha: float) -> np.ndarray:
    """Radius of the fixed-``m`` DKW band: ``sqrt(log(2 / alpha) / (2 m))``.

    With probability at least ``1 - alpha``, ``sup_x |G_m(x) - G(x)|`` is within it, for
    the one sample of ``m`` draws it is computed on (Massart's tight constant). Right for
    a baseline, which is drawn once and then kept.

    >>> round(float(dkw_radius(1000, 0.025)), 4)
    0.0468

    References
    ----------
    Massart, P. (1990). The tight constant in the Dvoretzky-Kiefer-Wolfowitz inequality.
    Annals of Probability 18(3).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    size = np.asarray(m, dtype=np.float64)
    if np.any(size < 1):
        raise ValueError("m must be at least 1")
    return np.sqrt(np.log(2.0 / alpha) / (2.0 * size))


def sequential_ks_margin(n: ArrayLike, m: ArrayLike, alpha: float) -> np.ndarray:
    """How far the KS distance of ``n`` live draws from ``m`` baseline draws may stray
    from the distance of their distributions, for every ``n`` at once.

    ``|D(F_n, G_m) - D(F, G)| <= sup|F_n - F| + sup|G_m - G|`` (the triangle inequality),
    so the time-uniform radius of the live scores at ``(1 - BASELINE_ALPHA_SHARE) alpha``
    plus the fixed-``m`` radius of the baseline at ``BASELINE_ALPHA_SHARE alpha`` bounds
    the error with probability at least ``1 - alpha`` (a union bound), whenever the
    distance is looked at. Vectorized, for simulations.

    >>> round(float(sequential_ks_margin(1000, 1000, 0.05)), 4)
    0.1357
    """
    live = time_uniform_dkw_radius(n, (1.0 - BASELINE_ALPHA_SHARE) * alpha)
    return live + dkw_radius(m, BASELINE_ALPHA_SHARE * alpha)


def sequential_ks_bounds(
    live: QuantileSketch, baseline: QuantileSketch, alpha: float, low_from_edges: bool = False
) -> KSBounds:
    """KS distance of ``live`` from ``baseline``, with bounds valid however often it is read.

    The score drift gate's statistic: the sketches' distance
    (:meth:`QuantileSketch.ks_distance`, with its bucketing error) widened by
    :func:`sequential_ks_margin`. The live scores are a growing sample, read after every
    batch; the baseline (the calibration scores, or a window of past scores) is a fixed
    sample of ``baseline.n``. With probability at least ``1 - alpha``, ``low`` never
    exceeds the true distance of the two distributions, at any of the looks, as long as
    the baseline stays the same (a new baseline starts a new sequence).
    ``low_from_edges``: see :func:`estimators._drift.bounds_with_margin`.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> base = QuantileSketch().update(rng.uniform(size=10_000))
    >>> same = sequential_ks_bounds(QuantileSketch().update(rng.uniform(size=2000)), base, 0.05)
    >>> same.low == 0.0 and same.distance < same.high
    True
    >>> moved = QuantileSketch().update(rng.uniform(0.5, 1.0, 2000))
    >>> round(sequential_ks_bounds(moved, base, 0.05).low, 2)
    0.37

    References
    ----------
    Howard, S. R. and Ramdas, A. (2022). Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification. Bernoulli 28(3).
    """
    return bounds_with_margin(
        live,
        baseline,
        lambda n, m: float(sequential_ks_margin(n, m, alpha)),
        low_from_edges,
    )
