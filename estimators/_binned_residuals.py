"""Residual moments by score bin: where along the score a calibrator is off, online."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import paired
from ._base import StatefulEstimator
from ._moments import Moments
from ._sketch import QuantileSketch

__all__ = ["BinnedResiduals"]

_DECILES = np.linspace(0.1, 0.9, 9)


class BinnedResiduals(StatefulEstimator):
    """Mergeable moments of the residual ``Y - f(S)`` in each bin of the score ``S``.

    The online counterpart of :func:`residuals_by_decile`: the bins are fixed when the
    statistics start (``edges``, the inner cut points; bin ``i`` holds the scores in
    ``[edges[i-1], edges[i])``), so batches and workers' states merge exactly.
    :meth:`deciles_of` cuts at the deciles of a baseline score sketch (the calibrator's
    fitting scores), so each bin held a tenth of them; without one, ``[0, 1]`` in tenths.

    Parameters
    ----------
    edges
        Inner cut points, non-decreasing; ``len(edges) + 1`` bins.

    Examples
    --------
    >>> binned = BinnedResiduals.deciles_of(None)
    >>> _ = binned.update([0.05, 0.55, 0.56, 0.95], [0.1, -0.2, 0.0, 0.3])
    >>> [round(row["mean_residual"], 2) for row in binned.rows() if row["n"]]
    [0.1, -0.1, 0.3]
    >>> merged = BinnedResiduals.deciles_of(None).update([0.5], [1.0]) + binned
    >>> merged.rows()[5]["n"]
    3
    """

    def __init__(self, edges: ArrayLike) -> None:
        self.edges = np.asarray(edges, dtype=np.float64).ravel()
        if self.edges.size and np.any(np.diff(self.edges) < 0):
            raise ValueError("bin edges must be non-decreasing")
        self.bins = [Moments() for _ in range(self.edges.size + 1)]

    @classmethod
    def deciles_of(cls, baseline: QuantileSketch | None) -> BinnedResiduals:
        """Bins at the deciles of ``baseline`` (``[0, 1]`` in tenths when none or empty)."""
        if baseline is None or baseline.n == 0:
            return cls(_DECILES)
        return cls(np.maximum.accumulate([baseline.quantile(float(q)) for q in _DECILES]))

    def update(self, scores: ArrayLike, residuals: ArrayLike) -> BinnedResiduals:
        s, r = paired(scores, residuals, ("scores", "residuals"))
        which = np.searchsorted(self.edges, s, side="right")
        for index in np.unique(which):
            self.bins[index].update(r[which == index])
        return self

    def __iadd__(self, other: BinnedResiduals) -> BinnedResiduals:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge residuals binned at different edges")
        for mine, theirs in zip(self.bins, other.bins, strict=True):
            mine += theirs
        return self

    def rows(self) -> list[dict[str, Any]]:
        """One row a bin: its score range (``None``: open), count and mean residual."""
        bounds = [None, *self.edges.tolist(), None]
        return [
            {
                "bin": index + 1,
                "score_low": bounds[index],
                "score_high": bounds[index + 1],
                "n": moments.n,
                "mean_residual": moments.mean if moments.n else None,
                "std_residual": moments.std if moments.n > 1 else None,
            }
            for index, moments in enumerate(self.bins)
        ]

    def to_state(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "bins": [m.to_state() for m in self.bins]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BinnedResiduals:
        binned = cls(state["edges"])
        binned.bins = [Moments.from_state(m) for m in state["bins"]]
        return binned
