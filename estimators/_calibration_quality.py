"""How well a calibrator ``f: S -> Y`` predicts labels it never saw, and how many more
probe labels an inconclusive equivalence audit needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import paired
from ._augmented import cross_fit_predictions

__all__ = [
    "CalibrationDecile",
    "CalibrationQuality",
    "calibration_quality",
    "equivalence_labels_needed",
]


@dataclass(frozen=True)
class CalibrationDecile:
    """One score decile of a calibration sample, with out-of-fold predictions."""

    decile: int
    n: int
    score_low: float
    score_high: float
    mean_score: float
    mean_label: float
    mean_prediction: float
    """Mean out-of-fold ``f(S)``."""
    mean_residual: float
    """Mean ``Y - f(S)`` (out-of-fold): where along the score the fit is off."""


@dataclass(frozen=True)
class CalibrationQuality:
    """Out-of-fold quality of a calibrator on its own calibration sample."""

    n: int
    folds: int
    r2: float
    """``1 - sum (y - f(s))^2 / sum (y - mean y)^2``; NaN when every label is equal."""
    mean_absolute_error: float
    rmse: float
    mean_residual: float
    deciles: tuple[CalibrationDecile, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: full precision, an undefined ``r2`` as None."""
        document = asdict(self)
        document["r2"] = None if math.isnan(self.r2) else self.r2
        document["deciles"] = [asdict(d) for d in self.deciles]
        return document


def calibration_quality(
    s: ArrayLike,
    y: ArrayLike,
    folds: int = 5,
    seed: int | None = 0,
    on_fold: Callable[[int, int], None] | None = None,
    predictions: ArrayLike | None = None,
) -> CalibrationQuality:
    """R^2, mean absolute error and a table by score decile of cross-fitted predictions.

    Every item is predicted by an isotonic fit on the other folds
    (:func:`cross_fit_predictions`), so the figures say how the calibrator does on labels
    it has not seen; in-sample isotonic fits chase the noise and would flatter it. The
    deciles split the items sorted by score into ten near-equal parts (as
    :func:`residuals_by_decile` does for an audit).

    Parameters
    ----------
    s, y : array_like
        Scores and labels of the calibration sample, at least ``2 * folds`` pairs.
    folds : int
        Cross-fitting folds.
    seed : int or None
        Seed of the fold assignment.
    on_fold : callable, optional
        ``on_fold(done, folds)`` after each fold (a progress display).
    predictions : array_like, optional
        Out-of-fold predictions made by the caller on ``folds`` folds (another
        calibrator's, such as the two-stage one's): used instead of isotonic fits.

    Returns
    -------
    CalibrationQuality

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=2000); y = s**2 + rng.normal(0, 0.05, 2000)
    >>> quality = calibration_quality(s, y)
    >>> round(quality.r2, 2), round(quality.mean_absolute_error, 2), len(quality.deciles)
    (0.97, 0.04, 10)
    >>> [d.n for d in quality.deciles][:3]
    [200, 200, 200]

    References
    ----------
    Chernozhukov, V. et al. (2018). Double/debiased machine learning for treatment and
    structural parameters. The Econometrics Journal 21(1) (cross-fitting).
    """
    s_arr, y_arr = paired(s, y, ("s", "y"))
    if predictions is None:
        oof = cross_fit_predictions(s_arr, y_arr, folds, seed, on_fold)
    else:
        oof = np.asarray(predictions, dtype=np.float64).ravel()
        if oof.shape != y_arr.shape:
            raise ValueError(f"{oof.size} predictions for {y_arr.size} labels")
    residuals = y_arr - oof
    # Equal labels leave R^2 undefined (0 / 0, up to rounding of their mean).
    total = float(np.sum((y_arr - y_arr.mean()) ** 2))
    r2 = 1.0 - float(np.dot(residuals, residuals)) / total if np.ptp(y_arr) > 0 else math.nan
    order = np.argsort(s_arr, kind="stable")
    deciles = tuple(
        CalibrationDecile(
            number,
            int(part.size),
            float(s_arr[part].min()),
            float(s_arr[part].max()),
            float(s_arr[part].mean()),
            float(y_arr[part].mean()),
            float(oof[part].mean()),
            float(residuals[part].mean()),
        )
        for number, part in enumerate(np.array_split(order, 10), start=1)
        if part.size
    )
    return CalibrationQuality(
        int(s_arr.size),
        folds,
        r2,
        float(np.abs(residuals).mean()),
        float(np.sqrt(np.mean(residuals**2))),
        float(residuals.mean()),
        deciles,
    )


def equivalence_labels_needed(n: int, delta: float, half_width: float, margin: float) -> int | None:
    """Probe labels to add so that an interval like this one fits inside ``(-margin, margin)``.

    The half-width shrinks as ``1 / sqrt(n)``: with the same estimate and spread, the
    interval fits once ``half_width * sqrt(n / n') < margin - |delta|``. None when the
    estimate itself is not inside the margin (more labels would not show equivalence).
    A planning figure for the next probe, not a guarantee: the estimate moves too.

    >>> equivalence_labels_needed(50, 0.01, 0.06, 0.05)
    63
    >>> equivalence_labels_needed(50, 0.06, 0.02, 0.05) is None
    True
    """
    room = margin - abs(delta)
    if n < 1 or room <= 0:
        return None
    needed = n * (half_width / room) ** 2
    # The next whole count strictly past the boundary (the equivalence test is strict).
    return max(0, math.floor(needed) + 1 - n)
