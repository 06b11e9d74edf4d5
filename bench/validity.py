"""The validity matrix: how often each gate FAILs when it must not, and how soon when it must.

    python bench/validity.py [--paths 2000] [--power-paths 500] [--horizon 20000]
                             [--only canary,latency,residual,guardrail,srm] [--plot-only]

For each gate, outcome kinds (Gaussian; 0/1 at 1%, 5%, 10%, 50%; lognormal sigma 1.5;
Student t with 3 df), look schedules (after every event, every 50 units, batches of 100)
and horizons up to ``--horizon`` units: the share of null paths on which the gate ever
FAILs (with its Wilson 95% interval), beside the share for the gate as it was before
2026-12-07 ("previous"). Nulls sit in the middle (identical arms, a mean residual of 0)
and exactly at each threshold (a canary exactly 5% below control, or exactly 10% slower;
a toxicity rate exactly at its ceiling; a mean unit cost exactly at its ceiling; the
declared split). Power: the share of paths that FAIL by the horizon and the median units
to the first FAIL at fixed alternatives (quality 10% below control, a residual bias of
+0.06, toxicity at 1.5x its ceiling, PII at 1e-4, a 9% split at a declared 10%).

The gates are computed for many paths at once with numpy from the same formulas as the
estimators, and ``verify`` checks the vectorized intervals against the classes themselves
(``PairedDifferenceSequence``, ``mean_difference_sequence``, ``NormalMixtureSequence``,
``BernoulliSequence``, ``SampleRatioSequence``) on sample paths in every run. What each
cell means:

* canary quality: ``canary_gate``'s ``quality_regression``, FAIL when the interval of
  ``quality_canary - 0.95 quality_control`` lies below 0; 10% of units to the canary.
  Outcomes in [0, 1] use the stage's ``PairedDifferenceSequence`` (now) and the
  asymptotic sequence with each arm's own plug-in variance from 30 events (previous);
  unbounded outcomes use the asymptotic sequence with each arm's variance pooled with
  the pooled within-arm variance counted as 300 values (now).
* canary latency: ``latency_regression``, FAIL when the mean latency is surely more than
  10% above control's, or the mean of ``log(1 + latency)`` surely more than ``log 1.1``.
* residual: ``residual_drift_gate`` on the residuals of a calibrator without a prior
  variance (the identity's case), with its change detector: "alarm" is any WARN or FAIL,
  "FAIL" a FAIL of the all-time interval or of the one restarted after the detector's
  alarm. Now: the interval at ``alpha - change_alpha`` = 0.04, empirical Bernstein while
  the residuals stay in [-1, 1]; previous: the normal mixture at 0.05 plus the detector.
* guardrails: toxicity (Robbins' mixture, unchanged), the latency p95 ceiling as the
  rate of latencies above it (likewise), unit cost (normal mixture from 30 events,
  unchanged), PII (one leak is a breach).
* srm: Lindon and Malek's e-process at 0.001 after Flagger's delay (170 control-only
  units before the canary's traffic): now counted from the stage's first canary event,
  previously from the deploy.

Writes bench/results/validity.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.special import betaln, gammaln, xlog1py, xlogy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _harness import machine_summary, markdown_table  # noqa: E402

from estimators import (  # noqa: E402
    BernoulliSequence,
    MeanShiftDetector,
    Moments,
    NormalMixtureSequence,
    PairedDifferenceSequence,
    SampleRatioSequence,
    mean_difference_sequence,
    optimal_rho,
)
from estimators._two_sample import POOLED_WEIGHT  # noqa: E402
from monitor.gates._guardrails import TESTED, rate_prior  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ALPHA = 0.05
SHARE = 0.1  # of the units to the canary
RATIO = 0.95  # 1 - canary.quality_drop_max
LATENCY_RATIO = 1.10  # 1 + canary.latency_increase_max
CANARY_TARGET = 2000.0
RESIDUAL_TARGET = 1000.0
CHANGE_ALPHA = 0.01
BIAS_THRESHOLD = 0.05
MIN_N = 30
UNBOUNDED_MIN_N = 3000  # residual_drift.min_labeled_unbounded
SRM_ALPHA = 0.001
GUARDRAIL_ALPHA = ALPHA / len(TESTED)  # each guardrail's share of the gate's alpha
FLAGGER_DELAY = 170  # control-only units before the canary's traffic
CHUNK = 200  # paths generated at once
SCHEDULES = {"every event": 1, "every 50": 50, "batches of 100": 100}

Draw = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


# --- outcome kinds ---------------------------------------------------------------------------


def kinds() -> dict[str, tuple[Draw, float, bool]]:
    """Each outcome kind: a draw with mean 1 (scaled by the caller), its mean, bounded?"""
    sigma = 1.5
    return {
        "gaussian": (lambda rng, shape: rng.normal(1.0, 1.0, shape), 1.0, False),
        "0/1 at 1%": (lambda rng, shape: (rng.random(shape) < 0.01).astype(float), 0.01, True),
        "0/1 at 5%": (lambda rng, shape: (rng.random(shape) < 0.05).astype(float), 0.05, True),
        "0/1 at 10%": (lambda rng, shape: (rng.random(shape) < 0.10).astype(float), 0.10, True),
        "0/1 at 50%": (lambda rng, shape: (rng.random(shape) < 0.50).astype(float), 0.50, True),
        "lognormal 1.5": (
            lambda rng, shape: rng.lognormal(0.0, sigma, shape),
            math.exp(sigma**2 / 2),
            False,
        ),
        "t3": (lambda rng, shape: 1.0 + rng.standard_t(3, shape), 1.0, False),
    }


def scaled(draw: Draw, mean: float, target: float, bounded: bool) -> Draw:
    """The draw with mean ``target``: 0/1 outcomes by their rate, others by a factor."""
    if bounded:
        rate = target
        return lambda rng, shape: (rng.random(shape) < rate).astype(float)
    factor = target / mean
    return lambda rng, shape: factor * draw(rng, shape)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# --- vectorized sequences (checked against the classes in verify) ---------------------------


def boundary(n: np.ndarray, alpha: float, target: float) -> np.ndarray:
    """``u(n) / n`` of the two-sided normal mixture (``normal_mixture_half_width`` / sigma)."""
    rho = optimal_rho(target, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((n + rho) * (np.log1p(n / rho) + 2 * math.log(1 / alpha))) / n


def eb_prefix(
    x: np.ndarray, alpha: float, low: float, high: float, target: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``EmpiricalBernsteinSequence``'s interval after every prefix of each row of ``x``."""
    z = (x - low) / (high - low)
    rows, k = z.shape
    t = np.arange(1, k + 1, dtype=np.float64)
    sums = np.cumsum(z, axis=1)
    mu = (0.5 + sums) / (t + 1)
    mu_before = np.concatenate([np.full((rows, 1), 0.5), mu[:, :-1]], axis=1)
    sq = np.cumsum((z - mu) ** 2, axis=1)
    s2_before = np.concatenate([np.full((rows, 1), 0.25), ((0.25 + sq) / (t + 1))[:, :-1]], axis=1)
    log_term = math.log(2 / alpha)
    horizon = t * np.log1p(t) if target is None else np.maximum(t, target)
    bets = np.minimum(np.sqrt(2 * log_term / (s2_before * horizon)), 0.5)
    penalty = np.cumsum(4 * (z - mu_before) ** 2 * (-np.log1p(-bets) - bets) / 4, axis=1)
    total = np.cumsum(bets, axis=1)
    centre = np.cumsum(bets * z, axis=1) / total
    half = (log_term + penalty) / total
    scale = high - low
    return low + scale * np.maximum(centre - half, 0), low + scale * np.minimum(centre + half, 1)


