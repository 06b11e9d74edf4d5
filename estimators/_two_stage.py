"""Two-stage calibration: a first-stage index from ``S`` and covariates, isotonic on it.

When a judge's bias depends on something besides its score (the domain of a prompt, its
difficulty), no monotone map of ``S`` alone removes it. The two-stage calibrator first
fits an index ``g(S, X)`` (a ridge regression of ``Y`` on a cubic B-spline basis of
``S``, a B-spline basis of each numeric covariate and a one-hot of each categorical
one), then an isotonic map of ``Y`` on that index, fitted on out-of-fold indices so that
its shape is the one the index has on items it never saw (CJE's two-stage mode).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import BSpline

from ._isotonic import Calibrator, CovariateColumns, IsotonicCalibrator

__all__ = ["CovariateEncoding", "TwoStageCalibrator"]

MAX_LEVELS = 30
"""The most levels of a categorical covariate with columns of their own; rarer levels
share one column (``OTHER``)."""
MIN_LEVEL_COUNT = 10
"""A level with fewer calibration items than this shares the ``OTHER`` column."""
OTHER = "__other__"
_DEGREE = 3
_SCORE_KNOTS = 8
_COVARIATE_KNOTS = 4
_RIDGE_GRID = np.logspace(-6, 2, 17)
"""Ridge penalties tried (relative to the mean squared singular value), by GCV."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _category(value: Any) -> str:
    """A category's name: a string as it is, anything else as its text (``True``, ``3``)."""
    return value if isinstance(value, str) else str(value)


def _quantile_knots(x: np.ndarray, interior: int) -> np.ndarray:
    """A clamped cubic B-spline knot vector: the ends at the range, interior knots at
    quantiles (repeated quantiles of a discrete variable are dropped)."""
    low, high = float(x.min()), float(x.max())
    inner = np.unique(np.quantile(x, np.linspace(0, 1, interior + 2)[1:-1]))
    inner = inner[(inner > low) & (inner < high)]
    return np.concatenate([[low] * (_DEGREE + 1), inner, [high] * (_DEGREE + 1)])


