"""An A/B experiment's section of the policy: its allocation and, when pre-registered, the
analysis plan fixed before its first event (primary metric, MDE, alpha, power, CUPED's
expected R^2, a non-inferiority margin, the planned dates and the owner)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._ranges import NON_NEGATIVE, SHARE_BELOW_ONE, Range, in_range, probability, require

__all__ = ["OUTCOME_TYPES", "ExperimentPolicy", "check_experiment"]

OUTCOME_TYPES = ("binary", "continuous")
# A planned date: a day (2026-03-01) or an RFC 3339 time.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?")


@dataclass(frozen=True)
class ExperimentPolicy:
    """An A/B experiment: the declared allocation (equal shares of the variants seen,
    when not declared), the control variant and the false-discovery rate of the
    secondary outcomes (Benjamini-Hochberg).

    Pre-registration (the experimentation guide's "hypothesis, MDE, power"): with a
    ``primary_metric`` and an ``mde`` the experiment is pre-registered. The worker locks
    the whole section with the experiment's first production event; a later change of
    any key is recorded as a deviation in the audit log, and the memo is analysed under
    the locked plan.
    """

    allocation: dict[str, float] = field(default_factory=dict)
    control_variant: str = "control"
    secondary_q: float = 0.05
    # What ``primary_outcome`` measures (higher is better), e.g. grounded_answer_rate.
    primary_metric: str = ""
    hypothesis: str = ""
    # binary: a rate (two-proportion sizing); continuous: a mean (sized by baseline_sd).
    outcome_type: str = "binary"
    # Control's expected rate (binary) or mean; a continuous outcome's unit SD.
    baseline: float = 0.0
    baseline_sd: float = 0.0
    # The smallest absolute change of the primary outcome worth detecting.
    mde: float = 0.0
    alpha: float = 0.05
    power: float = 0.8
    # The share of the outcome's variance the pre-period covariate is expected to explain.
    cuped_r2: float = 0.0
    # When positive: "no worse than control by more than this" is judged too.
    non_inferiority_margin: float = 0.0
    # The q of Benjamini-Hochberg over the subgroup reads (by covariates.segment).
    subgroup_q: float = 0.05
    start: str = ""
    end: str = ""
    owner: str = ""

    @property
    def registered(self) -> bool:
        """Whether the section pre-registers an analysis plan."""
        return bool(self.primary_metric) and self.mde > 0

    def registration(self) -> dict[str, Any]:
        """The plan as locked: every key (a change of any is a deviation)."""
        return asdict(self)


MIN_POWER = 0.8  # the guide's floor for a pre-registered experiment
REGISTERED_POWER = Range(MIN_POWER, text=f"at least {MIN_POWER} for a pre-registered experiment")


def check_experiment(
    name: str,
    experiment: ExperimentPolicy,
    require: Callable[[bool, str, str], None] = require,
    probability: Callable[[float, str], None] = probability,
) -> None:
    """The ranges of an experiment's section, each named by its key (``require`` and
    ``probability``: the policy's own, which callers may still pass)."""
    at = f"experiments.{name}."
    shares = experiment.allocation
    require(
        not shares
        or (all(s > 0 for s in shares.values()) and abs(sum(shares.values()) - 1) < 1e-9),
        f"{at}allocation",
        f"shares must be positive and add up to 1, got {shares}",
    )
    for key in ("secondary_q", "subgroup_q", "alpha", "power"):
        probability(getattr(experiment, key), f"{at}{key}")
    require(
        experiment.outcome_type in OUTCOME_TYPES,
        f"{at}outcome_type",
        f"must be one of {', '.join(OUTCOME_TYPES)}, got {experiment.outcome_type!r}",
    )
    in_range(experiment.cuped_r2, f"{at}cuped_r2", SHARE_BELOW_ONE)
    in_range(experiment.mde, f"{at}mde", NON_NEGATIVE)
    in_range(experiment.non_inferiority_margin, f"{at}non_inferiority_margin", NON_NEGATIVE)
    for key in ("start", "end"):
        value = getattr(experiment, key)
        require(
            not value or bool(_DATE.fullmatch(value)),
            f"{at}{key}",
            f"must be a date (2026-03-01) or an RFC 3339 time, got {value!r}",
        )
    if experiment.primary_metric and not experiment.mde > 0:
        raise_missing = f"must be positive to pre-register {experiment.primary_metric!r}"
        require(False, f"{at}mde", raise_missing)
    if not experiment.registered:
        return
    in_range(experiment.power, f"{at}power", REGISTERED_POWER)
    if experiment.outcome_type == "binary":
        baseline = experiment.baseline
        require(
            0 < baseline < 1 and baseline + experiment.mde <= 1,
            f"{at}baseline",
            f"must be control's expected rate in (0, 1), with baseline + mde at most 1, "
            f"got {baseline}",
        )
    else:
        require(
            experiment.baseline_sd > 0,
            f"{at}baseline_sd",
            "must be positive: a continuous outcome is sized by its unit SD",
        )
