"""Group-sequential boundaries: O'Brien-Fleming and Lan-DeMets alpha spending."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from scipy.optimize import brentq

__all__ = ["lan_demets_boundaries", "obrien_fleming_boundaries", "spent_alpha"]

_GRID = 801  # points per look: boundaries agree with published tables to 3 decimals
_SQRT_2PI = math.sqrt(2 * math.pi)


class _Continuation:
    """Density of the score process ``S`` on the continuation region after some looks.

    Under no effect ``S`` is a Brownian motion in information time and the statistic at
    a look is ``Z_k = S(t_k) / sqrt(t_k)``. The density is carried from look to look
    through the normal increment kernel (Armitage, McPherson and Rowe 1969) and
    integrated with the trapezoid rule.
    """

    def __init__(self) -> None:
        self.time = 0.0
        self.grid: np.ndarray | None = None
        self.mass: np.ndarray | None = None  # density times trapezoid weight

    def _stay(self, bound: float, time: float) -> np.ndarray:
        assert self.grid is not None
        limit, sd = bound * math.sqrt(time), math.sqrt(time - self.time)
        return np.asarray(
            stats.norm.cdf((limit - self.grid) / sd) - stats.norm.cdf((-limit - self.grid) / sd)
        )

    def crossing(self, bound: float, time: float) -> float:
        """P(still going before this look, and ``|Z| >= bound`` at it)."""
        if self.mass is None:
            return float(2 * stats.norm.sf(bound))
        return float(self.mass.sum() - np.dot(self.mass, self._stay(bound, time)))

    def advance(self, bound: float, time: float) -> _Continuation:
        """The density after a look at ``time`` with boundary ``bound`` (paths inside)."""
        following = _Continuation()
        limit = bound * math.sqrt(time)
        grid = np.linspace(-limit, limit, _GRID)
        weights = np.full(_GRID, grid[1] - grid[0])
        weights[[0, -1]] /= 2
        sd = math.sqrt(time - self.time)
        if self.mass is None:
            density = np.exp(-0.5 * (grid / sd) ** 2) / (sd * _SQRT_2PI)
        else:
            assert self.grid is not None
            distance = (grid[:, None] - self.grid[None, :]) / sd
            density = np.exp(-0.5 * distance * distance) @ self.mass / (sd * _SQRT_2PI)
        following.time, following.grid, following.mass = time, grid, density * weights
        return following


def _total_crossing(bounds: Sequence[float], times: Sequence[float]) -> float:
    state, total = _Continuation(), 0.0
    for k, (bound, time) in enumerate(zip(bounds, times, strict=True)):
        total += state.crossing(bound, time)
        if k + 1 < len(bounds):
            state = state.advance(bound, time)
    return total


def obrien_fleming_boundaries(looks: int, alpha: float = 0.05) -> np.ndarray:
    """Two-sided O'Brien-Fleming z boundaries ``c sqrt(K / k)`` for K equally spaced looks.

    ``c`` is solved so that the chance of crossing at any look under no effect is alpha.

    >>> obrien_fleming_boundaries(5).round(2).tolist()
    [4.56, 3.23, 2.63, 2.28, 2.04]

    References
    ----------
    O'Brien, P. C. and Fleming, T. R. (1979). A multiple testing procedure for clinical
    trials. Biometrics 35(3).
    Jennison, C. and Turnbull, B. W. (2000). Group Sequential Methods with Applications
    to Clinical Trials, Table 2.3.
    """
    times = [(k + 1) / looks for k in range(looks)]
    shape = np.sqrt(looks / np.arange(1, looks + 1))

    def excess(c: float) -> float:
        return _total_crossing(list(c * shape), times) - alpha

    c = brentq(excess, 1.0, 6.0, xtol=1e-7)
    return np.asarray(c * shape)


def spent_alpha(information: float, alpha: float, kind: str = "obrien_fleming") -> float:
    """Lan-DeMets spending function: the alpha used up by information fraction ``t``.

    ``obrien_fleming``: ``2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))``;
    ``pocock``: ``alpha log(1 + (e - 1) t)``.

    >>> round(spent_alpha(1.0, 0.05), 6), round(spent_alpha(1.0, 0.05, "pocock"), 6)
    (0.05, 0.05)
    """
    t = min(max(information, 0.0), 1.0)
    if t == 0:
        return 0.0
    if kind == "obrien_fleming":
        return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if kind == "pocock":
        return float(alpha * math.log1p((math.e - 1) * t))
    raise ValueError(f"unknown spending function {kind!r}; use obrien_fleming or pocock")


def lan_demets_boundaries(
    information: Sequence[float], alpha: float = 0.05, kind: str = "obrien_fleming"
) -> np.ndarray:
    """Two-sided z boundaries at the given information fractions, by alpha spending.

    Looks need not be planned or equally spaced: each boundary spends exactly
    ``spent_alpha(t_k) - spent_alpha(t_{k-1})``, given the boundaries before it.

    >>> lan_demets_boundaries([0.2, 0.4, 0.6, 0.8, 1.0]).round(2).tolist()
    [4.38, 3.1, 2.55, 2.25, 2.06]

    This is Lan and DeMets's two-sided spending: ``alpha`` is the total over both sides
    and enters the spending function as ``z_{1 - alpha/2}``. Tables that list 4.88, 3.36,
    2.68, 2.29, 2.03 (gsDesign's ``sfLDOF``) plug a one-sided 0.025 into the same formula,
    which spends less early; both satisfy the overall level, as the simulation tests check.

    References
    ----------
    Lan, K. K. G. and DeMets, D. L. (1983). Discrete sequential boundaries for clinical
    trials. Biometrika 70(3).
    """
    times = [float(t) for t in information]
    if not times or any(b <= a for a, b in zip([0.0, *times], times, strict=False)):
        raise ValueError("information fractions must increase, starting above 0")
    bounds: list[float] = []
    state = _Continuation()
    for k, time in enumerate(times):
        target = spent_alpha(time, alpha, kind) - spent_alpha(
            times[k - 1] if k else 0.0, alpha, kind
        )

        def excess(b: float, at: _Continuation, time: float, target: float) -> float:
            return at.crossing(b, time) - target

        bound = (
            brentq(excess, 0.5, 12.0, args=(state, time, target), xtol=1e-7)
            if target > 1e-15
            else 12.0
        )
        bounds.append(bound)
        state = state.advance(bound, time)
    return np.asarray(bounds)
