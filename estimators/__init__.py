"""driftgate's numerical core: pure, batch-vectorized, mergeable estimators.

No I/O here: every estimator takes numpy arrays, merges with ``+=`` and
round-trips through ``to_state()`` / ``from_state()`` (plain JSON-able dicts).
"""

from ._isotonic import IdentityCalibrator, IsotonicCalibrator, calibrator_from_state
from ._moments import Moments
from ._normal_mixture import (
    Interval,
    NormalMixtureSequence,
    normal_mixture_boundary,
    optimal_rho,
)

__all__ = [
    "IdentityCalibrator",
    "Interval",
    "IsotonicCalibrator",
    "Moments",
    "NormalMixtureSequence",
    "calibrator_from_state",
    "normal_mixture_boundary",
    "optimal_rho",
]
