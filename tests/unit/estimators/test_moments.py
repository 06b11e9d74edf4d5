from __future__ import annotations

import numpy as np
import pytest

from estimators import Moments
from estimators._moments import _from_sums


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
