"""The online value estimate, its interval's coverage, the online plan and the wait."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from estimators import (
    BinnedResiduals,
    CoMoments,
    EventRate,
    Moments,
    NormalMixtureSequence,
    QuantileSketch,
    VarianceModel,
    labels_to_exclude_zero,
    online_label_plan,
    online_value_estimate,
    residuals_by_decile,
)

NOMINAL = 0.95


def _coverage(
    streams: int,
    batches: int,
    batch_size: int,
    label_share: float,
    calibrator,
    outcome,
    truth: float,
    seed: int,
) -> tuple[float, float]:
    """Share of simulated streams whose interval held ``truth`` at every batch (the
    anytime claim), and at the last batch only."""
    rng = np.random.default_rng(seed)
    always = at_end = 0
    for _ in range(streams):
        predictions, labeled_pairs = Moments(), CoMoments()
        held = True
        for _ in range(batches):
            s = rng.uniform(size=batch_size)
            y = outcome(s, rng)
            f = calibrator(s)
            labeled = rng.uniform(size=batch_size) < label_share
            predictions.update(f)
            labeled_pairs.update(f[labeled], (y - f)[labeled])
            covariance = labeled_pairs.cov if labeled_pairs.n > 1 else 0.0
            residuals = labeled_pairs.y_moments()
            interval = online_value_estimate(predictions, residuals, covariance).interval
            held &= interval.contains(truth)
        always += held
        at_end += interval.contains(truth)
    return always / streams, at_end / streams


# Monte Carlo margin: 3 standard errors of a share near 0.95 over 300 streams (0.038).
STREAMS = 300
MARGIN = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / STREAMS)


@pytest.mark.parametrize(
    ("name", "calibrator", "outcome", "truth", "label_share"),
    [
        # f = identity, Y = S^2 + noise: a biased calibrator whose residual correlates
        # with f(S).
        (
            "biased, 10% labeled",
            lambda s: s,
            lambda s, rng: s**2 + rng.normal(0, 0.1, s.size),
            1 / 3,
            0.1,
        ),
        # A calibrated f with Bernoulli outcomes and few labels: skewed augmented terms.
        (
            "calibrated Bernoulli, 3% labeled",
            lambda s: s,
            lambda s, rng: (rng.uniform(size=s.size) < s).astype(float),
            0.5,
            0.03,
        ),
        # Everything labeled: the estimate is the mean of Y itself, and the covariance of
        # f(S) and the residual is as large as the residual's own variance term.
        (
            "shifted, all labeled",
            lambda s: 0.5 * s,
            lambda s, rng: s + 0.2 + rng.normal(0, 0.3, s.size),
            0.7,
            1.0,
        ),
    ],
)
def test_interval_covers_the_true_mean_at_every_look(
    name: str, calibrator, outcome, truth: float, label_share: float
) -> None:
    always, at_end = _coverage(STREAMS, 20, 500, label_share, calibrator, outcome, truth, 11)
    assert always >= NOMINAL - MARGIN, (name, always)
    assert at_end >= NOMINAL - MARGIN, (name, at_end)


def test_a_wrong_truth_is_excluded_so_coverage_is_not_vacuous() -> None:
    always, _ = _coverage(
        100,
        20,
        500,
        0.1,
        lambda s: s,
        lambda s, rng: s**2 + rng.normal(0, 0.1, s.size),
        1 / 3 + 0.05,
        3,
    )
    assert always < 0.2


def test_estimate_is_plug_in_plus_correction_and_merges() -> None:
    rng = np.random.default_rng(4)
    f = rng.uniform(size=4000)
    r = rng.normal(0.1, 0.2, 400)
    whole = online_value_estimate(Moments().update(f), Moments().update(r))
    merged = online_value_estimate(
        Moments().update(f[:1000]) + Moments().update(f[1000:]),
        Moments().update(r[:100]) + Moments().update(r[100:]),
    )
    assert whole.estimate == pytest.approx(f.mean() + r.mean(), rel=1e-12)
    assert whole.plug_in == pytest.approx(f.mean(), rel=1e-12)
    assert whole.residual_correction == pytest.approx(r.mean(), rel=1e-12)
    assert merged.interval.low == pytest.approx(whole.interval.low, rel=1e-12)
    expected_se = math.sqrt(f.var(ddof=1) / 4000 + r.var(ddof=1) / 400)
    assert whole.standard_error == pytest.approx(expected_se, rel=1e-12)


def test_all_labeled_interval_is_the_residual_sequence_of_y() -> None:
    """With every event labeled and f = 0 the estimate is mean Y, and its interval that of
    NormalMixtureSequence over Y."""
    rng = np.random.default_rng(8)
    y = rng.normal(0.3, 1.0, 3000)
    value = online_value_estimate(Moments().update(np.zeros(3000)), Moments().update(y))
    reference = NormalMixtureSequence().update(y).interval
    assert value.interval.low == pytest.approx(reference.low, rel=1e-12)
    assert value.interval.high == pytest.approx(reference.high, rel=1e-12)


def test_with_the_covariance_all_labeled_the_standard_error_is_that_of_mean_y() -> None:
    rng = np.random.default_rng(12)
    s = rng.uniform(size=2000)
    y = s + 0.2 + rng.normal(0, 0.3, s.size)
    f = 0.5 * s
    pairs = CoMoments().update(f, y - f)
    value = online_value_estimate(Moments().update(f), pairs.y_moments(), pairs.cov)
    assert value.standard_error == pytest.approx(y.std(ddof=1) / math.sqrt(2000), rel=1e-9)
    without = online_value_estimate(Moments().update(f), pairs.y_moments())
    assert without.standard_error < 0.9 * value.standard_error  # a positive covariance


def test_too_few_labels_give_an_infinite_interval() -> None:
    value = online_value_estimate(Moments().update([0.2, 0.4, 0.6]), Moments().update([0.1]))
    assert value.estimate == pytest.approx(0.5)
    assert math.isinf(value.interval.low) and math.isinf(value.interval.high)
    assert math.isnan(value.standard_error)
    empty = online_value_estimate(Moments(), Moments())
    assert math.isnan(empty.estimate) and math.isinf(empty.interval.high)


# --- how long until the interval can exclude 0 ----------------------------------------


@pytest.mark.parametrize(("mean", "std", "n"), [(0.05, 0.1, 10), (-0.02, 0.3, 500), (0.2, 1, 0)])
def test_labels_to_exclude_zero_is_the_first_count_whose_interval_excludes_it(
    mean: float, std: float, n: int
) -> None:
    k = labels_to_exclude_zero(mean, std, n)
    assert k is not None and k > 0

    def half_width(total: int) -> float:
        moments = Moments().update([mean - std, mean + std])  # placeholder, overwritten
        moments.n, moments.weight, moments.mean = total, float(total), mean
        moments.m2 = std**2 * (total - 1)
        sequence = NormalMixtureSequence()
        sequence.moments = moments
        return sequence.interval.half_width

    assert half_width(n + k) < abs(mean) <= half_width(n + k - 1)


def test_labels_to_exclude_zero_never_for_a_null_mean_and_min_n_first() -> None:
    assert labels_to_exclude_zero(0.0, 0.1, 100) is None
    assert labels_to_exclude_zero(1e-9, 1.0, 100) is None  # beyond any useful time
    assert labels_to_exclude_zero(5.0, 0.01, 3) == 27  # the interval needs min_n values


# --- the online plan ------------------------------------------------------------------


def test_online_plan_agrees_with_the_budget_plan_variance_model() -> None:
    rng = np.random.default_rng(6)
    f, r = rng.normal(0.5, 0.2, 20_000), rng.normal(0.0, 0.15, 2_000)
    plan = online_label_plan(Moments().update(f), Moments().update(r), target_mde=0.01)
    assert plan is not None and plan.labels_needed is not None
    model = VarianceModel(f.var(ddof=1), r.var(ddof=1))
    share = 2_000 / 20_000
    # The labels it asks for (with scoring at today's share) reach the MDE, one fewer does not.
    # The MDE of `driftgate plan`: two-sided alpha 0.05, power 0.8, two groups (sqrt 2).
    multiplier = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(2)
    mde = lambda m: multiplier * math.sqrt(model.variance(m / share, m))  # noqa: E731
    assert mde(plan.labels_needed) <= 0.01 < mde(plan.labels_needed - 1)
    assert plan.more_labels == plan.labels_needed - 2_000
    assert plan.current_mde == pytest.approx(mde(2_000), rel=1e-9)


def test_online_plan_needs_variances_and_a_positive_target() -> None:
    assert online_label_plan(Moments().update([0.1, 0.2]), Moments().update([0.1]), 0.05) is None
    with pytest.raises(ValueError, match="target_mde"):
        online_label_plan(Moments(), Moments(), 0.0)
    done = online_label_plan(
        Moments().update(np.linspace(0, 1, 1000)), Moments().update([*np.zeros(999), 0.1]), 0.5
    )
    assert done is not None and done.more_labels == 0


# --- residuals by score bin -------------------------------------------------------------


def test_binned_residuals_match_the_offline_deciles_on_the_baseline() -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=5000)
    r = rng.normal(0, 0.1, 5000) + 0.2 * (s > 0.8)
    sketch = QuantileSketch(0.001).update(s)
    binned = BinnedResiduals.deciles_of(sketch).update(s[:2000], r[:2000])
    binned += BinnedResiduals.deciles_of(sketch).update(s[2000:], r[2000:])
    offline = residuals_by_decile(s, r)
    for row, decile in zip(binned.rows(), offline, strict=True):
        assert abs(row["n"] - decile.n) <= 15  # the sketch's deciles are 0.1% accurate
        assert row["mean_residual"] == pytest.approx(decile.mean_residual, abs=0.01)
    with pytest.raises(ValueError, match="edges"):
        binned += BinnedResiduals.deciles_of(None)


def test_binned_residuals_without_a_baseline_use_tenths_of_the_unit_interval() -> None:
    rows = BinnedResiduals.deciles_of(None).update([0.0, 0.1, 0.99, 1.5], [1, 2, 3, 4]).rows()
    assert [row["n"] for row in rows] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert rows[0]["score_low"] is None and rows[-1]["score_high"] is None
    assert rows[1]["score_low"] == pytest.approx(0.1)


# --- the recent label rate ----------------------------------------------------------------


def test_event_rate_follows_a_change_of_rate() -> None:
    rate = EventRate(half_life=300)
    for start in range(0, 3600, 60):  # one a second for an hour, in minute batches
        rate.update(np.arange(start, start + 60, 1.0))
    assert rate.per_second == pytest.approx(1.0, rel=0.02)
    for start in range(3600, 7200, 60):  # then one every 10 s
        rate.update(np.arange(start, start + 60, 10.0))
    assert rate.per_second == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="half_life"):
        EventRate(0)
