from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import CoMoments, Moments


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
