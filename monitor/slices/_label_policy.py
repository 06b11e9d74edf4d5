"""The checks of the label streams' policy sections: ``residual_drift``, ``score_drift``,
``covariate_drift`` and ``labels`` (each error names its key)."""

from __future__ import annotations

import re

from ..config import CovariateDriftPolicy, Policy
from ..config._policy import probability, require

__all__ = ["check_label_policy"]


def check_label_policy(policy: Policy) -> None:
    """The ranges the label streams' gates need."""
    probability(policy.residual_drift.alpha, "residual_drift.alpha")
    probability(policy.residual_drift.change_alpha, "residual_drift.change_alpha")
    require(
        policy.residual_drift.change_alpha < policy.residual_drift.alpha,
        "residual_drift.change_alpha",
        "must be below residual_drift.alpha (the gate's total, which it is part of)",
    )
    labels = policy.residual_drift.label_range
    require(
        len(labels) == 2 and labels[0] < labels[1],
        "residual_drift.label_range",
        f"must be [low, high] with low < high, got {list(labels)}",
    )
    bias = policy.residual_drift.bias_threshold
    require(bias >= 0, "residual_drift.bias_threshold", f"must be 0 or more, got {bias}")
    probability(policy.score_drift.alpha, "score_drift.alpha")
    probability(policy.score_drift.relative_accuracy, "score_drift.relative_accuracy")
    _check_covariate_drift(policy.covariate_drift)
    _check_names(policy.residual_drift.group_by, "residual_drift.group_by")
    probability(policy.residual_drift.group_fdr, "residual_drift.group_fdr")
    groups = policy.residual_drift.max_groups
    require(1 <= groups <= 100, "residual_drift.max_groups", f"must be in 1..100, got {groups}")
    require(policy.labels.join_window_seconds > 0, "labels.join_window_seconds", "must be positive")


# A covariate's name becomes part of a gate's record key and a metric label value.
_COVARIATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _check_covariate_drift(policy: CovariateDriftPolicy) -> None:
    probability(policy.alpha, "covariate_drift.alpha")
    probability(policy.relative_accuracy, "covariate_drift.relative_accuracy")
    for key in ("baseline_n", "min_n", "max_categories"):
        value = getattr(policy, key)
        require(value >= 1, f"covariate_drift.{key}", f"must be at least 1, got {value}")
    # The union bound of the distance spends alpha over 2^max_categories - 1 events.
    require(
        policy.max_categories <= 30,
        "covariate_drift.max_categories",
        f"must be at most 30, got {policy.max_categories}",
    )
    _check_names(policy.covariates, "covariate_drift.covariates")


def _check_names(names: tuple[str, ...], key: str) -> None:
    for name in names:
        require(
            bool(_COVARIATE_NAME.fullmatch(name)),
            key,
            f"names letters, digits, _, . and -, got {name!r}",
        )
    require(len(set(names)) == len(names), key, f"names a covariate twice: {list(names)}")
