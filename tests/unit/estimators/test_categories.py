"""Category counts (bounded, exactly mergeable) and the time-uniform TV bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators import (
    OTHER_CATEGORY,
    CategoryCounts,
    sequential_ks_margin,
    sequential_tv_bounds,
    tv_bounds,
    tv_event_count,
)

names = st.lists(st.sampled_from([f"c{i}" for i in range(12)]), max_size=60)


@settings(max_examples=200, deadline=None)
@given(xs=names, ys=names, cap=st.integers(1, 6))
def test_merge_equals_counts_of_the_union(xs: list[str], ys: list[str], cap: int) -> None:
    """``A.update(x) + B.update(y) == C.update(x).update(y)``: the categories counted by
    name do not depend on the order the values came in (a bottom-k by hash)."""
    merged = CategoryCounts(cap).update(xs) + CategoryCounts(cap).update(ys)
    assert merged == CategoryCounts(cap).update(xs).update(ys)
    assert merged == CategoryCounts(cap).update(ys + xs)
    assert CategoryCounts.from_state(merged.to_state()) == merged


@settings(max_examples=200, deadline=None)
@given(xs=names, cap=st.integers(1, 6))
def test_named_counts_are_exact_and_bounded(xs: list[str], cap: int) -> None:
    counts = CategoryCounts(cap).update(xs)
    assert len(counts.counts) <= cap
    assert counts.n == len(xs) == sum(counts.counts.values()) + counts.pooled
    for category, count in counts.counts.items():
        assert count == xs.count(category)


def test_the_distance_is_half_the_l1_distance_when_nothing_is_pooled() -> None:
    rng = np.random.default_rng(5)
    cells = np.array(["a", "b", "c", "d"])
    x, y = rng.choice(cells, 3000, p=[0.1, 0.2, 0.3, 0.4]), rng.choice(cells, 2000)
    p = np.array([np.mean(x == c) for c in cells])
    q = np.array([np.mean(y == c) for c in cells])
    live, base = CategoryCounts(10).update(x), CategoryCounts(10).update(y)
    assert live.tv_distance(base) == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-12)
    assert sum(live.fractions().values()) == pytest.approx(1.0)


def test_pooling_never_adds_distance() -> None:
    """The distance over the pooled partition is at most the distance over every
    category (a coarsening), and the pooled cell is shown as ``other``."""
    rng = np.random.default_rng(6)
    cells = np.array([f"d{i}" for i in range(30)])
    x, y = rng.choice(cells, 5000), rng.choice(cells[:15], 5000)
    full = CategoryCounts(30).update(x).tv_distance(CategoryCounts(30).update(y))
    coarse = CategoryCounts(5).update(x)
    assert coarse.tv_distance(CategoryCounts(5).update(y)) <= full + 1e-12
    assert OTHER_CATEGORY in coarse.fractions()


def test_the_margin_spends_alpha_over_the_partitions_events() -> None:
    live = CategoryCounts(3).update(["a"] * 400 + ["b"] * 600)
    base = CategoryCounts(3).update(["a"] * 500 + ["b"] * 500)
    bounds = sequential_tv_bounds(live, base, 0.05)
    assert tv_event_count(3) == 7  # 4 cells: 2^3 - 1 ways to split them in two
    assert bounds.noise == pytest.approx(float(sequential_ks_margin(1000, 1000, 0.05 / 7)))
    assert bounds.distance == pytest.approx(0.1)
    assert bounds.low == 0.0 and bounds.high == pytest.approx(0.1 + bounds.noise)
    assert tv_bounds(live, base, 0.05).noise < bounds.noise  # one look is cheaper


def test_different_caps_do_not_merge() -> None:
    with pytest.raises(ValueError, match="max_categories"):
        CategoryCounts(3) + CategoryCounts(4)
    with pytest.raises(ValueError, match="at least one"):
        CategoryCounts(3).tv_distance(CategoryCounts(3).update(["a"]))


def test_no_null_path_ever_reads_a_distance() -> None:
    """Under the null (live and baseline from one distribution of 8 categories), the
    lower bound, read after every batch of 100 values up to 20,000, stays at 0 on every
    one of 300 paths: time-uniform at alpha 0.05 it may leave 0 on at most ~5% of paths,
    and the union bound makes it far rarer (bench/covariate_drift_validity.py has the
    rates, and the power)."""
    rng = np.random.default_rng(2026)
    cells = np.array([f"d{i}" for i in range(8)])
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
    flagged = 0
    for _ in range(300):
        base = CategoryCounts(10).update(rng.choice(cells, 5000, p=p))
        live = CategoryCounts(10)
        for _look in range(200):
            live.update(rng.choice(cells, 100, p=p))
            if sequential_tv_bounds(live, base, 0.05).low > 0:
                flagged += 1
                break
    assert flagged <= 15  # 5% of 300
