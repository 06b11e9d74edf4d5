from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from estimators import QuantileSketch, ks_critical_distance, ks_drift, population_stability_index


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
def test_every_quantile_is_within_the_relative_error(accuracy: float) -> None:
    rng = np.random.default_rng(61)
    x = np.concatenate([rng.lognormal(3, 2, 20_000), -rng.lognormal(0, 1, 2000), np.zeros(100)])
    sketch = QuantileSketch(accuracy).update(x)
    for q in np.linspace(0.001, 0.999, 81):
        true = np.quantile(x, q, method="inverted_cdf")
        assert abs(sketch.quantile(q) - true) <= accuracy * abs(true) + 1e-12


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_sketch_ks_brackets_scipys_exact_statistic(shift: float) -> None:
    rng = np.random.default_rng(62)
    a, b = rng.normal(1, 1, 4000), rng.normal(1 + shift, 1, 3000)
    distance, bound = QuantileSketch(0.01).update(a).ks_distance(QuantileSketch(0.01).update(b))
    exact = stats.ks_2samp(a, b).statistic
    assert distance <= exact + 1e-12
    assert exact <= distance + bound
    assert bound < 0.03  # a 2%-wide bucket at the mode of N(1, 1) holds ~1.6% of the mass


def test_ks_drift_uses_scipy_and_guards_small_samples() -> None:
    rng = np.random.default_rng(63)
    a, b = rng.normal(size=300), rng.normal(0.5, 1, 300)
    result = ks_drift(a, b)
    reference = stats.ks_2samp(a, b)
    assert (result.distance, result.p_value) == (reference.statistic, reference.pvalue)
    assert result.lower_bound == pytest.approx(result.distance - ks_critical_distance(300, 300))
    # 15 vs 15 from one distribution: raw KS often exceeds 0.2, the band stays minor.
    raw_moderate = guarded_moderate = 0
    for _ in range(200):
        small = ks_drift(rng.normal(size=15), rng.normal(size=15))
        raw_moderate += small.distance >= 0.2
        guarded_moderate += small.severity != "minor"
    assert raw_moderate > 50 and guarded_moderate == 0


def test_ks_critical_distance_matches_the_kolmogorov_quantile() -> None:
    # For large n the two-sample critical value is K_{1-alpha} sqrt((n+m)/(n m)).
    k = stats.kstwobign.ppf(0.95)
    assert ks_critical_distance(10**6, 10**6) == pytest.approx(k * np.sqrt(2e-6), rel=2e-3)


def test_psi() -> None:
    rng = np.random.default_rng(64)
    base = rng.normal(size=20_000)
    assert population_stability_index(base, rng.normal(size=20_000)) < 0.01
    assert population_stability_index(base, rng.normal(1.0, 1, 20_000)) > 0.25


def bucket_count(sketch: QuantileSketch, x: float) -> int:
    """How many of the sketch's values share x's bucket (numpy's mapping, independently)."""
    if x == 0:
        return sketch.zeros
    key = int(np.ceil(np.log(np.array([abs(x)])) / np.log(sketch.gamma))[0])
    return (sketch.positive if x > 0 else sketch.negative).get(key, 0)


def assert_count_above_brackets_the_truth(
    sketch: QuantileSketch, data: np.ndarray, x: float
) -> None:
    true = int(np.count_nonzero(data > x))
    counted = sketch.count_above(x)
    assert true - bucket_count(sketch, x) <= counted <= true, (x, counted, true)


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
def test_count_above_is_certain_and_misses_only_x_bucket(accuracy: float) -> None:
    rng = np.random.default_rng(65)
    data = np.concatenate(
        [rng.lognormal(3, 2, 5000), -rng.lognormal(0, 1, 1000), np.zeros(50), [1e-300, -1e-300]]
    )
    sketch = QuantileSketch(accuracy).update(data)
    probes = np.concatenate(
        [
            data[:300],  # the data's own values: the bucket edges are where mistakes hide
            rng.normal(0, 50, 300),
            [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.0, -1.0, 1e12, -1e12],
        ]
    )
    for x in probes.tolist():
        assert_count_above_brackets_the_truth(sketch, data, x)
    # The missed values are at most those in x's bucket, and with 2% buckets that is few.
    gaps = [int(np.count_nonzero(data > x)) - sketch.count_above(x) for x in probes.tolist()]
    assert max(gaps) <= max(bucket_count(sketch, x) for x in probes.tolist())
    assert (sketch.count_above(np.inf), sketch.count_above(-np.inf)) == (0, data.size)
    assert sketch.count_above(0.0) == int(np.count_nonzero(data > 0))
    assert sketch.count_above(-1e-300) == int(np.count_nonzero(data >= 0))
    with pytest.raises(ValueError, match="NaN"):
        sketch.count_above(np.nan)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=60),
    st.floats(-1e6, 1e6, allow_nan=False),
)
@settings(max_examples=80)
def test_count_above_on_arbitrary_values(xs: list[float], x: float) -> None:
    data = np.asarray(xs, dtype=np.float64)
    sketch = QuantileSketch(0.02).update(data)
    assert_count_above_brackets_the_truth(sketch, data, x)
    for value in xs[:5]:
        assert_count_above_brackets_the_truth(sketch, data, value)
