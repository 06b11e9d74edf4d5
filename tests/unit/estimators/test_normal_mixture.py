from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import (
    EmpiricalBernsteinSequence,
    NormalMixtureSequence,
    normal_mixture_boundary,
    optimal_rho,
)


def test_published_values_alpha_005_target_1000() -> None:
    rho = optimal_rho(1000, 0.05)
    assert rho == pytest.approx(126.0, abs=0.05)
    assert normal_mixture_boundary(1000, rho, 0.05) == pytest.approx(96.0, abs=0.05)
    assert normal_mixture_boundary(10_000, rho, 0.05) == pytest.approx(324.2, abs=0.05)


def test_wider_than_the_fixed_n_interval_by_the_expected_factor() -> None:
    rho = optimal_rho(1000, 0.05)
    fixed = stats.norm.ppf(0.975) * math.sqrt(1000)
    assert 1.5 < normal_mixture_boundary(1000, rho, 0.05) / fixed < 1.7


def test_interval_is_infinite_below_min_n() -> None:
    cs = NormalMixtureSequence(min_n=30).update(np.ones(10))
    assert math.isinf(cs.interval.low)


def test_merging_sequences_with_different_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        NormalMixtureSequence(alpha=0.05) + NormalMixtureSequence(alpha=0.01)


def test_a_prior_variance_counts_as_prior_weight_values_and_only_widens() -> None:
    x = np.random.default_rng(5).normal(0.0, 3.0, 40)
    sample = np.var(x, ddof=1)  # about 9
    plain = NormalMixtureSequence().update(x)
    assert plain.variance == pytest.approx(sample)
    louder = NormalMixtureSequence(prior_variance=30.0, prior_weight=50).update(x)
    assert louder.variance == pytest.approx((39 * sample + 50 * 30.0) / (39 + 50))
    assert louder.interval.half_width > plain.interval.half_width
    assert louder.mean == plain.mean
    # A quieter calibration sample (2 < 9), or none at all (0), does not narrow it.
    for quiet in (2.0, 0.0):
        sequence = NormalMixtureSequence(prior_variance=quiet).update(x)
        assert sequence.interval == plain.interval
    # It fades: after 100,000 values a prior 11 times the variance moves it by under 1%.
    long = NormalMixtureSequence(prior_variance=100.0).update(np.tile(x, 2500))
    assert long.variance == pytest.approx(np.var(np.tile(x, 2500), ddof=1), rel=1e-2)


def test_a_prior_is_kept_in_the_state_and_merges_only_with_its_own() -> None:
    x = np.random.default_rng(6).normal(size=500)
    merged = NormalMixtureSequence(prior_variance=1.5).update(x[:200])
    merged += NormalMixtureSequence(prior_variance=1.5).update(x[200:])
    single = NormalMixtureSequence(prior_variance=1.5).update(x)
    assert merged.interval.low == pytest.approx(single.interval.low, rel=1e-12)
    restored = NormalMixtureSequence.from_state(merged.to_state())
    assert (restored.prior_variance, restored.interval) == (1.5, merged.interval)
    with pytest.raises(ValueError, match="prior"):
        NormalMixtureSequence(prior_variance=1.5) + NormalMixtureSequence()
    # A state written before priors existed loads without one.
    legacy = NormalMixtureSequence().update(x).to_state()
    assert "prior" not in legacy
    assert NormalMixtureSequence.from_state(legacy).prior_variance is None
    with pytest.raises(ValueError, match="prior"):
        NormalMixtureSequence(prior_variance=-1.0)


