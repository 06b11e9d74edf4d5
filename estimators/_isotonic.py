"""Isotonic calibration of a surrogate score S to an oracle label Y."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import isotonic_regression

from ._arrays import paired

__all__ = ["CovariateColumns", "IdentityCalibrator", "IsotonicCalibrator"]

CovariateColumns = Mapping[str, np.ndarray]
"""Per covariate, its value in each item (an object array; None where not given)."""


class Calibrator:
    """What every calibrator shares: the residual ``y - f(s)`` that the drift gates watch.

    ``covariates`` names what a calibrator reads besides the score (none but for the
    two-stage calibrator); ``predict`` and ``residuals`` take them as columns.
    """

    kind: str
    n: int
    covariates: tuple[str, ...] = ()

    def predict(self, s: ArrayLike, covariates: CovariateColumns | None = None) -> np.ndarray:
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def residuals(
        self, s: ArrayLike, y: ArrayLike, covariates: CovariateColumns | None = None
    ) -> np.ndarray:
        """``y - f(s)``, elementwise: the one place the residual is computed.

        >>> IdentityCalibrator().residuals([0.2, 0.5], [0.25, 0.4]).round(2).tolist()
        [0.05, -0.1]
        """
        return np.asarray(y, dtype=np.float64) - self.predict(s, covariates)


class IsotonicCalibrator(Calibrator):
    """Monotone non-decreasing map ``f: S -> Y`` fitted by pool adjacent violators.

    Ties in ``S`` are pooled first (their mean label, weighted by count); scipy's PAVA
    then fits the non-decreasing sequence. Predictions interpolate linearly between
    the fitted knots and are constant beyond the ends, as in scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")``.

    Examples
    --------
    >>> f = IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 1.0])
    >>> f.predict([0.1, 0.25, 0.4, 9.0]).tolist()
    [0.0, 0.5, 1.0, 1.0]

    References
    ----------
    Ayer, M., Brunk, H. D., Ewing, G. M., Reid, W. T. and Silverman, E. (1955). An
    empirical distribution function for sampling with incomplete information. Annals
    of Mathematical Statistics 26(4).
    Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate
    multiclass probability estimates. KDD.
    """

    kind = "isotonic"

    def __init__(self) -> None:
        self.knots_s = np.empty(0)
        self.knots_y = np.empty(0)
        self.n = 0

    def fit(self, s: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        s_arr, y_arr = paired(s, y, ("s", "y"))
        if s_arr.size < 2:
            raise ValueError("need at least 2 labeled pairs to fit a calibrator")
        if not (np.isfinite(s_arr).all() and np.isfinite(y_arr).all()):
            raise ValueError("s and y must be finite")
        unique_s, inverse, counts = np.unique(s_arr, return_inverse=True, return_counts=True)
        pooled_y = np.bincount(inverse, weights=y_arr) / counts
        self.knots_s = unique_s
        self.knots_y = isotonic_regression(pooled_y, weights=counts).x
        self.n = int(s_arr.size)
        return self

    def predict(self, s: ArrayLike, covariates: CovariateColumns | None = None) -> np.ndarray:
        if self.knots_s.size == 0:
            raise ValueError("calibrator is not fitted")
        return np.interp(np.asarray(s, dtype=np.float64), self.knots_s, self.knots_y)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "knots_s": self.knots_s.tolist(),
            "knots_y": self.knots_y.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IsotonicCalibrator:
        calibrator = cls()
        calibrator.knots_s = np.asarray(state["knots_s"], dtype=np.float64)
        calibrator.knots_y = np.asarray(state["knots_y"], dtype=np.float64)
        calibrator.n = int(state["n"])
        return calibrator


class IdentityCalibrator(Calibrator):
    """``f(s) = s``: what a stream uses before it has a fitted calibrator.

    >>> IdentityCalibrator().predict([0.2, 0.7]).tolist()
    [0.2, 0.7]
    """

    kind = "identity"
    n = 0

    def predict(self, s: ArrayLike, covariates: CovariateColumns | None = None) -> np.ndarray:
        return np.asarray(s, dtype=np.float64)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IdentityCalibrator:
        return cls()
