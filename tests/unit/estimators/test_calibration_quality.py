"""The calibrator's quality report: out-of-fold R^2, MAE and the table by score decile,
checked against a direct numpy computation and against a hand-worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import (
    IsotonicCalibrator,
    calibration_quality,
    cross_fit_predictions,
    equivalence_labels_needed,
)


def test_figures_are_those_of_the_out_of_fold_predictions() -> None:
    rng = np.random.default_rng(61)
    s = rng.uniform(size=1000)
    y = s**2 + rng.normal(0, 0.1, 1000)
    quality = calibration_quality(s, y, folds=5, seed=3)

    # The same folds by hand: a fold of each item, a fit without it, its prediction.
    fold_of = np.random.default_rng(3).permutation(s.size) % 5
    predictions = np.empty_like(s)
    for k in range(5):
        held = fold_of == k
        predictions[held] = IsotonicCalibrator().fit(s[~held], y[~held]).predict(s[held])
    residuals = y - predictions
    r2 = 1 - np.sum(residuals**2) / np.sum((y - y.mean()) ** 2)
    assert quality.r2 == pytest.approx(r2, rel=1e-12)
    assert quality.mean_absolute_error == pytest.approx(np.mean(np.abs(residuals)), rel=1e-12)
    assert quality.rmse == pytest.approx(np.sqrt(np.mean(residuals**2)), rel=1e-12)
    assert quality.mean_residual == pytest.approx(residuals.mean(), abs=1e-15)
    assert (quality.n, quality.folds) == (1000, 5)

    # Deciles: the items sorted by score, ten parts of 100.
    order = np.argsort(s)
    assert [d.decile for d in quality.deciles] == list(range(1, 11))
    for row, part in zip(quality.deciles, order.reshape(10, 100), strict=True):
        assert row.n == 100
        assert (row.score_low, row.score_high) == (s[part].min(), s[part].max())
        assert row.mean_score == pytest.approx(s[part].mean())
        assert row.mean_label == pytest.approx(y[part].mean())
        assert row.mean_prediction == pytest.approx(predictions[part].mean())
        assert row.mean_residual == pytest.approx(residuals[part].mean())
    # A good fit of s**2 on uniform scores: most of Var(Y) = Var(S^2) + 0.01 explained.
    explained = (1 / 5 - 1 / 9) / (1 / 5 - 1 / 9 + 0.01)
    assert quality.r2 == pytest.approx(explained, abs=0.03)


def test_a_hand_worked_example() -> None:
    # Two folds over 20 items whose label is a step: the predictions are those of
    # cross_fit_predictions, so R^2 and MAE follow from them by the textbook formulas.
    s = np.arange(20.0)
    y = (s >= 10).astype(float)
    quality = calibration_quality(s, y, folds=2, seed=0)
    predictions = cross_fit_predictions(s, y, folds=2, seed=0)
    sse = float(np.sum((y - predictions) ** 2))
    assert quality.r2 == pytest.approx(1 - sse / 5.0)  # sum (y - 0.5)^2 = 20 * 0.25
    assert quality.mean_absolute_error == pytest.approx(np.abs(y - predictions).sum() / 20)
    assert [d.n for d in quality.deciles] == [2] * 10
    assert [d.mean_label for d in quality.deciles] == [0.0] * 5 + [1.0] * 5
    assert quality.deciles[0].score_low == 0.0 and quality.deciles[-1].score_high == 19.0


def test_constant_labels_have_no_r2_and_a_report_still_reads() -> None:
    s = np.linspace(0, 1, 30)
    quality = calibration_quality(s, np.full(30, 0.4))
    assert math.isnan(quality.r2)
    assert quality.mean_absolute_error == pytest.approx(0.0, abs=1e-15)
    assert quality.to_dict()["r2"] is None
    assert len(quality.to_dict()["deciles"]) == 10


def test_progress_is_called_once_per_fold_and_small_samples_are_refused() -> None:
    calls: list[tuple[int, int]] = []
    s = np.linspace(0, 1, 50)
    calibration_quality(s, s, folds=5, on_fold=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    with pytest.raises(ValueError, match="at least 10"):
        calibration_quality(s[:9], s[:9])
    with pytest.raises(ValueError, match="50 values"):
        calibration_quality(s, s[:40])


def test_labels_needed_for_an_equivalence_interval_to_fit() -> None:
    # Half-width 0.06 at n = 50, estimate 0.01, margin 0.05: the interval fits once
    # 0.06 * sqrt(50 / n) < 0.04, i.e. n > 112.5: 63 more.
    assert equivalence_labels_needed(50, 0.01, 0.06, 0.05) == 63
    n_next = 50 + 63
    assert 0.06 * math.sqrt(50 / n_next) < 0.04 <= 0.06 * math.sqrt(50 / (n_next - 1))
    assert equivalence_labels_needed(50, -0.05, 0.01, 0.05) is None  # estimate on the margin
    assert equivalence_labels_needed(50, 0.0, 0.01, 0.05) == 0  # it already fits
