"""The checks of the label streams' policy sections: ``residual_drift``, ``score_drift``,
``covariate_drift`` and ``labels`` (each error names its key)."""

from __future__ import annotations

import re

from ..config import CovariateDriftPolicy, Policy
from ..config._ranges import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    Range,
    in_range,
    increasing_pair,
    probability,
    require,
)

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
    increasing_pair(policy.residual_drift.label_range, "residual_drift.label_range")
    in_range(policy.residual_drift.bias_threshold, "residual_drift.bias_threshold", NON_NEGATIVE)
    probability(policy.score_drift.alpha, "score_drift.alpha")
    probability(policy.score_drift.relative_accuracy, "score_drift.relative_accuracy")
    _check_covariate_drift(policy.covariate_drift)
    _check_names(policy.residual_drift.group_by, "residual_drift.group_by")
    probability(policy.residual_drift.group_fdr, "residual_drift.group_fdr")
    in_range(policy.residual_drift.max_groups, "residual_drift.max_groups", _MAX_GROUPS)
    require(policy.labels.join_window_seconds > 0, "labels.join_window_seconds", "must be positive")


_MAX_GROUPS = Range(1, 100, text="in 1..100")
# The union bound of the distance spends alpha over 2^max_categories - 1 events.
_MAX_CATEGORIES = Range(high=30, text="at most 30")
# A covariate's name becomes part of a gate's record key and a metric label value.
_COVARIATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _check_covariate_drift(policy: CovariateDriftPolicy) -> None:
    probability(policy.alpha, "covariate_drift.alpha")
    probability(policy.relative_accuracy, "covariate_drift.relative_accuracy")
    for key in ("baseline_n", "min_n", "max_categories"):
        in_range(getattr(policy, key), f"covariate_drift.{key}", AT_LEAST_ONE)
    in_range(policy.max_categories, "covariate_drift.max_categories", _MAX_CATEGORIES)
    _check_names(policy.covariates, "covariate_drift.covariates")


def _check_names(names: tuple[str, ...], key: str) -> None:
    for name in names:
        require(
            bool(_COVARIATE_NAME.fullmatch(name)),
            key,
            f"names letters, digits, _, . and -, got {name!r}",
        )
    require(len(set(names)) == len(names), key, f"names a covariate twice: {list(names)}")
