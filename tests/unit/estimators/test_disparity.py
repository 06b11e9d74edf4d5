from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import (
    DisparityInterval,
    Interval,
    Moments,
    NormalMixtureSequence,
    disparity_ratio_sequence,
)

ALPHA = 0.05
PATHS = 2000
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / PATHS)


def test_bounds_from_bonferroni_group_sequences() -> None:
    rng = np.random.default_rng(80)
    data = {"a": rng.binomial(1, 0.8, 3000), "b": rng.binomial(1, 0.6, 2000), "c": np.ones(10)}
    groups = {name: Moments().update(values) for name, values in data.items()}
    result = disparity_ratio_sequence(groups)
    assert result.groups == 2  # "c" has fewer than min_n values and is left out
    assert (result.lowest_group, result.highest_group) == ("b", "a")
    assert result.estimate == pytest.approx(np.mean(data["b"]) / np.mean(data["a"]), rel=1e-12)
    # Each group's interval is NormalMixtureSequence's at alpha / 2.
    a = NormalMixtureSequence(alpha=ALPHA / 2).update(data["a"]).interval
    b = NormalMixtureSequence(alpha=ALPHA / 2).update(data["b"]).interval
    assert result.low == pytest.approx(b.low / a.high, rel=1e-12)
    assert result.high == pytest.approx(b.high / a.low, rel=1e-12)
    assert result.interval == Interval(result.estimate, result.low, result.high)
    assert result.contains(result.estimate) and not result.contains(result.high + 1e-9)


def test_a_planned_number_of_groups_fixes_each_groups_level_as_groups_arrive() -> None:
    """With ``planned_groups = 4``, every group is tested at alpha / 4 from the start, so
    the bounds set by the extreme groups do not move when middle groups reach ``min_n``
    (a level that followed the groups present would narrow them first and widen later,
    which the union bound over time does not allow)."""
    rng = np.random.default_rng(84)
    data = {
        "worst": rng.binomial(1, 0.5, 4000),
        "best": rng.binomial(1, 0.9, 4000),
        "mid1": rng.binomial(1, 0.7, 4000),
        "mid2": rng.binomial(1, 0.72, 4000),
    }
    groups = {name: Moments().update(values) for name, values in data.items()}
    extremes = {name: groups[name] for name in ("worst", "best")}
    two = disparity_ratio_sequence(extremes, planned_groups=4)
    four = disparity_ratio_sequence(groups, planned_groups=4)
    assert (two.low, two.high) == (four.low, four.high)
    worst = NormalMixtureSequence(alpha=ALPHA / 4).update(data["worst"]).interval
    best = NormalMixtureSequence(alpha=ALPHA / 4).update(data["best"]).interval
    assert two.low == pytest.approx(worst.low / best.high, rel=1e-12)
    # Unplanned, the two-group bounds are narrower than the four-group ones.
    unplanned = disparity_ratio_sequence(extremes)
    assert four.low < unplanned.low <= unplanned.high < four.high
    # More groups than planned: the level tightens to alpha / G.
    assert disparity_ratio_sequence(groups, planned_groups=2) == four
    with pytest.raises(ValueError, match="planned_groups"):
        disparity_ratio_sequence(groups, planned_groups=0)


def test_fewer_than_two_groups_and_clipping() -> None:
    one = disparity_ratio_sequence({"a": Moments().update(np.ones(100)), "b": Moments()})
    assert math.isnan(one.estimate)
    assert (one.low, one.high, one.lowest_group, one.highest_group, one.groups) == (
        -math.inf,
        math.inf,
        None,
        None,
        1,
    )
    assert isinstance(one, DisparityInterval) and one.contains(0.5)
    rng = np.random.default_rng(81)
    # Overlapping noisy groups near 0: the lower end clips at 0, the upper at 1.
    noisy = {
        g: Moments().update(rng.exponential(0.05, 40) * rng.binomial(1, 0.1, 40)) for g in "ab"
    }
    result = disparity_ratio_sequence(noisy)
    assert 0.0 <= result.low <= result.high <= 1.0
    assert result.high == 1.0
    with pytest.raises(ValueError, match="negative mean"):
        disparity_ratio_sequence({"a": Moments().update([-1.0] * 40), "b": Moments().update([1.0])})
    with pytest.raises(ValueError, match="weighted"):
        disparity_ratio_sequence({"a": Moments().update([1.0, 2.0], [1.0, 3.0])})


