"""The bounded-mean e-process, its groups, and e-BH."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import (
    OTHER_CATEGORY,
    BoundedMeanEProcess,
    GroupedMeans,
    e_benjamini_hochberg,
)


def _null_draws(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    """Mean-0 values in [-1, 1] of three shapes: binary residuals, uniform, skewed."""
    if kind == 0:
        p = rng.uniform(0.05, 0.95, n)
        return (rng.random(n) < p) - p
    if kind == 1:
        return rng.uniform(-0.5, 0.5, n)
    return np.where(rng.random(n) < 0.9, -0.1, 0.9)  # mean 0, skewed


def test_under_the_null_it_rarely_ever_reaches_one_over_alpha() -> None:
    """Ville: P(E_t >= 20 at some look) <= 0.05; 300 paths, 40 looks each."""
    rng = np.random.default_rng(5)
    crossed = 0
    for path in range(300):
        process = BoundedMeanEProcess()
        for _ in range(40):
            process.update(_null_draws(rng, path % 3, 50))
            if process.e_value() >= 20:
                crossed += 1
                break
    assert crossed <= 15  # 5% of 300; measured: far fewer


def test_a_bias_is_found_and_the_interval_holds_it() -> None:
    rng = np.random.default_rng(6)
    p = rng.uniform(0.05, 0.8, 400)
    process = BoundedMeanEProcess().update((rng.random(400) < p) - (p + 0.15))
    assert process.e_value() > 1e3
    interval = process.interval(20)
    assert interval.low < -0.15 < interval.high < 0
    # The interval is the e-process inverted: its ends are where E_t reaches the threshold.
    assert process.e_value(interval.high + 0.002) >= 20 > process.e_value(interval.high - 0.002)


def test_interval_excludes_zero_exactly_when_the_e_value_passes() -> None:
    rng = np.random.default_rng(7)
    for shift in np.linspace(0.0, 0.2, 21):
        process = BoundedMeanEProcess().update(rng.uniform(-0.5, 0.5, 300) + shift)
        assert (process.e_value() >= 50) == (not process.interval(50).contains(0.0))


def test_state_is_three_sums_so_batching_changes_nothing() -> None:
    values = np.random.default_rng(8).uniform(-1, 1, 1000)
    whole = BoundedMeanEProcess().update(values)
    pieces = BoundedMeanEProcess()
    for chunk in np.array_split(values, 17):
        pieces.update(chunk)
    assert pieces.n == whole.n and pieces.e_value() == pytest.approx(whole.e_value(), rel=1e-9)


def test_values_outside_the_bounds_and_mismatched_merges_are_refused() -> None:
    with pytest.raises(ValueError, match="lie in"):
        BoundedMeanEProcess(-1, 1).update([0.5, 1.5])
    with pytest.raises(ValueError, match="bets"):
        BoundedMeanEProcess(bets=[0.5, 1.0])
    with pytest.raises(ValueError, match="different"):
        BoundedMeanEProcess(-1, 1) + BoundedMeanEProcess(-2, 2)
    with pytest.raises(ValueError, match="strictly inside"):
        BoundedMeanEProcess().e_value(1.0)


def test_groups_beyond_the_cap_are_pooled_as_other() -> None:
    names = [f"g{i}" for i in range(8)]
    grouped = GroupedMeans(3).update(names * 10, np.zeros(80))
    counts = dict(grouped.counts())
    assert len(counts) == 4 and counts[OTHER_CATEGORY] == 50
    assert sum(counts.values()) == 80
    # A category named "other" shares the pooled cell.
    both = GroupedMeans(3).update(["other", "a"], [0.1, 0.2])
    assert dict(both.counts()) == {"a": 1, OTHER_CATEGORY: 1}


def test_e_bh_rejects_the_k_largest_with_e_at_least_m_over_k_q() -> None:
    e = np.array([1e4, 90.0, 60.0, 3.0, 0.2])
    reject, k = e_benjamini_hochberg(e, q=0.1)  # m = 5: thresholds 50, 25, 16.7, 12.5, 10
    assert k == 3 and reject.tolist() == [True, True, True, False, False]
    # Hypotheses never tested count: m = 20 raises the thresholds fourfold.
    reject, k = e_benjamini_hochberg(e, q=0.1, m=20)
    assert k == 1 and reject.tolist() == [True, False, False, False, False]
    assert e_benjamini_hochberg([], 0.1, m=3)[1] == 0
    with pytest.raises(ValueError, match="at least"):
        e_benjamini_hochberg(e, 0.1, m=2)
