from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import (
    benjamini_hochberg,
    cuped,
    difference_in_means,
    difference_in_proportions,
    hedges_g,
    importance_weights,
    lan_demets_boundaries,
    non_inferiority,
    obrien_fleming_boundaries,
    sample_ratio_mismatch,
    spent_alpha,
    two_proportion_power,
    two_proportion_sample_size,
)


def test_welch_matches_scipy_ttest_ind() -> None:
    rng = np.random.default_rng(71)
    a, b = rng.normal(0.2, 1, 80), rng.normal(0, 2, 120)
    ours = difference_in_means(a, b)
    theirs = stats.ttest_ind(a, b, equal_var=False)
    assert ours.p_value == pytest.approx(theirs.pvalue)
    low, high = theirs.confidence_interval(0.95)
    assert (ours.interval.low, ours.interval.high) == pytest.approx((low, high))


def test_proportions_match_the_normal_quantiles() -> None:
    result = difference_in_proportions(120, 1000, 100, 1000, alpha=0.1)
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.1 * 0.9 / 1000)
    assert result.interval.high - result.estimate == pytest.approx(stats.norm.ppf(0.95) * se)


def test_hedges_g_approaches_cohens_d() -> None:
    rng = np.random.default_rng(72)
    a, b = rng.normal(0.5, 1, 50_000), rng.normal(0, 1, 50_000)
    assert hedges_g(a, b) == pytest.approx(0.5, abs=0.02)


def test_cuped_is_unbiased_and_reduces_variance_by_r2() -> None:
    rng = np.random.default_rng(73)
    estimates = []
    for _ in range(300):
        x = rng.normal(size=400)
        y = 2 * x + rng.normal(size=400)
        result = cuped(y[:200] + 0.3, y[200:], x[:200], x[200:])
        estimates.append(result.comparison.estimate)
    assert np.mean(estimates) == pytest.approx(0.3, abs=0.02)
    assert result.theta == pytest.approx(2.0, abs=0.2)
    assert result.variance_reduction == pytest.approx(result.r2, abs=0.05)


def test_srm_is_scipys_chi_square() -> None:
    result = sample_ratio_mismatch([510, 490, 1000], [1, 1, 2])
    expected = np.array([500, 500, 1000])
    chi2 = float(np.sum((np.array([510, 490, 1000]) - expected) ** 2 / expected))
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(stats.chi2.sf(chi2, 2))
    assert not result.mismatch


def test_sample_size_and_power_agree_with_simulation() -> None:
    n = two_proportion_sample_size(0.10, 0.12)
    assert two_proportion_power(0.10, 0.12, n) == pytest.approx(0.8, abs=0.005)
    rng = np.random.default_rng(74)
    a, b = rng.binomial(n, 0.12, 4000), rng.binomial(n, 0.10, 4000)
    pooled = (a + b) / (2 * n)
    z = (a - b) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert np.mean(np.abs(z) > stats.norm.ppf(0.975)) == pytest.approx(0.8, abs=0.03)


def test_obrien_fleming_published_values() -> None:
    assert obrien_fleming_boundaries(5).round(2).tolist() == [4.56, 3.23, 2.63, 2.28, 2.04]
    assert obrien_fleming_boundaries(1)[0] == pytest.approx(stats.norm.ppf(0.975), abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["obrien_fleming", "pocock"])
def test_group_sequential_boundaries_hold_the_level(kind: str) -> None:
    rng = np.random.default_rng(75)
    times = np.array([0.15, 0.4, 0.55, 0.8, 1.0])  # unequal: spending does not need a plan
    bounds = lan_demets_boundaries(times, 0.05, kind)
    increments = rng.normal(size=(200_000, times.size)) * np.sqrt(np.diff(times, prepend=0))
    z = np.cumsum(increments, axis=1) / np.sqrt(times)
    crossed = (np.abs(z) >= bounds).any(axis=1)
    assert crossed.mean() == pytest.approx(0.05, abs=0.003)
    first = (np.abs(z[:, 0]) >= bounds[0]).mean()
    assert first == pytest.approx(spent_alpha(0.15, 0.05, kind), abs=0.002)


def test_benjamini_hochberg_by_hand() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205])
    adjusted, reject = benjamini_hochberg(p, 0.05)
    ranked = p * p.size / np.arange(1, p.size + 1)
    by_hand = np.minimum.accumulate(ranked[::-1])[::-1]
    assert adjusted == pytest.approx(by_hand)
    assert reject.tolist() == [True, True] + [False] * 6


def test_non_inferiority_directions() -> None:
    rng = np.random.default_rng(76)
    latency_new, latency_old = rng.normal(1000, 50, 500), rng.normal(1000, 50, 500)
    ok, _ = non_inferiority(latency_new, latency_old, margin=20, higher_is_better=False)
    assert ok
    worse, _ = non_inferiority(latency_new + 100, latency_old, margin=20, higher_is_better=False)
    assert not worse


def test_importance_weights() -> None:
    rng = np.random.default_rng(77)
    behavior = rng.normal(-5, 1, 1000)
    result = importance_weights(behavior + rng.normal(0, 0.5, 1000), behavior)
    assert result.weights.mean() == pytest.approx(1.0)
    assert 0 < result.effective_sample_size < 1000 and result.warning is None
    assert importance_weights(behavior, behavior).warning is not None
    extreme = importance_weights(np.array([0.0, 0.0, 0.0]), np.array([-100.0, 0.0, 0.0]))
    assert extreme.clipped == 1 and np.isfinite(extreme.weights).all()
    assert extreme.weights.max() / extreme.weights.min() == pytest.approx(math.exp(20))
