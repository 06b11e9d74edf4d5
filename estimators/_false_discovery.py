"""False discovery rate control over many outcomes compared at once."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["benjamini_hochberg"]


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
