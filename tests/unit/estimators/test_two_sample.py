from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from estimators import (
    CoMoments,
    DifferenceInterval,
    Interval,
    Moments,
    mean_difference_sequence,
    normal_mixture_boundary,
    optimal_rho,
)

ALPHA = 0.05
PATHS = 2000
#: Three Monte Carlo standard errors of a rate of ``alpha`` estimated from PATHS paths.
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / PATHS)

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


# --- direct computation from raw arrays --------------------------------------------------


def floored(var_t: float, var_c: float, n_t: int, n_c: int) -> tuple[float, float]:
    """Each arm's variance pooled with the pooled within-arm variance counted as 300
    values of the arm (the sequence's prior)."""
    pooled = ((n_t - 1) * var_t + (n_c - 1) * var_c) / (n_t + n_c - 2)
    return (
        ((n_t - 1) * var_t + 300 * pooled) / (n_t - 1 + 300),
        ((n_c - 1) * var_c + 300 * pooled) / (n_c - 1 + 300),
    )


def sigma2_of(result: DifferenceInterval, alpha: float = ALPHA, target: float = 1000.0) -> float:
    """The per-unit variance the interval was built with, recovered from its half-width."""
    total = result.n_treatment + result.n_control
    boundary = normal_mixture_boundary(total, optimal_rho(target, alpha), alpha)
    return ((result.high - result.low) / 2 * total / boundary) ** 2


@pytest.mark.parametrize("ratio", [1.0, 0.95, 1.10])
def test_agrees_with_a_direct_computation_from_the_raw_arrays(ratio: float) -> None:
    rng = np.random.default_rng(20)
    treatment, control = rng.gamma(2.0, 1.5, 700), rng.gamma(2.0, 1.4, 5300)
    arm_t = Moments()
    for chunk in np.array_split(treatment, 7):
        arm_t.update(chunk)
    arm_c = Moments().update(control[:1000]) + Moments().update(control[1000:])
    result = mean_difference_sequence(arm_t, arm_c, ratio=ratio)
    assert result.estimate == pytest.approx(treatment.mean() - ratio * control.mean(), rel=1e-12)
    p = treatment.size / (treatment.size + control.size)
    var_t, var_c = floored(treatment.var(ddof=1), control.var(ddof=1), 700, 5300)
    assert var_c > control.var(ddof=1)  # the quieter arm is raised to the pooled variance
    sigma2 = var_t / p + ratio**2 * var_c / (1 - p)
    assert sigma2_of(result) == pytest.approx(sigma2, rel=1e-10)
    assert result.low < result.estimate < result.high
    assert (result.n_treatment, result.n_control, result.ratio) == (700, 5300, ratio)
    assert (result.method, result.theta, result.variance_reduction) == ("asymptotic_cs", None, None)
    assert result.interval == Interval(result.estimate, result.low, result.high)
    assert result.contains(result.estimate) and not result.contains(result.high + 1e-9)
    # CoMoments arms give the same unadjusted answer from their outcome coordinate.
    paired = mean_difference_sequence(
        CoMoments().update(np.zeros(700), treatment),
        CoMoments().update(np.zeros(5300), control),
        ratio=ratio,
    )
    assert paired.estimate == pytest.approx(result.estimate, rel=1e-12)
    assert paired.high == pytest.approx(result.high, rel=1e-10)


