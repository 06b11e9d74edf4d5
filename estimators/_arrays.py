"""The estimators' inputs as flat float arrays, and pairs of them checked to match."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["paired"]


def paired(
    first: ArrayLike, second: ArrayLike, names: tuple[str, str] = ("x", "y")
) -> tuple[np.ndarray, np.ndarray]:
    """``first`` and ``second`` as flat float64 arrays whose items go together (``i`` of one
    with ``i`` of the other); ``ValueError`` naming both (``names``) when their lengths
    differ.

    >>> paired([1, 2], [[3], [4]])
    (array([1., 2.]), array([3., 4.]))
    >>> paired([1, 2], [3], ("s", "y"))
    Traceback (most recent call last):
    ...
    ValueError: s has 2 values, y has 1: pairs need equal lengths
    """
    one = np.asarray(first, dtype=np.float64).ravel()
    other = np.asarray(second, dtype=np.float64).ravel()
    if one.shape != other.shape:
        raise ValueError(
            f"{names[0]} has {one.size} values, {names[1]} has {other.size}: "
            "pairs need equal lengths"
        )
    return one, other
