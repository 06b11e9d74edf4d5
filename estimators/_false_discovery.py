"""False discovery rate control over many outcomes compared at once."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["benjamini_hochberg", "e_benjamini_hochberg"]


def benjamini_hochberg(p_values: ArrayLike, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values (scipy's ``false_discovery_control``) and which are discoveries.

    >>> adjusted, reject = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    >>> adjusted.round(3).tolist(), reject.tolist()
    ([0.04, 0.053, 0.053, 0.2], [True, False, False, False])

    References
    ----------
    Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57.
    """
    adjusted = stats.false_discovery_control(np.asarray(p_values, dtype=np.float64), method="bh")
    return adjusted, adjusted <= q


def e_benjamini_hochberg(
    e_values: ArrayLike, q: float = 0.05, m: int | None = None
) -> tuple[np.ndarray, int]:
    """Which hypotheses e-BH rejects, and how many: the ``k*`` largest e-values, with
    ``k* = max{k: e_(k) >= m / (k q)}`` (0 when there is no such ``k``).

    The false discovery rate is at most ``q`` (at most ``q m0 / m``) whatever the
    dependence between the e-values (Wang and Ramdas 2022, Theorem 2). ``m`` is the
    number of hypotheses, at least the number of e-values given: one never tested counts
    with an e-value of 1, so a family of a fixed size (the capacity of a bounded set of
    subgroups) may pass only the e-values of the groups seen.

    >>> reject, k = e_benjamini_hochberg([400.0, 30.0, 0.5, 1.2], q=0.05)
    >>> reject.tolist(), k
    ([True, False, False, False], 1)
    >>> e_benjamini_hochberg([45.0, 41.0, 0.5], q=0.05)[1]  # 2 of 3: each e >= 3 / (2 q)
    2

    References
    ----------
    Wang, R. and Ramdas, A. (2022). False discovery rate control with e-values. JRSS B
    84(3).
    """
    e = np.asarray(e_values, dtype=np.float64).ravel()
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("e-values must be nonnegative numbers")
    total = e.size if m is None else int(m)
    if total < e.size:
        raise ValueError("m must be at least the number of e-values")
    if e.size == 0:
        return np.zeros(0, dtype=bool), 0
    order = np.argsort(-e, kind="stable")
    ranks = np.arange(1, e.size + 1)
    passing = np.flatnonzero(e[order] * ranks * q >= total)
    k = int(passing[-1]) + 1 if passing.size else 0
    reject = np.zeros(e.size, dtype=bool)
    reject[order[:k]] = True
    return reject, k
