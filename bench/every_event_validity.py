"""False WARN and FAIL of the covariate drift gate and the subgroup residual gate on null
paths, with a look after EVERY event.

    python bench/every_event_validity.py [--gate both|covariate|subgroup] [--paths 1000]
        [--length 20000] [--check 10] [--check-length 1000] [--seed 2026] [--out DIR]

The verdicts are the worker's: the covariates go through ``CovariateDrift.update`` and
``CovariateDrift.evaluate`` (``gates.covariate_drift_gate``), the residuals through
``SubgroupResiduals.update`` and ``SubgroupResiduals.evaluate``
(``gates.subgroup_residual_gates``, standing flags included), with the policy's defaults
unless a scenario says otherwise. Both estimators merge exactly however the events are
batched, so the state after event ``n`` is the same whether it was fed one event at a time
or in one batch.

Calling the gate after each of 20,000 events of 1,000 paths would take hours (0.7 ms per
covariate look, 4 ms per subgroup look), so every look is first screened by a bound that
can only be larger than what the gate reads, and the gate itself is called at every event
the screen cannot clear (and at every event after a path's first flag):

* covariates, numeric: the sketches' KS distance at their bucket edges is at most the
  samples' (``QuantileSketch.ks_distance``), which is at most the largest difference of the
  two empirical CDFs on a fixed grid plus the largest mass either sample puts strictly
  between two grid points (0 for integer levels on an integer grid). Where that bound is
  at most the gate's margin (``sequential_ks_margin``, the same call), the gate's lower
  bound is 0 and its verdict PASS (or INCONCLUSIVE).
* covariates, categorical: the total variation of the full counts, which pooling
  categories can only lower, against ``sequential_ks_margin`` at ``alpha / tv_event_count``.
* subgroups: each group's e-value after each of its events (the same closed form as
  ``BoundedMeanEProcess``, checked against it), the pooled ``other`` cell's for every cut
  it takes, each raised by a safety factor; e-BH (``estimators.e_benjamini_hochberg``, the
  gate's call) is monotone in the e-values, so where it rejects none of the raised ones the
  gate flags no group (a standing flag needs an earlier flag).

``--check`` paths per scenario of ``--check-length`` events are also judged with the gate
called after every event, unscreened: the bench fails if any of their outcomes differs, or
if the gate ever read a distance above the screen's bound.

Rates are of paths (out of ``--paths``) with at least one such verdict within the first
``L`` events after the baseline, for each ``L`` of ``--lengths``; intervals are exact 95%
Clopper-Pearson. The level: ``alpha`` for the covariate gate (its lower bound ever above
0), ``group_fdr`` for the subgroups (no group biased, so any flag is a false discovery and
the false discovery rate is the chance of any flag).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estimators import (
    SEVERITY_THRESHOLDS,
    BoundedMeanEProcess,
    default_bets,
    e_benjamini_hochberg,
    sequential_ks_margin,
)
from estimators._categories import _rank, tv_event_count
from monitor.config import CovariateDriftPolicy, ResidualDriftPolicy
from monitor.gates._subgroup_residuals import group_family_size
from monitor.subjects._covariates import CovariateDrift
from monitor.subjects._subgroups import SubgroupResiduals

LENGTHS = (10, 50, 200, 2000, 20_000)
NAME = "x"
SAFETY = math.log(2.0)  # the subgroup screen's e-values are raised by a factor 2
SLACK = 1e-9  # the covariate screen clears a look only below the margin by this much


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact interval of a binomial proportion ``k / n``."""
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


@dataclass
class PathResult:
    """The first event (after the baseline) at which each outcome was seen, if any."""

    first: dict[str, int | None] = field(default_factory=dict)
    gate_calls: int = 0
    above_bound: int = 0  # looks where the gate read a distance above the screen's bound


# --- covariates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Covariate:
    name: str
    draw: Callable[[np.random.Generator, int], np.ndarray]
    kind: str  # continuous, levels (integers on an integer grid) or categorical
    grid: np.ndarray | None = None  # numeric kinds: where the screen compares the CDFs


