"""Distribution drift against a baseline: KS, PSI and noise-guarded severity bands."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ._sketch import QuantileSketch

__all__ = [
    "SEVERITY_THRESHOLDS",
    "DriftResult",
    "KSBounds",
    "ks_critical_distance",
    "ks_drift",
    "population_stability_index",
    "severity_band",
    "sketch_ks_bounds",
]

SEVERITY_THRESHOLDS = {"moderate": 0.2, "severe": 0.3}
MODERATE, SEVERE = SEVERITY_THRESHOLDS["moderate"], SEVERITY_THRESHOLDS["severe"]


def severity_band(distance: float) -> str:
    """``minor`` below 0.2, ``moderate`` in [0.2, 0.3), ``severe`` from 0.3.

    >>> severity_band(0.19), severity_band(0.2), severity_band(0.3)
    ('minor', 'moderate', 'severe')
    """
    if distance >= SEVERE:
        return "severe"
    if distance >= MODERATE:
        return "moderate"
    return "minor"


def ks_critical_distance(n: int, m: int, alpha: float = 0.05) -> float:
    """How far two empirical CDFs of n and m draws of one distribution can stray.

    The asymptotic two-sample KS critical value ``c(alpha) sqrt((n + m) / (n m))`` with
    ``c(alpha) = sqrt(-log(alpha / 2) / 2)`` (Smirnov; also the DKW constant).

    >>> round(ks_critical_distance(1000, 1000), 4)
    0.0607
    """
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


@dataclass(frozen=True)
class DriftResult:
    distance: float
    """The KS distance ``sup |F_baseline - F_current|`` (from samples, or a sketch)."""
    p_value: float
    lower_bound: float
    """``distance`` less sampling noise (and the sketch's error): what the band uses."""
    severity: str
    n_baseline: int
    n_current: int


def ks_drift(
    baseline: ArrayLike, current: ArrayLike, alpha: float = 0.05, sketch_error: float = 0.0
) -> DriftResult:
    """Two-sample KS drift of ``current`` against ``baseline``, with a guarded band.

    The band is read off a lower confidence bound of the distance, ``D - critical -
    sketch_error``, not ``D`` itself: with 50 samples a same-distribution KS distance of
    0.2 is routine noise, and it must not flip a band. The p-value is scipy's exact or
    asymptotic ``ks_2samp``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ks_drift(rng.normal(size=40), rng.normal(size=40)).severity
    'minor'
    >>> ks_drift(rng.normal(size=5000), rng.normal(1.0, 1, 5000)).severity
    'severe'

    References
    ----------
    Smirnov, N. (1948). Table for estimating the goodness of fit of empirical
    distributions. Annals of Mathematical Statistics 19(2).
    """
    a = np.asarray(baseline, dtype=np.float64).ravel()
    b = np.asarray(current, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples need at least one value")
    result = stats.ks_2samp(a, b)
    distance = float(result.statistic)
    lower = max(0.0, distance - ks_critical_distance(a.size, b.size, alpha) - sketch_error)
    return DriftResult(
        distance, float(result.pvalue), lower, severity_band(lower), int(a.size), int(b.size)
    )


@dataclass(frozen=True)
class KSBounds:
    """The KS distance of two sketched samples, with the bounds a gate reads its band off."""

    distance: float
    """``sup |F_live - F_baseline|`` at the sketches' bucket edges."""
    low: float
    """``distance - noise - sketch_error``, at least 0: the distance surely exceeds this."""
    high: float
    """``distance + noise + sketch_error``, at most 1."""
    noise: float
    """What sampling can add or hide: the two-sample KS critical distance at the two
    sample sizes (:func:`sketch_ks_bounds`, one look) or the time-uniform margin
    (:func:`estimators.sequential_ks_bounds`, any number of looks)."""
    sketch_error: float
    """What the sketches' bucketing can add or hide."""


def sketch_ks_bounds(live: QuantileSketch, baseline: QuantileSketch, alpha: float) -> KSBounds:
    """KS distance of ``live`` from ``baseline`` with a noise- and sketch-guarded interval.

    The single implementation of the score drift gate's statistic: the sketches' own
    distance (:meth:`QuantileSketch.ks_distance`, with its stated bucketing error) widened
    by the two-sample critical distance :func:`ks_critical_distance` at ``alpha``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> same = sketch_ks_bounds(
    ...     QuantileSketch().update(rng.uniform(size=2000)),
    ...     QuantileSketch().update(rng.uniform(size=2000)), 0.05)
    >>> same.low == 0.0 and same.distance < same.high
    True
    >>> shifted = sketch_ks_bounds(
    ...     QuantileSketch().update(rng.uniform(0.5, 1.0, 2000)),
    ...     QuantileSketch().update(rng.uniform(size=2000)), 0.05)
    >>> severity_band(shifted.low)
    'severe'
    """
    return bounds_with_margin(live, baseline, lambda n, m: ks_critical_distance(n, m, alpha))


def bounds_with_margin(
    live: QuantileSketch,
    baseline: QuantileSketch,
    margin: Callable[[int, int], float],
    low_from_edges: bool = False,
) -> KSBounds:
    """The sketches' KS distance, less and plus ``margin(live.n, baseline.n)`` (the two
    samples' noise) and the sketches' own error: the one place the bounds are built.

    With ``low_from_edges`` the lower bound is ``distance - noise``: the distance at the
    bucket edges never exceeds the samples' own (both CDFs are exact there), so only the
    upper bound needs the sketch's error. That matters where a bucket holds much of the
    mass (a covariate of a few integer levels: its sketch error is the largest level's
    share)."""
    if live.n == 0 or baseline.n == 0:
        raise ValueError("both sketches need at least one value")
    distance, sketch_error = live.ks_distance(baseline)
    noise = margin(live.n, baseline.n)
    return KSBounds(
        distance=distance,
        low=max(0.0, distance - noise - (0.0 if low_from_edges else sketch_error)),
        high=min(1.0, distance + noise + sketch_error),
        noise=noise,
        sketch_error=sketch_error,
    )


def population_stability_index(
    baseline: ArrayLike, current: ArrayLike, bins: int = 10, epsilon: float = 1e-4
) -> float:
    """PSI ``sum (a_i - e_i) log(a_i / e_i)`` over the baseline's quantile bins.

    ``e_i`` and ``a_i`` are the baseline and current fractions per bin; empty bins get
    ``epsilon`` so the logarithm is finite. Common reading: < 0.1 stable, 0.1-0.25
    moderate shift, > 0.25 major shift.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> round(population_stability_index(rng.normal(size=10_000), rng.normal(size=10_000)), 3)
    0.001

    References
    ----------
    Yurdakul, B. (2018). Statistical properties of population stability index. PhD thesis,
    Western Michigan University.
    """
    a = np.asarray(baseline, dtype=np.float64).ravel()
    b = np.asarray(current, dtype=np.float64).ravel()
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, a, side="right"), minlength=edges.size + 1)
    actual = np.bincount(np.searchsorted(edges, b, side="right"), minlength=edges.size + 1)
    e = np.maximum(expected / a.size, epsilon)
    f = np.maximum(actual / b.size, epsilon)
    return float(np.sum((f - e) * np.log(f / e)))