def _spline_columns(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The B-spline basis at ``x``, clipped to the knots' range (constant beyond it)."""
    clipped = np.clip(x, knots[0], knots[-1])
    return BSpline.design_matrix(clipped, knots, _DEGREE).toarray()


@dataclass(frozen=True)
class CovariateEncoding:
    """How one covariate enters the first-stage index, and what an item without it (or,
    for a categorical one, with a level the calibration never saw) uses instead.

    Numeric: a B-spline basis on knots at its calibration quantiles; its ``default`` is
    the calibration median. Categorical: a column per level (rare levels share
    ``OTHER``); its default is the calibration mix of levels (the average effect).
    """

    name: str
    kind: str
    """``numeric`` or ``categorical``."""
    knots: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    shares: tuple[float, ...] = ()
    """Of each level in the calibration sample (the categorical default)."""
    default: float | None = None
    """The numeric default: the calibration median."""

    @classmethod
    def fit(cls, name: str, values: np.ndarray) -> CovariateEncoding:
        """From a covariate's calibration values (none may be missing): numeric when
        every value is a number, categorical when none is."""
        numbers = np.fromiter(map(_is_number, values), bool, values.size)
        if numbers.all():
            x = values.astype(np.float64)
            if not np.isfinite(x).all():
                raise ValueError(f"covariate {name!r} has a non-finite value")
            knots = _quantile_knots(x, _COVARIATE_KNOTS) if x.min() < x.max() else ()
            return cls(name, "numeric", knots=tuple(map(float, knots)), default=float(np.median(x)))
        if numbers.any():
            first = values[np.flatnonzero(numbers)[0]]
            other = values[np.flatnonzero(~numbers)[0]]
            raise ValueError(
                f"covariate {name!r} mixes numbers ({first!r}) and categories ({other!r})"
            )
        names, counts = np.unique(np.array([_category(v) for v in values]), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        kept = [i for i in order[:MAX_LEVELS] if counts[i] >= MIN_LEVEL_COUNT]
        levels = [str(names[i]) for i in kept]
        shares = [float(counts[i]) / values.size for i in kept]
        rest = values.size - int(sum(counts[i] for i in kept))
        if rest:
            levels.append(OTHER)
            shares.append(rest / values.size)
        return cls(name, "categorical", levels=tuple(levels), shares=tuple(shares))

    @property
    def width(self) -> int:
        if self.kind == "categorical":
            return len(self.levels)
        return max(0, len(self.knots) - _DEGREE - 1)

    def columns(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Its design columns for ``values`` (an object array, None: not given), and how
        many items used the default."""
        out = np.zeros((values.size, self.width))
        if self.kind == "numeric":
            given = np.fromiter(
                (_is_number(v) and math.isfinite(v) for v in values), bool, values.size
            )
            x = np.full(values.size, self.default, dtype=np.float64)
            x[given] = values[given].astype(np.float64)
            if self.width:
                out[:] = _spline_columns(x, np.asarray(self.knots))
            return out, int(values.size - given.sum())
        index = {level: i for i, level in enumerate(self.levels)}
        other = index.get(OTHER)
        defaulted = 0
        for row, value in enumerate(values):
            column = None if value is None else index.get(_category(value), other)
            if column is None:
                out[row] = self.shares
                defaulted += 1
            else:
                out[row, column] = 1.0
        return out, defaulted

    def describe_default(self) -> str:
        if self.kind == "numeric":
            return f"{self.default:.6g} (the calibration median)"
        return "the calibration mix of levels (their average effect)"

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            state.update(knots=list(self.knots), default=self.default)
        else:
            state.update(levels=list(self.levels), shares=list(self.shares))
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CovariateEncoding:
        if state["kind"] == "numeric":
            return cls(
                state["name"],
                "numeric",
                knots=tuple(state["knots"]),
                default=float(state["default"]),
            )
        return cls(
            state["name"],
            "categorical",
            levels=tuple(state["levels"]),
            shares=tuple(state["shares"]),
        )


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float | None) -> tuple[np.ndarray, float, float]:
    """Ridge regression with an unpenalized intercept: ``(coefficients, intercept,
    penalty)``; ``penalty`` None chooses it by generalized cross-validation (Golub, Heath
    and Wahba 1979) on the grid, relative to the mean eigenvalue of the Gram matrix.

    Works on the ``p x p`` Gram matrix of the centred design (its eigen-decomposition),
    never on the ``n x p`` design itself: a few dozen columns, however many items."""
    means = x.mean(axis=0)
    centred, y_mean = x - means, float(y.mean())
    target = y - y_mean
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projected = vectors.T @ (centred.T @ target)  # d_j c_j, with c = U' y of the SVD
    scale = float(eigenvalues.mean()) if eigenvalues.size and eigenvalues.mean() > 0 else 1.0
    if penalty is None:
        kept = eigenvalues > scale * 1e-12
        c2 = projected[kept] ** 2 / eigenvalues[kept]
        total = float(np.dot(target, target))
        n, best = y.size, math.inf
        for relative in _RIDGE_GRID:
            lam = float(relative * scale)
            shrink = eigenvalues[kept] / (eigenvalues[kept] + lam)
            rss = total - float(np.sum(c2 * (1 - (1 - shrink) ** 2)))
            dof = float(shrink.sum()) + 1.0
            if dof >= n:
                continue
            gcv = n * max(rss, 0.0) / (n - dof) ** 2
            if gcv < best:
                best, penalty = gcv, lam
        penalty = penalty if penalty is not None else float(_RIDGE_GRID[-1] * scale)
    beta = vectors @ (projected / (eigenvalues + penalty))
    return beta, y_mean - float(means @ beta), penalty


class TwoStageCalibrator(Calibrator):
    """``f(S, X) = h(g(S, X))``: a first-stage index ``g`` from the score and covariates,
    and a monotone non-decreasing ``h`` fitted on the index by isotonic regression.

    The index is a ridge regression of ``Y`` on a cubic B-spline basis of ``S`` and the
    covariates' encodings (:class:`CovariateEncoding`), its penalty chosen by GCV; ``h``
    is fitted on cross-fitted (out-of-fold) indices, and applied to the index of the
    regression on every item. An item without a covariate uses its declared default.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=4000); difficulty = rng.uniform(size=4000)
    >>> y = np.clip(s - 0.3 * (difficulty - 0.5) + rng.normal(0, 0.05, 4000), 0, 1)
    >>> covariates = {"difficulty": difficulty.astype(object)}
    >>> f = TwoStageCalibrator().fit(s, y, covariates)
    >>> err = y - f.predict(s, covariates)
    >>> round(float(np.sqrt(np.mean(err**2))), 2)
    0.05
    >>> f.predict([0.5, 0.5], {"difficulty": np.array([0.0, 1.0], object)}).round(2).tolist()
    [0.65, 0.36]

    References
    ----------
    Landesberg, E. et al. (2025). Causal Judge Evaluation (CJE): calibrated surrogate
    metrics for LLM systems (AutoCal-R's two-stage mode).
    """

    kind = "two_stage"

    def __init__(self, folds: int = 5, seed: int | None = 0) -> None:
        self.folds = folds
        self.seed = seed
        self.score_knots = np.empty(0)
        self.encodings: tuple[CovariateEncoding, ...] = ()
        self.coefficients = np.empty(0)
        self.intercept = 0.0
        self.penalty = 0.0
        self.index_map = IsotonicCalibrator()
        self.n = 0

    @property
    def covariates(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(e.name for e in self.encodings)

    def design(
        self, s: np.ndarray, covariates: CovariateColumns | None
    ) -> tuple[np.ndarray, dict[str, int]]:
        """The first-stage design matrix, and per covariate how many items used its
        default (a covariate absent from ``covariates`` is missing from every item)."""
        parts = [_spline_columns(s, self.score_knots)]
        defaulted = {}
        for encoding in self.encodings:
            values = None if covariates is None else covariates.get(encoding.name)
            if values is None:
                values = np.full(s.size, None, dtype=object)
            columns, defaulted[encoding.name] = encoding.columns(np.asarray(values, dtype=object))
            parts.append(columns)
        return np.hstack(parts), defaulted

    def fit(self, s: ArrayLike, y: ArrayLike, covariates: CovariateColumns) -> TwoStageCalibrator:
        """Fit on scores, labels and, per covariate, its value in every item."""
        s_arr = np.asarray(s, dtype=np.float64).ravel()
        y_arr = np.asarray(y, dtype=np.float64).ravel()
        if s_arr.shape != y_arr.shape:
            raise ValueError(f"s has {s_arr.size} values, y has {y_arr.size}")
        if s_arr.size < 2 * self.folds:
            raise ValueError(f"need at least {2 * self.folds} labeled pairs for {self.folds} folds")
        if not (np.isfinite(s_arr).all() and np.isfinite(y_arr).all()):
            raise ValueError("s and y must be finite")
        if not covariates:
            raise ValueError("a two-stage calibrator needs at least one covariate")
        self.score_knots = _quantile_knots(s_arr, _SCORE_KNOTS)
        encodings = []
        for name, values in covariates.items():
            values = np.asarray(values, dtype=object)
            if values.shape != s_arr.shape:
                raise ValueError(f"covariate {name!r} has {values.size} values, s {s_arr.size}")
            encodings.append(CovariateEncoding.fit(name, values))
        self.encodings = tuple(encodings)
        x, _ = self.design(s_arr, covariates)
        self.coefficients, self.intercept, self.penalty = _ridge(x, y_arr, None)
        # h is fitted on out-of-fold indices: an in-sample index follows the noise of the
        # very labels h is then fitted to, and h would trust it more than it deserves.
        fold_of = np.random.default_rng(self.seed).permutation(s_arr.size) % self.folds
        index = np.empty_like(y_arr)
        for k in range(self.folds):
            held = fold_of == k
            beta, alpha, _ = _ridge(x[~held], y_arr[~held], self.penalty)
            index[held] = x[held] @ beta + alpha
        self.index_map = IsotonicCalibrator().fit(index, y_arr)
        self.n = int(s_arr.size)
        return self

    def index(self, s: ArrayLike, covariates: CovariateColumns | None = None) -> np.ndarray:
        """The first-stage index ``g(S, X)``."""
        if self.coefficients.size == 0:
            raise ValueError("calibrator is not fitted")
        x, _ = self.design(np.asarray(s, dtype=np.float64).ravel(), covariates)
        return x @ self.coefficients + self.intercept

    def predict(self, s: ArrayLike, covariates: CovariateColumns | None = None) -> np.ndarray:
        s_arr = np.asarray(s, dtype=np.float64)
        return self.index_map.predict(self.index(s_arr, covariates)).reshape(s_arr.shape)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "score_knots": self.score_knots.tolist(),
            "covariates": [e.to_state() for e in self.encodings],
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "penalty": self.penalty,
            "index_map": self.index_map.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TwoStageCalibrator:
        calibrator = cls()
        calibrator.score_knots = np.asarray(state["score_knots"], dtype=np.float64)
        calibrator.encodings = tuple(CovariateEncoding.from_state(e) for e in state["covariates"])
        calibrator.coefficients = np.asarray(state["coefficients"], dtype=np.float64)
        calibrator.intercept = float(state["intercept"])
        calibrator.penalty = float(state["penalty"])
        calibrator.index_map = IsotonicCalibrator.from_state(state["index_map"])
        calibrator.n = int(state["n"])
        expected = (
            calibrator.score_knots.size - _DEGREE - 1 + sum(e.width for e in calibrator.encodings)
        )
        if calibrator.coefficients.size != expected:
            raise ValueError(
                f"two-stage calibrator has {calibrator.coefficients.size} coefficients for "
                f"{expected} design columns"
            )
        return calibrator