def _continuous_grid(quantile: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    inner = quantile(np.linspace(0, 1, 130)[1:-1])
    return np.concatenate([[-np.inf], inner, [np.inf]])


CAT8 = (
    np.array([f"d{i}" for i in range(8)]),
    np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03]),
)
_ZIPF = 1.0 / np.arange(1, 31)
CAT30 = (np.array([f"c{i}" for i in range(30)]), _ZIPF / _ZIPF.sum())
RARE2 = (np.array(["true", "false"]), np.array([0.2, 0.8]))

COVARIATES = {
    "uniform": Covariate(
        "uniform",
        lambda rng, n: rng.uniform(size=n),
        "continuous",
        _continuous_grid(lambda q: q),
    ),
    "normal": Covariate(
        "normal",
        lambda rng, n: rng.normal(size=n),
        "continuous",
        _continuous_grid(stats.norm.ppf),
    ),
    "lognormal": Covariate(
        "lognormal",
        lambda rng, n: rng.lognormal(5.0, 1.0, size=n),
        "continuous",
        _continuous_grid(lambda q: stats.lognorm.ppf(q, 1.0, scale=math.exp(5.0))),
    ),
    "poisson_levels": Covariate(
        "poisson_levels",
        lambda rng, n: rng.poisson(2.0, size=n).astype(np.float64),
        "levels",
        np.arange(-1.0, 60.0),
    ),
    "cat8": Covariate("cat8", lambda rng, n: rng.choice(CAT8[0], n, p=CAT8[1]), "categorical"),
    "cat30_pooled": Covariate(
        "cat30_pooled", lambda rng, n: rng.choice(CAT30[0], n, p=CAT30[1]), "categorical"
    ),
    "binary_rare": Covariate(
        "binary_rare", lambda rng, n: rng.choice(RARE2[0], n, p=RARE2[1]), "categorical"
    ),
}


def covariate_bound(covariate: Covariate, baseline: np.ndarray, live: np.ndarray) -> np.ndarray:
    """After each live value, a bound the gate's distance cannot exceed."""
    n = np.arange(1, live.size + 1, dtype=np.float64)[:, None]
    if covariate.kind == "categorical":
        cells = np.unique(np.concatenate([baseline, live]))
        base = np.searchsorted(cells, baseline)
        shares = np.bincount(base, minlength=cells.size) / baseline.size
        counts = np.cumsum(np.eye(cells.size, dtype=np.int32)[np.searchsorted(cells, live)], 0)
        return np.asarray(0.5 * np.abs(counts / n - shares).sum(axis=1))
    if covariate.kind == "continuous" and baseline.size <= EXACT_UP_TO:
        return exact_ks(baseline, live)
    grid = covariate.grid
    assert grid is not None
    base_cells = np.searchsorted(grid, baseline, side="left")  # grid[j-1] < v <= grid[j]
    live_cells = np.searchsorted(grid, live, side="left")
    cells = grid.size + 1
    base_mass = np.bincount(base_cells, minlength=cells) / baseline.size
    base_cdf = np.cumsum(base_mass)[: grid.size]
    per_cell = np.cumsum(np.eye(cells, dtype=np.int32)[live_cells], 0)
    live_cdf = np.cumsum(per_cell, 1)[:, : grid.size] / n
    distance = np.abs(live_cdf - base_cdf).max(axis=1)
    if covariate.kind == "levels":
        # Every value is a grid point: both CDFs are flat between grid points.
        assert np.isin(baseline, grid).all() and np.isin(live, grid).all()
        return np.asarray(distance)
    # A CDF moves between two grid points by at most the mass strictly between them.
    inside = np.maximum((per_cell / n).max(axis=1), base_mass.max())
    return np.asarray(distance + inside)


EXACT_UP_TO = 1000  # baselines up to this size: the samples' own KS distance, exactly


def exact_ks(baseline: np.ndarray, live: np.ndarray) -> np.ndarray:
    """The two samples' KS distance after each live value (no value in both samples):
    ``F_n - G_m`` is largest just before a baseline value, ``G_m - F_n`` at one."""
    grid = np.sort(baseline)
    m, n = grid.size, np.arange(1, live.size + 1, dtype=np.float64)[:, None]
    assert not np.isin(live, grid).any()
    below = np.searchsorted(grid, live, side="left")  # baseline values below each
    live_cdf = np.cumsum(np.cumsum(np.eye(m + 1, dtype=np.int32)[below], 0), 1)[:, :m] / n
    before = np.arange(m) / m  # G_m just before the j-th baseline value
    up = (live_cdf - before).max(axis=1)
    down = (before + 1.0 / m - live_cdf).max(axis=1)
    return np.asarray(np.maximum(up, down))


