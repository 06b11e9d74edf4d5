"""Choosing between isotonic-in-S and the two-stage calibrator by out-of-fold error
(the ``auto`` mode), and rebuilding any calibrator from its state."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import paired
from ._augmented import cross_fit_predictions
from ._isotonic import Calibrator, CovariateColumns, IdentityCalibrator, IsotonicCalibrator
from ._two_stage import TwoStageCalibrator

__all__ = ["CalibratorChoice", "calibrator_from_state", "choose_calibrator"]

ISOTONIC = IsotonicCalibrator.kind
TWO_STAGE = TwoStageCalibrator.kind


@dataclass(frozen=True)
class CalibratorChoice:
    """Out-of-fold mean squared errors of both calibrators on the same folds, and the
    one the rule picks: two-stage only when its error is lower than isotonic-in-S's by
    more than the standard error of that difference (paired over items)."""

    chosen: str
    isotonic_mse: float
    two_stage_mse: float
    improvement: float
    """``isotonic_mse - two_stage_mse``: how much lower the two-stage error is."""
    standard_error: float
    """Of ``improvement``: the standard deviation of the per-item differences of squared
    errors over the square root of their number."""
    folds: int
    isotonic_predictions: np.ndarray
    two_stage_predictions: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """The chosen calibrator's out-of-fold predictions."""
        return self.two_stage_predictions if self.chosen == TWO_STAGE else self.isotonic_predictions

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "isotonic_mse": self.isotonic_mse,
            "two_stage_mse": self.two_stage_mse,
            "improvement": self.improvement,
            "standard_error": self.standard_error,
            "folds": self.folds,
        }


def choose_calibrator(
    s: ArrayLike,
    y: ArrayLike,
    covariates: CovariateColumns,
    folds: int = 5,
    seed: int | None = 0,
    on_fold: Callable[[int, int], None] | None = None,
) -> CalibratorChoice:
    """Cross-fit both calibrators on the same folds and pick one (CJE's ``auto`` mode).

    Each item is predicted by an isotonic-in-S fit and by a two-stage fit
    (:class:`TwoStageCalibrator`) on the other folds. With ``d_i`` the isotonic squared
    error of item ``i`` minus its two-stage squared error, the two-stage calibrator is
    chosen when ``mean(d) > sd(d) / sqrt(n)``: it must beat isotonic-in-S by more than
    one standard error, so that a richer model is not taken for noise.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = rng.uniform(size=3000); difficulty = rng.uniform(size=3000)
    >>> bias = np.clip(s - 0.3 * (difficulty - 0.5) + rng.normal(0, 0.05, 3000), 0, 1)
    >>> choose_calibrator(s, bias, {"difficulty": difficulty.astype(object)}).chosen
    'two_stage'
    >>> plain = np.clip(s + rng.normal(0, 0.05, 3000), 0, 1)
    >>> choose_calibrator(s, plain, {"difficulty": difficulty.astype(object)}).chosen
    'isotonic'
    """
    s_arr, y_arr = paired(s, y, ("s", "y"))
    isotonic = cross_fit_predictions(s_arr, y_arr, folds, seed)
    # The same fold assignment as cross_fit_predictions: the errors are paired by item.
    fold_of = np.random.default_rng(seed).permutation(s_arr.size) % folds
    columns = {name: np.asarray(v, dtype=object) for name, v in covariates.items()}
    two_stage = np.empty_like(y_arr)
    for k in range(folds):
        held = fold_of == k
        model = TwoStageCalibrator(folds, seed).fit(
            s_arr[~held], y_arr[~held], {n: v[~held] for n, v in columns.items()}
        )
        two_stage[held] = model.predict(s_arr[held], {n: v[held] for n, v in columns.items()})
        if on_fold is not None:
            on_fold(k + 1, folds)
    difference = (y_arr - isotonic) ** 2 - (y_arr - two_stage) ** 2
    improvement = float(difference.mean())
    se = float(difference.std(ddof=1)) / math.sqrt(difference.size)
    return CalibratorChoice(
        TWO_STAGE if improvement > se else ISOTONIC,
        float(np.mean((y_arr - isotonic) ** 2)),
        float(np.mean((y_arr - two_stage) ** 2)),
        improvement,
        se,
        folds,
        isotonic,
        two_stage,
    )


_KINDS: dict[str, Any] = {
    IsotonicCalibrator.kind: IsotonicCalibrator,
    IdentityCalibrator.kind: IdentityCalibrator,
    TwoStageCalibrator.kind: TwoStageCalibrator,
}


def calibrator_from_state(state: Mapping[str, Any]) -> Calibrator:
    """Rebuild a calibrator from ``to_state()`` output, whatever its kind."""
    try:
        kind = _KINDS[state["kind"]]
    except KeyError as exc:
        raise ValueError(f"unknown calibrator kind {state.get('kind')!r}") from exc
    return kind.from_state(state)  # type: ignore[no-any-return]