@pytest.mark.parametrize("ratio", [1.0, 0.95])
def test_cuped_agrees_with_a_direct_computation_from_the_raw_arrays(ratio: float) -> None:
    rng = np.random.default_rng(21)
    x_t, x_c = rng.normal(3, 1, 800), rng.normal(3, 1, 7200)
    y_t = 1.2 + 0.8 * x_t + rng.normal(0, 0.6, 800)
    y_c = 1.0 + 0.8 * x_c + rng.normal(0, 0.6, 7200)
    arm_t = CoMoments().update(x_t[:300], y_t[:300]).update(x_t[300:], y_t[300:])
    arm_c = CoMoments().update(x_c, y_c)
    result = mean_difference_sequence(arm_t, arm_c, ratio=ratio, adjust=True)
    assert result.method == "asymptotic_cs_cuped"

    def codeviation(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum((a - a.mean()) * (b - b.mean())))

    theta = (codeviation(x_t, y_t) + codeviation(x_c, y_c)) / (
        codeviation(x_t, x_t) + codeviation(x_c, x_c)
    )
    assert result.theta == pytest.approx(theta, rel=1e-10)
    x_all = np.concatenate([x_t, x_c])
    adjusted_t = y_t.mean() - theta * (x_t.mean() - x_all.mean())
    adjusted_c = y_c.mean() - theta * (x_c.mean() - x_all.mean())
    assert result.estimate == pytest.approx(adjusted_t - ratio * adjusted_c, rel=1e-10)
    # The variance is that of the estimator's actual per-arm residuals.
    p = x_t.size / x_all.size
    slope = theta * (1 - p + ratio * p)
    var_t, var_c = floored(
        np.var(y_t - slope * x_t, ddof=1), np.var(y_c - slope / ratio * x_c, ddof=1), 800, 7200
    )
    sigma2 = var_t / p + ratio**2 * var_c / (1 - p)
    assert sigma2_of(result) == pytest.approx(sigma2, rel=1e-9)
    if ratio == 1.0:  # the textbook per-arm formula var_y - 2 theta cov + theta^2 var_x
        cov_t, cov_c = np.cov(x_t, y_t), np.cov(x_c, y_c)
        textbook = floored(
            cov_t[1, 1] - 2 * theta * cov_t[0, 1] + theta**2 * cov_t[0, 0],
            cov_c[1, 1] - 2 * theta * cov_c[0, 1] + theta**2 * cov_c[0, 0],
            800,
            7200,
        )
        assert sigma2_of(result) == pytest.approx(textbook[0] / p + textbook[1] / (1 - p), rel=1e-9)
    raw = mean_difference_sequence(arm_t, arm_c, ratio=ratio)
    assert result.variance_reduction == pytest.approx(1 - sigma2 / sigma2_of(raw), rel=1e-9)


def test_infinite_ends_below_min_n_and_without_values() -> None:
    small = mean_difference_sequence(
        Moments().update(np.arange(29.0)), Moments().update([1.0] * 50)
    )
    assert (small.low, small.high) == (-math.inf, math.inf)
    assert small.estimate == pytest.approx(14.0 - 1.0)
    empty = mean_difference_sequence(Moments(), Moments().update([1.0, 2.0]))
    assert math.isnan(empty.estimate) and math.isinf(empty.low) and math.isinf(empty.high)
    enough = mean_difference_sequence(
        Moments().update(np.arange(30.0)), Moments().update([1.0] * 50)
    )
    assert math.isfinite(enough.low) and math.isfinite(enough.high)
    # Constant outcomes in both arms: a zero-width interval at the difference.
    constant = mean_difference_sequence(Moments().update([1.0] * 40), Moments().update([1.0] * 40))
    assert (constant.low, constant.estimate, constant.high) == (0.0, 0.0, 0.0)


def test_cuped_falls_back_and_says_so() -> None:
    rng = np.random.default_rng(22)
    y = rng.normal(size=400)
    constant_x = mean_difference_sequence(
        CoMoments().update(np.ones(100), y[:100]),
        CoMoments().update(np.ones(300), y[100:]),
        adjust=True,
    )
    plain = mean_difference_sequence(Moments().update(y[:100]), Moments().update(y[100:]))
    assert constant_x.method == "asymptotic_cs_unadjusted"
    assert (constant_x.theta, constant_x.variance_reduction) == (None, None)
    assert constant_x.estimate == pytest.approx(plain.estimate, rel=1e-12)
    assert constant_x.high == pytest.approx(plain.high, rel=1e-10)
    few = mean_difference_sequence(
        CoMoments().update(rng.normal(size=10), y[:10]),
        CoMoments().update(rng.normal(size=300), y[100:]),
        adjust=True,
    )
    assert few.method == "asymptotic_cs_unadjusted" and math.isinf(few.high)


def test_bad_arguments_are_refused() -> None:
    arm = Moments().update(np.arange(40.0))
    with pytest.raises(TypeError, match="CoMoments"):
        mean_difference_sequence(arm, arm, adjust=True)
    with pytest.raises(ValueError, match="weighted"):
        mean_difference_sequence(Moments().update([1.0, 2.0], [0.5, 2.0]), arm)
    with pytest.raises(ValueError, match="ratio"):
        mean_difference_sequence(arm, arm, ratio=math.nan)
    with pytest.raises(ValueError, match="alpha"):
        mean_difference_sequence(arm, arm, alpha=1.5)


