from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import MeanShiftDetector


def scalar_reference(x: np.ndarray, shifts: tuple[float, ...], threshold: float) -> int | None:
    """The textbook recursion W_t = max(W_{t-1}, 1) L_t, one value at a time (z clipped at 3)."""
    signed = np.array([*shifts, *(-s for s in shifts)])
    w = np.zeros(signed.size)
    for t, value in enumerate(np.clip(x, -3, 3), start=1):
        w = np.maximum(w, 1.0) * np.exp(signed * value - signed**2 / 2)
        if w.mean() >= threshold:
            return t
    return None


def test_batched_recursion_matches_the_scalar_one() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=4000)
    x[3000:] += 0.4
    detector = MeanShiftDetector(alpha=0.05, horizon=1000, scale=1.0)
    for chunk in np.array_split(x, 23):
        detector.update(chunk)
    assert detector.alarm_time == scalar_reference(x, detector.shifts, detector.threshold)
    assert detector.alarm_time is not None and detector.alarm_time > 3000


def test_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=3000)
    straight = MeanShiftDetector().update(x[:1000]).update(x[1000:])
    resumed = MeanShiftDetector.from_state(MeanShiftDetector().update(x[:1000]).to_state())
    resumed.update(x[1000:])
    assert resumed == straight
    assert math.isclose(resumed.statistic, straight.statistic, rel_tol=1e-12)


@pytest.mark.slow
def test_false_alarms_within_the_horizon_stay_below_alpha() -> None:
    rng = np.random.default_rng(7)
    paths, horizon = 400, 10_000
    alarms = 0
    for _ in range(paths):
        detector = MeanShiftDetector(alpha=0.05, horizon=horizon)  # scale estimated
        for chunk in rng.standard_t(5, horizon).reshape(10, -1) / math.sqrt(5 / 3):
            detector.update(chunk)
        alarms += detector.alarm
    assert alarms / paths <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / paths)


def test_a_late_shift_is_found_about_as_fast_as_an_early_one() -> None:
    rng = np.random.default_rng(8)
    delays_late, delays_early = [], []
    for _ in range(20):
        late = MeanShiftDetector(scale=1.0).update(rng.normal(0, 1, 50_000))
        late.update(rng.normal(0.25, 1, 5000))
        early = MeanShiftDetector(scale=1.0).update(rng.normal(0.25, 1, 5000))
        assert late.alarm and early.alarm
        delays_late.append(late.alarm_time - 50_000)
        delays_early.append(early.alarm_time)
    assert np.median(delays_late) < 1.5 * np.median(delays_early)
