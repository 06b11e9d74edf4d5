from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import NormalMixtureSequence, normal_mixture_boundary, optimal_rho


def test_published_values_alpha_005_target_1000() -> None:
    rho = optimal_rho(1000, 0.05)
    assert rho == pytest.approx(126.0, abs=0.05)
    assert normal_mixture_boundary(1000, rho, 0.05) == pytest.approx(96.0, abs=0.05)
    assert normal_mixture_boundary(10_000, rho, 0.05) == pytest.approx(324.2, abs=0.05)


def test_wider_than_the_fixed_n_interval_by_the_expected_factor() -> None:
    rho = optimal_rho(1000, 0.05)
    fixed = stats.norm.ppf(0.975) * math.sqrt(1000)
    assert 1.5 < normal_mixture_boundary(1000, rho, 0.05) / fixed < 1.7


def test_interval_is_infinite_below_min_n_and_merges() -> None:
    cs = NormalMixtureSequence(min_n=30).update(np.ones(10))
    assert math.isinf(cs.interval.low)
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000)
    merged = NormalMixtureSequence().update(x[:1000]) + NormalMixtureSequence().update(x[1000:])
    single = NormalMixtureSequence().update(x)
    assert merged.interval.low == pytest.approx(single.interval.low, rel=1e-12)
    assert NormalMixtureSequence.from_state(merged.to_state()) == merged


def test_merging_sequences_with_different_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        NormalMixtureSequence(alpha=0.05) + NormalMixtureSequence(alpha=0.01)


def running_intervals(
    paths: np.ndarray, alpha: float, target: float, min_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The sequence's interval at every time of every path, vectorized for the simulation."""
    t = np.arange(1, paths.shape[1] + 1)
    sums = np.cumsum(paths, axis=1)
    squares = np.cumsum(paths**2, axis=1)
    mean = sums / t
    variance = np.where(t > 1, (squares - t * mean**2) / np.maximum(t - 1, 1), np.inf)
    rho = optimal_rho(target, alpha)
    boundary = np.sqrt((t + rho) * (np.log1p(t / rho) + 2 * math.log(1 / alpha)))
    half = np.sqrt(np.maximum(variance, 0)) * boundary / t
    half[:, : min_n - 1] = np.inf
    return mean, half


@pytest.mark.slow
@pytest.mark.parametrize("distribution", ["gaussian", "bernoulli", "student_t3"])
def test_time_uniform_coverage_over_the_whole_horizon(distribution: str) -> None:
    """Checked after every single observation up to 10^4, the truth stays inside in >= 95%."""
    rng = np.random.default_rng(11)
    paths, horizon = 2000, 10_000
    if distribution == "gaussian":
        x, truth = rng.normal(0.3, 1.0, (paths, horizon)), 0.3
    elif distribution == "bernoulli":
        x, truth = rng.binomial(1, 0.2, (paths, horizon)).astype(float), 0.2
    else:
        x, truth = rng.standard_t(3, (paths, horizon)), 0.0
    mean, half = running_intervals(x, 0.05, 1000, 30)
    # Cross-check one path against the class itself.
    cs = NormalMixtureSequence().update(x[0, :5000])
    assert cs.interval.half_width == pytest.approx(half[0, 4999], rel=1e-9)
    ever_missed = (np.abs(mean - truth) > half).any(axis=1)
    # Monte Carlo standard error at 2000 paths is ~0.5%; allow 3 of them.
    assert ever_missed.mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / paths)


@pytest.mark.slow
def test_a_fixed_n_interval_checked_every_batch_does_not_hold() -> None:
    """The reason for the sequence: 100 looks at a fixed-n 95% interval miss far more often."""
    rng = np.random.default_rng(12)
    x = rng.normal(0, 1, (2000, 10_000))
    t = np.arange(1, 10_001)
    z = np.cumsum(x, axis=1)[:, 99::100] / np.sqrt(t[99::100])
    false_alarm = (np.abs(z) > stats.norm.ppf(0.975)).any(axis=1).mean()
    assert false_alarm > 0.25
