"""The time-uniform KS bound of the score drift gate: its constants, and its false alarms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from estimators import (
    BASELINE_ALPHA_SHARE,
    QuantileSketch,
    dkw_radius,
    ks_critical_distance,
    sequential_ks_bounds,
    sequential_ks_margin,
    time_uniform_dkw_radius,
)


def theorem_2_crossing_bound(level: float, a: float = 0.85) -> float:
    """Howard and Ramdas (2022), Theorem 2: the probability that the empirical process
    ever crosses ``a sqrt((log log(e t) + level) / t)``, minimized over the epoch growth
    ``eta`` (as ``confseq``'s ``EmpiricalProcessLILBound::find_optimal_C`` does)."""

    def crossing(eta: float) -> float:
        gamma_sq = 2 / eta * (a - math.sqrt(2 * (eta - 1) / level)) ** 2
        if gamma_sq <= 1:
            return math.inf
        return 4 * math.exp(-gamma_sq * level) * (1 + 1 / ((gamma_sq - 1) * math.log(eta)))

    top = optimize.brentq(
        lambda eta: math.sqrt(eta / 2) + math.sqrt(2 * (eta - 1) / level) - a, 1.0, 2 * a * a
    )
    etas = np.linspace(1.0 + 1e-9, top, 20_001)
    return min(crossing(float(eta)) for eta in etas)


@pytest.mark.parametrize("alpha", [0.45, 0.1, 0.05, 0.025, 0.01, 1e-4])
def test_the_closed_form_is_within_its_theorem(alpha: float) -> None:
    """``0.8 log(1612 / alpha)`` makes Theorem 2's crossing probability at most alpha."""
    assert theorem_2_crossing_bound(0.8 * math.log(1612 / alpha)) <= alpha


def test_above_045_the_band_of_045_is_used() -> None:
    # The closed form at 0.5 would cross with probability 0.5013 by the theorem's bound.
    assert theorem_2_crossing_bound(0.8 * math.log(1612 / 0.5)) > 0.5
    assert time_uniform_dkw_radius(100, 0.5) == time_uniform_dkw_radius(100, 0.45)
    assert time_uniform_dkw_radius(100, 0.4) > time_uniform_dkw_radius(100, 0.45)


def test_the_radius_is_the_papers_formula() -> None:
    t = np.array([1, 10, 1000, 10**6])
    expected = 0.85 * np.sqrt((np.log(np.log(np.e * t)) + 0.8 * np.log(1612 / 0.05)) / t)
    np.testing.assert_allclose(time_uniform_dkw_radius(t, 0.05), expected, rtol=1e-12)


def test_against_confseq_where_it_is_installed() -> None:
    quantiles = pytest.importorskip("confseq.quantiles")
    t = np.array([10.0, 100.0, 1000.0, 10_000.0])
    optimal = quantiles.empirical_process_lil_bound(t, 0.05, 1.0)
    ours = time_uniform_dkw_radius(t, 0.05)
    # The closed form is the optimal constant rounded up: a little wider, never narrower.
    assert np.all(ours >= optimal) and np.all(ours <= 1.02 * optimal)


def test_the_margin_splits_alpha_between_live_and_baseline() -> None:
    live = time_uniform_dkw_radius(500, 0.05 * (1 - BASELINE_ALPHA_SHARE))
    baseline = dkw_radius(2000, 0.05 * BASELINE_ALPHA_SHARE)
    assert float(sequential_ks_margin(500, 2000, 0.05)) == pytest.approx(float(live + baseline))
    # Wider than the fixed-n Smirnov distance: the price of reading it after every batch.
    assert float(sequential_ks_margin(500, 2000, 0.05)) > ks_critical_distance(500, 2000, 0.05)


@pytest.mark.parametrize(("t", "alpha"), [(0, 0.05), (10, 0.0), (10, 1.0)])
def test_bad_arguments_raise(t: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        time_uniform_dkw_radius(t, alpha)
    with pytest.raises(ValueError):
        dkw_radius(t, alpha)


def test_the_bounds_widen_the_sketch_distance_by_the_margin() -> None:
    rng = np.random.default_rng(3)
    live = QuantileSketch().update(rng.uniform(0.2, 1.0, 800))
    base = QuantileSketch().update(rng.uniform(size=3000))
    bounds = sequential_ks_bounds(live, base, 0.05)
    distance, error = live.ks_distance(base)
    assert bounds.distance == distance and bounds.sketch_error == error
    assert bounds.noise == pytest.approx(float(sequential_ks_margin(800, 3000, 0.05)))
    assert bounds.low == pytest.approx(distance - bounds.noise - error)
    assert bounds.high == pytest.approx(min(1.0, distance + bounds.noise + error))
    with pytest.raises(ValueError):
        sequential_ks_bounds(QuantileSketch(), base, 0.05)


def ever_significant(paths: int, m: int, horizon: int, every: int, seed: int) -> np.ndarray:
    """Under the null, for each margin, which paths' exact KS distance ever exceeded it
    (the sampling margin alone, no sketch error to hide behind): live and baseline are
    uniform, looked at after every ``every`` live scores from 100 on."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, 401)[1:-1]  # the exact sup is over the sample points; this
    base = np.sort(rng.uniform(size=(paths, m)), axis=1)  # grid of 399 under-reads it
    live_points = rng.uniform(size=(paths, horizon))
    crossed = np.zeros((2, paths), dtype=bool)
    base_cdf = np.stack([np.searchsorted(row, grid, side="right") for row in base]) / m
    live_counts = np.zeros((paths, grid.size))
    for n in range(every, horizon + 1, every):
        chunk = np.sort(live_points[:, n - every : n], axis=1)
        live_counts += np.stack([np.searchsorted(row, grid, side="right") for row in chunk])
        if n < 100:
            continue
        gap = np.abs(live_counts / n - base_cdf).max(axis=1)
        crossed[0] |= gap > ks_critical_distance(n, m, 0.05)
        crossed[1] |= gap > float(sequential_ks_margin(n, m, 0.05))
    return crossed


def test_looked_at_after_every_batch_the_bound_keeps_its_alpha() -> None:
    """300 null paths to 5,000 scores, a look every 100: the fixed-n distance is crossed
    on far more than 5% of the paths, the time-uniform one on at most 5% (the upper
    Wilson bound of its rate; the full table is bench/score_drift_validity.py)."""
    fixed, uniform = ever_significant(300, 1000, 5000, 100, seed=18).sum(axis=1)
    assert wilson_high(uniform, 300) <= 0.05
    assert fixed / 300 > 0.08 and fixed > 5 * uniform


def wilson_high(hits: int, total: int, z: float = 1.96) -> float:
    p = hits / total
    centre = p + z * z / (2 * total)
    return (centre + z * math.sqrt(p * (1 - p) / total + z * z / (4 * total**2))) / (
        1 + z * z / total
    )
