"""The late-label join: halves become one pair once, whatever the batching, and what is
stored (the records in buckets, the state) gives back exactly what waited."""

from __future__ import annotations

import itertools
import math

import numpy as np
import orjson
import pytest

from monitor import Policy
from monitor.config import LabelsPolicy
from monitor.pipeline import RawMessage
from monitor.store import _keys as fields
from monitor.subjects._labels import LabelHandler
from monitor.subjects._late_labels import LateLabelJoin, MemoryBuckets, response_digests

from .test_labels import EMPTY, NOW, fresh_state

HOUR = 3600.0
WINDOW = 7 * 24 * HOUR


def offer(join: LateLabelJoin, halves: list[tuple[str, float, float | None, float | None]]):
    """``(response id, ts, s, y)`` rows, one batch."""
    ids = response_digests([h[0] for h in halves])
    ts = np.array([h[1] for h in halves])
    s = np.array([math.nan if h[2] is None else h[2] for h in halves])
    y = np.array([math.nan if h[3] is None else h[3] for h in halves])
    return join.offer(ids, ts, s, y, now=float(ts.max()))


def test_a_score_and_its_label_an_hour_later_are_one_pair_at_the_scores_time() -> None:
    join = LateLabelJoin(WINDOW)
    assert len(offer(join, [("r1", NOW, 0.7, None)])) == 0
    assert (join.waiting, join.joined) == (1, 0)
    pairs = offer(join, [("r1", NOW + HOUR, None, 1.0)])
    assert (pairs.s.tolist(), pairs.y.tolist(), pairs.ts.tolist()) == ([0.7], [1.0], [NOW])
    assert (join.waiting, join.joined, join.expired) == (0, 1, 0)
    # A second label for the same response waits for a score of its own.
    assert len(offer(join, [("r1", NOW + 2 * HOUR, None, 0.0)])) == 0
    assert (join.waiting, join.joined) == (1, 1)


def test_a_label_first_waits_for_its_score() -> None:
    join = LateLabelJoin(WINDOW)
    offer(join, [("r1", NOW, None, 0.0)])
    pairs = offer(join, [("r2", NOW + 1, 0.2, None), ("r1", NOW + 2, 0.9, None)])
    assert (pairs.rows.tolist(), pairs.s.tolist(), pairs.y.tolist()) == ([1], [0.9], [0.0])
    assert pairs.ts.tolist() == [NOW + 2]  # the score's time
    assert (join.waiting, join.joined) == (1, 1)


def test_a_repeated_half_does_not_replace_the_one_waiting() -> None:
    join = LateLabelJoin(WINDOW)
    offer(join, [("r1", NOW, 0.1, None), ("r1", NOW + 1, 0.8, None)])
    assert (join.waiting, join.repeated) == (1, 1)
    assert offer(join, [("r1", NOW + 2, None, 1.0)]).s.tolist() == [0.1]


def test_halves_expire_by_event_time_and_their_buckets_go() -> None:
    join = LateLabelJoin(WINDOW)
    store = MemoryBuckets()
    offer(join, [("old", NOW, 0.5, None), ("new", NOW + 3 * 24 * HOUR, None, 1.0)])
    store.apply(join.drain())
    assert len(store.blobs) == 2
    # Event time moves on without the labels, a window and a bucket's width: "old"
    # waited its window (and its bucket can hold nothing younger), "new" not yet.
    offer(join, [("other", NOW + WINDOW + WINDOW / 8, 0.3, 0.3)])  # complete: no half
    writes = join.drain()
    store.apply(writes)
    assert (join.waiting, join.expired, join.joined) == (1, 1, 0)
    assert writes.counts == {fields.join_count("waiting"): -1, fields.join_count("expired"): 1}
    assert len(store.blobs) == 1  # old's bucket held nothing else
    # Its label, too late, finds nothing; it is older than the window itself: expired.
    assert len(offer(join, [("old", NOW + 1, None, 1.0)])) == 0
    assert (join.waiting, join.expired) == (1, 2)


def test_a_future_time_does_not_move_the_watermark_and_cannot_wait() -> None:
    join = LateLabelJoin(WINDOW)
    ids = response_digests(["r1", "r2"])
    join.offer(ids, np.array([NOW, NOW * 1000]), np.array([0.5, 0.5]), np.full(2, math.nan), NOW)
    assert join.watermark == NOW
    assert (join.waiting, join.expired) == (1, 1)


