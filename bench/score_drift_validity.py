"""False alarms and detection of the score drift gate: time-uniform DKW against fixed-n.

    python bench/score_drift_validity.py [--paths 2000] [--shift-paths 500] [--horizon 20000]
                                         [--event-horizon 2000] [--seed 2026]

Scores are uniform on [0.001, 1]; the baseline is ``m`` of them (1,000: one window of
the moving baseline; 10,000: a calibration set), the live scores since the baseline are
drawn from the same distribution (the null) or from it shifted by ``d`` times its width
(a KS distance of ``d``). The gate's lower bound ``D - margin - sketch_error`` is read
after every batch of 100 scores up to ``--horizon`` and, for a shorter horizon, after
every score, from ``min_n`` = 100 on, as the gate reads it. Two margins:

* ``fixed-n``: the two-sample Smirnov critical distance at ``alpha`` (the gate before);
* ``time-uniform``: ``estimators.sequential_ks_margin`` (the gate now).

``D`` and the sketch error are those of ``QuantileSketch.ks_distance`` at 1% relative
accuracy, computed for all paths at once from bucket counts; ``verify_against_sketches``
checks them and the bounds against ``QuantileSketch`` and the estimators on sample paths
in every run. A false alarm is a path whose bound ever exceeds the true distance (under
the null: the drift is ever called significant) or ever reads a band (moderate, 0.2)
above the truth; rates carry 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estimators import (
    QuantileSketch,
    ks_critical_distance,
    sequential_ks_bounds,
    sequential_ks_margin,
    sketch_ks_bounds,
)

ALPHA, ACCURACY, MIN_N, BATCH = 0.05, 0.01, 100, 100
LOW, HIGH = 0.001, 1.0
MODERATE, SEVERE = 0.2, 0.3
MARGINS: dict[str, Callable[[int, int], float]] = {
    "fixed-n": lambda n, m: ks_critical_distance(n, m, ALPHA),
    "time-uniform": lambda n, m: float(sequential_ks_margin(n, m, ALPHA)),
}


@dataclass(frozen=True)
class Grid:
    """The sketch's buckets over the scores' range (with room for a shift of up to 1)."""

    log_gamma: float
    first: int
    size: int

    @classmethod
    def of(cls, accuracy: float) -> Grid:
        sketch = QuantileSketch(accuracy)
        first = sketch._key(LOW)
        return cls(sketch._log_gamma, first, sketch._key(2 * HIGH) - first + 1)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Bucket counts per path (rows) of ``values`` (paths x draws), keyed exactly as
        ``QuantileSketch.update`` keys them."""
        keys = np.ceil(np.log(values) / self.log_gamma).astype(np.int64) - self.first
        rows = np.arange(values.shape[0])[:, None] * self.size
        flat = np.bincount((keys + rows).ravel(), minlength=values.shape[0] * self.size)
        return flat.reshape(values.shape[0], self.size)


def draw(rng: np.random.Generator, paths: int, size: int, shift: float) -> np.ndarray:
    offset = shift * (HIGH - LOW)
    return rng.uniform(LOW + offset, HIGH + offset, (paths, size))


