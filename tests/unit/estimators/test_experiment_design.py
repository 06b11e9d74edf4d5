"""Experiment design and analysis on moments, against the formulas on raw arrays and by
simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import (
    CoMoments,
    Moments,
    achieved_power,
    anytime_power,
    anytime_sample_size,
    bernoulli_moments,
    cuped_fit,
    cuped_sample_size,
    fixed_power,
    hedges_g,
    mean_difference_sequence,
    mean_sample_size,
    ratio_sequence,
    standardized_difference,
    two_proportion_sample_size,
)


@pytest.mark.parametrize(("baseline", "mde"), [(0.6, 0.05), (0.1, 0.02), (0.5, 0.1)])
def test_two_proportion_size_is_the_guides_formula(baseline: float, mde: float) -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    guide = 2 * z**2 * baseline * (1 - baseline) / mde**2
    assert two_proportion_sample_size(baseline, mde) == math.ceil(guide)
    # At that size the fixed-horizon test has the power asked for.
    se = math.sqrt(2 * baseline * (1 - baseline) / math.ceil(guide))
    assert fixed_power(mde, se) == pytest.approx(0.8, abs=0.002)


def test_cuped_takes_its_r2_off_and_looking_always_costs_more() -> None:
    n = mean_sample_size(1.0, 0.1)
    assert cuped_sample_size(n, 0.3) == math.ceil(n * 0.7)
    assert cuped_sample_size(n, 0.0) == n
    assert anytime_sample_size(1.0, 0.1) > n
    with pytest.raises(ValueError, match="r2"):
        cuped_sample_size(n, 1.0)


def test_anytime_sample_size_has_its_power_in_simulation() -> None:
    """At the planned size per arm, the interval of a true difference of the MDE
    excludes 0 on about ``power`` of the paths (normal outcomes, one look there)."""
    rng = np.random.default_rng(11)
    per_arm = anytime_sample_size(1.0, 0.2, power=0.8)
    excluded = 0
    paths = 400
    for _ in range(paths):
        treatment = Moments().update(rng.normal(0.2, 1.0, per_arm))
        control = Moments().update(rng.normal(0.0, 1.0, per_arm))
        result = mean_difference_sequence(treatment, control, target_time=2 * 393)
        excluded += result.low > 0
    assert abs(excluded / paths - 0.8) < 0.06  # 3 standard errors of 400 paths


def test_achieved_power_reads_the_arms() -> None:
    rng = np.random.default_rng(2)
    a, b = Moments().update(rng.normal(size=393)), Moments().update(rng.normal(size=393))
    fixed, anytime = achieved_power(a, b, 0.2, target_time=786)
    se = math.sqrt(a.variance / a.n + b.variance / b.n)
    assert fixed == pytest.approx(fixed_power(0.2, se))
    assert anytime == pytest.approx(anytime_power(0.2, se * math.sqrt(786), 786, 0.05, 786))
    # CUPED's variance reduction raises both.
    reduced = achieved_power(a, b, 0.2, 0.05, 786, 0.5)
    assert reduced[0] > fixed and reduced[1] > anytime
    assert all(math.isnan(x) for x in achieved_power(Moments(), b, 0.2))


def test_hedges_g_matches_the_arrays() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.3, 2.0, 50), rng.normal(1.0, 1.5, 70)
    pooled = math.sqrt((49 * x.var(ddof=1) + 69 * y.var(ddof=1)) / 118)
    expected = (1 - 3 / (4 * 120 - 9)) * (x.mean() - y.mean()) / pooled
    got = hedges_g(Moments().update(x[:20]).update(x[20:]), Moments().update(y))
    assert got == pytest.approx(expected, rel=1e-12)
    assert math.isnan(hedges_g(Moments().update([1.0]), Moments().update(y)))


def test_cuped_fit_is_the_pooled_within_arm_regression() -> None:
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=300), rng.normal(size=200)]
    ys = [2.0 * xs[0] + rng.normal(size=300) + 1, 2.0 * xs[1] + rng.normal(size=200)]
    fit = cuped_fit(*(CoMoments().update(x, y) for x, y in zip(xs, ys, strict=True)))
    assert fit is not None
    dx = np.concatenate([x - x.mean() for x in xs])
    dy = np.concatenate([y - y.mean() for y in ys])
    assert fit.theta == pytest.approx(np.dot(dx, dy) / np.dot(dx, dx))
    assert fit.r2 == pytest.approx(np.corrcoef(dx, dy)[0, 1] ** 2)
    assert fit.n == 500
    assert cuped_fit(CoMoments().update([1.0, 1.0], [2.0, 3.0])) is None


def test_the_ratio_sequence_covers_the_true_ratio_at_every_look() -> None:
    """200 paths of 20 looks: the ratio's interval missed 1.1 at some look on few."""
    rng = np.random.default_rng(5)
    missed = 0
    for _ in range(200):
        treatment, control = Moments(), Moments()
        for _ in range(20):
            treatment.update(rng.normal(1.1, 0.5, 100))
            control.update(rng.normal(1.0, 0.5, 100))
            result = ratio_sequence(treatment, control)
            if not result.low <= 1.1 <= result.high:
                missed += 1
                break
    assert missed / 200 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)


def test_the_ratio_sequence_is_where_the_difference_sequence_holds_zero() -> None:
    rng = np.random.default_rng(6)
    treatment = CoMoments().update(x := rng.normal(size=3000), 1.2 + x + rng.normal(size=3000))
    control = CoMoments().update(z := rng.normal(size=3000), 1.0 + z + rng.normal(size=3000))
    result = ratio_sequence(treatment, control, adjust=True)
    assert result.method == "asymptotic_cs_ratio_cuped"
    for end in (result.low, result.high):
        at_end = mean_difference_sequence(treatment, control, ratio=end, adjust=True)
        assert min(abs(at_end.low), abs(at_end.high)) < 1e-6
    # Control's mean not surely away from 0: no finite end.
    flat = Moments().update(rng.normal(0.0, 1.0, 100))
    assert math.isinf(ratio_sequence(Moments().update(rng.normal(1, 1, 100)), flat).high)


def test_bernoulli_moments_and_balance() -> None:
    ones = np.array([1, 0, 0, 1, 1, 0, 0, 0], dtype=float)
    counted = bernoulli_moments(8, 3)
    direct = Moments().update(ones)
    assert (counted.n, counted.mean) == (direct.n, direct.mean)
    assert counted.m2 == pytest.approx(direct.m2)
    assert bernoulli_moments(0, 0).n == 0
    with pytest.raises(ValueError, match="successes"):
        bernoulli_moments(2, 3)
    a, b = Moments().update([1.0, 2.0, 3.0]), Moments().update([2.0, 3.0, 4.0])
    assert standardized_difference(a, b) == pytest.approx(-1.0)
    assert math.isnan(standardized_difference(Moments().update([1.0, 1.0]), Moments()))