def random_halves(seed: int, n: int) -> list[tuple[str, float, float | None, float | None]]:
    """Scores and labels of ``n // 3`` responses, labels late by up to 1.5 windows, some
    never sent, some sent twice, in event-time order with some disorder."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n // 3):
        t = NOW + i * 600.0
        rows.append((f"r{i}", t, float(rng.uniform()), None))
        if rng.uniform() < 0.8:
            rows.append((f"r{i}", t + float(rng.uniform(0, 1.5)) * WINDOW, None, 1.0))
        if rng.uniform() < 0.05:
            rows.append((f"r{i}", t + 1.0, float(rng.uniform()), None))
    rows.sort(key=lambda row: row[1] + float(rng.normal(0, 3600)))
    return rows


def run(
    rows: list[tuple[str, float, float | None, float | None]],
    cuts: list[int],
    restart_at: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[tuple[float, float, float]], tuple[int, int, int, int]]:
    """The rows in batches cut at ``cuts``; at a cut in ``restart_at`` the join is
    rebuilt from what was stored (state and buckets), as a restarted worker does."""
    join = LateLabelJoin(WINDOW)
    store = MemoryBuckets()
    pairs: list[tuple[float, float, float]] = []
    bounds = [0, *cuts, len(rows)]
    for start, stop in itertools.pairwise(bounds):
        if start in restart_at:
            stored = orjson.loads(orjson.dumps(join.to_state()))
            join = LateLabelJoin.from_state(WINDOW, stored)
            join.restore(store.blobs)
        if start == stop:
            continue
        got = offer(join, rows[start:stop])
        pairs += list(zip(got.s.tolist(), got.y.tolist(), got.ts.tolist(), strict=True))
        store.apply(join.drain())
    return pairs, (join.waiting, join.joined, join.expired, join.repeated)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batching_and_restarts_change_nothing(seed: int) -> None:
    rows = random_halves(seed, 3000)
    one_by_one, counts = run(rows, list(range(1, len(rows))))
    waiting, joined, expired, repeated = counts
    assert joined > 100 and expired > 100 and waiting > 0 and repeated > 0
    assert joined == len(one_by_one)
    rng = np.random.default_rng(seed)
    cuts = sorted(rng.choice(np.arange(1, len(rows)), 40, replace=False).tolist())
    assert run(rows, []) == (one_by_one, counts)
    assert run(rows, cuts) == (one_by_one, counts)
    # Restarted from the stored records at every fifth cut.
    assert run(rows, cuts, set(cuts[::5])) == (one_by_one, counts)
    # Each half counted once: waiting, joined (two halves each), expired, repeated.
    assert waiting + 2 * joined + expired + repeated == len(rows)


def halves_message(offset: int, *events: dict) -> RawMessage:
    return RawMessage("labels", 0, offset, orjson.dumps(list(events)))


def test_the_handler_folds_a_joined_pair_as_the_complete_event() -> None:
    """A score now and its label later: the stream's statistics as if ``(s, y)`` had come
    whole at the label's place; the score counted once, as scored, from its own event."""
    handler = LabelHandler(Policy(labels=LabelsPolicy(join_window_seconds=WINDOW)))
    late, whole = fresh_state(handler), fresh_state(handler)
    score = {"event_id": "e1", "ts": NOW, "stream": "p", "s": 0.7, "response_id": "r1"}
    other = {"event_id": "e2", "ts": NOW + 1, "stream": "p", "s": 0.2, "y": 0.3}
    label = {"event_id": "e3", "ts": NOW + HOUR, "stream": "p", "y": 1.0, "response_id": "r1"}
    for offset, event in enumerate((score, other, label)):
        batch = handler.decode([halves_message(offset, event)])
        handler.update("p", late, batch.subjects["p"], NOW + HOUR)
    complete = {**score, "y": 1.0, "ts": NOW}
    for offset, event in enumerate((other, complete)):
        batch = handler.decode([halves_message(offset, event)])
        handler.update("p", whole, batch.subjects["p"], NOW + HOUR)
    assert (late.n, late.residuals.n) == (whole.n, whole.residuals.n) == (2, 2)
    assert late.residuals.to_state() == whole.residuals.to_state()
    assert late.labeled_pairs.to_state() == whole.labeled_pairs.to_state()
    assert late.scores.to_state() == whole.scores.to_state()
    assert (late.join.joined, late.join.waiting) == (1, 0)  # type: ignore[union-attr]


def test_the_join_survives_a_new_calibrator_version() -> None:
    """Its own state field: a new version deletes the statistics, not what waits."""
    handler = LabelHandler(Policy())
    state = fresh_state(handler)
    score = {"event_id": "e1", "ts": NOW, "stream": "p", "s": 0.7, "response_id": "r1"}
    handler.update("p", state, handler.decode([halves_message(0, score)]).subjects["p"], NOW)
    store = MemoryBuckets()
    store.apply(handler.model.drain_pending(state))
    dumped = handler.model.dump(state)
    reloaded = handler.model.load("p", {**EMPTY, fields.JOIN: dumped[fields.JOIN]})
    handler.model.restore_pending(reloaded, store.blobs)
    assert reloaded.n == 0 and reloaded.join is not None and reloaded.join.waiting == 1


