"""False alarms and detection delay of driftgate's residual gate against the alternatives.

    python bench/detection.py [--null-paths 10000] [--shift-paths 200] [--river-null-paths 300]

Residual streams of ``--horizon`` values (10^5), checked every 100 values (one batch), as
the worker sees them. Methods:

* ``driftgate gate``: the all-time normal-mixture confidence sequence plus the change
  detector that restarts it (what ``StreamState`` does), alarm = the interval excludes 0;
* ``driftgate CS only``: the all-time sequence without the detector;
* ``fixed-n z, every batch``: a fixed-n 95% interval recomputed after every batch;
* River ``ADWIN`` and ``PageHinkley`` at their defaults, and tuned on null paths to the
  same 5% false-alarm rate over the horizon;
* ``oracle CUSUM``: knows the shift and the noise level; threshold tuned to 5%.

The driftgate methods are computed for many paths at once with numpy. The vectorized
code is the same arithmetic as ``NormalMixtureSequence`` and ``MeanShiftDetector``, and
it is checked against those classes on sample paths in every run (``verify_against_classes``).
Writes bench/results/detection.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _harness import machine_summary, markdown_table  # noqa: E402

from estimators import MeanShiftDetector, NormalMixtureSequence, optimal_rho  # noqa: E402
from estimators._change_detector import DEFAULT_SHIFTS  # noqa: E402

BATCH = 100
ALPHA = 0.05
DISTRIBUTIONS = ("gaussian", "bernoulli", "student_t3")
SHIFTS = (0.05, 0.1, 0.25, 0.5)


def sample(
    distribution: str, rng: np.random.Generator, paths: int, horizon: int, shift: float, start: int
) -> np.ndarray:
    """Zero-mean residuals of unit standard deviation, shifted by ``shift`` from ``start``.

    Bernoulli: ``y - p`` for ``y ~ Bernoulli(0.2)``, scaled by its sd 0.4; heavy tails:
    Student t with 3 degrees of freedom, scaled by its sd ``sqrt(3)``.
    """
    if distribution == "gaussian":
        x = rng.standard_normal((paths, horizon))
    elif distribution == "bernoulli":
        x = ((rng.random((paths, horizon)) < 0.2).astype(np.float64) - 0.2) / 0.4
    else:
        x = rng.standard_t(3, (paths, horizon)) / math.sqrt(3.0)
    x[:, start:] += shift
    return x


# --- the driftgate methods, vectorized over paths ------------------------------------


def cs_first_alarm(
    x: np.ndarray, start_index: np.ndarray | None = None, min_n: int = 30
) -> np.ndarray:
    """Per path, the first batch end at which the normal-mixture interval excludes 0.

    ``start_index`` (per path) restarts the sequence there (values before are ignored).
    Returns the alarm time (number of values seen) or -1.
    """
    paths, horizon = x.shape
    rho = optimal_rho(1000, ALPHA)
    log_term = 2 * math.log(1 / ALPHA)
    ends = np.arange(BATCH, horizon + 1, BATCH)
    running = np.cumsum(x, axis=1)
    running_sq = np.cumsum(x * x, axis=1)
    sums, squares = running[:, ends - 1], running_sq[:, ends - 1]
    if start_index is None:
        start_index = np.zeros(paths, dtype=np.int64)
    before = np.maximum(start_index - 1, 0)
    rows = np.arange(paths)
    base = np.where(start_index > 0, running[rows, before], 0.0)
    base_sq = np.where(start_index > 0, running_sq[rows, before], 0.0)
    del running, running_sq
    n = ends[None, :] - start_index[:, None]
    valid = n >= min_n
    n_safe = np.maximum(n, 2)
    total = sums - base[:, None]
    total_sq = squares - base_sq[:, None]
    mean = total / n_safe
    variance = np.maximum((total_sq - n_safe * mean**2) / (n_safe - 1), 0.0)
    half = (
        np.sqrt(variance) * np.sqrt((n_safe + rho) * (np.log1p(n_safe / rho) + log_term)) / n_safe
    )
    alarm = valid & (np.abs(mean) > half)
    first = np.where(alarm.any(axis=1), ends[np.argmax(alarm, axis=1)], -1)
    return first


def detector_alarms(x: np.ndarray) -> np.ndarray:
    """MeanShiftDetector's alarm time per path (batches of 100, scale estimated), or -1."""
    paths, horizon = x.shape
    detector = MeanShiftDetector(ALPHA, 100_000)
    signed = np.concatenate([np.asarray(DEFAULT_SHIFTS), -np.asarray(DEFAULT_SHIFTS)])
    log_threshold = math.log(detector.threshold)
    log_w = np.full((paths, signed.size), -np.inf)
    alarm = np.full(paths, -1)
    count, total, total_sq = np.zeros(paths), np.zeros(paths), np.zeros(paths)
    d = signed[None, :, None]
    for start in range(0, horizon, BATCH):
        batch = x[:, start : start + BATCH]
        if start == 0:
            n_, s_, q_ = batch.shape[1], batch.sum(axis=1), (batch * batch).sum(axis=1)
        else:
            n_, s_, q_ = count, total, total_sq
        variance = (q_ - s_ * s_ / n_) / np.maximum(n_ - 1, 1)
        scale = np.where(variance > 0, np.sqrt(np.maximum(variance, 1e-300)), 1.0)
        z = np.clip(batch / scale[:, None], -detector.clip, detector.clip)
        c = np.cumsum(d * z[:, None, :] - 0.5 * d * d, axis=2)
        floor = np.concatenate([-np.maximum(log_w, 0.0)[:, :, None], c[:, :, :-1]], axis=2)
        w = c - np.minimum.accumulate(floor, axis=2)
        # The mixture is at most its largest term: look closely only where that is high
        # (as MeanShiftDetector.update does).
        top = w.max(axis=1)
        near = (top >= log_threshold) & (alarm < 0)[:, None]
        rows = np.flatnonzero(near.any(axis=1))
        if rows.size:
            sub_w, sub_top = w[rows], top[rows]
            mixture = np.log(np.mean(np.exp(sub_w - sub_top[:, None, :]), axis=1)) + sub_top
            crossed = (mixture >= log_threshold) & near[rows]
            hit = crossed.any(axis=1)
            alarm[rows[hit]] = start + np.argmax(crossed[hit], axis=1) + 1
        log_w = w[:, :, -1]
        count = count + batch.shape[1]
        total = total + batch.sum(axis=1)
        total_sq = total_sq + (batch * batch).sum(axis=1)
    return alarm


