from __future__ import annotations

import numpy as np

from estimators import MeanShiftDetector, RestartingMeanSequence


def test_state_round_trip_continues_identically_across_the_alarm() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, 12_000)
    x[10_000:] += 0.05
    straight = RestartingMeanSequence()
    resumed = RestartingMeanSequence()
    for chunk in np.array_split(x[:10_500], 7):
        straight.update(chunk)
        resumed = RestartingMeanSequence.from_state(resumed.update(chunk).to_state())
    for chunk in np.array_split(x[10_500:], 5):
        straight.update(chunk)
        resumed = RestartingMeanSequence.from_state(resumed.update(chunk).to_state())
    assert resumed == straight
    assert straight.changes == 1 and straight.change_at is not None
    assert 10_000 < straight.change_at < 12_000
    assert straight.alarm_shift is not None and straight.alarm_shift > 0
    assert straight.since_change is not None
    assert straight.since_change.n == 12_000 - straight.change_at


def test_no_alarm_no_restart_and_no_shift() -> None:
    rng = np.random.default_rng(2)
    sequence = RestartingMeanSequence().update(rng.normal(0, 1, 5000))
    assert (sequence.changes, sequence.change_at, sequence.alarm_shift) == (0, None, None)


def test_a_state_stored_with_the_earlier_detector_loads_and_goes_on() -> None:
    rng = np.random.default_rng(3)
    sequence = RestartingMeanSequence().update(rng.normal(0, 1, 2000))
    state = sequence.to_state()
    old = dict(state["detector"], shifts=[0.05, 0.1, 0.2, 0.4, 0.8], clip=3.0)
    for added in ("statistic", "alarm_shift"):
        del old[added]
    old["log_w"] = [0.0] * 10
    loaded = RestartingMeanSequence.from_state({**state, "detector": old})
    assert isinstance(loaded.detector, MeanShiftDetector)
    assert loaded.detector.statistic_kind == "shiryaev_roberts" and loaded.n == 2000
    loaded.update(rng.normal(1.0, 1, 200))
    assert loaded.changes == 1 and loaded.change_at is not None
    assert 2000 < loaded.change_at <= 2200


def test_the_restart_begins_at_the_alarm_label_inside_a_batch_not_at_its_end() -> None:
    # Batches of 500 labels: the detector crosses inside one, and the restarted interval
    # holds exactly the labels after the crossing (so the gate's since_labeled_n and the
    # size of the change are those of the alarm label, whatever the batching).
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 30_000)
    x[20_000:] += 0.5
    sequence = RestartingMeanSequence()
    for chunk in np.array_split(x, 60):
        sequence.update(chunk)
    alarm = sequence.detector.alarm_time
    assert alarm is not None and alarm > 20_000 and alarm % 500 != 0
    assert sequence.change_at == alarm
    assert sequence.since_change is not None
    assert sequence.since_change.n == 30_000 - alarm
    assert np.isclose(sequence.since_change.mean, x[alarm:].mean(), rtol=1e-12)
