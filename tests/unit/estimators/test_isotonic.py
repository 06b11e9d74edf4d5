from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from estimators import IdentityCalibrator, IsotonicCalibrator, calibrator_from_state


def reference_pav(y: list[float], w: list[float]) -> list[float]:
    """Textbook pool-adjacent-violators, one block at a time (the test's oracle)."""
    blocks: list[list[float]] = []  # [mean, weight, size]
    for value, weight in zip(y, w, strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [m for m, _, n in blocks for _ in range(int(n))]


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(-5, 5)), min_size=2, max_size=80))
def test_matches_reference_pav_with_ties(pairs: list[tuple[int, float]]) -> None:
    s = np.array([p[0] / 20 for p in pairs])
    y = np.array([p[1] for p in pairs])
    model = IsotonicCalibrator().fit(s, y)
    unique, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    pooled = np.bincount(inverse, weights=y) / counts
    expected = reference_pav(pooled.tolist(), counts.astype(float).tolist())
    assert model.predict(unique) == pytest.approx(expected, abs=1e-9)
    assert np.all(np.diff(model.predict(np.linspace(-1, 2, 50))) >= -1e-12)


def test_fits_a_monotone_curve_and_reduces_bias() -> None:
    rng = np.random.default_rng(4)
    s = rng.uniform(size=2000)
    y = s**2 + rng.normal(0, 0.05, 2000)
    model = IsotonicCalibrator().fit(s, y)
    grid = np.linspace(0.05, 0.95, 19)
    assert np.max(np.abs(model.predict(grid) - grid**2)) < 0.05


def test_state_round_trip_and_identity() -> None:
    model = IsotonicCalibrator().fit([0.1, 0.5, 0.9], [0.0, 0.4, 1.0])
    restored = calibrator_from_state(model.to_state())
    assert isinstance(restored, IsotonicCalibrator)
    assert restored.predict([0.3, 0.7]).tolist() == model.predict([0.3, 0.7]).tolist()
    assert isinstance(calibrator_from_state({"kind": "identity"}), IdentityCalibrator)
    with pytest.raises(ValueError, match="unknown calibrator kind"):
        calibrator_from_state({"kind": "spline"})


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        IsotonicCalibrator().fit([0.1], [0.2])
    with pytest.raises(ValueError, match="finite"):
        IsotonicCalibrator().fit([0.1, np.nan], [0.2, 0.3])
    with pytest.raises(ValueError, match="not fitted"):
        IsotonicCalibrator().predict([0.5])