def driftgate_gate(x: np.ndarray) -> np.ndarray:
    """All-time interval, or the interval restarted after the detector's alarm."""
    overall = cs_first_alarm(x)
    change = detector_alarms(x)
    restarted = np.full(x.shape[0], -1)
    detected = change > 0
    if detected.any():
        restarted[detected] = cs_first_alarm(x[detected], change[detected])
    both = np.where(
        overall < 0, restarted, np.where(restarted < 0, overall, np.minimum(overall, restarted))
    )
    return both


def verify_against_classes(rng: np.random.Generator) -> None:
    """The vectorized code above must agree with the product's classes."""
    x = sample("gaussian", rng, 4, 20_000, 0.0, 0)
    x[2:, 12_000:] += 0.3
    alarms = detector_alarms(x)
    cs = cs_first_alarm(x)
    for path in range(4):
        detector = MeanShiftDetector(ALPHA, 100_000)
        sequence = NormalMixtureSequence(ALPHA, 1000, 30)
        first_cs = -1
        for start in range(0, x.shape[1], BATCH):
            detector.update(x[path, start : start + BATCH])
            sequence.update(x[path, start : start + BATCH])
            if first_cs < 0 and not sequence.interval.contains(0.0):
                first_cs = start + BATCH
        assert (detector.alarm_time or -1) == alarms[path], (
            path,
            detector.alarm_time,
            alarms[path],
        )
        assert first_cs == cs[path], (path, first_cs, cs[path])


# --- the alternatives ----------------------------------------------------------------


def fixed_n_first_alarm(x: np.ndarray) -> np.ndarray:
    ends = np.arange(BATCH, x.shape[1] + 1, BATCH)
    sums = np.cumsum(x, axis=1)[:, ends - 1]
    squares = np.cumsum(x * x, axis=1)[:, ends - 1]
    mean = sums / ends
    sd = np.sqrt(np.maximum((squares - ends * mean**2) / (ends - 1), 0))
    alarm = np.abs(mean) > 1.959964 * sd / np.sqrt(ends)
    return np.where(alarm.any(axis=1), ends[np.argmax(alarm, axis=1)], -1)


