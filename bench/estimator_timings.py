"""Cost of one batch update of 10,000 values, per estimator (median of repeated runs).

    python bench/estimator_timings.py [--size 10000] [--repeat 200]

Also, for reference, the same 10,000 values through River's per-value ``stats.Var`` and
``drift.ADWIN`` (what a per-event monitor pays). Writes bench/results/estimators.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _harness import machine_summary, markdown_table  # noqa: E402

from estimators import (  # noqa: E402
    BernoulliSequence,
    EmpiricalBernsteinSequence,
    MeanShiftDetector,
    Moments,
    NormalMixtureSequence,
    QuantileSketch,
)


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.1, args.size)
    unit = rng.uniform(size=args.size)
    outcomes = rng.binomial(1, 0.05, args.size)
    moments, sequence = Moments(), NormalMixtureSequence()
    bernstein, bernoulli = EmpiricalBernsteinSequence(), BernoulliSequence()
    detector, sketch = MeanShiftDetector(), QuantileSketch(0.01)
    cases: dict[str, Callable[[], object]] = {
        "Moments.update": lambda: moments.update(values),
        "NormalMixtureSequence.update + interval": lambda: sequence.update(values).interval,
        "EmpiricalBernsteinSequence.update + interval": lambda: bernstein.update(unit).interval,
        "BernoulliSequence.update + interval": lambda: bernoulli.update(outcomes).interval,
        "QuantileSketch.update": lambda: sketch.update(unit),
        "MeanShiftDetector.update (10 shifts)": lambda: detector.update(values),
    }
    rows = []
    for name, action in cases.items():
        seconds = median_seconds(action, args.repeat)
        rows.append([name, seconds * 1e6, seconds * 1e9 / args.size])
    try:
        from river import drift, stats

        def river_per_value() -> None:
            variance, adwin = stats.Var(), drift.ADWIN()
            for value in values.tolist():
                variance.update(value)
                adwin.update(value)

        seconds = median_seconds(river_per_value, max(3, args.repeat // 20))
        rows.append(
            ["River stats.Var + drift.ADWIN, per value", seconds * 1e6, seconds * 1e9 / args.size]
        )
    except ImportError:
        print("river not installed (pip install -e '.[bench]'): reference row skipped")
    table = markdown_table([f"batch of {args.size:,} values", "microseconds", "ns per value"], rows)
    header = f"Machine: {machine_summary()}; median of {args.repeat} runs."
    print(f"{header}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "estimators.md").write_text(f"{header}\n\n{table}\n")


if __name__ == "__main__":
    main()
