"""A stream's residual history: a point per minute of event time, in a ring of seven days."""

from __future__ import annotations

import numpy as np
import orjson

from monitor import Policy
from monitor.pipeline import RawMessage
from monitor.store import _keys as fields
from monitor.store._keys import (
    HISTORY_MINUTES,
    HISTORY_RECORD_SIZE,
    HistoryPoint,
    KeyLayout,
    decode_history_ring,
)
from monitor.subjects._labels import LabelHandler, LabelState
from monitor.subjects._residual_history import ResidualHistory, fold_by_minute

KEYS = KeyLayout().subject("stream", "p")
START = 1_795_341_600.0  # a minute's start


def labeled(ts: np.ndarray, seed: int = 5) -> RawMessage:
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, ts.size)
    y = s + rng.normal(0.0, 0.1, ts.size)
    events = [
        {"event_id": f"e{i}", "ts": float(t), "stream": "p", "s": float(a), "y": float(b)}
        for i, (t, a, b) in enumerate(zip(ts, s, y, strict=True))
    ]
    return RawMessage("labels", 0, 0, orjson.dumps(events))


def apply(ring: bytearray, records: list[tuple[str, int, bytes]]) -> None:
    """What SETRANGE does to the ring's string."""
    for key, offset, record in records:
        assert key == KEYS.residual_history
        if len(ring) < offset + len(record):
            ring.extend(bytes(offset + len(record) - len(ring)))
        ring[offset : offset + len(record)] = record


def folded(handler: LabelHandler, state: LabelState, message: RawMessage) -> LabelState:
    for events in handler.decode([message]).subjects.values():
        handler.update("p", state, events, float(events.ts.max()))
    return state


def test_one_batch_over_several_minutes_gives_a_point_per_minute() -> None:
    handler = LabelHandler(Policy())
    model = handler.model
    # A state stored before the history existed: no residual_history field at all.
    stored = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}
    state = model.load("p", stored)
    ts = START + np.sort(np.random.default_rng(1).uniform(0, 5 * 60, 900))
    folded(handler, state, labeled(ts))
    ring = bytearray()
    apply(ring, model.ring_records(KEYS, state))
    points = decode_history_ring(bytes(ring))

    minutes = np.floor(ts / 60).astype(int)
    assert [p.minute for p in points] == sorted(set(minutes.tolist()))
    # Each point: the interval after the minute's last label, here all-time: n counts
    # every label up to the end of its minute.
    assert [p.n for p in points] == [int((minutes <= p.minute).sum()) for p in points]
    last = model.evaluate("p", state, 0.0).verdicts[0].evidence
    assert (points[-1].n, points[-1].estimate, points[-1].ci_low, points[-1].ci_high) == (
        last["n"],
        last["estimate"],
        last["ci_low"],
        last["ci_high"],
    )
    # Written once: the next write carries only new points; the span goes with the state.
    assert model.ring_records(KEYS, state) == []
    span = model.dump(state)[fields.RESIDUAL_HISTORY]
    assert span == f"{minutes[0]}:{minutes[-1]}"
    again = model.load("p", {**stored, fields.RESIDUAL_HISTORY: span.encode()})
    assert (again.history.origin, again.history.newest) == (minutes[0], minutes[-1])


def test_minute_by_minute_is_a_batch_per_minute() -> None:
    """The statistics end as batches cut at the minutes would leave them (the change
    detector's scale moves per batch, so cutting is not free of effect: it is the same
    effect as any other batching of the same labels)."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 0.1, 3000), rng.normal(0.15, 0.1, 500)])
    ts = START + np.arange(values.size) * 0.7
    model = LabelHandler(Policy()).model
    empty = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}
    batches, by_minute = model.load("p", empty), model.load("p", empty)
    minutes = np.floor(ts / 60).astype(int)
    for minute in sorted(set(minutes.tolist())):
        batches.residuals.update(values[minutes == minute])
    points: list[int] = []

    def point_of(minute: int) -> HistoryPoint:
        points.append(minute)
        return HistoryPoint(minute, by_minute.residuals.n, None, None, None)

    fold_by_minute(by_minute.residuals, values, ts, by_minute.history, point_of)
    assert by_minute.residuals.to_state() == batches.residuals.to_state()
    assert points == sorted(set(minutes.tolist()))
    assert by_minute.residuals.all_time.n == values.size
    assert np.isclose(by_minute.residuals.all_time.mean, values.mean())


def test_late_labels_count_in_the_newest_minute() -> None:
    history = ResidualHistory(origin=100, newest=105)
    ts = np.array([104 * 60 + 5.0, 106 * 60 + 1.0, 103 * 60.0, 107 * 60 + 59.0])
    assert history.minutes(ts).tolist() == [105, 106, 106, 107]


def test_the_ring_keeps_seven_days_and_its_size_is_bounded() -> None:
    history = ResidualHistory()
    ring = bytearray()
    first = 28_000_000
    for minute in range(first, first + HISTORY_MINUTES + 90, 3):
        history.record(HistoryPoint(minute, minute - first, 0.01, -0.02, 0.04))
        if minute % 300 == 0:
            apply(ring, [(KEYS.residual_history, o, r) for o, r in history.take_records()])
    apply(ring, [(KEYS.residual_history, o, r) for o, r in history.take_records()])
    assert len(ring) <= HISTORY_MINUTES * HISTORY_RECORD_SIZE
    points = decode_history_ring(bytes(ring))
    newest = points[-1].minute
    assert newest == history.newest
    assert all(newest - HISTORY_MINUTES < p.minute for p in points)
    assert [p.minute for p in points] == list(range(points[0].minute, newest + 1, 3))
    assert points[0].minute - 3 <= newest - HISTORY_MINUTES  # nothing of the week lost


def test_an_offline_history_never_written_stays_bounded() -> None:
    history = ResidualHistory()
    for minute in range(1, 3 * HISTORY_MINUTES):
        history.record(HistoryPoint(minute, 1, 0.0, -1.0, 1.0))
    assert len(history.pending) <= HISTORY_MINUTES + 1
    assert min(history.pending) > history.newest - HISTORY_MINUTES  # type: ignore[operator]
