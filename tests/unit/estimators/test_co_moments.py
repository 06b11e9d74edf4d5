from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from estimators import CoMoments, Moments

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
pairs = st.lists(st.tuples(finite, finite), max_size=60)


def co_moments(points: list[tuple[float, float]]) -> CoMoments:
    return CoMoments().update([p[0] for p in points], [p[1] for p in points])


@given(pairs, pairs)
def test_merge_equals_one_pass_over_both(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> None:
    merged = co_moments(a) + co_moments(b)
    sequential = co_moments(a).update([p[0] for p in b], [p[1] for p in b])
    both = co_moments(a + b)
    for other in (sequential, both):
        assert merged.n == other.n == len(a) + len(b)
        for name in ("mean_x", "mean_y"):
            assert getattr(merged, name) == pytest.approx(getattr(other, name), rel=1e-9, abs=1e-6)
        # Sums of squares scale with n * 1e12: compare at that scale.
        for name in ("m2_x", "m2_y", "c_xy"):
            assert getattr(merged, name) == pytest.approx(getattr(other, name), rel=1e-7, abs=1e-3)
    if len(a) + len(b) > 1:
        x = np.array([p[0] for p in a + b])
        y = np.array([p[1] for p in a + b])
        assert merged.cov == pytest.approx(np.cov(x, y)[0, 1], rel=1e-7, abs=1e-3)


def test_batched_updates_match_numpy_on_a_large_offset() -> None:
    rng = np.random.default_rng(0)
    x = 1e9 + rng.normal(0, 1, 100_000)  # naive sums of products lose everything here
    y = -5e8 + 0.6 * (x - 1e9) + rng.normal(0, 0.8, x.size)
    moments = CoMoments()
    for xs, ys in zip(np.array_split(x, 37), np.array_split(y, 37), strict=True):
        moments.update(xs, ys)
    covariance = np.cov(x, y)
    assert (moments.mean_x, moments.mean_y) == pytest.approx((x.mean(), y.mean()), rel=1e-15)
    assert moments.var_x == pytest.approx(covariance[0, 0], rel=1e-9)
    assert moments.var_y == pytest.approx(covariance[1, 1], rel=1e-9)
    assert moments.cov == pytest.approx(covariance[0, 1], rel=1e-9)
    assert moments.correlation == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-9)


def test_coordinate_views_are_the_moments_of_each_coordinate_and_copies() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=500), rng.exponential(size=500)
    moments = CoMoments().update(x[:200], y[:200]).update(x[200:], y[200:])
    x_view, y_view = moments.x_moments(), moments.y_moments()
    assert isinstance(x_view, Moments)
    assert x_view.n == 500 and x_view.weight == 500.0
    assert x_view.mean == pytest.approx(x.mean()) and x_view.variance == pytest.approx(
        x.var(ddof=1)
    )
    assert y_view.mean == pytest.approx(y.mean()) and y_view.variance == pytest.approx(
        y.var(ddof=1)
    )
    y_view.update([1e6])
    assert moments.n == 500 and moments.mean_y == pytest.approx(y.mean())


def test_state_round_trip_is_exact_and_json_safe() -> None:
    import orjson

    rng = np.random.default_rng(2)
    moments = CoMoments().update(rng.normal(size=1000) / 3, rng.normal(size=1000) / 7)
    restored = CoMoments.from_state(orjson.loads(orjson.dumps(moments.to_state())))
    assert restored == moments
    assert restored.to_state() == moments.to_state()
    assert restored is not moments and moments.copy() == moments


def test_empty_and_single_pairs() -> None:
    empty = CoMoments().update([], [])
    assert empty.n == 0 and empty == CoMoments()
    assert math.isnan(empty.cov) and math.isnan(empty.var_x) and math.isnan(empty.correlation)
    assert empty.x_moments() == Moments() and empty.y_moments() == Moments()
    one = CoMoments().update([4.0], [-2.0])
    assert (one.n, one.mean_x, one.mean_y, one.m2_x, one.c_xy) == (1, 4.0, -2.0, 0.0, 0.0)
    assert math.isnan(one.var_y) and math.isnan(one.cov)
    # Merging with an empty side changes nothing, on either side.
    assert one + CoMoments() == one and CoMoments() + one == one
    constant_x = CoMoments().update([1.0, 1.0, 1.0], [1.0, 2.0, 4.0])
    assert constant_x.var_x == 0.0 and math.isnan(constant_x.correlation)


def test_pairs_need_equal_lengths() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        CoMoments().update([1.0, 2.0], [1.0])
