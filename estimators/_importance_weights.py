"""Importance-weight diagnostics for off-policy streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ImportanceWeights", "importance_weights"]

LOG_RATIO_CLIP = 20.0


@dataclass(frozen=True)
class ImportanceWeights:
    """Stabilized weights and the diagnostics that say whether to trust them."""

    weights: np.ndarray
    """Self-normalized to mean 1."""
    effective_sample_size: float
    """Kish's ``(sum w)^2 / sum w^2``: how many equally weighted items they are worth."""
    clipped: int
    """How many log ratios hit the +-20 clip."""
    warning: str | None


def importance_weights(
    target_logprob: ArrayLike,
    behavior_logprob: ArrayLike,
    clip: float = LOG_RATIO_CLIP,
    equal_tolerance: float = 1e-6,
) -> ImportanceWeights:
    """``w_i = exp(clip(log pi_target - log pi_behavior, -20, 20))``, stabilized.

    Clipping the *log* ratio keeps one astronomically unlikely sequence from overflowing
    to infinity and taking all the weight. Stabilization divides by the mean weight
    (self-normalization), which trades a small bias for much lower variance. The
    effective sample size says how concentrated the weights are. Weights that are all
    (nearly) equal usually mean the target policy's log-probabilities are missing or were
    copied from the logging policy: then the estimate is silently on-policy, and a
    warning says so.

    Examples
    --------
    >>> result = importance_weights([-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0])
    >>> result.warning is not None, result.effective_sample_size
    (True, 3.0)
    >>> importance_weights([0.0, -50.0], [-1.0, -1.0]).clipped
    1

    References
    ----------
    Kish, L. (1965). Survey Sampling. Wiley (effective sample size).
    Swaminathan, A. and Joachims, T. (2015). The self-normalized estimator for
    counterfactual learning. NeurIPS.
    """
    target = np.asarray(target_logprob, dtype=np.float64).ravel()
    behavior = np.asarray(behavior_logprob, dtype=np.float64).ravel()
    if target.shape != behavior.shape or target.size == 0:
        raise ValueError("need one target and one behavior log-probability per item")
    if not (np.isfinite(target).all() and np.isfinite(behavior).all()):
        raise ValueError("log-probabilities must be finite")
    log_ratio = target - behavior
    clipped = int(np.count_nonzero(np.abs(log_ratio) > clip))
    raw = np.exp(np.clip(log_ratio, -clip, clip))
    weights = raw / raw.mean()
    ess = float(weights.sum() ** 2 / np.dot(weights, weights))
    warning = None
    if target.size > 1 and float(np.ptp(log_ratio)) <= equal_tolerance:
        warning = (
            "all importance weights are (nearly) equal: the target policy's log-probabilities "
            "are probably missing or copied from the logging policy"
        )
    elif ess < 0.01 * target.size:
        warning = f"effective sample size {ess:.1f} of {target.size}: the weights are degenerate"
    return ImportanceWeights(weights, ess, clipped, warning)