def running_intervals(
    paths: np.ndarray,
    alpha: float,
    target: float,
    min_n: int,
    prior: np.ndarray | None = None,
    prior_weight: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The sequence's interval at every time of every path, vectorized for the simulation
    (``prior``: a prior variance per path)."""
    t = np.arange(1, paths.shape[1] + 1)
    sums = np.cumsum(paths, axis=1)
    squares = np.cumsum(paths**2, axis=1)
    mean = sums / t
    deviations = squares - t * mean**2
    variance = np.where(t > 1, deviations / np.maximum(t - 1, 1), np.inf)
    if prior is not None:
        pooled = (deviations + prior_weight * prior[:, None]) / (t - 1 + prior_weight)
        variance = np.maximum(variance, pooled)
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


def test_the_calibration_variance_keeps_a_skewed_stream_from_early_false_alarms() -> None:
    """Binary labels at 20%: in the first labels the sample variance is low exactly when
    the mean is (few ones yet), and the plain plug-in interval, checked label by label,
    excludes the truth too often there; starting from the calibration set's mean squared
    residual (1,000 pairs, counted as 50 labels) it does so about half as often (2.1% of
    the paths in their first 300 labels, 1.1% with the prior)."""
    rng = np.random.default_rng(12)
    paths, horizon = 4000, 300
    residuals = rng.binomial(1, 0.2, (paths, horizon)) - 0.2
    calibration = rng.binomial(1, 0.2, (paths, 1000)) - 0.2
    prior = np.mean(calibration**2, axis=1)
    plain_mean, plain_half = running_intervals(residuals, 0.05, 1000, 30)
    mean, half = running_intervals(residuals, 0.05, 1000, 30, prior)
    cs = NormalMixtureSequence(prior_variance=float(prior[0])).update(residuals[0])
    assert cs.interval.half_width == pytest.approx(half[0, -1], rel=1e-9)
    plain = (np.abs(plain_mean) > plain_half).any(axis=1).mean()
    with_prior = (np.abs(mean) > half).any(axis=1).mean()
    assert plain > 0.015 and with_prior < 0.6 * plain, (plain, with_prior)


@pytest.mark.slow
def test_a_fixed_n_interval_checked_every_batch_does_not_hold() -> None:
    """The reason for the sequence: 100 looks at a fixed-n 95% interval miss far more often."""
    rng = np.random.default_rng(12)
    x = rng.normal(0, 1, (2000, 10_000))
    t = np.arange(1, 10_001)
    z = np.cumsum(x, axis=1)[:, 99::100] / np.sqrt(t[99::100])
    false_alarm = (np.abs(z) > stats.norm.ppf(0.975)).any(axis=1).mean()
    assert false_alarm > 0.25


def test_known_bounds_give_the_empirical_bernstein_interval_until_a_value_leaves_them() -> None:
    rng = np.random.default_rng(61)
    values = (rng.random(400) < 0.1) - 0.1  # residuals of 0/1 labels at 10%
    bounded = NormalMixtureSequence(0.04, bounds=(-1.0, 1.0), unbounded_min_n=300)
    for chunk in np.array_split(values, 9):
        bounded.update(chunk)
    exact = EmpiricalBernsteinSequence(0.04, -1.0, 1.0, target_time=1000.0).update(values)
    assert bounded.method == "empirical_bernstein_cs"
    assert bounded.interval.low == pytest.approx(exact.interval.low, rel=1e-9)
    assert bounded.interval.high == pytest.approx(exact.interval.high, rel=1e-9)
    assert bounded.interval.estimate == pytest.approx(values.mean())
    restored = NormalMixtureSequence.from_state(bounded.to_state())
    assert restored.interval == bounded.interval and restored.decides_from == 30
    # 30 labels of 0: a plug-in variance of 0 and a zero-width interval that excludes the
    # truth; the bounded interval holds it.
    zeros = np.full(30, -0.1)
    plain = NormalMixtureSequence(0.04).update(zeros)
    assert plain.interval.high - plain.interval.low < 1e-12 and not plain.interval.contains(0.0)
    assert NormalMixtureSequence(0.04, bounds=(-1.0, 1.0)).update(zeros).interval.contains(0.0)
    # A value out of bounds: the normal mixture, and only from unbounded_min_n values on.
    bounded.update([1.5])
    assert bounded.method == "normal_mixture_cs" and bounded.decides_from == 300
    assert bounded.n == 401 and math.isfinite(bounded.interval.low)
    assert math.isinf(
        NormalMixtureSequence(bounds=(-1, 1), unbounded_min_n=300).update([2.0] * 40).interval.low
    )
    with pytest.raises(ValueError, match="bounds"):
        bounded += NormalMixtureSequence(0.04)


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_a_value_out_of_bounds_leaves_the_same_state_wherever_the_batches_end(cut: int) -> None:
    """The values before the first one outside the bounds count in the bounded part as if
    they came one by one: a worker's batches and a replay's cut elsewhere agree."""
    values = [0.2, -0.4, 0.9, 5.0, 0.1, 0.3]
    whole = NormalMixtureSequence(0.04, bounds=(-1.0, 1.0)).update(values)
    split = NormalMixtureSequence(0.04, bounds=(-1.0, 1.0))
    split.update(values[:cut]).update(values[cut:])
    assert whole.bounded is not None and split.bounded is not None
    assert (whole.bounded.n, whole.in_bounds, split.in_bounds) == (3, False, False)
    assert split.bounded.to_state() == pytest.approx(whole.bounded.to_state(), rel=1e-12)
