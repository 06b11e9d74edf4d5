"""Late oracle labels: a judge's score and its oracle label, sent apart, become one pair.

A score event with a ``response_id`` and no label waits for its label; an event with the
same ``response_id``, a label and no score completes it (or the other way round: a label
may come first and wait for its score). The pair counts once, as ``(s, y)`` at the
score's event time. A half waits ``labels.join_window_seconds`` of event time: it
expires once the stream's watermark (its newest plausible event time) has passed the
half's own event time by the window. Halves are taken one at a time in offset order,
each with the watermark up to and including it, so the outcome does not depend on how
the events were cut into batches.

What waits is kept in Redis beside the stream's state, in buckets of event time (a
string per bucket, ``APPEND``-only, of 32-byte records: a half, or the join that took it
away), written in the subject's atomic write with its statistics and fences; a bucket is
deleted once every half it can hold has expired. The runner reads the live buckets when
it loads the stream, so a restarted worker holds exactly what waited (a half expired in
a bucket still alive is told apart by its event time). A response id is kept as its
64-bit digest (as event ids are for duplicates: a collision between two ids of one
stream's window has probability about ``n^2 / 2^65``).

:class:`LateLabelJoin` is the whole of it, without I/O: the label handler feeds it the
batch's halves, once a stream has had one (a stream that never sends a half has no join,
and no join field in its state: only its watermark is kept, in its statistics, so that a
join created later starts where one fed from the start would be); another source of
scores and labels (OpenTelemetry evaluation events) can feed it the same way, with
:func:`response_digests` of its ids.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from ..pipeline import PendingWrites
from ..pipeline._dedupe import MAX_CLOCK_SKEW_SECONDS
from ..store import _keys as fields

__all__ = [
    "NO_PAIRS",
    "RECORD",
    "JoinedPairs",
    "LateLabelJoin",
    "MemoryBuckets",
    "advance_watermark",
    "has_halves",
    "response_digests",
]

# One record: the response id's digest, the half's event time and value, and what it is.
RECORD = np.dtype([("response", "<u8"), ("ts", "<f8"), ("value", "<f8"), ("kind", "<u8")])
SCORE, LABEL = 1, 2
# The join that took a half away: JOINED + the half's kind (the record repeats the half).
JOINED = 2
BUCKETS_PER_WINDOW = 8


def response_digests(ids: Sequence[str | None]) -> np.ndarray:
    """A nonzero 64-bit digest per response id, 0 where there is none.

    >>> response_digests(["r1", None, "r1"]).tolist()[1]
    0
    """
    digests = np.zeros(len(ids), np.uint64)
    for row, response in enumerate(ids):
        if response is not None:
            digests[row] = xxhash.xxh3_64_intdigest(response.encode()) or 1
    return digests


def has_halves(responses: np.ndarray, s: np.ndarray, y: np.ndarray) -> bool:
    """Whether a batch holds a half: an event with a response id and exactly one of a
    score and a label (the first one creates a stream's join)."""
    return bool(responses.any() and ((responses != 0) & (np.isnan(s) != np.isnan(y))).any())


def advance_watermark(watermark: float, ts: np.ndarray, now: float) -> float:
    """``watermark`` moved to the newest event time of ``ts`` that is plausible (not more
    than ``MAX_CLOCK_SKEW_SECONDS`` ahead of ``now``, the worker's clock)."""
    if not ts.size:
        return watermark
    newest = float(ts.max())
    if newest > now + MAX_CLOCK_SKEW_SECONDS:
        plausible = ts[ts <= now + MAX_CLOCK_SKEW_SECONDS]
        newest = float(plausible.max()) if plausible.size else -math.inf
    return max(watermark, newest)


@dataclass(frozen=True, slots=True)
class JoinedPairs:
    """Pairs completed by one offer: the row of the batch that completed each, its score,
    its label and the score's event time."""

    rows: np.ndarray
    s: np.ndarray
    y: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)


@dataclass(slots=True)
class _Half:
    ts: float
    value: float
    kind: int


