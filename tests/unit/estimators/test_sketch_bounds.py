"""Anytime-valid bounds read off a sketch (tail rates, quantiles), the two-sample p-value,
and the Bernoulli sequence from its counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import betaln
from scipy.stats import norm

from estimators import (
    BernoulliSequence,
    CoMoments,
    Moments,
    QuantileSketch,
    exceedance_sequence,
    mean_difference_sequence,
    quantile_interval,
    quantile_rank_bounds,
)

ALPHA = 0.05
LEVEL = math.log(1 / ALPHA)


def monte_carlo_limit(alpha: float, paths: int) -> float:
    """``alpha`` plus three Monte Carlo standard errors of a rate estimated from ``paths``."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / paths)


def keys(sketch: QuantileSketch, x: np.ndarray) -> np.ndarray:
    """The bucket key of each positive value, as the sketch computes it."""
    return np.ceil(np.log(x) / math.log(sketch.gamma))


def log_mixture_ratio(p: float, n: np.ndarray, successes: np.ndarray) -> np.ndarray:
    """``BernoulliSequence.log_mixture_ratio`` (uniform prior) over arrays of counts."""
    return (
        betaln(1 + successes, 1 + n - successes)
        - successes * np.log(p)
        - (n - successes) * np.log1p(-p)
    )


# --- exceedance_sequence --------------------------------------------------------------------------


def test_the_low_end_never_counts_the_thresholds_bucket() -> None:
    """Values in the bucket holding the threshold may lie on either side of it: the low
    end counts none of them, the high end all of them."""
    sketch = QuantileSketch(0.01)
    threshold = 1200.0
    same_bucket = [threshold * 0.995, threshold, threshold * 1.004]
    assert len(set(keys(sketch, np.array(same_bucket)).tolist())) == 1
    sketch.update(np.repeat(same_bucket, 400))
    tail = exceedance_sequence(sketch, threshold, ALPHA)
    assert (tail.estimate, tail.low, tail.high) == (0.0, 0.0, 1.0)
    # One bucket up is surely above; one bucket down surely not.
    sketch.update(np.full(300, threshold * 1.03))
    sketch.update(np.full(300, threshold * 0.97))
    tail = exceedance_sequence(sketch, threshold, ALPHA)
    assert tail.estimate == pytest.approx(300 / 1800)
    assert tail.low == BernoulliSequence.from_counts(1800, 300, ALPHA).interval.low
    assert tail.high == BernoulliSequence.from_counts(1800, 1500, ALPHA).interval.high


signed_values = st.one_of(st.floats(-1e4, -1e-3), st.just(0.0), st.floats(1e-3, 1e4))


@given(
    st.lists(signed_values, min_size=1, max_size=200),
    st.one_of(signed_values, st.floats(-1e4, 1e4)),
    st.sampled_from([0.005, 0.01, 0.05]),
)
@settings(max_examples=300, deadline=None)
def test_bucketing_only_widens_the_tail_interval(
    values: list[float], threshold: float, accuracy: float
) -> None:
    sketch = QuantileSketch(accuracy).update(values)
    above = int(np.sum(np.asarray(values) > threshold))
    surely = sketch.count_above(threshold)
    maybe = sketch.count_maybe_above(threshold)
    assert surely <= above <= maybe
    tail = exceedance_sequence(sketch, threshold, ALPHA)
    exact = BernoulliSequence.from_counts(len(values), above, ALPHA).interval
    assert tail.low <= exact.low and exact.high <= tail.high
    assert tail.estimate == surely / len(values)


def test_an_empty_sketch_knows_nothing() -> None:
    tail = exceedance_sequence(QuantileSketch(), 1200.0, ALPHA)
    assert math.isnan(tail.estimate) and (tail.low, tail.high) == (0.0, 1.0)


def test_the_high_end_counts_the_thresholds_bucket_for_a_negative_threshold() -> None:
    sketch = QuantileSketch(0.01).update(np.full(1000, -9.99))  # all above -10
    tail = exceedance_sequence(sketch, -10.0, ALPHA)
    assert tail.high == 1.0


def test_the_high_end_counts_the_thresholds_bucket_at_its_far_edge() -> None:
    """A negative threshold at the bottom of its bucket, the values at its top: all above."""
    sketch = QuantileSketch(0.01)
    key = keys(sketch, np.array([10.0]))[0]
    bottom, top = -(sketch.gamma**key) * (1 - 1e-12), -(sketch.gamma ** (key - 1)) * (1 + 1e-9)
    assert len(set(keys(sketch, np.array([-bottom, -top])).tolist())) == 1
    sketch.update(np.full(1000, top))
    assert exceedance_sequence(sketch, bottom, ALPHA).high == 1.0


