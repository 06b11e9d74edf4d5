from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.pipeline import _dedupe
from monitor.pipeline._dedupe import (
    BUCKETS_PER_WINDOW,
    MAX_CLOCK_SKEW_SECONDS,
    DigestTable,
    DuplicateWindow,
    ProbingTable,
    WindowUpdate,
    event_digests,
)
from monitor.store._keys import decode_seen_buckets, encode_seen_buckets

# --- DigestTable ---------------------------------------------------------------------------

U64_MAX = 2**64 - 1
# Keys sharing a home slot (and the last slot, so that probes wrap around) in tables of up
# to 2**14 slots, besides uniform ones.
colliding = st.builds(
    lambda k, c: k * 2**14 + c, st.integers(1, 2**40), st.sampled_from([5, 2**10 - 1, 2**14 - 1])
)
keys = st.integers(1, U64_MAX) | colliding


def as_keys(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


TABLES = pytest.mark.parametrize("table_class", [DigestTable, ProbingTable])


@TABLES
@settings(deadline=None, max_examples=60)
@given(
    st.lists(keys, unique=True, max_size=300),
    st.lists(st.integers(0, 300), max_size=6),
    st.lists(keys, max_size=50),
)
def test_digest_table_agrees_with_a_set(
    table_class: type, added: list[int], cuts: list[int], probes: list[int]
) -> None:
    table, reference = table_class(), set()
    bounds = [0, *sorted(min(c, len(added)) for c in cuts), len(added)]
    for start, stop in itertools.pairwise(bounds):
        table.add(as_keys(added[start:stop]))
        reference.update(added[start:stop])
        assert len(table) == len(reference)
        everything = added + probes
        expected = [key in reference for key in everything]
        assert table.contains(as_keys(everything)).tolist() == expected


@settings(deadline=None, max_examples=25)
@given(
    st.integers(0, 2**32),
    st.lists(st.integers(1, 3000), min_size=1, max_size=5),
    st.floats(0, 1),
    st.sampled_from([1, 100, 5000]),
)
def test_probing_table_grows_and_keeps_every_key(
    seed: int, batch_sizes: list[int], colliding_share: float, capacity: int
) -> None:
    rng = np.random.default_rng(seed)
    total = sum(batch_sizes)
    uniform = rng.integers(1, U64_MAX, size=total, dtype=np.uint64, endpoint=True)
    crowded = np.arange(1, total + 1, dtype=np.uint64) * np.uint64(1024) + np.uint64(1023)
    pick = rng.uniform(size=total) < colliding_share
    candidates = np.unique(np.where(pick, crowded, uniform))
    rng.shuffle(candidates)
    table, reference = ProbingTable(capacity), set()
    start = 0
    for size in batch_sizes:
        batch = candidates[start : start + size]
        start += size
        table.add(batch)
        reference.update(batch.tolist())
        assert len(table) == len(reference)
        assert 2 * len(table) <= table.nbytes // 8  # load stays at most one half
    absent = rng.integers(1, U64_MAX, size=2000, dtype=np.uint64)
    probes = np.concatenate([candidates, absent, crowded + np.uint64(2048)])
    expected = np.array([int(p) in reference for p in probes.tolist()])
    np.testing.assert_array_equal(table.contains(probes), expected)


def test_a_digest_table_turns_compact_past_its_set_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("monitor.pipeline._dedupe.SET_LIMIT", 50)
    rng = np.random.default_rng(5)
    keys_ = np.unique(rng.integers(1, U64_MAX, size=120, dtype=np.uint64))
    table = DigestTable()
    table.add(keys_[:40])
    assert not table.compact
    table.add(keys_[40:80])  # past the limit: moved to the numpy table, nothing lost
    assert table.compact and len(table) == 80
    table.add(keys_[80:])
    assert table.contains(keys_).all()
    assert not table.contains(keys_ + np.uint64(1)).any()
    assert DigestTable(capacity=51).compact  # a large window is restored compact at once


@TABLES
def test_an_empty_table_holds_nothing(table_class: type) -> None:
    table = table_class()
    table.add(as_keys([]))
    assert len(table) == 0
    assert table.contains(as_keys([1, 2**64 - 1])).tolist() == [False, False]
    assert table.contains(as_keys([])).tolist() == []


# --- event_digests -------------------------------------------------------------------------


def test_event_digests_are_deterministic_uint64() -> None:
    ids = ["event-1", "evt-2", "", "ünïcode"]
    digests = event_digests(ids)
    assert digests.dtype == np.uint64 and digests.shape == (4,)
    np.testing.assert_array_equal(digests, event_digests(list(ids)))
    # Stored in Redis: the digest of an id may never change between releases.
    assert int(digests[2]) == 0x2D06800538D394C2  # XXH3-64 of the empty string
    assert len(set(digests.tolist())) == 4


def test_a_zero_digest_is_moved_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _dedupe.xxhash, "xxh3_64_intdigest", lambda data: 0 if data == b"zero" else 7
    )
    assert event_digests(["zero", "seven"]).tolist() == [1, 7]