@dataclass
class LateLabelJoin:
    """One stream's halves waiting for their other half, and its join counts.

    Parameters
    ----------
    window
        Seconds of event time a half waits (``labels.join_window_seconds``).
    width
        Seconds of event time per bucket of the stored records (kept with them: a
        changed window changes when halves expire, not where they are stored).

    Examples
    --------
    >>> join = LateLabelJoin(window=3600.0)
    >>> ids = response_digests(["r1", "r1"])
    >>> pairs = join.offer(ids, np.array([0.0, 600.0]), np.array([0.7, np.nan]),
    ...                    np.array([np.nan, 1.0]), now=600.0)
    >>> (pairs.s.tolist(), pairs.y.tolist(), pairs.ts.tolist(), join.joined, join.waiting)
    ([0.7], [1.0], [0.0], 1, 0)
    """

    window: float
    width: float | None = None
    watermark: float = -math.inf
    cutoff: float = -math.inf
    """Halves older than this have expired (the newest watermark less the window then)."""
    joined: int = 0
    expired: int = 0
    repeated: int = 0
    """Halves of an id that already had one of that kind waiting (the first one waits)."""
    pending: dict[int, _Half] = field(default_factory=dict)
    buckets: set[int] = field(default_factory=set)
    """Buckets that hold records in the store."""
    _heap: list[tuple[float, int]] = field(default_factory=list, repr=False)
    _appends: dict[int, list[tuple[int, float, float, int]]] = field(
        default_factory=dict, repr=False
    )
    _deleted: list[int] = field(default_factory=list, repr=False)
    _drained: tuple[int, ...] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        if self.width is None:
            self.width = self.window / BUCKETS_PER_WINDOW
        self._drained = self._counts()

    def _counts(self) -> tuple[int, ...]:
        """The view's counters, in the order of :data:`~monitor.store._keys.JOIN_COUNTS`."""
        return (self.waiting, self.joined, self.expired, self.repeated)

    @property
    def waiting(self) -> int:
        return len(self.pending)

    @property
    def active(self) -> bool:
        """Whether it ever held a half (else nothing of it needs storing)."""
        return bool(self.pending or self.buckets or self.joined or self.expired or self.repeated)

    def _bucket(self, ts: float) -> int:
        assert self.width is not None
        return math.floor(ts / self.width)

    # --- the join ---------------------------------------------------------------------

    def offer(
        self, responses: np.ndarray, ts: np.ndarray, s: np.ndarray, y: np.ndarray, now: float
    ) -> JoinedPairs:
        """A batch of one stream's events in offset order; returns the pairs it completed.

        ``responses`` holds each event's response id digest (0: none), ``s`` and ``y`` its
        score and label (NaN: absent). A row with a digest and exactly one of the two is a
        half; every row moves the watermark (a time more than an hour ahead of ``now``,
        the worker's clock, does not: a producer writing milliseconds would expire every
        half at once). A half older than the window on arrival cannot wait: it is
        counted expired at once, as is one whose own time is that implausible (its window
        would never pass).
        """
        if not responses.any():  # the usual batch: no halves, the watermark moves
            self._advance(ts, now)
            return NO_PAIRS
        plausible = ts <= now + MAX_CLOCK_SKEW_SECONDS
        halves = np.flatnonzero((responses != 0) & (np.isnan(s) != np.isnan(y)))
        rows: list[int] = []
        pair_s: list[float] = []
        pair_y: list[float] = []
        pair_ts: list[float] = []
        if halves.size:
            marks = np.where(plausible, ts, -math.inf)
            running = np.maximum.accumulate(np.maximum(marks, self.watermark))
            for row in halves.tolist():
                cutoff = float(running[row]) - self.window
                self._expire(cutoff)
                t = float(ts[row])
                kind = SCORE if math.isnan(y[row]) else LABEL
                value = float(s[row] if kind == SCORE else y[row])
                response = int(responses[row])
                waiting = self.pending.get(response)
                if waiting is not None and waiting.kind != kind:
                    del self.pending[response]
                    self._append(
                        waiting.ts, (response, waiting.ts, waiting.value, JOINED + waiting.kind)
                    )
                    self.joined += 1
                    rows.append(row)
                    if kind == LABEL:
                        pair_s.append(waiting.value)
                        pair_y.append(value)
                        pair_ts.append(waiting.ts)
                    else:
                        pair_s.append(value)
                        pair_y.append(waiting.value)
                        pair_ts.append(t)
                elif waiting is not None:
                    self.repeated += 1
                elif t < cutoff or not plausible[row]:
                    self.expired += 1
                else:
                    self.pending[response] = _Half(t, value, kind)
                    heapq.heappush(self._heap, (t, response))
                    self._append(t, (response, t, value, kind))
        if plausible.any():
            self.watermark = max(self.watermark, float(ts[plausible].max()))
        self._expire(self.watermark - self.window)
        return JoinedPairs(
            np.array(rows, np.int64),
            np.array(pair_s, np.float64),
            np.array(pair_y, np.float64),
            np.array(pair_ts, np.float64),
        )

    def _advance(self, ts: np.ndarray, now: float) -> None:
        """Move the watermark to the newest plausible time of ``ts``; expire what waited."""
        newest = advance_watermark(self.watermark, ts, now)
        if newest > self.watermark:
            self.watermark = newest
            self._expire(newest - self.window)

    def _append(self, ts: float, record: tuple[int, float, float, int]) -> None:
        bucket = self._bucket(ts)
        self._appends.setdefault(bucket, []).append(record)
        self.buckets.add(bucket)

    def _expire(self, cutoff: float) -> None:
        """Expire the halves older than ``cutoff``; drop the buckets that can hold no other."""
        if cutoff <= self.cutoff:
            return  # a larger window since a restart: what expired stays expired
        self.cutoff = cutoff
        heap = self._heap
        while heap and heap[0][0] < cutoff:
            t, response = heapq.heappop(heap)
            half = self.pending.get(response)
            if half is not None and half.ts == t:
                del self.pending[response]
                self.expired += 1
        assert self.width is not None
        if self.buckets and min(self.buckets) * self.width + self.width <= cutoff:
            for bucket in sorted(b for b in self.buckets if (b + 1) * self.width <= cutoff):
                self.buckets.discard(bucket)
                self._appends.pop(bucket, None)
                self._deleted.append(bucket)

    # --- storage ----------------------------------------------------------------------

    def drain(self) -> PendingWrites:
        """Records to append and buckets to delete since the last drain, and the changes
        of the view's counters: to be written with the stream's state."""
        counts = self._counts()
        writes = PendingWrites(
            {
                bucket: np.array(records, dtype=RECORD).tobytes()
                for bucket, records in self._appends.items()
            },
            self._deleted,
            {
                fields.join_count(name): now - before
                for name, now, before in zip(fields.JOIN_COUNTS, counts, self._drained, strict=True)
                if now != before
            },
        )
        self._appends, self._deleted, self._drained = {}, [], counts
        return writes

    def to_state(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "watermark": _finite(self.watermark),
            "cutoff": _finite(self.cutoff),
            "buckets": sorted(self.buckets),
            "waiting": self.waiting,
            "joined": self.joined,
            "expired": self.expired,
            "repeated": self.repeated,
        }

    @classmethod
    def starting_at(cls, window: float, watermark: float) -> LateLabelJoin:
        """A join created at a stream's first half, the stream's events before it having
        moved the watermark to ``watermark``: the same join as one fed those events
        (without halves) from the start."""
        return cls(window, watermark=watermark, cutoff=watermark - window)

    @classmethod
    def from_state(cls, window: float, state: Mapping[str, Any] | None) -> LateLabelJoin:
        """The join as stored, without its halves yet (:meth:`restore` reads them)."""
        if not state:
            return cls(window)
        join = cls(
            window,
            float(state["width"]),
            _number(state["watermark"]),
            _number(state["cutoff"]),
            int(state["joined"]),
            int(state["expired"]),
            int(state["repeated"]),
            buckets=set(state["buckets"]),
        )
        join._drained = (int(state["waiting"]), join.joined, join.expired, join.repeated)
        return join

    def restore(self, blobs: Mapping[int, bytes | None]) -> None:
        """The waiting halves from the live buckets' records: every half written, less
        those a join took away and those expired at the stored watermark."""
        halves: dict[tuple[int, float, int], float] = {}
        for bucket in sorted(self.buckets):
            records = np.frombuffer(blobs.get(bucket) or b"", dtype=RECORD)
            for response, t, value, kind in records.tolist():
                if kind > JOINED:
                    halves.pop((response, t, kind - JOINED), None)
                else:
                    halves[(response, t, kind)] = value
        self.pending = {
            response: _Half(t, value, kind)
            for (response, t, kind), value in halves.items()
            if t >= self.cutoff
        }
        self._heap = sorted((half.ts, response) for response, half in self.pending.items())


NO_PAIRS = JoinedPairs(
    np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64), np.empty(0)
)


def _finite(number: float) -> float | None:
    return number if number > -math.inf else None


def _number(stored: float | None) -> float:
    return -math.inf if stored is None else float(stored)


@dataclass
class MemoryBuckets:
    """The buckets as Redis would hold them, in memory (``driftgate replay``, tests)."""

    blobs: dict[int, bytes] = field(default_factory=dict)

    def apply(self, writes: PendingWrites) -> None:
        """What the subject write script does with them: appends, then deletions."""
        for bucket, blob in writes.appends.items():
            self.blobs[bucket] = self.blobs.get(bucket, b"") + blob
        for bucket in writes.deleted:
            self.blobs.pop(bucket, None)