# --- simulations, vectorized over paths --------------------------------------------------


def vectorized_intervals(
    arms: np.ndarray, ratio: float, alpha: float = ALPHA, target: float = 1000.0, min_n: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """The function's estimate and half-width at every look of every path, from the arms'
    running ``(n, sum, sum of squares)`` (``arms[0]`` treatment, ``arms[1]`` control)."""
    (n_t, sum_t, sq_t), (n_c, sum_c, sq_c) = arms
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t, mean_c = sum_t / n_t, sum_c / n_c
        var_t = (sq_t - n_t * mean_t**2) / (n_t - 1)
        var_c = (sq_c - n_c * mean_c**2) / (n_c - 1)
        var_t, var_c = floored(var_t, var_c, n_t, n_c)
        total = n_t + n_c
        p = n_t / total
        sigma2 = var_t / p + ratio**2 * var_c / (1 - p)
        rho = optimal_rho(target, alpha)
        boundary = np.sqrt((total + rho) * (np.log1p(total / rho) + 2 * math.log(1 / alpha)))
        half = np.sqrt(np.maximum(sigma2, 0)) * boundary / total
    return mean_t - ratio * mean_c, np.where(np.minimum(n_t, n_c) >= min_n, half, np.inf)


def simulate_arms(
    rng: np.random.Generator,
    draw_t: Draw,
    draw_c: Draw,
    horizon: int,
    batch: int = 100,
    share: float = 0.1,
    paths: int = PATHS,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Running per-arm ``(n, sum, sum of squares)`` after every batch of every path.

    Units are independent and assigned independently of their outcome, so each arm's
    outcomes are an i.i.d. stream and the allocation only decides how much of each
    stream has been seen at each look: ``n_T`` per batch is Binomial(batch, share).
    Returns the sums (shape ``(2, 3, paths, looks)``), the first path's two streams
    (to replay through the real function) and the looks' unit counts.
    """
    looks = horizon // batch
    n_t = np.cumsum(rng.binomial(batch, share, (paths, looks)), axis=1)
    n_c = batch * np.arange(1, looks + 1) - n_t
    arms = np.empty((2, 3, paths, looks))
    first: list[np.ndarray] = []
    for arm, (seen, draw) in enumerate(((n_t, draw_t), (n_c, draw_c))):
        length, chunk = int(seen.max()), 250
        for start in range(0, paths, chunk):
            values = draw(rng, (min(chunk, paths - start), length))
            if start == 0:
                first.append(values[0].copy())
            index = seen[start : start + chunk]
            for moment, power in ((1, 1), (2, 2)):
                running = np.cumsum(values**power, axis=1)
                running = np.concatenate([np.zeros((values.shape[0], 1)), running], axis=1)
                arms[arm, moment, start : start + chunk] = np.take_along_axis(running, index, 1)
        arms[arm, 0] = seen
    return arms, first, batch * np.arange(1, looks + 1)


def assert_matches_the_function(arms: np.ndarray, first: list[np.ndarray], ratio: float) -> None:
    """Replays path 0 through mean_difference_sequence at every look: same interval."""
    estimate, half = vectorized_intervals(arms[:, :, :1], ratio)
    arm_t, arm_c, seen = Moments(), Moments(), [0, 0]
    for look in range(arms.shape[3]):
        for moments, arm in ((arm_t, 0), (arm_c, 1)):
            upto = int(arms[arm, 0, 0, look])
            moments.update(first[arm][seen[arm] : upto])
            seen[arm] = upto
        result = mean_difference_sequence(arm_t, arm_c, ratio=ratio)
        assert result.estimate == pytest.approx(estimate[0, look], rel=1e-9, abs=1e-12)
        if math.isinf(half[0, look]):
            assert math.isinf(result.high)
        else:
            assert (result.high - result.low) / 2 == pytest.approx(half[0, look], rel=1e-8)


def normal(mean: float, sd: float) -> Draw:
    return lambda rng, shape: rng.normal(mean, sd, shape)


def bernoulli(p: float) -> Draw:
    return lambda rng, shape: (rng.random(shape) < p).astype(np.float64)


def lognormal(scale: float, sigma: float = 0.5) -> Draw:
    return lambda rng, shape: scale * rng.lognormal(0.0, sigma, shape)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "draw", "seed"),
    [
        ("normal", normal(1.0, 1.0), 30),
        ("bernoulli_0.7", bernoulli(0.7), 31),
        ("lognormal_0.5", lognormal(1.0), 32),
    ],
    ids=["normal", "bernoulli_0.7", "lognormal_0.5"],
)
def test_identical_arms_rarely_alarm_under_continuous_monitoring(
    name: str, draw: Draw, seed: int
) -> None:
    """10% canary vs 90% control, same distribution, looked at after every 100 units
    up to 20,000: the sequence for ratio 1 ever excludes 0 in at most alpha of paths."""
    arms, first, _ = simulate_arms(np.random.default_rng(seed), draw, draw, horizon=20_000)
    assert_matches_the_function(arms, first, 1.0)
    estimate, half = vectorized_intervals(arms, 1.0)
    ever = ((estimate - half > 0) | (estimate + half < 0)).any(axis=1).mean()
    below = (estimate + half < 0).any(axis=1).mean()  # high < 0: "canary lower"
    above = (estimate - half > 0).any(axis=1).mean()  # low > 0: "canary higher"
    # The service's one-sided uses: quality high < 0 at ratio 0.95, latency low > 0 at 1.10.
    quality_estimate, quality_half = vectorized_intervals(arms, 0.95)
    quality = (quality_estimate + quality_half < 0).any(axis=1).mean()
    latency_estimate, latency_half = vectorized_intervals(arms, 1.10)
    latency = (latency_estimate - latency_half > 0).any(axis=1).mean()
    report = (
        f"{name}: 0 ever outside {ever:.4f}, ratio 1 high<0 {below:.4f}, low>0 {above:.4f}; "
        f"ratio 0.95 high<0 {quality:.4f}; ratio 1.10 low>0 {latency:.4f}"
    )
    assert ever <= ALPHA + SLACK, report
    assert quality <= ALPHA / 2 + SLACK, report
    assert latency <= ALPHA / 2 + SLACK, report
    if name == "normal":
        # Symmetric outcomes split the error evenly. Skewed ones do not: the small arm's
        # mean and variance are low together (lognormal: high < 0 at ~3.3%) or high
        # together (Bernoulli 0.7: low > 0 at ~3.3%), the two sides still within alpha.
        assert max(below, above) <= ALPHA / 2 + SLACK, report


@pytest.mark.slow
def test_a_canary_10_percent_below_control_is_flagged() -> None:
    """Quality 0.63 vs 0.70 (10% below control) at 10% allocation, flagged by ``high < 0``
    at ratio 0.95: delta = 0.63 - 0.95 * 0.70 = -0.035 with a per-unit sd of 1.59.

    At 20,000 units the sequence's half-width is 1.59 * 472 / 20,000 = 0.0376 > 0.035, so
    only about half of the paths are flagged by then (even a fixed-n z test at 20,000
    has 87% power); measured: 53% by 20,000 units, 89% by 40,000, 98% by 60,000.
    Bernoulli arms are simulated exactly from their sufficient statistics (binomial
    counts per batch).
    """
    rng = np.random.default_rng(40)
    batch, looks = 100, 600
    n_t = rng.binomial(batch, 0.1, (PATHS, looks))
    s_t, s_c = rng.binomial(n_t, 0.63), rng.binomial(batch - n_t, 0.70)
    counts = np.stack([n_t, s_t, s_t, batch - n_t, s_c, s_c]).astype(np.float64)
    arms = np.cumsum(counts, axis=2).reshape(2, 3, PATHS, looks)
    estimate, half = vectorized_intervals(arms, 0.95)
    flagged = estimate + half < 0
    first = np.where(flagged.any(axis=1), flagged.argmax(axis=1) + 1, looks + 1) * batch
    power = {units: float((first <= units).mean()) for units in (20_000, 40_000, 60_000)}
    # The wrong side: "non-inferior" (low > 0) although the canary is below 95% of control.
    wrong = float((estimate - half > 0).any(axis=1).mean())
    report = (
        f"power by units {power}, median units to flag {np.median(first):.0f}, "
        f"wrongly non-inferior {wrong:.4f}"
    )
    assert power[60_000] >= 0.95, report
    assert power[20_000] >= 0.40, report
    assert wrong <= ALPHA / 2, report


@pytest.mark.slow
def test_a_canary_20_percent_slower_is_flagged() -> None:
    """Lognormal latencies (sigma 0.5), canary 20% slower, 10% allocation: ``low > 0`` at
    ratio 1.10 (delta = +0.1 control mean) within 20,000 units in every path."""
    rng = np.random.default_rng(41)
    arms, first_path, units = simulate_arms(rng, lognormal(1.2), lognormal(1.0), horizon=20_000)
    assert_matches_the_function(arms, first_path, 1.10)
    estimate, half = vectorized_intervals(arms, 1.10)
    flagged = estimate - half > 0
    first = np.where(flagged.any(axis=1), units[flagged.argmax(axis=1)], np.inf)
    report = (
        f"flagged {flagged.any(axis=1).mean():.4f} within 20,000 units; units to flag: "
        f"median {np.median(first):.0f}, 90% {np.quantile(first, 0.9):.0f}, max {first.max():.0f}"
    )
    assert flagged.any(axis=1).mean() >= 0.99, report
    assert np.median(first) <= 6000, report


# --- CUPED ---------------------------------------------------------------------------------

CORRELATION = 0.7


def paired_draw(mean_y: float) -> Callable[[np.random.Generator, tuple[int, int]], np.ndarray]:
    """Pre-period x ~ N(2, 1) and outcome y with unit variance, correlated 0.7 with x."""

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        x = rng.normal(0.0, 1.0, shape)
        noise = rng.normal(0.0, math.sqrt(1 - CORRELATION**2), shape)
        return np.stack([2.0 + x, mean_y + CORRELATION * x + noise])

    return draw


def simulate_paired_arms(
    rng: np.random.Generator, horizon: int, batch: int = 100, share: float = 0.1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Running per-arm ``(n, Sx, Sy, Sxx, Syy, Sxy)`` after every batch (shape
    ``(2, 6, paths, looks)``), as :func:`simulate_arms`; treatment mean 1.1, control 1.0."""
    looks = horizon // batch
    n_t = np.cumsum(rng.binomial(batch, share, (PATHS, looks)), axis=1)
    n_c = batch * np.arange(1, looks + 1) - n_t
    arms = np.empty((2, 6, PATHS, looks))
    first: list[np.ndarray] = []
    for arm, (seen, draw) in enumerate(((n_t, paired_draw(1.1)), (n_c, paired_draw(1.0)))):
        length, chunk = int(seen.max()), 250
        for start in range(0, PATHS, chunk):
            x, y = draw(rng, (min(chunk, PATHS - start), length))
            if start == 0:
                first.append(np.stack([x[0], y[0]]))
            index = seen[start : start + chunk]
            for moment, values in enumerate((x, y, x * x, y * y, x * y), start=1):
                running = np.cumsum(values, axis=1)
                running = np.concatenate([np.zeros((values.shape[0], 1)), running], axis=1)
                arms[arm, moment, start : start + chunk] = np.take_along_axis(running, index, 1)
        arms[arm, 0] = seen
    return arms, first


def vectorized_cuped(
    arms: np.ndarray, ratio: float, alpha: float = ALPHA, target: float = 1000.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CUPED estimate, half-width and unadjusted half-width at every look of every path."""
    with np.errstate(divide="ignore", invalid="ignore"):
        (n_t, sx_t, sy_t, sxx_t, syy_t, sxy_t), (n_c, sx_c, sy_c, sxx_c, syy_c, sxy_c) = arms
        m2x_t, m2x_c = sxx_t - sx_t**2 / n_t, sxx_c - sx_c**2 / n_c
        m2y_t, m2y_c = syy_t - sy_t**2 / n_t, syy_c - sy_c**2 / n_c
        c_t, c_c = sxy_t - sx_t * sy_t / n_t, sxy_c - sx_c * sy_c / n_c
        total = n_t + n_c
        p = n_t / total
        theta = (c_t + c_c) / (m2x_t + m2x_c)
        mean_x = (sx_t + sx_c) / total
        adjusted_t = sy_t / n_t - theta * (sx_t / n_t - mean_x)
        adjusted_c = sy_c / n_c - theta * (sx_c / n_c - mean_x)
        slope = theta * (1 - p + ratio * p)
        var_t = (m2y_t - 2 * slope * c_t + slope**2 * m2x_t) / (n_t - 1)
        var_c = (ratio**2 * m2y_c - 2 * ratio * slope * c_c + slope**2 * m2x_c) / (n_c - 1)
        var_t, shrunk_c = floored(var_t, var_c / ratio**2, n_t, n_c)
        var_c = ratio**2 * shrunk_c
        sigma2 = var_t / p + var_c / (1 - p)
        raw_t, raw_c = floored(m2y_t / (n_t - 1), m2y_c / (n_c - 1), n_t, n_c)
        raw_sigma2 = raw_t / p + ratio**2 * raw_c / (1 - p)
        rho = optimal_rho(target, alpha)
        scale = np.sqrt((total + rho) * (np.log1p(total / rho) + 2 * math.log(1 / alpha))) / total
        enough = np.minimum(n_t, n_c) >= 30
        half = np.where(enough, np.sqrt(sigma2) * scale, np.inf)
        raw_half = np.where(enough, np.sqrt(raw_sigma2) * scale, np.inf)
    return adjusted_t - ratio * adjusted_c, half, raw_half


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1.0, 0.95])
def test_cuped_narrows_the_sequence_and_keeps_coverage(ratio: float) -> None:
    """A pre-period covariate correlated 0.7 with the outcome removes ~0.7^2 = 49% of the
    variance (the half-width shrinks by sqrt(0.51) = 0.71), and the adjusted sequence,
    looked at every 100 units up to 10,000 (10% allocation), still covers delta."""
    rng = np.random.default_rng(50 if ratio == 1.0 else 51)
    arms, first = simulate_paired_arms(rng, horizon=10_000)
    estimate, half, raw_half = vectorized_cuped(arms, ratio)
    # Path 0 replayed through the function at every look.
    arm_t, arm_c, seen = CoMoments(), CoMoments(), [0, 0]
    for look in range(arms.shape[3]):
        for moments, arm in ((arm_t, 0), (arm_c, 1)):
            upto = int(arms[arm, 0, 0, look])
            moments.update(first[arm][0, seen[arm] : upto], first[arm][1, seen[arm] : upto])
            seen[arm] = upto
        result = mean_difference_sequence(arm_t, arm_c, ratio=ratio, adjust=True)
        if math.isinf(half[0, look]):
            assert math.isinf(result.high) and result.method == "asymptotic_cs_unadjusted"
            continue
        assert result.method == "asymptotic_cs_cuped"
        assert result.estimate == pytest.approx(estimate[0, look], rel=1e-8, abs=1e-12)
        assert (result.high - result.low) / 2 == pytest.approx(half[0, look], rel=1e-7)
        reduction = 1 - (half[0, look] / raw_half[0, look]) ** 2
        assert result.variance_reduction == pytest.approx(reduction, rel=1e-6, abs=1e-9)

    truth = 1.1 - ratio * 1.0
    missed = (np.abs(estimate - truth) > half).any(axis=1).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_estimate = arms[0, 2] / arms[0, 0] - ratio * arms[1, 2] / arms[1, 0]
    raw_missed = np.abs(raw_estimate - truth) > raw_half
    width_ratio = float(np.median(half[:, -1] / raw_half[:, -1]))
    report = (
        f"ratio {ratio}: CUPED ever misses delta in {missed:.4f} of paths "
        f"(unadjusted {raw_missed.any(axis=1).mean():.4f}); final half-width ratio "
        f"{width_ratio:.4f}, variance reduction {1 - width_ratio**2:.4f}"
    )
    assert missed <= ALPHA + SLACK, report
    assert width_ratio == pytest.approx(math.sqrt(1 - CORRELATION**2), abs=0.02), report


def test_cuped_variance_reduction_is_the_squared_correlation() -> None:
    rng = np.random.default_rng(52)
    draw_t, draw_c = paired_draw(1.1), paired_draw(1.0)
    (x_t, y_t), (x_c, y_c) = draw_t(rng, (1, 20_000)), draw_c(rng, (1, 180_000))
    result = mean_difference_sequence(
        CoMoments().update(x_t, y_t), CoMoments().update(x_c, y_c), adjust=True
    )
    assert result.variance_reduction == pytest.approx(CORRELATION**2, abs=0.01)
    assert result.theta == pytest.approx(CORRELATION, abs=0.01)
    assert result.contains(0.1)