def test_no_ids_give_no_digests() -> None:
    digests = event_digests([])
    assert digests.size == 0 and digests.dtype == np.uint64


# --- DuplicateWindow -----------------------------------------------------------------------

SPAN = 400.0  # buckets of 100 s
WIDTH = SPAN / BUCKETS_PER_WINDOW
NOW = 1_000_000.0


def batch(ids: list[str], ts: float | list[float]) -> tuple[np.ndarray, np.ndarray]:
    times = np.broadcast_to(np.asarray(ts, dtype=np.float64), (len(ids),)).copy()
    return event_digests(ids), times


def run(window: DuplicateWindow, ids: list[str], ts: float | list[float]) -> list[bool]:
    """Assess a batch and apply it; which events were fresh."""
    update = window.assess(*batch(ids, ts), NOW)
    window.apply(update)
    return update.fresh.tolist()


def test_first_occurrence_within_a_batch_wins() -> None:
    window = DuplicateWindow(SPAN)
    assert run(window, ["a", "b", "a", "c", "b"], NOW) == [True, True, False, True, False]


def test_a_repeat_in_a_later_batch_is_a_duplicate() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a", "b"], NOW - 10)
    assert run(window, ["b", "c", "a"], NOW - 10) == [False, True, False]


def test_ids_are_forgotten_when_their_bucket_leaves_the_window_in_event_time() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW - SPAN)
    update = window.assess(*batch(["x"], NOW + WIDTH), NOW)
    assert update.expired == [math.floor((NOW - SPAN) / WIDTH)]
    window.apply(update)
    assert run(window, ["a"], NOW - SPAN) == [True]


def test_the_wall_clock_alone_expires_nothing() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW)
    update = window.assess(*batch(["a"], NOW), NOW + 100 * SPAN)
    assert update.fresh.tolist() == [False] and update.expired == []


def test_an_id_is_remembered_for_at_least_the_span() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW - SPAN + 1)
    run(window, ["b"], NOW)
    assert run(window, ["a"], NOW - SPAN + 1) == [False]


def test_an_event_older_than_the_window_is_applied_but_not_remembered() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["new"], NOW)
    old = NOW - 3 * SPAN
    update = window.assess(*batch(["old"], old), NOW)
    assert update.fresh.tolist() == [True]
    assert update.appended == {}
    window.apply(update)
    assert run(window, ["old"], old) == [True]


def test_a_timestamp_within_the_clock_skew_moves_the_watermark() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW)
    run(window, ["b"], NOW + MAX_CLOCK_SKEW_SECONDS / 2)
    assert window.watermark == NOW + MAX_CLOCK_SKEW_SECONDS / 2


def test_the_watermark_never_passes_the_clock_plus_the_skew() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW)
    run(window, ["ms"], NOW * 1000)  # a producer writing milliseconds
    assert window.watermark <= NOW + MAX_CLOCK_SKEW_SECONDS


