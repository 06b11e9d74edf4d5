"""``driftgate plan``: how many items to score and to label for a budget (and what a
target MDE would cost), from a pilot's variances or an assumed R^2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..presentation._format import plural
from ._calibration import MIN_CALIBRATION_PAIRS
from ._pairs import InputError, LabeledPairs

if TYPE_CHECKING:
    from estimators import BudgetPlan, VarianceModel

__all__ = ["MIN_PILOT_PAIRS", "LabelPlan", "PlanRefused", "check_pilot", "label_plan"]


class PlanRefused(ValueError):
    """The budget buys nothing, or too few labels to fit a calibrator: exit 2."""


MIN_PILOT_PAIRS = 10


def check_pilot(path: str, pairs: LabeledPairs) -> None:
    """``plan --pilot``: enough pairs for cross-fitting, and labels that vary (their
    variance sizes the plan; equal labels would plan for a variance of 0)."""
    if pairs.s.size < MIN_PILOT_PAIRS:
        raise InputError(
            f"{path}: a pilot needs at least {MIN_PILOT_PAIRS} labeled pairs, found {pairs.s.size}"
        )
    if pairs.y.min() == pairs.y.max():
        raise InputError(
            f"{path}: every label is {pairs.y[0]:g}: a pilot needs labels that vary (their "
            "variance sizes the plan)"
        )


@dataclass(frozen=True)
class LabelPlan:
    """The budget's plan, and the target MDE's (what it would cost) when one was asked."""

    model: VarianceModel
    budget: float
    surrogate_cost: float
    oracle_cost: float
    plans: dict[str, BudgetPlan]
    target_mde: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """``plan --json``: the budget's plan at the top (``n_samples``, ``m_oracle``,
        ``total_cost``, ``mde``, ``sigma2_eval``, ``sigma2_cal``, ...), the target MDE's plan
        (what it would cost) under ``target_mde``."""

        def fields(plan: BudgetPlan) -> dict[str, Any]:
            return {
                "n_samples": plan.n_scored,
                "m_oracle": plan.m_labeled,
                "total_cost": plan.total_cost,
                "standard_error": plan.standard_error,
                "mde": plan.mde,
            }

        budget = self.plans["budget"]
        document: dict[str, Any] = {
            **fields(budget),
            "budget": self.budget,
            "surrogate_cost": self.surrogate_cost,
            "oracle_cost": self.oracle_cost,
            "alpha": budget.alpha,
            "power": budget.power,
            "sigma2_eval": self.model.s2_eval,
            "sigma2_cal": self.model.s2_cal,
            "variance_source": self.model.source,
        }
        if "target_mde" in self.plans:
            document["target_mde"] = {
                "mde_target": self.target_mde,
                **fields(self.plans["target_mde"]),
            }
        return document

    def lines(self) -> list[str]:
        model = self.model
        lines = [
            f"variance model ({model.source}): s2_eval={model.s2_eval:.5g} "
            f"s2_cal={model.s2_cal:.5g}"
        ]
        for name, plan in self.plans.items():
            title = "for the budget" if name == "budget" else f"for MDE {self.target_mde}"
            lines.append(
                f"plan {title}: score n={plan.n_scored}, label m={plan.m_labeled}, "
                f"cost {plan.total_cost:.2f}, SE {plan.standard_error:.5f}, MDE {plan.mde:.5f}"
            )
        return lines


def check_budget(budget: float, surrogate_cost: float, oracle_cost: float) -> None:
    """The budget buys one labeled item at least (checked before any file is read)."""
    smallest = surrogate_cost + oracle_cost
    if budget < smallest:
        raise PlanRefused(
            f"--budget {budget:g} does not buy one labeled item "
            f"(--surrogate-cost + --oracle-cost = {smallest:g})"
        )


def label_plan(
    model: VarianceModel,
    budget: float,
    surrogate_cost: float,
    oracle_cost: float,
    target_mde: float | None = None,
) -> LabelPlan:
    """The plan for ``budget``: refused when, rounded up to whole items, it costs more than
    the budget or buys fewer labels than a calibrator is fitted on."""
    from estimators import plan_for_budget, plan_for_mde

    plans = {"budget": plan_for_budget(budget, model, surrogate_cost, oracle_cost)}
    if plans["budget"].total_cost > budget:
        raise PlanRefused(
            f"no plan within --budget {budget:g}: rounded up to whole items it costs "
            f"{plans['budget'].total_cost:g}"
        )
    labels = plans["budget"].m_labeled
    if labels < MIN_CALIBRATION_PAIRS:
        raise PlanRefused(
            f"--budget {budget:g} buys {plural(labels, 'label')}: `driftgate calibrate` "
            f"needs at least {MIN_CALIBRATION_PAIRS} (each costs "
            f"{oracle_cost + surrogate_cost:g} with its score, so "
            f"{MIN_CALIBRATION_PAIRS * (oracle_cost + surrogate_cost):g} at least)"
        )
    if target_mde is not None:
        plans["target_mde"] = plan_for_mde(target_mde, model, surrogate_cost, oracle_cost)
    return LabelPlan(model, budget, surrogate_cost, oracle_cost, plans, target_mde)