def distance_and_error(
    live: np.ndarray, n: int, base_cdf: np.ndarray, base_error: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``QuantileSketch.ks_distance`` for every path: the largest CDF gap at the bucket
    edges, and the largest bucket mass of either sketch."""
    gap = np.abs(np.cumsum(live, axis=1) / n - base_cdf).max(axis=1)
    return gap, np.maximum(live.max(axis=1) / n, base_error)


def verify_against_sketches(grid: Grid, rng: np.random.Generator) -> None:
    """The vectorized distance, error and bounds equal the estimators' on sample paths."""
    for shift, n, m in ((0.0, 500, 1000), (0.25, 2000, 300)):
        live, base = draw(rng, 3, n, shift), draw(rng, 3, m, 0.0)
        base_counts = grid.counts(base)
        gap, error = distance_and_error(
            grid.counts(live), n, np.cumsum(base_counts, axis=1) / m, base_counts.max(axis=1) / m
        )
        for path in range(3):
            a = QuantileSketch(ACCURACY).update(live[path])
            b = QuantileSketch(ACCURACY).update(base[path])
            for method, bounds in (
                ("time-uniform", sequential_ks_bounds(a, b, ALPHA)),
                ("fixed-n", sketch_ks_bounds(a, b, ALPHA)),
            ):
                low = max(0.0, gap[path] - MARGINS[method](n, m) - error[path])
                assert math.isclose(bounds.distance, gap[path], abs_tol=1e-12), method
                assert math.isclose(bounds.sketch_error, error[path], abs_tol=1e-12), method
                assert math.isclose(bounds.low, low, abs_tol=1e-12), method


def first_crossings(
    grid: Grid,
    rng: np.random.Generator,
    paths: int,
    m: int,
    shift: float,
    horizon: int,
    every: int,
) -> dict[str, dict[str, np.ndarray]]:
    """For each margin and level, the number of live scores at the first look where the
    lower bound crosses it (``inf``: never within ``horizon``). Levels: ``above_truth``
    (the bound exceeds the true distance ``shift``), ``significant`` (above 0),
    ``moderate`` and ``severe`` (the band reached)."""
    levels = {"above_truth": shift, "significant": 0.0, "moderate": MODERATE, "severe": SEVERE}
    levels_raw = {"above_truth_raw": shift}
    first = {k: {lv: np.full(paths, np.inf) for lv in [*levels, *levels_raw]} for k in MARGINS}
    base_counts = grid.counts(draw(rng, paths, m, 0.0))
    base_cdf, base_error = np.cumsum(base_counts, axis=1) / m, base_counts.max(axis=1) / m
    live = np.zeros((paths, grid.size), dtype=np.int64)
    for n in range(every, horizon + 1, every):
        live += grid.counts(draw(rng, paths, every, shift))
        if n < MIN_N:
            continue
        gap, error = distance_and_error(live, n, base_cdf, base_error)
        for method, margin in MARGINS.items():
            raw = gap - margin(n, m)  # the sampling margin alone, without the sketch's
            hit = (raw > shift) & np.isinf(first[method]["above_truth_raw"])
            first[method]["above_truth_raw"][hit] = n
            low = np.maximum(0.0, raw - error)
            for level, value in levels.items():
                crossed = (low >= value) if value >= MODERATE else (low > value)
                hit = crossed & np.isinf(first[method][level])
                first[method][level][hit] = n
    return first


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for a binomial proportion."""
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(first: np.ndarray, horizon: int) -> str:
    hits = int(np.sum(first <= horizon))
    low, high = wilson(hits, first.size)
    return f"{hits / first.size:6.2%} [{low:.2%}, {high:.2%}]"


def null_table(grid: Grid, rng: np.random.Generator, paths: int, horizon: int, event: int) -> None:
    print(f"\nNull: live and baseline from one distribution, {paths} paths, alpha = {ALPHA}")
    print("false alarm = ever significant (the bound above the true distance 0); the same")
    print("without subtracting the sketch's error (the sampling margin alone); ever moderate")
    print(
        f"{'looks':<13}{'m':>7}{'horizon':>9}  {'method':<13}{'ever significant':>27}"
        f"{'w/o sketch error':>27}{'ever moderate':>27}"
    )
    looks = sorted(h for h in {1000, 5000, horizon} if h <= horizon)
    for label, every, last, horizons in (
        (f"every {BATCH}", BATCH, horizon, looks),
        ("every score", 1, event, [event]),
    ):
        for m in (1000, 10_000):
            first = first_crossings(grid, rng, paths, m, 0.0, last, every)
            for h in horizons:
                for method in MARGINS:
                    print(
                        f"{label:<13}{m:>7}{h:>9}  {method:<13}"
                        f"{rate(first[method]['above_truth'], h):>27}"
                        f"{rate(first[method]['above_truth_raw'], h):>27}"
                        f"{rate(first[method]['moderate'], h):>27}"
                    )


def detection_table(grid: Grid, rng: np.random.Generator, paths: int, horizon: int) -> None:
    print(
        f"\nShifts: the live scores moved by a KS distance d, looks every {BATCH}, "
        f"{paths} paths, horizon {horizon}"
    )
    print(
        "first n: median of the paths that reached it (share reached); above truth: the "
        "bound ever exceeded d (miscoverage)"
    )
    print(
        f"{'d':>5}{'m':>7}  {'method':<13}{'significant':>22}{'moderate':>22}{'severe':>22}"
        f"{'above truth':>28}"
    )
    for d in (0.2, 0.25, 0.35, 0.5):
        for m in (1000, 10_000):
            first = first_crossings(grid, rng, paths, m, d, horizon, BATCH)
            for method in MARGINS:
                print(f"{d:>5}{m:>7}  {method:<13}", end="")
                for level in ("significant", "moderate", "severe"):
                    print(_reached(first[method][level]), end="")
                print(f"{rate(first[method]['above_truth'], horizon):>28}")


def _reached(first: np.ndarray) -> str:
    reached = np.isfinite(first)
    if not reached.any():
        return f"{'never':>22}"
    return f"{int(np.median(first[reached])):>12,} ({reached.mean():4.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", type=int, default=2000)
    parser.add_argument("--shift-paths", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=20_000)
    parser.add_argument("--event-horizon", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    grid = Grid.of(ACCURACY)
    started = time.perf_counter()
    verify_against_sketches(grid, rng)
    null_table(grid, rng, args.paths, args.horizon, args.event_horizon)
    detection_table(grid, rng, args.shift_paths, args.horizon)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