def covariate_margin(covariate: Covariate, policy: CovariateDriftPolicy, m: int, n: np.ndarray):
    alpha = policy.alpha
    if covariate.kind == "categorical":
        alpha = alpha / tv_event_count(policy.max_categories)
    return sequential_ks_margin(n, m, alpha)


def _column(values: np.ndarray) -> dict[str, np.ndarray]:
    column = np.empty(values.size, dtype=object)
    column[:] = values.tolist()
    return {NAME: column}


OUTCOMES = ("significant", "WARN", "FAIL")


def _note(result: PathResult, at: int, verdict: Any) -> None:
    seen = {
        "significant": bool(verdict.evidence.get("significant")),
        "WARN": verdict.verdict == "WARN",
        "FAIL": verdict.verdict == "FAIL",
    }
    for outcome, happened in seen.items():
        if happened and result.first.get(outcome) is None:
            result.first[outcome] = at


def covariate_path(
    covariate: Covariate,
    policy: CovariateDriftPolicy,
    rng: np.random.Generator,
    length: int,
    screen: bool = True,
    margin: Callable[[int, np.ndarray], np.ndarray] | None = None,
    until: str | None = None,
) -> PathResult:
    """One null path: the baseline, then ``length`` values, the gate read after each
    (``until``: only until that outcome is seen). ``margin(m, n)``: the screen's margin,
    when the gate is given another one (a test's deliberately broken gate)."""
    baseline = covariate.draw(rng, policy.baseline_n)
    live = covariate.draw(rng, length)
    drift = CovariateDrift()
    drift.update(_column(baseline), policy)
    result = PathResult(dict.fromkeys(OUTCOMES))
    n = np.arange(1, length + 1)
    bound = covariate_bound(covariate, baseline, live)
    if screen:
        if margin is None:
            noise = covariate_margin(covariate, policy, baseline.size, n)
        else:
            noise = margin(baseline.size, n)
        looks = np.flatnonzero((bound > noise - SLACK) & (n >= policy.min_n)) + 1
    else:
        looks = n
    # Once a lower bound above 0 was seen, only a WARN or a FAIL can still be new.
    band = bound > noise + SEVERITY_THRESHOLDS["moderate"] - SLACK if screen else None
    fed = 0
    for at in looks.tolist():
        if band is not None and result.first["significant"] is not None and not band[at - 1]:
            continue
        drift.update(_column(live[fed:at]), policy)
        fed = at
        (verdict,) = drift.evaluate("sim", policy, 1)
        result.gate_calls += 1
        estimate = verdict.evidence["estimate"]
        if estimate is not None and estimate > bound[at - 1] + 1e-12:
            result.above_bound += 1
        _note(result, at, verdict)
        if until is not None and result.first[until] is not None:
            break
    return result


# --- subgroups ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    covariates: dict[str, tuple[np.ndarray, np.ndarray]]  # covariate -> (values, shares)
    outcome: str  # "calibrated": p ~ U[0.05, 0.95]; "rare": p ~ U[0.1, 0.3]


def _shares(*weights: float) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def _names(prefix: str, k: int) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(k)])


FAMILIES_OF_GROUPS = {
    "2 groups (90/10)": {"g": (_names("g", 2), _shares(0.9, 0.1))},
    "5 equal": {"g": (_names("g", 5), np.full(5, 0.2))},
    "10 unequal (30%..1%)": {
        "g": (_names("g", 10), _shares(0.30, 0.20, 0.15, 0.10, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01))
    },
    "25 zipf (pooled past 10)": {"g": (_names("g", 25), _ZIPF[:25] / _ZIPF[:25].sum())},
    "10 unequal x 3 tiers": {
        "g": (_names("g", 10), _shares(0.30, 0.20, 0.15, 0.10, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01)),
        "tier": (_names("t", 3), _shares(0.6, 0.3, 0.1)),
    },
}