def oracle_cusum_stat(x: np.ndarray, shift: float) -> np.ndarray:
    """Running two-sided CUSUM for a known shift and unit variance; max over time per check."""
    out = []
    for sign in (1.0, -1.0):
        increments = sign * shift * x - 0.5 * shift * shift
        c = np.cumsum(increments, axis=1)
        w = c - np.minimum.accumulate(
            np.concatenate([np.zeros((x.shape[0], 1)), c[:, :-1]], axis=1), axis=1
        )
        out.append(w)
    return np.maximum(out[0], out[1])


def oracle_first_alarm(x: np.ndarray, shift: float, threshold: float) -> np.ndarray:
    w = oracle_cusum_stat(x, shift)
    crossed = w >= threshold
    first = np.where(crossed.any(axis=1), np.argmax(crossed, axis=1) + 1, -1)
    return np.where(first > 0, ((first + BATCH - 1) // BATCH) * BATCH, -1)  # seen at the batch end


def tune_oracle(null: np.ndarray, shift: float) -> float:
    maxima = np.concatenate(
        [
            oracle_cusum_stat(chunk, shift).max(axis=1)
            for chunk in np.array_split(null, max(1, null.shape[0] // 200))
        ]
    )
    return float(np.quantile(maxima, 1 - ALPHA))


def river_first_alarm(x: np.ndarray, make) -> np.ndarray:  # type: ignore[no-untyped-def]
    alarms = np.full(x.shape[0], -1)
    for path, values in enumerate(x):
        detector = make()
        for t, value in enumerate(values.tolist(), start=1):
            detector.update(value)
            if detector.drift_detected:
                alarms[path] = ((t + BATCH - 1) // BATCH) * BATCH
                break
    return alarms


def river_methods(null_for_tuning: np.ndarray) -> dict[str, object]:
    from river import drift

    methods: dict[str, object] = {
        "ADWIN default": lambda: drift.ADWIN(),
        "PageHinkley default": lambda: drift.PageHinkley(),
    }
    # The most sensitive setting (largest delta, smallest threshold) that keeps 5%.
    for delta in (2e-3, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-9):
        rate = (river_first_alarm(null_for_tuning, lambda d=delta: drift.ADWIN(delta=d)) > 0).mean()
        if rate <= ALPHA:
            methods[f"ADWIN tuned (delta={delta:g})"] = lambda d=delta: drift.ADWIN(delta=d)
            break
    for threshold in (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0):
        rate = (
            river_first_alarm(null_for_tuning, lambda h=threshold: drift.PageHinkley(threshold=h))
            > 0
        ).mean()
        if rate <= ALPHA:
            methods[f"PageHinkley tuned (threshold={threshold:g})"] = lambda h=threshold: (
                drift.PageHinkley(threshold=h)
            )
            break
    return methods


# --- the run ------------------------------------------------------------------------


def delay_summary(alarms: np.ndarray, start: int) -> tuple[float, float]:
    """Median delay among paths that alarmed after the change; share that missed."""
    detected = alarms >= start
    if not detected.any():
        return math.inf, 1.0
    return float(np.median(alarms[detected] - start)), float(1 - detected.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=100_000)
    parser.add_argument("--null-paths", type=int, default=10_000)
    parser.add_argument("--shift-paths", type=int, default=200)
    parser.add_argument("--river-null-paths", type=int, default=300)
    parser.add_argument("--river-shift-paths", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    verify_against_classes(rng)
    began = time.time()

    false_alarms: dict[str, dict[str, float]] = {}
    delays: list[list[object]] = []
    for distribution in DISTRIBUTIONS:
        fa = false_alarms[distribution] = {}
        null_alarm = {"driftgate gate": [], "driftgate CS only": [], "fixed-n z, every batch": []}
        for chunk in range(0, args.null_paths, 500):
            x = sample(distribution, rng, min(500, args.null_paths - chunk), args.horizon, 0.0, 0)
            null_alarm["driftgate gate"].append(driftgate_gate(x) > 0)
            null_alarm["driftgate CS only"].append(cs_first_alarm(x) > 0)
            null_alarm["fixed-n z, every batch"].append(fixed_n_first_alarm(x) > 0)
        for name, parts in null_alarm.items():
            fa[name] = float(np.concatenate(parts).mean())
        river_null = sample(distribution, rng, args.river_null_paths, args.horizon, 0.0, 0)
        river = river_methods(river_null)
        for name, make in river.items():
            fa[f"River {name}"] = float((river_first_alarm(river_null, make) > 0).mean())
        oracle_null = sample(distribution, rng, min(args.null_paths, 2000), args.horizon, 0.0, 0)
        thresholds = {shift: tune_oracle(oracle_null, shift) for shift in SHIFTS}
        fa["oracle CUSUM (tuned)"] = ALPHA
        print(f"{distribution} false alarms: {fa}", flush=True)

        for shift in SHIFTS:
            for when, start in (("start", 0), ("halfway", args.horizon // 2)):
                x = sample(distribution, rng, args.shift_paths, args.horizon, shift, start)
                row = {
                    "driftgate gate": delay_summary(driftgate_gate(x), start),
                    "driftgate CS only": delay_summary(cs_first_alarm(x), start),
                    "fixed-n z, every batch": delay_summary(fixed_n_first_alarm(x), start),
                    "oracle CUSUM (tuned)": delay_summary(
                        oracle_first_alarm(x, shift, thresholds[shift]), start
                    ),
                }
                for name, make in river.items():
                    row[f"River {name}"] = delay_summary(
                        river_first_alarm(x[: args.river_shift_paths], make), start
                    )
                oracle = row["oracle CUSUM (tuned)"][0]
                for name, (median, missed) in row.items():
                    delays.append(
                        [
                            distribution,
                            shift,
                            when,
                            name,
                            median,
                            missed,
                            median / oracle if oracle and math.isfinite(median) else math.inf,
                        ]
                    )
                print(
                    f"{distribution} shift {shift} {when}: { {k: v[0] for k, v in row.items()} }",
                    flush=True,
                )

    fa_rows = [[d, name, rate] for d, rates in false_alarms.items() for name, rate in rates.items()]
    fa_table = markdown_table(["residuals", "method", "false-alarm rate over the horizon"], fa_rows)
    delay_table = markdown_table(
        [
            "residuals",
            "shift (sd)",
            "starts",
            "method",
            "median delay (values)",
            "missed",
            "delay / oracle",
        ],
        delays,
    )
    header = (
        f"Machine: {machine_summary()}\nHorizon {args.horizon}, checks every {BATCH}; "
        f"null paths: {args.null_paths} (driftgate, fixed-n), {args.river_null_paths} (River), "
        f"shift paths: {args.shift_paths} ({args.river_shift_paths} for River). "
        f"Took {time.time() - began:.0f} s."
    )
    print(f"\n{header}\n\n{fa_table}\n\n{delay_table}")
    (args.out / "detection.md").write_text(f"{header}\n\n{fa_table}\n\n{delay_table}\n")
    (args.out / "detection.json").write_text(
        json.dumps(
            {"header": header, "false_alarms": false_alarms, "delays": delays},
            indent=1,
            default=str,
        )
    )
    plot(delays, args.out / "detection.png")


def plot(delays: list[list[object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    names = list(dict.fromkeys(r[3] for r in delays if r[0] == "gaussian"))
    colors = {name: f"C{i}" for i, name in enumerate(names)}  # one color a method, both panels
    for axis, when in zip(axes, ("start", "halfway"), strict=True):
        rows = [r for r in delays if r[0] == "gaussian" and r[2] == when]
        for name in names:
            points = [(r[1], r[4]) for r in rows if r[3] == name and math.isfinite(r[4])]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=name, color=colors[name])
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"Gaussian residuals, shift from the {when}")
        axis.set_xlabel("shift (standard deviations)")
    axes[0].set_ylabel("median detection delay (values)")
    handles = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    axes[1].legend(list(handles.values()), list(handles), fontsize=7)
    axes[0].text(
        0.02,
        0.02,
        "missing points: never detected (ADWIN: no change within its window)",
        transform=axes[0].transAxes,
        fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if sys.argv[1:] == ["--plot-only"]:  # redraw from the last results
        saved = json.loads((ROOT / "bench/results/detection.json").read_text())
        plot(
            [[*r[:4], float(r[4]), *r[5:]] for r in saved["delays"]],
            ROOT / "bench/results/detection.png",
        )
    else:
        main()
