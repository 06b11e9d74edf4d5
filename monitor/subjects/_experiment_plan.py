"""The sample size of a pre-registered experiment (``driftgate plan --experiment``, and the
memo's "planned" beside "achieved"): the guide's two-proportion (or mean) formula, CUPED's
reduction, and what the monitor's anytime-valid interval needs for the same power."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from estimators import anytime_sample_size, cuped_sample_size, mean_sample_size

from ..config import ExperimentPolicy

__all__ = ["ExperimentPlan", "plan_experiment"]


@dataclass(frozen=True)
class ExperimentPlan:
    """Units per arm for each way of reading the experiment, at the registered MDE,
    alpha (split over the variants compared with control) and power."""

    experiment: str
    policy: ExperimentPolicy
    arms: int
    alpha_per_comparison: float
    unit_sd: float
    n_per_arm: int
    """The guide's formula, one look at the end."""
    n_per_arm_cuped: int
    """With CUPED's expected R^2 taken off."""
    n_per_arm_anytime: int
    """What the anytime-valid interval (with CUPED) needs: the price of every look."""

    @property
    def target_time(self) -> float:
        """Units of a pair of arms at which the intervals are tightest: the CUPED plan's."""
        return 2.0 * self.n_per_arm_cuped

    @property
    def total(self) -> int:
        return self.n_per_arm_anytime * self.arms

    def to_dict(self) -> dict[str, Any]:
        p = self.policy
        return {
            "experiment": self.experiment,
            "primary_metric": p.primary_metric,
            "outcome_type": p.outcome_type,
            "baseline": p.baseline,
            "unit_sd": self.unit_sd,
            "mde": p.mde,
            "alpha": p.alpha,
            "alpha_per_comparison": self.alpha_per_comparison,
            "power": p.power,
            "cuped_r2": p.cuped_r2,
            "arms": self.arms,
            "n_per_arm": self.n_per_arm,
            "n_per_arm_cuped": self.n_per_arm_cuped,
            "n_per_arm_anytime": self.n_per_arm_anytime,
            "total": self.total,
        }

    def lines(self) -> list[str]:
        p = self.policy
        what = (
            f"a rate of {p.baseline:g}"
            if p.outcome_type == "binary"
            else f"unit SD {self.unit_sd:g}"
        )
        return [
            f"experiment {self.experiment}: {p.primary_metric} ({p.outcome_type}, {what}), "
            f"MDE {p.mde:g}, alpha {p.alpha:g}"
            + (f" ({self.alpha_per_comparison:.4g} per comparison)" if self.arms > 2 else "")
            + f", power {p.power:g}, {self.arms} arms",
            f"  {'two-sample formula:':<30}{self.n_per_arm:,} per arm",
            f"  {f'with CUPED (R^2 {p.cuped_r2:g}):':<30}{self.n_per_arm_cuped:,} per arm",
            f"  {'anytime-valid, with CUPED:':<30}{self.n_per_arm_anytime:,} per arm, "
            f"{self.total:,} in all (what driftgate's intervals need)",
        ]


def plan_experiment(name: str, policy: ExperimentPolicy) -> ExperimentPlan:
    """The plan of a pre-registered experiment (``policy.registered``)."""
    if not policy.registered:
        raise ValueError(f"experiment {name} is not pre-registered (primary_metric and mde)")
    arms = max(2, len(policy.allocation))
    alpha = policy.alpha / (arms - 1)
    sd = (
        math.sqrt(policy.baseline * (1 - policy.baseline))
        if policy.outcome_type == "binary"
        else policy.baseline_sd
    )
    fixed = mean_sample_size(sd, policy.mde, alpha, policy.power)
    cuped = cuped_sample_size(fixed, policy.cuped_r2)
    anytime = anytime_sample_size(
        sd * math.sqrt(1 - policy.cuped_r2), policy.mde, alpha, policy.power, 2.0 * cuped
    )
    return ExperimentPlan(name, policy, arms, alpha, sd, fixed, cuped, anytime)