def _log_e_prefixes(x: np.ndarray, bound: float) -> np.ndarray:
    """``log E`` of ``BoundedMeanEProcess(-bound, bound)`` against 0 after each value of
    ``x`` (its closed form, for all prefixes at once)."""
    lam = np.asarray(default_bets())
    psi = -np.log1p(-lam) - lam
    centred = np.cumsum(x)[:, None] / bound
    squares = np.cumsum(x * x)[:, None] / bound**2
    terms = np.concatenate([lam * centred - psi * squares, -lam * centred - psi * squares], 1)
    return np.asarray(logsumexp(terms, axis=1) - math.log(terms.shape[1]))


def screen_error(rng: np.random.Generator, size: int = 300) -> float:
    """The largest gap between :func:`_log_e_prefixes` and ``BoundedMeanEProcess`` fed one
    value at a time (the screen is sound only if it is far below ``SAFETY``)."""
    x = rng.choice([-0.2, 0.8], size, p=[0.8, 0.2]) + rng.uniform(-0.05, 0.05, size)
    process, gaps = BoundedMeanEProcess(-1.0, 1.0), []
    for value, log_e in zip(x.tolist(), _log_e_prefixes(x, 1.0).tolist(), strict=True):
        process.update([value])
        gaps.append(abs(math.log(process.e_value(0.0)) - log_e))
    return max(gaps)


