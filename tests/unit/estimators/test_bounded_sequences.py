"""Empirical-Bernstein and Bernoulli confidence sequences: validity over the whole horizon."""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import BernoulliSequence, EmpiricalBernsteinSequence


def monte_carlo_limit(alpha: float, paths: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / paths)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bernoulli_0.05", "beta_skewed", "uniform_scaled"])
def test_empirical_bernstein_covers_after_every_batch(kind: str) -> None:
    rng = np.random.default_rng(31)
    paths, batches, size = 400, 100, 100
    missed = 0
    for _ in range(paths):
        if kind == "bernoulli_0.05":
            x, truth, low, high = rng.binomial(1, 0.05, batches * size), 0.05, 0.0, 1.0
        elif kind == "beta_skewed":
            x, truth, low, high = rng.beta(0.5, 4, batches * size), 0.5 / 4.5, 0.0, 1.0
        else:
            x, truth, low, high = rng.uniform(-3, 7, batches * size), 2.0, -3.0, 7.0
        cs = EmpiricalBernsteinSequence(low=low, high=high)
        for chunk in x.reshape(batches, size):
            if not cs.update(chunk).interval.contains(truth):
                missed += 1
                break
    assert missed / paths <= monte_carlo_limit(0.05, paths)


def test_empirical_bernstein_batching_does_not_change_the_sequence() -> None:
    x = np.random.default_rng(2).uniform(size=3000)
    whole = EmpiricalBernsteinSequence().update(x)
    pieces = EmpiricalBernsteinSequence()
    for chunk in np.array_split(x, 17):
        pieces.update(chunk)
    assert pieces.interval.low == pytest.approx(whole.interval.low, rel=1e-12)
    assert pieces.interval.high == pytest.approx(whole.interval.high, rel=1e-12)


def test_empirical_bernstein_merge_adds_the_capital_and_shrinks() -> None:
    rng = np.random.default_rng(3)
    a = EmpiricalBernsteinSequence().update(rng.uniform(size=2000))
    b = EmpiricalBernsteinSequence().update(rng.uniform(size=2000))
    merged = a + b
    assert merged.n == 4000
    assert merged.sum_lambda == pytest.approx(a.sum_lambda + b.sum_lambda)
    assert merged.interval.half_width < min(a.interval.half_width, b.interval.half_width)
    assert merged.interval.contains(0.5)
    with pytest.raises(ValueError, match="different parameters"):
        a + EmpiricalBernsteinSequence(alpha=0.01)
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
        EmpiricalBernsteinSequence().update([1.5])


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.005, 0.1, 0.5])
def test_bernoulli_sequence_covers_after_every_batch(rate: float) -> None:
    rng = np.random.default_rng(41)
    paths, batches, size = 2000, 200, 50
    level = math.log(1 / 0.05)
    counts = rng.binomial(size, rate, (paths, batches)).cumsum(axis=1)
    n = size * np.arange(1, batches + 1)
    sequence = BernoulliSequence()
    missed = 0
    for path in counts:
        for successes, total in zip(path, n, strict=True):
            sequence.n, sequence.successes = int(total), int(successes)
            if sequence.log_mixture_ratio(rate) >= level:
                missed += 1
                break
    assert missed / paths <= monte_carlo_limit(0.05, paths)


def test_bernoulli_interval_is_where_the_mixture_stays_below_the_level() -> None:
    sequence = BernoulliSequence().update([1] * 7 + [0] * 193)
    ci = sequence.interval
    level = math.log(1 / 0.05)
    assert sequence.log_mixture_ratio(ci.low) == pytest.approx(level, abs=1e-6)
    assert sequence.log_mixture_ratio(ci.high) == pytest.approx(level, abs=1e-6)
    assert sequence.log_mixture_ratio(ci.estimate) < level
    assert ci.low < 7 / 200 < ci.high


def test_bernoulli_takes_only_0_and_1_and_its_interval_stays_in_the_unit_range() -> None:
    with pytest.raises(ValueError, match="0/1"):
        BernoulliSequence().update([2])
    assert BernoulliSequence().update([0] * 50).interval.low == 0.0
