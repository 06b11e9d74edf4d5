"""False bands and detection of the covariate drift gate, on simulated paths.

    python bench/covariate_drift_validity.py [--paths 500] [--horizon 20000] [--every 500]
                                             [--baseline 5000] [--seed 2026] [--out DIR]

Two covariates, as the gate holds them: a numeric one (uniform on [0, 1], in a
``QuantileSketch`` at the policy's accuracy) and a categorical one (8 categories of
unequal shares, in ``CategoryCounts`` with the policy's 10 named). The baseline is the
first ``--baseline`` values; the gate's lower bound (``sequential_ks_bounds`` with
``low_from_edges``, ``sequential_tv_bounds``) is read after every ``--every`` values up to
``--horizon``. Under the null a path is a false alarm when the bound ever leaves 0
(``significant``) and a false band when it ever reads moderate (0.2) or more; with a
shift of distance 0.25 (numeric: uniform moved by 0.25; categorical: 0.25 of the mass
moved from the two largest categories to the two smallest), the values needed for the
moderate band. Rates carry 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estimators import (
    CategoryCounts,
    QuantileSketch,
    sequential_ks_bounds,
    sequential_tv_bounds,
    severity_band,
)
from monitor.config import CovariateDriftPolicy

POLICY = CovariateDriftPolicy()
CELLS = np.array([f"d{i}" for i in range(8)])
SHARES = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
MOVED = SHARES + np.array([-0.125, -0.125, 0, 0, 0, 0, 0.125, 0.125])  # TV 0.25


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def numeric(rng: np.random.Generator, size: int, shift: float) -> np.ndarray:
    return rng.uniform(shift, 1 + shift, size)


def categorical(rng: np.random.Generator, size: int, shift: float) -> list[str]:
    return rng.choice(CELLS, size, p=MOVED if shift else SHARES).tolist()  # type: ignore[no-any-return]


def path(kind: str, rng: np.random.Generator, args: argparse.Namespace, shift: float) -> dict:
    """One path: the first look where the bound leaves 0 and where it reads moderate."""
    if kind == "numeric":
        new, draw, bounds = (
            lambda: QuantileSketch(POLICY.relative_accuracy),
            numeric,
            lambda a, b: sequential_ks_bounds(a, b, POLICY.alpha, low_from_edges=True),
        )
    else:
        new, draw, bounds = (
            lambda: CategoryCounts(POLICY.max_categories),
            categorical,
            lambda a, b: sequential_tv_bounds(a, b, POLICY.alpha),
        )
    baseline = new().update(draw(rng, args.baseline, 0.0))
    live = new()
    significant = moderate = None
    for seen in range(args.every, args.horizon + 1, args.every):
        live.update(draw(rng, args.every, shift))
        if seen < POLICY.min_n:
            continue
        low = bounds(live, baseline).low
        if significant is None and low > 0:
            significant = seen
        if severity_band(low) != "minor":
            moderate = seen
            break
    return {"significant": significant, "moderate": moderate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", type=int, default=500)
    parser.add_argument("--shift-paths", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=20_000)
    parser.add_argument("--shift-horizon", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--baseline", type=int, default=POLICY.baseline_n)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.time()
    rows = []
    for kind in ("numeric", "categorical"):
        null = [path(kind, rng, args, 0.0) for _ in range(args.paths)]
        alarms = sum(p["significant"] is not None for p in null)
        bands = sum(p["moderate"] is not None for p in null)
        long = argparse.Namespace(**{**vars(args), "horizon": args.shift_horizon})
        shifted = [path(kind, rng, long, 0.25) for _ in range(args.shift_paths)]
        found = sorted(p["moderate"] for p in shifted if p["moderate"] is not None)
        rows.append(
            {
                "kind": kind,
                "null_paths": args.paths,
                "ever_significant": alarms / args.paths,
                "ever_significant_ci": wilson(alarms, args.paths),
                "ever_moderate": bands / args.paths,
                "ever_moderate_ci": wilson(bands, args.paths),
                "shift_paths": args.shift_paths,
                "shift_moderate_share": len(found) / args.shift_paths,
                "values_to_moderate_median": int(np.median(found)) if found else None,
                "values_to_moderate_p90": int(np.quantile(found, 0.9)) if found else None,
            }
        )
    seconds = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "covariate_drift_validity.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "seconds": seconds}, indent=2)
    )
    lines = [
        "# Covariate drift: false bands and detection",
        "",
        f"Baseline {args.baseline} values, looks every {args.every}; null horizon "
        f"{args.horizon}, shift horizon {args.shift_horizon}; alpha {POLICY.alpha}, "
        f"seed {args.seed}, {seconds:.0f} s.",
        "",
        "| covariate | null paths | ever significant | ever moderate | shift 0.25: moderate "
        "| values to moderate (median, p90) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sig, mod = r["ever_significant_ci"], r["ever_moderate_ci"]
        lines.append(
            f"| {r['kind']} | {r['null_paths']} | {r['ever_significant']:.3f} "
            f"[{sig[0]:.3f}, {sig[1]:.3f}] | {r['ever_moderate']:.3f} [{mod[0]:.3f}, "
            f"{mod[1]:.3f}] | {r['shift_moderate_share']:.2f} of {r['shift_paths']} | "
            f"{r['values_to_moderate_median']}, {r['values_to_moderate_p90']} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "covariate_drift_validity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