@given(st.lists(signed_values, min_size=1, max_size=300), st.sampled_from([0.005, 0.01, 0.05]))
@settings(max_examples=300, deadline=None)
def test_the_bucket_at_a_rank_holds_the_value_of_that_rank(
    values: list[float], accuracy: float
) -> None:
    sketch = QuantileSketch(accuracy).update(values)
    ordered = sorted(values)
    ranks = list(range(1, len(values) + 1))
    for value, (low, high) in zip(ordered, sketch.bounds_at_ranks(ranks), strict=True):
        assert low <= value <= high


def test_bounds_at_ranks_refuses_ranks_outside_the_sample() -> None:
    sketch = QuantileSketch().update([1.0, 2.0])
    for rank in (0, 3):
        with pytest.raises(ValueError, match=r"ranks must be in 1\.\.2"):
            sketch.bounds_at_ranks([rank])


def test_the_quantile_interval_uses_whole_ranks() -> None:
    """n = 135, q = 0.9: the lower rank is 109, where 109 / 135 * 135 rounds up to 110.
    The 109th smallest value is 100: the interval must reach down to it."""
    sketch = QuantileSketch().update(np.concatenate([np.full(109, 100.0), np.full(26, 200.0)]))
    assert quantile_rank_bounds(135, 0.9, ALPHA) == (109, 131)
    assert math.ceil(109 / 135 * 135) == 110  # the float round trip the interval avoids
    assert quantile_interval(sketch, 0.9, ALPHA).low <= 100.0


