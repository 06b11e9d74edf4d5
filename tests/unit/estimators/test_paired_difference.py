from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import EmpiricalBernsteinSequence, PairedDifferenceSequence


def arms(rng: np.random.Generator, units: int, share: float, p_t: float, p_c: float):
    canary = rng.random(units) < share
    outcome = (rng.random(units) < np.where(canary, p_t, p_c)).astype(float)
    return outcome[canary], outcome[~canary]


def test_pairs_are_blocks_cut_in_arrival_order() -> None:
    rng = np.random.default_rng(1)
    treatment, control = rng.random(95), rng.random(1000)
    pairs = PairedDifferenceSequence(0.1, ratio=0.95).update(treatment, control)
    k = min(95, 1000 // 9)
    assert (pairs.block_treatment, pairs.block_control, pairs.n_pairs) == (1, 9, k)
    direct = treatment[:k] - 0.95 * control[: 9 * k].reshape(k, 9).mean(axis=1)
    expected = EmpiricalBernsteinSequence(0.05, -0.95, 1.0, target_time=2000).update(direct)
    assert pairs.pairs.to_state() == pytest.approx(expected.to_state())
    assert pairs.interval.estimate == pytest.approx(direct.mean())
    assert len(pairs.pending_control) == 1000 - 9 * k and pairs.pending_treatment == []
    # A canary above half the traffic: blocks of canary values against one control value.
    assert PairedDifferenceSequence(0.9).block_treatment == 9


def test_batching_does_not_change_the_sequence() -> None:
    rng = np.random.default_rng(2)
    treatment, control = arms(rng, 5000, 0.1, 0.2, 0.2)
    whole = PairedDifferenceSequence(0.1).update(treatment, control)
    pieces = PairedDifferenceSequence(0.1)
    cuts_t = np.sort(rng.choice(treatment.size, 30, replace=False))
    cuts_c = np.sort(rng.choice(control.size, 30, replace=False))
    for part_t, part_c in zip(np.split(treatment, cuts_t), np.split(control, cuts_c), strict=True):
        pieces.update(part_t, part_c)
        pieces = PairedDifferenceSequence.from_state(pieces.to_state())  # as stored between
    a, b = pieces.interval, whole.interval
    assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high), rel=1e-9)
    assert (a.n_treatment, a.n_control) == (b.n_treatment, b.n_control)
    assert pieces.pending_control == whole.pending_control
    assert pieces.pending_treatment == whole.pending_treatment


def test_an_outcome_out_of_range_stops_the_pairs() -> None:
    pairs = PairedDifferenceSequence(0.5).update([0.2, 0.4], [0.3, 0.1])
    assert pairs.in_range and pairs.n_pairs == 2
    pairs.update([1.5], [0.3])
    assert not pairs.in_range and pairs.n_pairs == 2
    pairs.update([0.5], [0.5])  # frozen
    assert pairs.n_pairs == 2


def test_a_starved_arm_keeps_only_the_most_recent_values() -> None:
    pairs = PairedDifferenceSequence(0.1, max_pending=50).update([], np.arange(120) / 120)
    assert pairs.dropped == 70 and len(pairs.pending_control) == 50
    assert pairs.pending_control[0] == pytest.approx(70 / 120)


def test_no_pairs_no_interval() -> None:
    result = PairedDifferenceSequence(0.1).update([1.0], [])
    assert math.isnan(result.interval.estimate) and math.isinf(result.interval.high)


def test_refuses_a_split_without_two_arms() -> None:
    with pytest.raises(ValueError, match="treatment_share"):
        PairedDifferenceSequence(0.0)
    with pytest.raises(ValueError, match="ratio"):
        PairedDifferenceSequence(0.1, ratio=math.inf)


@pytest.mark.parametrize(("p_c", "ratio"), [(0.05, 1.0), (0.2, 0.95)])
def test_covers_delta_at_every_pair_from_the_first(p_c: float, ratio: float) -> None:
    """Identical 0/1 arms at 5%, and a canary exactly at the 95% threshold (delta = 0 in
    both): the sequence, looked at every 100 units, misses delta on at most alpha of 300
    paths (``bench/validity.py`` has the full matrix)."""
    rng = np.random.default_rng(3)
    missed = 0
    for _ in range(300):
        treatment, control = arms(rng, 6000, 0.1, ratio * p_c, p_c)
        pairs = PairedDifferenceSequence(0.1, ratio=ratio)
        looks = zip(np.array_split(treatment, 60), np.array_split(control, 60), strict=True)
        for t, c in looks:
            if not pairs.update(t, c).interval.contains(0.0):
                missed += 1
                break
    assert missed / 300 <= 0.05
