from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from estimators import Moments
from estimators._moments import _from_sums

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(finite, max_size=60), st.lists(finite, max_size=60))
def test_merge_equals_one_pass_over_both(xs: list[float], ys: list[float]) -> None:
    a, b = Moments().update(xs), Moments().update(ys)
    both = Moments().update(xs + ys)
    merged = a + b
    assert merged.n == both.n == len(xs) + len(ys)
    if xs or ys:
        assert merged.mean == pytest.approx(np.mean(xs + ys), rel=1e-9, abs=1e-6)
    if len(xs + ys) > 1:
        assert merged.variance == pytest.approx(np.var(xs + ys, ddof=1), rel=1e-7, abs=1e-3)
        assert merged.m2 == pytest.approx(both.m2, rel=1e-7, abs=1e-3)


def test_batched_updates_match_numpy_on_a_large_offset() -> None:
    rng = np.random.default_rng(0)
    x = 1e9 + rng.normal(0, 1, 100_000)  # naive sum of squares loses everything here
    moments = Moments()
    for chunk in np.array_split(x, 37):
        moments.update(chunk)
    assert moments.mean == pytest.approx(x.mean(), rel=1e-15)
    assert moments.variance == pytest.approx(x.var(ddof=1), rel=1e-9)


def test_weighted_update_matches_numpy_average() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=500), rng.uniform(0, 3, 500)
    moments = Moments().update(x[:200], w[:200])
    moments += Moments().update(x[200:], w[200:])
    mean = np.average(x, weights=w)
    assert moments.mean == pytest.approx(mean)
    assert moments.population_variance == pytest.approx(np.average((x - mean) ** 2, weights=w))
    assert moments.weight == pytest.approx(w.sum())


def test_state_round_trip_is_exact_and_json_safe() -> None:
    import orjson

    moments = Moments().update(np.random.default_rng(2).normal(size=1000) / 3)
    restored = Moments.from_state(orjson.loads(orjson.dumps(moments.to_state())))
    assert restored == moments
    assert restored.mean == moments.mean and restored.m2 == moments.m2


def test_bad_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Moments().update([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="shape"):
        Moments().update([1.0, 2.0], [1.0])


def test_empty_and_single_values() -> None:
    assert Moments().update([]).n == 0
    one = Moments().update([4.0])
    assert (one.n, one.mean) == (1, 4.0)
    assert np.isnan(one.variance)


def test_a_one_value_batch_folds_as_the_two_passes_would() -> None:
    """The shortcut for one value (a look after every event) leaves the state that
    numpy's two passes over a batch of one give: the same bits, value after value."""
    rng = np.random.default_rng(3)
    values = [*rng.lognormal(6, 2, 500).tolist(), 0.0, -1e-300, 1e100, -7.25]
    shortcut, two_pass = Moments(), Moments()
    for value in values:
        shortcut.update([value])
        x = np.array([value])
        two_pass += _from_sums(1, 1.0, float(x.mean()), x)
    assert shortcut.to_state() == two_pass.to_state()
