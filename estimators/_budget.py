"""Label budget planning: how many scored and how many oracle-labeled items to buy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ._augmented import cross_fit_predictions

__all__ = ["BudgetPlan", "VarianceModel", "plan_for_budget", "plan_for_mde"]


@dataclass(frozen=True)
class VarianceModel:
    """``Var(estimate) = s2_eval / n + s2_cal / m`` for n scored and m labeled items.

    ``s2_eval`` is the variance of the calibrated score ``f(S)`` (what scoring more items
    averages away), ``s2_cal`` the variance of the residual ``Y - f(S)`` (what more oracle
    labels average away).

    >>> VarianceModel.from_r2(0.7, label_variance=0.25)
    VarianceModel(s2_eval=0.175, s2_cal=0.075, source='r2=0.7')
    """

    s2_eval: float
    s2_cal: float
    source: str = "given"

    def variance(self, n: float, m: float) -> float:
        return self.s2_eval / n + self.s2_cal / m

    @classmethod
    def from_pilot(cls, s: ArrayLike, y: ArrayLike, folds: int = 5) -> VarianceModel:
        """Fit from a labeled pilot: cross-fitted ``f(S)`` and residuals."""
        s_arr = np.asarray(s, dtype=np.float64)
        y_arr = np.asarray(y, dtype=np.float64)
        predictions = cross_fit_predictions(s_arr, y_arr, folds)
        return cls(
            float(predictions.var(ddof=1)),
            float((y_arr - predictions).var(ddof=1)),
            f"pilot n={s_arr.size}",
        )

    @classmethod
    def from_r2(cls, r2: float, label_variance: float = 0.25) -> VarianceModel:
        """With no pilot: the calibrator explains ``r2`` of ``Var(Y)`` (0.25 is the most a
        [0, 1] label can have, so the default is conservative)."""
        if not 0 <= r2 <= 1:
            raise ValueError("r2 must be in [0, 1]")
        return cls(round(r2 * label_variance, 12), round((1 - r2) * label_variance, 12), f"r2={r2}")


@dataclass(frozen=True)
class BudgetPlan:
    n_scored: int
    m_labeled: int
    total_cost: float
    standard_error: float
    mde: float
    alpha: float
    power: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mde_multiplier(alpha: float, power: float) -> float:
    # Two groups compared: sqrt(2) SE; two-sided alpha.
    return (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * math.sqrt(2)


def _allocation_constant(model: VarianceModel, cost_s: float, cost_y: float) -> float:
    return math.sqrt(cost_s * model.s2_eval) + math.sqrt(cost_y * model.s2_cal)


def plan_for_budget(
    budget: float,
    model: VarianceModel,
    cost_s: float,
    cost_y: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> BudgetPlan:
    """Square-root allocation of a budget ``B = c_S n + c_Y m`` that minimizes the variance.

    ``n* = B sqrt(s2_eval / c_S) / D``, ``m* = B sqrt(s2_cal / c_Y) / D`` with
    ``D = sqrt(c_S s2_eval) + sqrt(c_Y s2_cal)`` (Lagrange multipliers; the classical
    optimum allocation of double sampling). Labeled items are scored too, so ``m <= n``.

    >>> plan = plan_for_budget(5000, VarianceModel(0.04, 0.02), cost_s=0.01, cost_y=0.16)
    >>> plan.n_scored, plan.m_labeled, round(plan.total_cost)
    (130601, 23087, 5000)

    An optimum below one label gets one, paid for by fewer scored items:

    >>> plan = plan_for_budget(1.0, VarianceModel(0.04, 1e-8), cost_s=0.01, cost_y=0.16)
    >>> plan.n_scored, plan.m_labeled, round(plan.total_cost, 2)
    (84, 1, 1.0)

    A budget that cannot pay for one labeled item (``cost_s + cost_y``) has no plan:

    >>> plan_for_budget(0.1, VarianceModel(0.04, 0.02), cost_s=0.01, cost_y=0.16)
    Traceback (most recent call last):
    ...
    ValueError: a budget of 0.1 cannot pay for one labeled item (cost_s + cost_y = 0.17)

    References
    ----------
    Neyman, J. (1938). Contribution to the theory of sampling human populations. JASA 33.
    Cochran, W. G. (1977). Sampling Techniques, 3rd ed., Section 12.2 (double sampling).
    """
    if budget <= 0 or cost_s <= 0 or cost_y <= 0:
        raise ValueError("budget and costs must be positive")
    if budget < cost_s + cost_y:
        # A plan needs one oracle label at least (the residual variance is unknown
        # without one); rounding m up to 1 would spend more than the budget.
        raise ValueError(
            f"a budget of {budget:g} cannot pay for one labeled item "
            f"(cost_s + cost_y = {cost_s + cost_y:g})"
        )
    d = _allocation_constant(model, cost_s, cost_y)
    n = budget * math.sqrt(model.s2_eval / cost_s) / d
    m = budget * math.sqrt(model.s2_cal / cost_y) / d
    if m > n:  # every labeled item is scored as well
        n = m = budget / (cost_s + cost_y)
    m_int = max(int(m), 1)
    # m rounded up to one label takes its cost from the scored items, so the plan stays
    # within the budget (the 1e-9 absorbs a budget of exactly cost_s + cost_y).
    affordable = int((budget - cost_y * m_int) / cost_s + 1e-9)
    n_int = max(min(int(n), affordable), m_int)
    se = math.sqrt(model.variance(n_int, m_int))
    return BudgetPlan(
        n_int,
        m_int,
        cost_s * n_int + cost_y * m_int,
        se,
        _mde_multiplier(alpha, power) * se,
        alpha,
        power,
    )


def plan_for_mde(
    target_mde: float,
    model: VarianceModel,
    cost_s: float,
    cost_y: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> BudgetPlan:
    """The cheapest plan whose minimum detectable effect is at most ``target_mde``.

    At the optimum allocation the variance is ``D^2 / B``, so the budget needed for a
    standard error ``SE = MDE / ((z_{1-alpha/2} + z_power) sqrt 2)`` is ``D^2 / SE^2``.

    >>> bool(plan_for_mde(0.01, VarianceModel(0.04, 0.02), 0.01, 0.16).mde <= 0.01)
    True
    """
    if target_mde <= 0:
        raise ValueError("target_mde must be positive")
    se = target_mde / _mde_multiplier(alpha, power)
    # At least one labeled item: a target met by less is met by that one too.
    budget = max(_allocation_constant(model, cost_s, cost_y) ** 2 / se**2, cost_s + cost_y)
    plan = plan_for_budget(budget, model, cost_s, cost_y, alpha, power)
    while plan.mde > target_mde:  # integer rounding can leave it a hair above
        budget *= 1.0001
        plan = plan_for_budget(budget, model, cost_s, cost_y, alpha, power)
    return plan