def running(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample variance after every prefix of each row."""
    n = np.arange(1, x.shape[1] + 1, dtype=np.float64)
    mean = np.cumsum(x, axis=1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (np.cumsum(x * x, axis=1) - n * mean**2) / (n - 1)
    return n, mean, np.maximum(var, 0.0)


def arm_moments(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """An arm's count, mean and sample variance after every unit (``mask``: its units)."""
    v = np.where(mask, values, 0.0)
    n = np.cumsum(mask, axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.cumsum(v, axis=1) / n
        var = (np.cumsum(v * v, axis=1) - n * mean**2) / (n - 1)
    return n, mean, np.maximum(var, 0.0)


def difference_fails(
    arm_t: tuple[np.ndarray, ...],
    arm_c: tuple[np.ndarray, ...],
    ratio: float,
    floor: bool,
    side: str,
    offset: float = 0.0,
    alpha: float = ALPHA,
) -> np.ndarray:
    """``mean_difference_sequence`` at every unit: below 0 (``side`` "high") or above
    ``offset`` ("low") from ``min_n`` values in each arm on."""
    (n_t, m_t, v_t), (n_c, m_c, v_c) = arm_t, arm_c
    if floor:  # the pooled within-arm variance as a prior of POOLED_WEIGHT values
        with np.errstate(divide="ignore", invalid="ignore"):
            pooled = ((n_t - 1) * v_t + (n_c - 1) * v_c) / (n_t + n_c - 2)
            v_t = ((n_t - 1) * v_t + POOLED_WEIGHT * pooled) / (n_t - 1 + POOLED_WEIGHT)
            v_c = ((n_c - 1) * v_c + POOLED_WEIGHT * pooled) / (n_c - 1 + POOLED_WEIGHT)
    total = n_t + n_c
    with np.errstate(divide="ignore", invalid="ignore"):
        p = n_t / total
        sigma = np.sqrt(v_t / p + ratio**2 * v_c / (1 - p))
        half = sigma * boundary(total, alpha, CANARY_TARGET)
        estimate = m_t - ratio * m_c
    enough = np.minimum(n_t, n_c) >= MIN_N
    if side == "high":
        return enough & (estimate + half < 0)
    return enough & (estimate - half > offset)


def first_at_looks(flags: np.ndarray, every: int) -> np.ndarray:
    """The unit (1-based) of each row's first flagged look, ``inf`` when none."""
    looks = flags[:, every - 1 :: every]
    hit = looks.any(axis=1)
    first = (looks.argmax(axis=1) + 1) * every
    return np.where(hit, first.astype(np.float64), np.inf)


# --- the canary gate ---------------------------------------------------------------------------


def pair_fails(assigned: np.ndarray, values: np.ndarray, units: int) -> np.ndarray:
    """For each path (``assigned``: the canary's units; ``values``: every unit's outcome):
    the units at which the stage's pairs' interval lies below 0, as a (paths, units) flag
    array (``PairedDifferenceSequence`` of the canary gate)."""
    paths = assigned.shape[0]
    block = round((1 - SHARE) / SHARE)
    diffs, times, counts = [], [], []
    for i in range(paths):
        x = values[i, assigned[i]]
        c = values[i, ~assigned[i]]
        k = min(x.size, c.size // block)
        diffs.append(x[:k] - RATIO * c[: k * block].reshape(k, block).mean(axis=1))
        t_pos = np.flatnonzero(assigned[i])[:k]
        c_pos = np.flatnonzero(~assigned[i])[block - 1 : k * block : block]
        times.append(np.maximum(t_pos, c_pos))  # the unit at which pair j forms (0-based)
        counts.append(k)
    width = max(max(counts), 1)
    d = np.zeros((paths, width))
    for i, row in enumerate(diffs):
        d[i, : row.size] = row
    _, high = eb_prefix(d, ALPHA, -RATIO, 1.0, CANARY_TARGET)
    flags = np.zeros((paths, units), dtype=bool)
    for i in range(paths):
        pair_flags = high[i, : counts[i]] < 0
        if pair_flags.any():
            # Between pair formations the interval is that of the last pair formed.
            formed = np.zeros(units, dtype=np.int64)
            np.add.at(formed, times[i], 1)
            index = np.cumsum(formed) - 1  # the last pair formed by each unit
            valid = index >= 0
            flags[i, valid] = pair_flags[index[valid]]
    return flags


def canary_cell(
    rng: np.random.Generator,
    draw_c: Draw,
    draw_t: Draw,
    bounded: bool,
    paths: int,
    units: int,
) -> dict[str, np.ndarray]:
    """First FAIL unit of each path, now and previous, under each schedule."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        canary = rng.random((size, units)) < SHARE
        outcome = np.where(canary, draw_t(rng, (size, units)), draw_c(rng, (size, units)))
        arm_t, arm_c = arm_moments(outcome, canary), arm_moments(outcome, ~canary)
        previous = difference_fails(arm_t, arm_c, RATIO, floor=False, side="high")
        if bounded:
            now = pair_fails(canary, outcome, units)
        else:
            now = difference_fails(arm_t, arm_c, RATIO, floor=True, side="high")
        for name, every in SCHEDULES.items():
            out.setdefault(f"now|{name}", []).append(first_at_looks(now, every))
            out.setdefault(f"previous|{name}", []).append(first_at_looks(previous, every))
    return {key: np.concatenate(value) for key, value in out.items()}


def latency_cell(
    rng: np.random.Generator, factor: float, paths: int, units: int
) -> dict[str, np.ndarray]:
    """``latency_regression`` on lognormal(0, 1.5) latencies, the canary's scaled."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        canary = rng.random((size, units)) < SHARE
        latency = rng.lognormal(0.0, 1.5, (size, units)) * np.where(canary, factor, 1.0)
        log_latency = np.log1p(latency)
        for label, floor in (("now", True), ("previous", False)):
            mean_fail = difference_fails(
                arm_moments(latency, canary),
                arm_moments(latency, ~canary),
                LATENCY_RATIO,
                floor,
                "low",
                alpha=ALPHA / 2 if label == "now" else ALPHA,  # each latency's share
            )
            log_fail = difference_fails(
                arm_moments(log_latency, canary),
                arm_moments(log_latency, ~canary),
                1.0,
                floor,
                "low",
                offset=math.log(LATENCY_RATIO),
                alpha=ALPHA / 2 if label == "now" else ALPHA,
            )
            flags = mean_fail | log_fail
            for name, every in SCHEDULES.items():
                out.setdefault(f"{label}|{name}", []).append(first_at_looks(flags, every))
    return {key: np.concatenate(value) for key, value in out.items()}


# --- the residual gate --------------------------------------------------------------------


def interval_flags(r: np.ndarray, alpha: float, bounded: bool) -> tuple[np.ndarray, np.ndarray]:
    """(excludes 0, FAIL) after every prefix of each row: the gate's all-time interval."""
    n, mean, var = running(r)
    half = np.sqrt(var) * boundary(n, alpha, RESIDUAL_TARGET)
    low, high = mean - half, mean + half
    enough = n >= MIN_N
    if bounded:
        outside = np.abs(r) > 1.0
        switch = np.where(outside.any(axis=1), outside.argmax(axis=1), r.shape[1])
        eb_low, eb_high = eb_prefix(np.clip(r, -1, 1), alpha, -1.0, 1.0, RESIDUAL_TARGET)
        use_eb = np.arange(r.shape[1])[None, :] < switch[:, None]
        low, high = np.where(use_eb, eb_low, low), np.where(use_eb, eb_high, high)
        # Out of bounds, the normal mixture decides from min_labeled_unbounded labels.
        enough = np.where(use_eb, enough, n >= UNBOUNDED_MIN_N)
    excludes = enough & ((low > 0) | (high < 0))
    return excludes, excludes & (np.abs(mean) >= BIAS_THRESHOLD)


def residuals(draw: Draw, mean: float, bounded: bool, bias: float) -> Draw:
    """Residuals ``y - f(s)`` of a calibrator ``f`` that predicts the mean, biased by
    ``bias``: 0/1 labels at their rate plus the bias (so they stay 0/1), the continuous
    kinds centred and scaled to a standard deviation of 0.2 (Gaussian), then shifted."""
    if bounded:
        return lambda rng, shape: (rng.random(shape) < mean + bias) - mean
    return lambda rng, shape: 0.2 * (draw(rng, shape) - mean) + bias


def residual_cell(
    rng: np.random.Generator, draw: Draw, paths: int, units: int
) -> dict[str, np.ndarray]:
    """First alarm (WARN or FAIL) and first FAIL label of each path, now and previous."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        r = draw(rng, (size, units)).astype(np.float64)
        alarm_at = np.full(size, np.inf)
        for i in range(size):
            detector = MeanShiftDetector(CHANGE_ALPHA, 100_000.0).update(r[i])
            if detector.alarm_time is not None:
                alarm_at[i] = detector.alarm_time
        for label, alpha, bounded in (
            ("now", ALPHA - CHANGE_ALPHA, True),
            ("previous", ALPHA, False),
        ):
            excludes, fails = interval_flags(r, alpha, bounded)
            # After the detector's alarm, an interval restarted from the next label.
            since_fail = np.zeros_like(fails)
            for i in np.flatnonzero(np.isfinite(alarm_at)):
                a = int(alarm_at[i])
                if a < units:
                    _, later = interval_flags(r[i : i + 1, a:], alpha, bounded)
                    since_fail[i, a:] = later[0]
            detector_flags = np.arange(1, units + 1)[None, :] >= alarm_at[:, None]
            for name, every in SCHEDULES.items():
                out.setdefault(f"{label}|alarm|{name}", []).append(
                    first_at_looks(excludes | detector_flags, every)
                )
                out.setdefault(f"{label}|fail|{name}", []).append(
                    first_at_looks(fails | since_fail, every)
                )
    return {key: np.concatenate(value) for key, value in out.items()}


# --- guardrails and the split test --------------------------------------------------------


def robbins_excludes_below(
    successes: np.ndarray, n: np.ndarray, p0: float, previous: bool = False
) -> np.ndarray:
    """``BernoulliSequence``'s interval lies above ``p0`` (a breach of the ceiling), as the
    guardrail gate reads it: at ``alpha / 4`` with the mixture of ``rate_prior(p0)``
    (previously: at ``alpha``, the uniform mixture)."""
    failures = n - successes
    a, b = rate_prior(p0) if p0 > 0 and not previous else (1.0, 1.0)
    alpha = ALPHA if previous else GUARDRAIL_ALPHA
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = betaln(a + successes, b + failures) - betaln(a, b)
        log_m = log_m - xlogy(successes, p0) - xlog1py(failures, -p0)
    return (log_m >= math.log(1 / alpha)) & (successes > p0 * n)


def rate_cell(rng: np.random.Generator, rate: float, ceiling: float, paths: int, units: int):
    out: dict[str, list[np.ndarray]] = {}
    n = np.arange(1, units + 1, dtype=np.float64)
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        hits = np.cumsum(rng.random((size, units)) < rate, axis=1).astype(np.float64)
        for label in ("now", "previous"):
            flags = robbins_excludes_below(hits, n[None, :], ceiling, label == "previous")
            for name, every in SCHEDULES.items():
                out.setdefault(f"{label}|{name}", []).append(first_at_looks(flags, every))
    return {key: np.concatenate(value) for key, value in out.items()}


def cost_cell(rng: np.random.Generator, paths: int, units: int) -> dict[str, np.ndarray]:
    """Unit cost exactly at its ceiling (mean 0.012), lognormal sigma 1.5."""
    ceiling = 0.012
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        cost = rng.lognormal(0.0, 1.5, (size, units)) * ceiling / math.exp(1.5**2 / 2)
        n, mean, var = running(cost)
        for label, alpha in (("now", GUARDRAIL_ALPHA), ("previous", ALPHA)):
            half = np.sqrt(var) * boundary(n, alpha, 2000.0)
            flags = (n >= MIN_N) & (mean - half > ceiling)
            for name, every in SCHEDULES.items():
                out.setdefault(f"{label}|{name}", []).append(first_at_looks(flags, every))
    return {key: np.concatenate(value) for key, value in out.items()}


def srm_log_e(canary: np.ndarray, total: np.ndarray, share: float) -> np.ndarray:
    """``SampleRatioSequence.log_e_value`` of counts (canary, control) at ``share``."""
    a_c, a_k, concentration = 100 * share, 100 * (1 - share), 100.0
    control = total - canary
    return (
        gammaln(concentration)
        - gammaln(concentration + total)
        + gammaln(a_c + canary)
        - gammaln(a_c)
        + gammaln(a_k + control)
        - gammaln(a_k)
        - xlogy(canary, share)
        - xlogy(control, 1 - share)
    )


def srm_cell(rng: np.random.Generator, actual: float, paths: int, units: int):
    """HOLD (the e-process past 1/0.001) after Flagger's delay: counted from the first
    canary unit (now) or from the deploy (previous: the delay's control units count)."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, paths, CHUNK):
        size = min(CHUNK, paths - start)
        canary = rng.random((size, units)) < actual
        canary[:, :FLAGGER_DELAY] = False
        first = canary.argmax(axis=1)
        counts = np.cumsum(canary, axis=1).astype(np.float64)
        since = np.arange(1, units + 1)[None, :] - first[:, None]
        now = srm_log_e(counts, np.maximum(since, 0).astype(np.float64), SHARE)
        now = np.where(since > 0, now, 0.0)
        previous = srm_log_e(counts, np.arange(1, units + 1, dtype=np.float64)[None, :], SHARE)
        for label, log_e in (("now", now), ("previous", previous)):
            flags = np.maximum.accumulate(log_e, axis=1) >= math.log(1 / SRM_ALPHA)
            for name, every in SCHEDULES.items():
                out.setdefault(f"{label}|{name}", []).append(first_at_looks(flags, every))
    return {key: np.concatenate(value) for key, value in out.items()}


# --- checks against the classes ---------------------------------------------------------------


def verify(rng: np.random.Generator) -> None:
    """The vectorized intervals are the classes' on sample paths."""
    # PairedDifferenceSequence, pair by pair.
    canary = rng.random(3000) < SHARE
    outcome = (rng.random(3000) < 0.3).astype(float)
    x, c = outcome[canary], outcome[~canary]
    k = min(x.size, c.size // 9)
    d = x[:k] - RATIO * c[: 9 * k].reshape(k, 9).mean(axis=1)
    low, high = eb_prefix(d[None, :], ALPHA, -RATIO, 1.0, CANARY_TARGET)
    pairs = PairedDifferenceSequence(SHARE, RATIO, ALPHA, target_time=CANARY_TARGET)
    for j in range(k):
        pairs.update(x[j : j + 1], c[9 * j : 9 * j + 9])
        if j in (0, 10, k - 1):
            got = pairs.interval
            assert math.isclose(got.high, high[0, j], rel_tol=1e-9, abs_tol=1e-12), (j, got)
            assert math.isclose(got.low, low[0, j], rel_tol=1e-9, abs_tol=1e-12), (j, got)
    # mean_difference_sequence with its floor, at the end of a path.
    y = rng.lognormal(0, 1.5, 3000)
    arm_t, arm_c = (
        arm_moments(y[None, :], canary[None, :]),
        arm_moments(y[None, :], ~canary[None, :]),
    )
    flags = difference_fails(arm_t, arm_c, LATENCY_RATIO, True, "low")
    result = mean_difference_sequence(
        Moments().update(y[canary]),
        Moments().update(y[~canary]),
        ratio=LATENCY_RATIO,
        target_time=CANARY_TARGET,
    )
    assert bool(flags[0, -1]) == bool(result.low > 0)
    (n_t, _, v_t), (n_c, _, v_c) = arm_t, arm_c
    pooled = ((n_t - 1) * v_t + (n_c - 1) * v_c) / (n_t + n_c - 2)
    v_t = ((n_t - 1) * v_t + POOLED_WEIGHT * pooled) / (n_t - 1 + POOLED_WEIGHT)
    v_c = ((n_c - 1) * v_c + POOLED_WEIGHT * pooled) / (n_c - 1 + POOLED_WEIGHT)
    sigma2 = v_t / (n_t / 3000) + LATENCY_RATIO**2 * v_c / (n_c / 3000)
    half = math.sqrt(sigma2[0, -1]) * boundary(np.array(3000.0), ALPHA, CANARY_TARGET)
    assert math.isclose(result.high - result.estimate, float(half), rel_tol=1e-9)
    # The residual interval: empirical Bernstein in bounds, the normal mixture outside.
    r = (rng.random(500) < 0.1) - 0.1
    sequence = NormalMixtureSequence(
        ALPHA - CHANGE_ALPHA, RESIDUAL_TARGET, MIN_N, bounds=(-1.0, 1.0)
    ).update(r)
    low, high = eb_prefix(r[None, :], ALPHA - CHANGE_ALPHA, -1.0, 1.0, RESIDUAL_TARGET)
    assert math.isclose(sequence.interval.low, low[0, -1], rel_tol=1e-9, abs_tol=1e-12)
    plain = NormalMixtureSequence(ALPHA, RESIDUAL_TARGET, MIN_N).update(r)
    _, mean, var = running(r[None, :])
    half = math.sqrt(var[0, -1]) * boundary(np.array(500.0), ALPHA, RESIDUAL_TARGET)
    assert math.isclose(plain.interval.high, mean[0, -1] + float(half), rel_tol=1e-9)
    # Robbins' mixture for a ceiling, and the split test's e-value.
    for s in (0, 3, 12, 25, 40):
        rate = BernoulliSequence.from_counts(2000, s, GUARDRAIL_ALPHA, *rate_prior(0.005))
        above = rate.interval.low > 0.005
        assert above == bool(robbins_excludes_below(np.array(s), np.array(2000.0), 0.005))
    srm = SampleRatioSequence([1 - SHARE, SHARE]).update([1700, 300])
    mine = srm_log_e(np.array(300.0), np.array(2000.0), SHARE)
    assert math.isclose(srm.log_e_value, float(mine), rel_tol=1e-9)


# --- the run ---------------------------------------------------------------------------------


def summarize(first: np.ndarray, horizon: int) -> dict[str, float | int | None]:
    hit = first <= horizon
    k = int(hit.sum())
    low, high = wilson(k, first.size)
    return {
        "paths": int(first.size),
        "fails": k,
        "rate": k / first.size,
        "wilson_low": low,
        "wilson_high": high,
        "median_units": float(np.median(first[hit])) if k else None,
    }


def run(args: argparse.Namespace) -> dict[str, list[dict[str, object]]]:
    rng = np.random.default_rng(20261207)
    verify(rng)
    only = set(args.only.split(","))
    units, rows = args.horizon, {"null": [], "power": []}

    def record(kind: str, gate: str, cell: str, result: dict[str, np.ndarray], **extra) -> None:
        for key, first in sorted(result.items()):
            parts = key.split("|")
            version, schedule = parts[0], parts[-1]
            measure = parts[1] if len(parts) == 3 else "fail"
            rows[kind].append(
                {
                    "gate": gate,
                    "cell": cell,
                    "measure": measure,
                    "version": version,
                    "schedule": schedule,
                    **extra,
                    **summarize(first, units),
                }
            )

    started = time.perf_counter()
    if "canary" in only:
        for name, (draw, mean, bounded) in kinds().items():
            control = scaled(draw, mean, mean, bounded)
            for null, factor in (("identical", 1.0), ("at threshold (-5%)", RATIO)):
                canary = scaled(draw, mean, factor * mean, bounded)
                record(
                    "null",
                    "canary quality",
                    f"{name}, {null}",
                    canary_cell(rng, control, canary, bounded, args.paths, units),
                )
            canary = scaled(draw, mean, 0.9 * mean, bounded)
            record(
                "power",
                "canary quality",
                f"{name}, quality -10%",
                canary_cell(rng, control, canary, bounded, args.power_paths, units),
            )
            print(f"canary {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # A success rate of 80% (resolved without escalation, say): the previous gate's
        # best case for power, where a drop of 10% is 4 points against a 5% threshold.
        success = scaled(*kinds()["0/1 at 50%"][:2], 0.8, True)
        record(
            "power",
            "canary quality",
            "0/1 at 80%, quality -10%",
            canary_cell(
                rng,
                success,
                scaled(*kinds()["0/1 at 50%"][:2], 0.72, True),
                True,
                args.power_paths,
                units,
            ),
        )
    if "latency" in only:
        for null, factor in (("identical", 1.0), ("at threshold (+10%)", LATENCY_RATIO)):
            record(
                "null",
                "canary latency",
                f"lognormal 1.5, {null}",
                latency_cell(rng, factor, args.paths, units),
            )
        print(f"latency: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if "residual" in only:
        for name, (draw, mean, bounded) in kinds().items():
            record(
                "null",
                "residual drift",
                f"{name}, mean 0",
                residual_cell(rng, residuals(draw, mean, bounded, 0.0), args.paths, units),
            )
            record(
                "power",
                "residual drift",
                f"{name}, bias +0.06",
                residual_cell(rng, residuals(draw, mean, bounded, 0.06), args.power_paths, units),
            )
            print(f"residual {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if "guardrail" in only:
        record(
            "null",
            "guardrail toxicity",
            "rate at its ceiling 0.005",
            rate_cell(rng, 0.005, 0.005, args.paths, units),
        )
        record(
            "null",
            "guardrail latency p95",
            "5% above the ceiling exactly",
            rate_cell(rng, 0.05, 0.05, args.paths, units),
        )
        record(
            "null",
            "guardrail unit cost",
            "lognormal 1.5, mean at its ceiling",
            cost_cell(rng, args.paths, units),
        )
        record(
            "power",
            "guardrail toxicity",
            "rate 1.5x its ceiling",
            rate_cell(rng, 0.0075, 0.005, args.power_paths, units),
        )
        record(
            "power",
            "guardrail PII",
            "one leak in 10,000 (a breach at the first)",
            rate_cell(rng, 1e-4, 0.0, args.power_paths, units),
        )
        print(f"guardrails: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if "srm" in only:
        record(
            "null",
            "srm",
            "10% split declared 10%, after 170 control-only units",
            srm_cell(rng, SHARE, args.paths, units),
        )
        record(
            "power", "srm", "9% split declared 10%", srm_cell(rng, 0.09, args.power_paths, units)
        )
        print(f"srm: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


GATES = {
    "canary": "canary quality",
    "latency": "canary latency",
    "residual": "residual drift",
    "guardrail": "guardrail",
    "srm": "srm",
}


def kept_from_before(rows: dict[str, list], only: set[str]) -> dict[str, list]:
    """With ``--only``, the other gates' rows of the last run, kept beside the new."""
    path = RESULTS / "validity.json"
    if only >= set(GATES) or not path.exists():
        return rows
    rerun = tuple(GATES[name] for name in only)
    before = json.loads(path.read_text())["rows"]
    return {
        kind: [r for r in before[kind] if not r["gate"].startswith(rerun)] + rows[kind]
        for kind in rows
    }


def tables(data: dict[str, object]) -> str:
    rows = data["rows"]  # type: ignore[index]
    lines = [
        f"Run of {data['date']}: {data['machine']}; {data['seconds']:.0f} s; horizon "
        f"{data['horizon']:,} units, alpha {ALPHA} (srm {SRM_ALPHA}).",
        "",
    ]
    null = [
        [
            r["gate"],
            r["cell"],
            r["measure"],
            r["schedule"],
            r["version"],
            f"{100 * r['rate']:.2f}%",
            f"[{100 * r['wilson_low']:.2f}, {100 * r['wilson_high']:.2f}]",
            r["paths"],
        ]
        for r in rows["null"]  # type: ignore[index]
    ]
    lines += [
        "### False FAILs under the null",
        "",
        markdown_table(
            ["gate", "null", "counts", "looks", "version", "false FAIL", "Wilson 95%", "paths"],
            null,
        ),
        "",
    ]
    power = [
        [
            r["gate"],
            r["cell"],
            r["measure"],
            r["schedule"],
            r["version"],
            f"{100 * r['rate']:.1f}%",
            "-" if r["median_units"] is None else f"{r['median_units']:,.0f}",
            r["paths"],
        ]
        for r in rows["power"]  # type: ignore[index]
    ]
    lines += [
        "### Power at fixed alternatives",
        "",
        markdown_table(
            [
                "gate",
                "alternative",
                "counts",
                "looks",
                "version",
                "FAIL by the horizon",
                "median units to FAIL",
                "paths",
            ],
            power,
        ),
    ]
    return "\n".join(lines) + "\n"


def summary(data: dict[str, object]) -> str:
    """The matrix at a look after every event, now beside before: docs/statistics.md."""
    rows = data["rows"]  # type: ignore[index]

    def side_by_side(kind: str) -> dict[tuple[str, str, str], dict[str, dict]]:
        cells: dict[tuple[str, str, str], dict[str, dict]] = {}
        for r in rows[kind]:
            if r["schedule"] == "every event":
                cells.setdefault((r["gate"], r["cell"], r["measure"]), {})[r["version"]] = r
        return cells

    def rate(r: dict | None, digits: int) -> str:
        return "unchanged" if r is None else f"{100 * r['rate']:.{digits}f}%"

    def median(r: dict | None) -> str:
        if r is None:
            return ""
        return "-" if r["median_units"] is None else f"{r['median_units']:,.0f}"

    lines = [
        f"Run of {data['date']} ({data['machine']}), horizon {data['horizon']:,} units, a look "
        "after every event; all schedules in `bench/results/validity.md`.",
        "",
        "| gate | null | counts | false FAIL now | Wilson 95% | before 2026-12-07 |",
        "|---|---|---|---|---|---|",
    ]
    for (gate, cell, measure), v in side_by_side("null").items():
        now = v["now"]
        wilson = f"[{100 * now['wilson_low']:.2f}, {100 * now['wilson_high']:.2f}]"
        lines.append(
            f"| {gate} | {cell} | {measure} | {rate(now, 2)} | {wilson} "
            f"| {rate(v.get('previous'), 2)} |"
        )
    lines += [
        "",
        "| gate | alternative | counts | FAIL by the horizon | median units | before | median |",
        "|---|---|---|---|---|---|---|",
    ]
    for (gate, cell, measure), v in side_by_side("power").items():
        now, before = v["now"], v.get("previous")
        lines.append(
            f"| {gate} | {cell} | {measure} | {rate(now, 1)} | {median(now)} "
            f"| {rate(before, 1)} | {median(before)} |"
        )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in data["rows"]["null"]  # type: ignore[index]
        if r["schedule"] == "every event" and r["measure"] == "fail"
    ]
    labels = sorted({f"{r['gate']}: {r['cell']}" for r in rows})
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.5))
    for offset, version, color in ((-0.18, "previous", "#bbbbbb"), (0.18, "now", "#1f77b4")):
        for i, label in enumerate(labels):
            match = [
                r for r in rows if f"{r['gate']}: {r['cell']}" == label and r["version"] == version
            ]
            if not match:
                continue
            r = match[0]
            ax.errorbar(
                100 * r["rate"],
                i + offset,
                xerr=[
                    [max(0.0, 100 * (r["rate"] - r["wilson_low"]))],
                    [max(0.0, 100 * (r["wilson_high"] - r["rate"]))],
                ],
                fmt="o",
                color=color,
                label=version if i == 0 else None,
            )
    ax.axvline(100 * ALPHA, color="red", linestyle="--", linewidth=1, label="alpha (srm: 0.1%)")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("false FAIL, % of null paths (a look after every event; Wilson 95%)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=2000)
    parser.add_argument("--power-paths", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=20_000)
    parser.add_argument("--only", default="canary,latency,residual,guardrail,srm")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if args.plot_only:
        data = json.loads((RESULTS / "validity.json").read_text())
    else:
        started = time.perf_counter()
        rows = run(args)
        rows = kept_from_before(rows, set(args.only.split(",")))
        data = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine_summary(),
            "seconds": time.perf_counter() - started,
            "horizon": args.horizon,
            "rows": rows,
        }
        (RESULTS / "validity.json").write_text(json.dumps(data, indent=1))
    (RESULTS / "validity.md").write_text(tables(data))
    (RESULTS / "validity_summary.md").write_text(summary(data))
    plot(data, RESULTS / "validity.png")
    print(tables(data))


if __name__ == "__main__":
    main()