def test_a_half_without_what_completes_it_is_a_dead_letter() -> None:
    handler = LabelHandler(Policy())
    bad = [
        {"event_id": "a", "ts": NOW, "stream": "p", "y": 1.0},  # no response_id
        {"event_id": "b", "ts": NOW, "stream": "p", "response_id": "r"},  # no y
    ]
    good = {"event_id": "c", "ts": NOW, "stream": "p", "y": 1.0, "response_id": "r"}
    batch = handler.decode([halves_message(0, *bad, good)])
    assert len(batch.subjects["p"]) == 1
    assert [letter.error for letter in batch.dead_letters] == [
        "EventValidationError: Object missing required field `s` (only an oracle label, "
        f"with `y` and `response_id`, goes without) - at `$[{i}].s`"
        for i in (0, 1)
    ]
    columnar = {
        "stream": "p",
        "columns": {
            "event_id": ["x", "y"],
            "ts": [NOW, NOW],
            "s": [0.5, None],
            "y": [None, 1.0],
            "response_id": ["r1", None],
        },
    }
    batch = handler.decode([RawMessage("labels", 0, 1, orjson.dumps(columnar))])
    assert not batch.subjects
    (letter,) = batch.dead_letters
    assert "missing required field `s`" in letter.error and "$.columns.s[1]" in letter.error
    columnar["columns"]["response_id"] = ["r1", "r1"]  # type: ignore[index]
    batch = handler.decode([RawMessage("labels", 0, 2, orjson.dumps(columnar))])
    assert not batch.dead_letters and len(batch.subjects["p"]) == 2


def fold_rows(
    handler: LabelHandler, state, rows: list[dict], offset: int = 0, now: float = NOW + HOUR
) -> None:
    batch = handler.decode([halves_message(offset, *rows)])
    handler.update("p", state, batch.subjects["p"], now)


def test_a_stream_without_halves_has_no_join_and_writes_no_join_field() -> None:
    """Only its watermark is kept, in its statistics: it survives a restart."""
    handler = LabelHandler(Policy(labels=LabelsPolicy(join_window_seconds=WINDOW)))
    state = fresh_state(handler)
    whole = {"event_id": "a", "ts": NOW, "stream": "p", "s": 0.4, "y": 1.0}
    # A response id on a complete event is no half either.
    fold_rows(handler, state, [whole, {**whole, "event_id": "b", "response_id": "r"}])
    assert state.join is None and state.watermark == NOW
    assert handler.model.pending_buckets(state) == []
    dumped = handler.model.dump(state)
    assert fields.JOIN not in dumped
    reloaded = handler.model.load("p", {**EMPTY, **dumped})
    assert reloaded.join is None and reloaded.watermark == NOW


@pytest.mark.parametrize("restart", [False, True])
def test_the_first_half_creates_the_join_as_if_it_had_been_there_from_the_start(
    restart: bool,
) -> None:
    """A join created at the first half starts from the stream's watermark: a half older
    than the window before it expires at once, whether or not the events that moved the
    watermark came in an earlier batch (or before a restart), as with a join fed from
    the start."""
    handler = LabelHandler(Policy(labels=LabelsPolicy(join_window_seconds=WINDOW)))
    state = fresh_state(handler)
    newer = {"event_id": "a", "ts": NOW + 2 * WINDOW, "stream": "p", "s": 0.4, "y": 1.0}
    old = {"event_id": "b", "ts": NOW, "stream": "p", "s": 0.7, "response_id": "r1"}
    fresh = {"event_id": "c", "ts": NOW + 2 * WINDOW, "stream": "p", "s": 0.2, "response_id": "r2"}
    later = NOW + 3 * WINDOW
    fold_rows(handler, state, [newer], 0, later)
    assert state.join is None
    if restart:
        state = handler.model.load("p", {**EMPTY, **handler.model.dump(state)})
    fold_rows(handler, state, [old, fresh], 1, later)
    assert state.join is not None
    # The same events to a join that was there from the start (the former behaviour).
    reference = LateLabelJoin(WINDOW)
    for rows in ([newer], [old, fresh]):
        columns = handler.decode([halves_message(0, *rows)]).subjects["p"]
        reference.offer(
            columns.columns.responses, columns.ts, columns.columns.s, columns.columns.y, later
        )
    assert state.join.to_state() == reference.to_state()
    assert (state.join.expired, state.join.waiting) == (1, 1)
    dumped = handler.model.dump(state)
    assert orjson.loads(dumped[fields.JOIN]) == reference.to_state()


def test_a_stored_join_field_of_a_stream_that_never_had_a_half_still_loads() -> None:
    """Earlier versions wrote a join for every stream: such a state loads, keeps its
    watermark, and keeps its field."""
    handler = LabelHandler(Policy(labels=LabelsPolicy(join_window_seconds=WINDOW)))
    before = LateLabelJoin(WINDOW)
    before.offer(np.zeros(1, np.uint64), np.array([NOW]), np.array([0.3]), np.array([1.0]), NOW)
    assert not before.active
    state = handler.model.load("p", {**EMPTY, fields.JOIN: orjson.dumps(before.to_state())})
    assert state.join is not None and state.watermark == NOW
    fold_rows(handler, state, [{"event_id": "a", "ts": NOW + 1, "stream": "p", "s": 0.4}])
    assert state.join.watermark == NOW + 1
    assert orjson.loads(handler.model.dump(state)[fields.JOIN])["watermark"] == NOW + 1