def simulate_tails(
    rng: np.random.Generator, mean_log: float, threshold: float, paths: int, looks: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log-normal latencies (sigma 0.3): for every path and look, the values seen, the
    running counts the sketch certainly and possibly has above ``threshold``."""
    x = rng.lognormal(mean_log, 0.3, (paths, looks * size))
    sketch = QuantileSketch(0.01)
    key = keys(sketch, x)
    threshold_key = keys(sketch, np.array([threshold]))[0]
    surely = np.cumsum((key > threshold_key).reshape(paths, looks, size).sum(axis=2), axis=1)
    maybe = np.cumsum((key >= threshold_key).reshape(paths, looks, size).sum(axis=2), axis=1)
    n = size * np.arange(1, looks + 1)
    return x, n, surely, maybe


@pytest.mark.slow
@pytest.mark.parametrize("mean_log", [6.6, 6.8])  # P(X > 1,200 ms) ~5.1% and ~16.7%
def test_the_tail_interval_covers_under_continuous_monitoring(mean_log: float) -> None:
    rng = np.random.default_rng(71)
    paths, looks, size, threshold = 400, 40, 100, 1200.0
    truth = float(norm.sf((math.log(threshold) - mean_log) / 0.3))
    x, n, surely, maybe = simulate_tails(rng, mean_log, threshold, paths, looks, size)
    # The interval misses the truth from below (low > truth) or above (high < truth).
    with np.errstate(divide="ignore"):
        under = (surely / n > truth) & (log_mixture_ratio(truth, n, surely) >= LEVEL)
        over = (maybe / n < truth) & (log_mixture_ratio(truth, n, maybe) >= LEVEL)
    missed = (under | over).any(axis=1)
    # The same, read off the real sketch and function, on a few paths at every look.
    for path in range(3):
        sketch = QuantileSketch(0.01)
        for look in range(looks):
            sketch.update(x[path, look * size : (look + 1) * size])
            tail = exceedance_sequence(sketch, threshold, ALPHA)
            assert tail.estimate == surely[path, look] / n[look]
            assert tail.contains(truth) is not bool(under[path, look] or over[path, look])
    assert missed.mean() <= monte_carlo_limit(ALPHA, paths), f"missed in {missed.mean():.3f}"


def test_the_tail_interval_tells_a_slow_p95_from_a_fast_one() -> None:
    rng = np.random.default_rng(72)
    slow = QuantileSketch().update(rng.lognormal(6.8, 0.3, 3000))  # p95 ~1,470 ms
    fast = QuantileSketch().update(rng.lognormal(6.0, 0.3, 3000))  # p95 ~660 ms
    assert exceedance_sequence(slow, 1200.0, ALPHA).low > 0.05
    assert exceedance_sequence(fast, 1200.0, ALPHA).high < 0.05


# --- quantile_interval ----------------------------------------------------------------------------


def simulate_quantile_misses(
    rng: np.random.Generator, q: float, paths: int, looks: int, size: int, check: int = 2
) -> np.ndarray:
    """Whether the interval for the ``q``-quantile of log-normal(6, 0.5) values missed the
    true quantile at some look of each path. The interval's ends are the edges of the
    sketch's buckets holding the values at the ranks that end the rate interval, which
    depend on n only: read off the sorted values, and the real function on ``check``
    paths."""
    truth = math.exp(6.0 + 0.5 * norm.ppf(q))
    x = rng.lognormal(6.0, 0.5, (paths, looks * size))
    sketch = QuantileSketch(0.01)
    gamma = sketch.gamma
    missed = np.zeros(paths, dtype=bool)
    real = [QuantileSketch(0.01) for _ in range(check)]
    for look in range(1, looks + 1):
        n = look * size
        ranks = quantile_rank_bounds(n, q, ALPHA)
        seen = np.sort(x[:, :n], axis=1)

        def bucket(rank: int, seen: np.ndarray = seen) -> np.ndarray:
            return keys(sketch, seen[:, rank - 1])  # the bucket of the rank-th smallest

        if ranks is None:
            low, high = np.full(paths, -np.inf), np.full(paths, np.inf)
        else:
            j_lo, j_hi = ranks
            low = gamma ** (bucket(j_lo) - 1.0) if j_lo > 0 else np.full(paths, -np.inf)
            high = gamma ** bucket(j_hi + 1).astype(float) if j_hi < n else np.full(paths, np.inf)
        missed |= (low > truth) | (high < truth)
        for path, real_sketch in enumerate(real):
            real_sketch.update(x[path, (look - 1) * size : n])
            interval = quantile_interval(real_sketch, q, ALPHA)
            assert interval.low == pytest.approx(low[path], rel=1e-12)
            assert interval.high == pytest.approx(high[path], rel=1e-12)
    return missed


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_the_quantile_interval_brackets_the_true_quantile(q: float) -> None:
    """Monitored after every 100 values from 100 to 4,000 (as the guardrails read the p95)."""
    paths = 400
    missed = simulate_quantile_misses(np.random.default_rng(73), q, paths, 40, 100)
    assert missed.mean() <= monte_carlo_limit(ALPHA, paths), f"missed in {missed.mean():.3f}"


def test_the_quantile_interval_is_unbounded_while_the_sample_cannot_bound_it() -> None:
    rng = np.random.default_rng(74)
    twenty = QuantileSketch().update(rng.lognormal(6.0, 0.5, 20))
    hundred = QuantileSketch().update(rng.lognormal(6.0, 0.5, 100))
    assert quantile_interval(twenty, 0.95, ALPHA).high == math.inf
    assert quantile_interval(hundred, 0.99, ALPHA).high == math.inf
    paths = 400
    missed = simulate_quantile_misses(rng, 0.95, paths, 40, 10)
    assert missed.mean() <= monte_carlo_limit(ALPHA, paths), f"missed in {missed.mean():.3f}"


def test_quantile_interval_edges() -> None:
    empty = quantile_interval(QuantileSketch(), 0.95, ALPHA)
    assert math.isnan(empty.estimate) and (empty.low, empty.high) == (-math.inf, math.inf)
    sketch = QuantileSketch().update(np.arange(1.0, 10_001.0))
    for q in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="q must be in"):
            quantile_interval(sketch, q, ALPHA)
    p95 = quantile_interval(sketch, 0.95, ALPHA)
    assert p95.low < 9500 < p95.high and p95.estimate == sketch.quantile(0.95)
    few = QuantileSketch().update(np.arange(1.0, 201.0))
    assert (
        quantile_interval(few, 0.5, 1e-4).half_width > quantile_interval(few, 0.5, 0.05).half_width
    )


# --- DifferenceInterval.p_value -------------------------------------------------------------------


def moments(n: int, mean: float, sd: float) -> Moments:
    return Moments.from_state({"n": n, "weight": float(n), "mean": mean, "m2": sd**2 * (n - 1)})


def co_moments(
    n: int, mean_x: float, mean_y: float, sd_x: float, sd_y: float, r: float
) -> CoMoments:
    return CoMoments.from_state(
        {
            "n": n,
            "mean_x": mean_x,
            "mean_y": mean_y,
            "m2_x": sd_x**2 * (n - 1),
            "m2_y": sd_y**2 * (n - 1),
            "c_xy": r * sd_x * sd_y * (n - 1),
        }
    )


sizes = st.integers(2, 20_000)
means = st.floats(-100, 100)
spreads = st.floats(1e-3, 50)


def assert_p_value_agrees(result, alpha: float) -> None:  # type: ignore[no-untyped-def]
    assert 0 <= result.p_value <= 1  # 0 when exp(-log M) underflows
    if math.isinf(result.low) or math.isinf(result.high):
        assert result.p_value == 1.0
        return
    half = (result.high - result.low) / 2
    # Away from the edge, where rounding could tip either way.
    assume(abs(abs(result.estimate) - half) > 1e-9 * max(half, 1e-300))
    excludes_zero = result.low > 0 or result.high < 0
    assert (result.p_value <= alpha) is excludes_zero


@given(
    sizes,
    sizes,
    means,
    means,
    spreads,
    spreads,
    st.sampled_from([1.0, 0.95, 1.1]),
    st.sampled_from([0.001, 0.05, 0.2]),
    st.sampled_from([100.0, 2000.0]),
    st.integers(2, 100),
)
@settings(max_examples=300, deadline=None)
def test_the_p_value_is_at_most_alpha_exactly_when_the_interval_excludes_zero(
    n_t: int,
    n_c: int,
    mean_t: float,
    mean_c: float,
    sd_t: float,
    sd_c: float,
    ratio: float,
    alpha: float,
    target: float,
    min_n: int,
) -> None:
    result = mean_difference_sequence(
        moments(n_t, mean_t, sd_t),
        moments(n_c, mean_c, sd_c),
        ratio=ratio,
        alpha=alpha,
        target_time=target,
        min_n=min_n,
    )
    assert_p_value_agrees(result, alpha)


@given(
    st.integers(30, 5000),
    st.integers(30, 5000),
    means,
    means,
    st.floats(-0.95, 0.95),
    st.sampled_from([1.0, 0.95]),
    st.sampled_from([0.01, 0.05]),
)
@settings(max_examples=200, deadline=None)
def test_the_cuped_p_value_agrees_with_its_interval(
    n_t: int, n_c: int, mean_t: float, mean_c: float, r: float, ratio: float, alpha: float
) -> None:
    result = mean_difference_sequence(
        co_moments(n_t, 2.0, mean_t, 1.0, 1.5, r),
        co_moments(n_c, 2.1, mean_c, 1.2, 1.4, r),
        ratio=ratio,
        alpha=alpha,
        adjust=True,
    )
    assert result.method == "asymptotic_cs_cuped"
    assert_p_value_agrees(result, alpha)


def test_the_p_value_is_one_while_the_interval_is_infinite() -> None:
    few = mean_difference_sequence(moments(29, 5.0, 1.0), moments(5000, 0.0, 1.0))
    assert (few.low, few.high, few.p_value) == (-math.inf, math.inf, 1.0)
    assert few.estimate == 5.0  # a huge effect, and still no evidence
    empty = mean_difference_sequence(Moments(), moments(100, 0.0, 1.0))
    assert math.isnan(empty.estimate) and empty.p_value == 1.0
    now_enough = mean_difference_sequence(moments(30, 5.0, 1.0), moments(5000, 0.0, 1.0))
    assert now_enough.low > 0 and now_enough.p_value < 1e-6


def test_the_p_value_of_constant_arms() -> None:
    same = mean_difference_sequence(moments(100, 1.0, 0.0), moments(100, 1.0, 0.0))
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)
    apart = mean_difference_sequence(moments(100, 1.5, 0.0), moments(100, 1.0, 0.0))
    assert (apart.low, apart.high, apart.p_value) == (0.5, 0.5, 0.0)


# --- BernoulliSequence.from_counts ----------------------------------------------------------------


@given(
    st.lists(st.booleans(), max_size=400),
    st.sampled_from([0.001, 0.05, 0.3]),
    st.sampled_from([(1.0, 1.0), (0.5, 20.0)]),
)
@settings(max_examples=150, deadline=None)
def test_from_counts_equals_updating_with_the_outcomes(
    outcomes: list[bool], alpha: float, prior: tuple[float, float]
) -> None:
    updated = BernoulliSequence(alpha, *prior).update(np.array(outcomes, dtype=bool))
    counted = BernoulliSequence.from_counts(len(outcomes), sum(outcomes), alpha, *prior)
    assert counted == updated
    assert counted.to_state() == updated.to_state()
    assert type(counted.n) is int and type(counted.successes) is int
    if outcomes:
        assert counted.interval == updated.interval
    shuffled = BernoulliSequence(alpha, *prior).update(np.array(outcomes[::-1], dtype=int))
    assert counted == shuffled


def test_from_counts_refuses_impossible_counts() -> None:
    for n, successes in ((10, 11), (10, -1), (0, 1)):
        with pytest.raises(ValueError, match="0 <= successes <= n"):
            BernoulliSequence.from_counts(n, successes)
    with pytest.raises(ValueError, match="alpha"):
        BernoulliSequence.from_counts(10, 1, alpha=1.0)
    assert BernoulliSequence.from_counts(0, 0) == BernoulliSequence()