def test_a_timestamp_beyond_the_clock_skew_does_not_move_the_watermark() -> None:
    window = DuplicateWindow(600.0)
    run(window, ["a"], NOW)
    update = window.assess(*batch(["ms"], NOW * 1000), NOW)
    assert update.watermark == NOW and update.expired == []
    window.apply(update)
    assert run(window, ["a"], NOW) == [False]


def test_a_timestamp_beyond_the_clock_skew_is_applied_but_not_remembered() -> None:
    window = DuplicateWindow(600.0)
    update = window.assess(*batch(["ms"], NOW * 1000), NOW)
    assert update.fresh.tolist() == [True] and update.appended == {} and update.live == []


def test_an_empty_batch_changes_nothing() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a"], NOW)
    update = window.assess(*batch([], []), NOW)
    assert (update.appended, update.expired, update.watermark) == ({}, [], NOW)


def test_assess_changes_nothing_until_apply() -> None:
    window = DuplicateWindow(SPAN)
    run(window, ["a", "b"], NOW - SPAN)
    probe = batch(["a", "c", "d"], [NOW - SPAN, NOW, NOW + SPAN])
    before = (window.watermark, sorted(window.tables), [len(t) for t in window.tables.values()])
    first = window.assess(*probe, NOW)
    assert (window.watermark, sorted(window.tables), [len(t) for t in window.tables.values()]) == (
        before
    )
    again = window.assess(*probe, NOW)
    assert same_update(first, again)
    window.apply(first)
    assert window.watermark == NOW + SPAN
    assert window.assess(*probe, NOW).fresh.tolist() == [True, False, False]


def same_update(a: WindowUpdate, b: WindowUpdate) -> bool:
    return (
        a.fresh.tolist() == b.fresh.tolist()
        and {k: v.tolist() for k, v in a.appended.items()}
        == {k: v.tolist() for k, v in b.appended.items()}
        and (a.expired, a.watermark, a.live) == (b.expired, b.watermark, b.live)
    )


def test_restore_from_the_redis_bytes_gives_the_same_answers() -> None:
    rng = np.random.default_rng(7)
    window = DuplicateWindow(SPAN)
    redis: dict[int, bytes] = {}  # what APPEND and DEL leave in the bucket strings
    stored = encode_seen_buckets(window.watermark, [])
    for step in range(12):
        ids = [f"e{i}" for i in rng.integers(0, 400, size=60)]
        ts = NOW + step * WIDTH / 2 - rng.uniform(0, SPAN * 1.5, size=60)
        update = window.assess(event_digests(ids), ts, NOW + step * WIDTH)
        for bucket, digests in update.appended.items():
            redis[bucket] = redis.get(bucket, b"") + digests.tobytes()
        for bucket in update.expired:
            del redis[bucket]
        if update.appended or update.expired:
            stored = encode_seen_buckets(update.watermark, update.live)
        window.apply(update)

    watermark, live = decode_seen_buckets(stored.encode())
    assert live == sorted(redis)
    restored = DuplicateWindow.restore(SPAN, watermark, {b: redis[b] for b in live})
    probe_ids = [f"e{i}" for i in range(450)]
    answers = []
    for shift in (0.0, SPAN / 2, 2 * SPAN):  # the last expires every bucket
        probe_ts = watermark + shift - rng.uniform(0, SPAN * 1.5, size=450)
        expected = window.assess(event_digests(probe_ids), probe_ts, NOW)
        assert same_update(restored.assess(event_digests(probe_ids), probe_ts, NOW), expected)
        answers.append((int(expected.fresh.sum()), len(expected.expired)))
    assert 0 < answers[0][0] < 450 and answers[0][1] == 0
    assert answers[2] == (450, len(live))


def test_restore_of_a_missing_bucket_is_an_empty_one() -> None:
    window = DuplicateWindow.restore(SPAN, NOW, {int(NOW // WIDTH): None})
    assert window.assess(*batch(["a"], NOW), NOW).fresh.tolist() == [True]