def _held(log_e: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """A group's ``log E`` at every event of the path: 0 before its first value, then the
    value after its latest one."""
    held = np.zeros(size)
    if rows.size:
        index = np.zeros(size, dtype=np.int64)
        index[rows] = np.arange(1, rows.size + 1)
        index = np.maximum.accumulate(index)
        held = np.concatenate([[0.0], log_e])[index]
    return held


LogE = Callable[[np.ndarray, float], np.ndarray]


def subgroup_screen(
    family: Family,
    policy: ResidualDriftPolicy,
    groups: dict[str, np.ndarray],
    x: np.ndarray,
    log_e_prefixes: LogE = _log_e_prefixes,
) -> np.ndarray:
    """The events at which e-BH could flag a group: per event, a ``log E`` at least each
    group's (named, and the pooled cell at each cut it takes), raised by ``SAFETY``.
    ``log_e_prefixes``: the groups' ``log E`` after each value, when the gate is given
    another e-value (a test's deliberately broken gate)."""
    size = x.size
    bound = policy.label_range[1] - policy.label_range[0]
    columns: list[np.ndarray] = []
    for name in family.covariates:
        values = groups[name]
        for value in np.unique(values):
            rows = np.flatnonzero(values == value)
            columns.append(_held(log_e_prefixes(x[rows], bound), rows, size))
        # The pooled cell: every value of the categories ranked at or after the cut; the
        # cut is the (max_groups + 1)-th smallest rank seen so far.
        ranks = np.array([_rank(str(v)) for v in values], dtype=np.uint64)
        first = {}
        for row, r in enumerate(ranks.tolist()):
            first.setdefault(r, row)
        if len(first) > policy.max_groups:
            order = sorted(first.items(), key=lambda item: item[1])
            seen: list[int] = []
            cuts: list[tuple[int, int]] = []  # (from row, cut rank)
            for r, row in order:
                seen.append(r)
                if len(seen) > policy.max_groups:
                    cut = sorted(seen)[policy.max_groups]
                    if not cuts or cuts[-1][1] != cut:
                        cuts.append((row, cut))
            for i, (start, cut) in enumerate(cuts):
                end = cuts[i + 1][0] if i + 1 < len(cuts) else size
                rows = np.flatnonzero(ranks >= cut)
                held = _held(log_e_prefixes(x[rows], bound), rows, size)
                held[:start] = 0.0
                held[end:] = 0.0
                columns.append(held)
    log_e = np.stack(columns, 1) + SAFETY
    m, q = group_family_size(policy), policy.group_fdr
    candidates = np.flatnonzero(log_e.max(axis=1) >= math.log(1.0 / q))
    return np.array(
        [
            at
            for at in candidates.tolist()
            # The m largest: each group the gate judges has its own column, at least as large.
            if e_benjamini_hochberg(np.exp(np.minimum(np.sort(log_e[at])[::-1][:m], 709.0)), q, m)[
                1
            ]
        ],
        dtype=np.int64,
    )


def draw_family(
    family: Family, rng: np.random.Generator, length: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    groups = {
        name: rng.choice(values, length, p=shares)
        for name, (values, shares) in family.covariates.items()
    }
    if family.outcome == "rare":
        p = rng.uniform(0.1, 0.3, length)
    else:
        p = rng.uniform(0.05, 0.95, length)
    y = (rng.random(length) < p).astype(np.float64)
    return groups, y - p


def subgroup_path(
    family: Family,
    policy: ResidualDriftPolicy,
    rng: np.random.Generator,
    length: int,
    screen: bool = True,
    log_e_prefixes: LogE = _log_e_prefixes,
    until: str | None = None,
) -> PathResult:
    """One null path of ``length`` labels, the gates read after each (``until``: only
    until that outcome is seen)."""
    groups, x = draw_family(family, rng, length)
    result = PathResult({"flag": None, "WARN": None, "FAIL": None})
    if screen:
        looks = subgroup_screen(family, policy, groups, x, log_e_prefixes) + 1
    else:
        looks = np.arange(1, length + 1)
    residuals = SubgroupResiduals()
    fed = 0
    pending = looks.tolist()
    while pending or (result.first["flag"] is not None and fed < length):
        # After the first flag every event is judged (a flag stands; WARN may turn FAIL).
        if result.first["flag"] is not None:
            at = fed + 1
            pending = [a for a in pending if a > at]
        else:
            at = pending.pop(0)
        columns = {name: _objects(values[fed:at]) for name, values in groups.items()}
        residuals.update(x[fed:at], columns, policy)
        fed = at
        verdicts = residuals.evaluate("sim", policy, 1)
        result.gate_calls += 1
        outcomes = {v.verdict for v in verdicts}
        for outcome in ("WARN", "FAIL"):
            if outcome in outcomes and result.first[outcome] is None:
                result.first[outcome] = at
        if outcomes & {"WARN", "FAIL"} and result.first["flag"] is None:
            result.first["flag"] = at
        if result.first["FAIL"] is not None or (until and result.first[until] is not None):
            break
    return result


def _objects(values: np.ndarray) -> np.ndarray:
    column = np.empty(values.size, dtype=object)
    column[:] = values.tolist()
    return column


# --- the tables ---------------------------------------------------------------------------


def rates(results: list[PathResult], outcome: str, lengths: tuple[int, ...]) -> list[dict]:
    rows = []
    for length in lengths:
        k = sum(r.first[outcome] is not None and r.first[outcome] <= length for r in results)
        rows.append(
            {"length": length, "k": k, "n": len(results), "ci": clopper_pearson(k, len(results))}
        )
    return rows


def cell(row: dict) -> str:
    low, high = row["ci"]
    return f"{row['k']}/{row['n']} [{low:.4f}, {high:.4f}]"


def agree(screened: PathResult, full: PathResult) -> bool:
    return screened.first == full.first and full.above_bound == 0 and screened.above_bound == 0


def run_covariates(args: argparse.Namespace, rng: np.random.Generator) -> tuple[list, list[str]]:
    policies = {
        "default (baseline 5000, min_n 100)": CovariateDriftPolicy(covariates=(NAME,)),
        "small (baseline 200, min_n 1)": CovariateDriftPolicy(
            covariates=(NAME,), baseline_n=200, min_n=1
        ),
    }
    out, lines = [], []
    lengths = tuple(L for L in args.lengths if args.length >= L)
    header = "| covariate | policy | outcome | " + " | ".join(f"L = {L}" for L in lengths)
    lines += [
        f"Covariate drift gate, alpha = {CovariateDriftPolicy().alpha}: paths with the "
        "outcome within the first L values after the baseline [95% Clopper-Pearson].",
        "",
        header + " | gate calls per path | unscreened check |",
        "|---|---|---|" + "---|" * len(lengths) + "---|---|",
    ]
    for covariate in COVARIATES.values():
        for label, policy in policies.items():
            started = time.perf_counter()
            results = [
                covariate_path(covariate, policy, rng, args.length) for _ in range(args.paths)
            ]
            checks = []
            for _ in range(args.check):
                state = rng.bit_generator.state
                full = covariate_path(covariate, policy, rng, args.check_length, screen=False)
                rng.bit_generator.state = state
                screened = covariate_path(covariate, policy, rng, args.check_length)
                checks.append(agree(screened, full))
            if not all(checks):
                raise SystemExit(f"screen disagrees with the gate: {covariate.name}, {label}")
            calls = float(np.mean([r.gate_calls for r in results]))
            above = sum(r.above_bound for r in results)
            if above:
                raise SystemExit(f"the gate read a distance above the bound: {covariate.name}")
            row = {
                "covariate": covariate.name,
                "policy": label,
                "paths": args.paths,
                "gate_calls_per_path": calls,
                "checked_paths": len(checks),
                "seconds": time.perf_counter() - started,
            }
            for outcome in OUTCOMES:
                row[outcome] = rates(results, outcome, lengths)
                lines.append(
                    f"| {covariate.name} | {label} | {outcome} | "
                    + " | ".join(cell(r) for r in row[outcome])
                    + f" | {calls:.1f} | {len(checks)} of {args.check_length} agree |"
                )
            out.append(row)
            print(lines[-3], lines[-2], lines[-1], f"{row['seconds']:.0f} s", sep="\n", flush=True)
    return out, lines


def run_subgroups(args: argparse.Namespace, rng: np.random.Generator) -> tuple[list, list[str]]:
    out, lines = [], []
    lengths = tuple(L for L in args.lengths if args.length >= L)
    q = ResidualDriftPolicy().group_fdr
    lines += [
        f"Subgroup residual gate, e-BH at q = {q}, min_labeled = "
        f"{ResidualDriftPolicy().min_labeled}: paths with a flag (WARN or FAIL), a WARN, "
        "a FAIL of any group within the first L labels [95% Clopper-Pearson].",
        "",
        "| groups | outcome | m | verdict | "
        + " | ".join(f"L = {L}" for L in lengths)
        + " | gate calls per path | unscreened check |",
        "|---|---|---|---|" + "---|" * len(lengths) + "---|---|",
    ]
    for family_name, covariates in FAMILIES_OF_GROUPS.items():
        for outcome in ("calibrated", "rare"):
            family = Family(family_name, covariates, outcome)
            policy = ResidualDriftPolicy(group_by=tuple(covariates))
            started = time.perf_counter()
            results = [subgroup_path(family, policy, rng, args.length) for _ in range(args.paths)]
            checks = []
            for _ in range(args.check):
                state = rng.bit_generator.state
                full = subgroup_path(family, policy, rng, args.check_length, screen=False)
                rng.bit_generator.state = state
                screened = subgroup_path(family, policy, rng, args.check_length)
                checks.append(agree(screened, full))
            if not all(checks):
                raise SystemExit(f"screen disagrees with the gate: {family_name}, {outcome}")
            gap = screen_error(rng)
            if gap > 1e-6:
                raise SystemExit(f"the screen's e-values are off by {gap}")
            calls = float(np.mean([r.gate_calls for r in results]))
            m = group_family_size(policy)
            row = {
                "groups": family_name,
                "outcome": outcome,
                "m": m,
                "paths": args.paths,
                "gate_calls_per_path": calls,
                "checked_paths": len(checks),
                "seconds": time.perf_counter() - started,
            }
            for verdict in ("flag", "WARN", "FAIL"):
                row[verdict] = rates(results, verdict, lengths)
                lines.append(
                    f"| {family_name} | {outcome} | {m} | {verdict} | "
                    + " | ".join(cell(r) for r in row[verdict])
                    + f" | {calls:.1f} | {len(checks)} of {args.check_length} agree |"
                )
            out.append(row)
            print(lines[-3], lines[-2], lines[-1], f"{row['seconds']:.0f} s", sep="\n", flush=True)
    return out, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gate", choices=("both", "covariate", "subgroup"), default="both")
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--length", type=int, default=20_000)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--check", type=int, default=10)
    parser.add_argument("--check-length", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    document: dict[str, Any] = {"args": vars(args)}
    text = ["# False WARN and FAIL with a look after every event", ""]
    if args.gate in ("both", "covariate"):
        document["covariate"], lines = run_covariates(args, rng)
        text += [*lines, ""]
    if args.gate in ("both", "subgroup"):
        document["subgroup"], lines = run_subgroups(args, rng)
        text += [*lines, ""]
    seconds = time.perf_counter() - started
    document["seconds"] = seconds
    text.append(f"{args.paths} paths of {args.length} events, seed {args.seed}, {seconds:.0f} s.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.gate == "both" else f"_{args.gate}"
    (out / f"every_event_validity{suffix}.json").write_text(json.dumps(document, indent=2))
    (out / f"every_event_validity{suffix}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