def simulate_groups(
    rng: np.random.Generator, rates: list[float], shares: list[float], looks: int, batch: int
) -> np.ndarray:
    """Running (n, successes) per group after every batch: shape (groups, 2, paths, looks).
    Bernoulli outcomes, simulated exactly from their sufficient statistics."""
    sizes = rng.multinomial(batch, shares, size=(PATHS, looks)).transpose(2, 0, 1)
    successes = rng.binomial(sizes, np.asarray(rates)[:, None, None])
    return np.cumsum(np.stack([sizes, successes], axis=1), axis=3).astype(np.float64)


def vectorized_disparity(
    counts: np.ndarray, alpha: float = ALPHA, target: float = 1000.0, min_n: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """The function's (low, high) at every look of every path, from (n, successes)."""
    n, s = counts[:, 0], counts[:, 1]
    used = n >= min_n
    count = used.sum(axis=0)
    level = alpha / np.maximum(count, 1)
    log_term = 2 * np.log(1 / level)
    rho = target / (log_term + np.log1p(log_term))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / n
        variance = (s - n * mean**2) / (n - 1)
        boundary = np.sqrt((n + rho) * (np.log1p(n / rho) + log_term))
        half = np.sqrt(np.maximum(variance, 0)) * boundary / n
    lows = np.where(used, mean - half, np.inf)
    highs = np.where(used, mean + half, -np.inf)
    min_low, min_high = lows.min(axis=0), np.where(used, highs, np.inf).min(axis=0)
    max_low, max_high = np.where(used, lows, -np.inf).max(axis=0), highs.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(max_high > 0, np.maximum(min_low, 0) / max_high, 0.0)
        high = min_high / np.maximum(max_low, 1e-300)
    low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    enough = count >= 2
    return np.where(enough, low, -np.inf), np.where(enough, high, np.inf)


def assert_matches_the_function(counts: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Replays path 0 through disparity_ratio_sequence at every look."""
    for look in range(counts.shape[3]):
        groups = {}
        for g in range(counts.shape[0]):
            n, s = int(counts[g, 0, 0, look]), int(counts[g, 1, 0, look])
            groups[f"g{g}"] = Moments().update(np.r_[np.ones(s), np.zeros(n - s)])
        result = disparity_ratio_sequence(groups)
        assert result.low == pytest.approx(low[0, look], rel=1e-9, abs=1e-12)
        assert result.high == pytest.approx(high[0, look], rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_equal_groups_are_rarely_bounded_below_one() -> None:
    """Three groups with the same rate (true ratio 1), unequal sizes, looked at after every
    100 units up to 20,000: ``high < 1`` ever in at most alpha of paths."""
    rng = np.random.default_rng(82)
    counts = simulate_groups(rng, [0.6, 0.6, 0.6], [0.6, 0.3, 0.1], looks=200, batch=100)
    low, high = vectorized_disparity(counts)
    assert_matches_the_function(counts, low, high)
    wrong = (high < 1).any(axis=1).mean()
    assert wrong <= ALPHA + SLACK, f"high < 1 ever in {wrong:.4f} of paths"


@pytest.mark.slow
def test_unequal_groups_are_covered_and_a_disparity_is_flagged() -> None:
    """Rates 0.8 / 0.7 / 0.56: true ratio 0.7, below the 0.8 rule. The sequence contains
    0.7 at every look in at least 1 - alpha of paths, and ``high < 0.8`` is reached."""
    rng = np.random.default_rng(83)
    counts = simulate_groups(rng, [0.8, 0.7, 0.56], [0.5, 0.3, 0.2], looks=200, batch=100)
    low, high = vectorized_disparity(counts)
    assert_matches_the_function(counts, low, high)
    truth = 0.56 / 0.8
    missed = ((low > truth) | (high < truth)).any(axis=1).mean()
    flagged = high < 0.8
    units = np.where(flagged.any(axis=1), (flagged.argmax(axis=1) + 1) * 100, np.inf)
    report = (
        f"ever misses {truth:.2f} in {missed:.4f} of paths; flagged below 0.8 in "
        f"{flagged.any(axis=1).mean():.4f} within 20,000 units, median {np.median(units):.0f}"
    )
    assert missed <= ALPHA + SLACK, report
    assert flagged.any(axis=1).mean() >= 0.95, report
