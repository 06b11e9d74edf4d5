"""Augmented value estimate, transport audit and budget planning."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import (
    VarianceModel,
    augmented_estimate,
    cross_fit_predictions,
    plan_for_budget,
    plan_for_mde,
    residuals_by_decile,
    transport_audit,
)


def test_cross_fitting_never_predicts_an_item_with_a_model_that_saw_it() -> None:
    s = np.linspace(0, 1, 40)
    y = np.zeros(40)
    y[17] = 100.0  # an outlier: in-sample PAV would reproduce it at s[17]
    out_of_fold = cross_fit_predictions(s, y, folds=5)
    assert out_of_fold[17] < 50.0
    with pytest.raises(ValueError, match="at least 10"):
        cross_fit_predictions(s[:9], y[:9], folds=5)


@pytest.mark.slow
def test_augmented_interval_covers_the_true_mean() -> None:
    rng = np.random.default_rng(51)
    truth = 1 / 3 + 0.05  # E[S^2] + bias of the judge that the residual term must remove
    reps, covered = 120, 0
    for _ in range(reps):
        s = rng.uniform(size=2000)
        y = s**2 + 0.05 + rng.normal(0, 0.1, 2000)
        labeled = rng.choice(2000, 200, replace=False)
        result = augmented_estimate(
            s, s[labeled], y[labeled], replicates=300, seed=int(rng.integers(1e9))
        )
        covered += result.interval.contains(truth)
    assert covered / reps >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / reps)


def test_augmented_estimate_parts() -> None:
    rng = np.random.default_rng(52)
    s = rng.uniform(size=1000)
    y = s + 0.1 + rng.normal(0, 0.05, 1000)
    result = augmented_estimate(s, s[:200], y[:200], replicates=200)
    assert result.estimate == pytest.approx(result.plug_in + result.residual_correction)
    assert (result.n_scored, result.n_labeled, result.replicates) == (1000, 200, 200)
    assert result.interval.low < result.estimate < result.interval.high


def test_audit_interval_is_scipys_t_interval() -> None:
    r = np.random.default_rng(53).normal(0.03, 0.1, 45)
    result = transport_audit(r)
    low, high = stats.t.interval(0.95, r.size - 1, loc=r.mean(), scale=stats.sem(r))
    assert (result.interval.low, result.interval.high) == pytest.approx((low, high))
    assert result.status == ("PASS" if low <= 0 <= high else "WARN")


def test_audit_statuses_and_equivalence_mode() -> None:
    assert transport_audit(np.full(50, 0.0) + np.linspace(-0.1, 0.1, 50)).status == "PASS"
    assert transport_audit(0.02 + np.linspace(-0.01, 0.01, 50)).status == "WARN"
    assert transport_audit(0.2 + np.linspace(-0.1, 0.1, 50)).status == "FAIL"
    tight = np.linspace(-0.01, 0.01, 60)
    assert transport_audit(tight, margin=0.05).status == "PASS"
    assert transport_audit(tight + 0.2, margin=0.05).status == "FAIL"
    assert transport_audit(np.linspace(-0.3, 0.3, 20), margin=0.05).status == "INCONCLUSIVE"
    single = transport_audit(0.015 + np.linspace(-0.05, 0.05, 50))
    family = transport_audit(0.015 + np.linspace(-0.05, 0.05, 50), family_size=10)
    assert family.interval.half_width > single.interval.half_width  # Bonferroni widens
    with pytest.raises(ValueError, match="at least 2"):
        transport_audit([0.1])


@pytest.mark.slow
def test_cluster_robust_audit_covers_where_the_naive_one_does_not() -> None:
    rng = np.random.default_rng(54)
    reps, clusters, per = 2000, 15, 4
    robust = naive = 0
    ids = np.repeat(np.arange(clusters), per)
    for _ in range(reps):
        r = np.repeat(rng.normal(0, 0.1, clusters), per) + rng.normal(0, 0.02, clusters * per)
        robust += transport_audit(r, clusters=ids).interval.contains(0.0)
        naive += transport_audit(r).interval.contains(0.0)
    limit = 3 * math.sqrt(0.05 * 0.95 / reps)
    assert abs(robust / reps - 0.95) <= limit
    assert naive / reps < 0.85


def test_residuals_by_decile_locate_the_bias() -> None:
    s = np.linspace(0, 1, 100)
    r = np.where(s > 0.9, 0.3, 0.0)
    deciles = residuals_by_decile(s, r)
    assert [d.decile for d in deciles] == list(range(1, 11))
    assert deciles[-1].mean_residual == pytest.approx(0.3)
    assert all(d.mean_residual == 0 for d in deciles[:-1])


def test_square_root_allocation_is_the_cheapest_for_its_variance() -> None:
    model = VarianceModel(0.04, 0.02)
    plan = plan_for_budget(5000, model, cost_s=0.01, cost_y=0.16)
    assert plan.total_cost <= 5000
    # Any other split of the same budget has a larger variance.
    for share in np.linspace(0.05, 0.95, 19):
        n = share * 5000 / 0.01
        m = (1 - share) * 5000 / 0.16
        assert model.variance(n, m) >= plan.standard_error**2 * (1 - 1e-3)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert plan.mde == pytest.approx(z * math.sqrt(2) * plan.standard_error)


def test_plan_for_mde_hits_the_target_at_least_cost() -> None:
    model = VarianceModel.from_r2(0.7)
    plan = plan_for_mde(0.02, model, cost_s=0.01, cost_y=0.16)
    assert plan.mde <= 0.02
    cheaper = plan_for_budget(plan.total_cost * 0.98, model, 0.01, 0.16)
    assert cheaper.mde > 0.02


def test_variance_model_from_a_pilot() -> None:
    rng = np.random.default_rng(55)
    s = rng.uniform(size=3000)
    y = s + rng.normal(0, 0.2, 3000)
    model = VarianceModel.from_pilot(s, y)
    assert model.s2_eval == pytest.approx(1 / 12, rel=0.1)
    assert model.s2_cal == pytest.approx(0.04, rel=0.1)
