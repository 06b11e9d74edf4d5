from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from estimators import QuantileSketch, ks_critical_distance, ks_drift, population_stability_index


@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=80),
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=80),
)
@settings(max_examples=60)
def test_sketch_merge_equals_sketch_of_the_union(xs: list[float], ys: list[float]) -> None:
    merged = QuantileSketch(0.02).update(xs) + QuantileSketch(0.02).update(ys)
    assert merged == QuantileSketch(0.02).update(xs + ys)
    assert QuantileSketch.from_state(merged.to_state()) == merged


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
