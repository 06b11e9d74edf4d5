"""Duplicate detection by event id over a window of event time, in compact state.

Redis keeps, per subject and topic, one string per bucket of event time holding the
8-byte digests of the ids seen (``APPEND``: 8 bytes an id, nothing per member). The
worker that owns the subject holds the same digests in memory as open-addressing hash
tables and checks a whole batch with a few vectorized numpy passes; the subject's
revision (compare-and-set in the write) guarantees that what it holds is what Redis
holds. A redelivered event carries its original event time, so it is looked up only in
its own bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xxhash

__all__ = ["DigestTable", "DuplicateWindow", "ProbingTable", "WindowUpdate", "event_digests"]

# Event times further ahead of the worker's clock than this neither move the window nor
# are remembered (a producer writing milliseconds would otherwise expire every bucket at
# once, and keep a bucket of its own for ever).
MAX_CLOCK_SKEW_SECONDS = 3600.0
BUCKETS_PER_WINDOW = 4
# Below this many keys, a ProbingTable looks them up one by one.
SCALAR_BELOW = 64
# Up to this many digests a DigestTable is a Python set (fast for batch-sized checks).
SET_LIMIT = 100_000


def event_digests(ids: list[str]) -> np.ndarray:
    """64-bit XXH3 digests of the ids, never 0 (0 marks an empty table slot).

    Two different ids of one subject and window collide with probability about
    ``n^2 / 2^65`` for ``n`` ids in the window: 3e-6 for ten million.
    """
    digests = np.fromiter(map(xxhash.xxh3_64_intdigest, map(str.encode, ids)), np.uint64, len(ids))
    digests[digests == 0] = 1
    return digests


class DigestTable:
    """A set of nonzero uint64 digests, checked and extended a batch at a time.

    While it is small (the usual case: one subject's share of a time bucket) it is a
    Python set: a batch of a few hundred digests then costs a few C calls, where the
    probing rounds of a numpy table would cost dozens of small numpy calls. Past
    :data:`SET_LIMIT` digests it moves to a :class:`ProbingTable` (16 to 32 bytes a
    digest instead of about 70).

    >>> table = DigestTable()
    >>> table.add(np.array([3, 5, 7], dtype=np.uint64))
    >>> table.contains(np.array([3, 4, 7], dtype=np.uint64)).tolist()
    [True, False, True]
    """

    __slots__ = ("_probing", "_set")

    def __init__(self, capacity: int = 0) -> None:
        """``capacity``: how many digests are about to be added."""
        self._set: set[int] | None = set() if capacity <= SET_LIMIT else None
        # Twice the slots: the numpy table keeps its load at most one half.
        self._probing = None if self._set is not None else ProbingTable(2 * capacity)

    def __len__(self) -> int:
        return len(self._set) if self._set is not None else len(self._probing)  # type: ignore[arg-type]

    @property
    def compact(self) -> bool:
        """Whether it has moved to the numpy table."""
        return self._probing is not None

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if self._set is not None:
            return np.fromiter(map(self._set.__contains__, keys.tolist()), bool, keys.size)
        assert self._probing is not None
        return self._probing.contains(keys)

    def add(self, keys: np.ndarray) -> None:
        """Add digests that are not in the table yet."""
        if self._set is None:
            assert self._probing is not None
            self._probing.add(keys)
            return
        self._set.update(keys.tolist())
        if len(self._set) > SET_LIMIT:
            self._probing = ProbingTable(2 * len(self._set))
            self._probing.add(np.fromiter(self._set, np.uint64, len(self._set)))
            self._set = None


class ProbingTable:
    """A set of nonzero uint64 digests: open addressing, linear probing, numpy throughout.

    Digests are uniform, so their low bits are the home slot. The table keeps its load
    at most one half, where a lookup costs about 1.5 probes.

    >>> table = ProbingTable()
    >>> table.add(np.array([3, 5, 1024 + 3], dtype=np.uint64))
    >>> table.contains(np.array([3, 4, 1024 + 3], dtype=np.uint64)).tolist()
    [True, False, True]
    """

    __slots__ = ("_size", "_slots")

    def __init__(self, capacity: int = 1024) -> None:
        self._slots = np.zeros(1 << max(10, math.ceil(math.log2(max(capacity, 1)))), np.uint64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._slots.nbytes)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if keys.size <= SCALAR_BELOW:
            return self._contains_each(keys)
        mask = np.uint64(self._slots.size - 1)
        found = np.zeros(keys.size, dtype=bool)
        pending = np.arange(keys.size)
        position = keys & mask
        while pending.size:
            stored = self._slots[position]
            hit = stored == keys[pending]
            found[pending[hit]] = True
            onward = ~hit & (stored != 0)
            pending = pending[onward]
            position = (position[onward] + np.uint64(1)) & mask
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add digests that are distinct and not in the table yet."""
        if keys.size == 0:
            return
        if 2 * (self._size + keys.size) > self._slots.size:
            old = self._slots[self._slots != 0]
            capacity = 1 << math.ceil(math.log2(4 * (self._size + keys.size)))
            self._slots = np.zeros(capacity, np.uint64)
            self._place(old)
        self._place(keys)
        self._size += int(keys.size)

    # A few keys (one subject's events of a single-event batch): a loop over Python ints
    # costs a fraction of the dozen numpy calls of a vectorized probing round.

    def _contains_each(self, keys: np.ndarray) -> np.ndarray:
        slots, mask = self._slots, self._slots.size - 1
        found = np.zeros(keys.size, dtype=bool)
        for index, key in enumerate(keys.tolist()):
            position = key & mask
            while stored := slots.item(position):
                if stored == key:
                    found[index] = True
                    break
                position = (position + 1) & mask
        return found

    def _place_each(self, keys: np.ndarray) -> None:
        slots, mask = self._slots, self._slots.size - 1
        for key in keys.tolist():
            position = key & mask
            while slots.item(position):
                position = (position + 1) & mask
            slots[position] = key

    def _place(self, keys: np.ndarray) -> None:
        if keys.size <= SCALAR_BELOW:
            self._place_each(keys)
            return
        mask = np.uint64(self._slots.size - 1)
        pending = keys
        position = keys & mask
        while pending.size:
            empty = np.flatnonzero(self._slots[position] == 0)
            # Several keys may want one empty slot: write them all, one of each lands;
            # reading back tells which (no sort needed).
            self._slots[position[empty]] = pending[empty]
            landed = empty[self._slots[position[empty]] == pending[empty]]
            rest = np.ones(pending.size, dtype=bool)
            rest[landed] = False
            pending = pending[rest]
            position = (position[rest] + np.uint64(1)) & mask


@dataclass
class WindowUpdate:
    """What a batch does to a duplicate window; applied to it once Redis has it."""

    fresh: np.ndarray
    """Per event: apply it (first time seen, or too old to be checked)."""
    appended: dict[int, np.ndarray]
    """Bucket -> digests to remember."""
    expired: list[int]
    """Buckets that fell out of the window."""
    watermark: float
    live: list[int]
    """The buckets of the window after this batch."""


@dataclass
class DuplicateWindow:
    """The event ids a subject saw on one topic over the last ``span`` seconds of event time.

    Buckets are ``span / 4`` wide; the window keeps every bucket that overlaps
    ``[watermark - span, ...)``, where the watermark is the newest event time seen (no
    further ahead of the worker's clock than an hour). An id is thus remembered for at
    least ``span`` of event time; a redelivery older than that counts again.
    """

    span: float
    watermark: float = -math.inf
    tables: dict[int, DigestTable] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.span / BUCKETS_PER_WINDOW

    @classmethod
    def restore(
        cls, span: float, watermark: float, buckets: dict[int, bytes | None]
    ) -> DuplicateWindow:
        """Rebuild from what Redis holds: the watermark and each bucket's digests."""
        tables = {}
        for bucket, blob in buckets.items():
            digests = np.frombuffer(blob or b"", dtype=np.uint64)
            table = DigestTable(digests.size)
            table.add(np.unique(digests))  # a crash-free log holds no repeats; be safe
            tables[bucket] = table
        return cls(span, watermark, tables)

    def assess(self, digests: np.ndarray, ts: np.ndarray, now: float) -> WindowUpdate:
        """Which events of a batch are new; the first occurrence within the batch wins."""
        fresh = np.ones(digests.size, dtype=bool)
        ordered = np.sort(digests)
        if (ordered[1:] == ordered[:-1]).any():  # repeats within the batch: rare
            fresh[:] = False
            _, first = np.unique(digests, return_index=True)
            fresh[first] = True
        plausible = ts <= now + MAX_CLOCK_SKEW_SECONDS
        watermark = self.watermark
        if plausible.any():
            watermark = max(watermark, float(ts[plausible].max()))
        oldest = math.floor((watermark - self.span) / self.width) if watermark > -math.inf else None
        buckets = np.floor(ts / self.width).astype(np.int64)
        appended: dict[int, np.ndarray] = {}
        candidates = buckets[plausible]
        if candidates.size and candidates.min() == candidates.max():
            in_batch = [int(candidates[0])]  # one bucket: the usual batch
        else:
            in_batch = np.unique(candidates).tolist()
        for bucket in in_batch:
            if oldest is not None and bucket < oldest:
                continue  # older than the window: cannot be checked, not remembered
            rows = np.flatnonzero((buckets == bucket) & fresh & plausible)
            table = self.tables.get(bucket)
            if table is not None and rows.size:
                fresh[rows[table.contains(digests[rows])]] = False
                rows = rows[fresh[rows]]
            if rows.size:
                appended[bucket] = digests[rows]
        kept = set(self.tables) | set(appended)
        expired = sorted(b for b in self.tables if oldest is not None and b < oldest)
        live = sorted(kept - set(expired))
        return WindowUpdate(fresh, appended, expired, watermark, live)

    def apply(self, update: WindowUpdate) -> None:
        for bucket in update.expired:
            del self.tables[bucket]
        for bucket, digests in update.appended.items():
            self.tables.setdefault(bucket, DigestTable(digests.size)).add(digests)
        self.watermark = update.watermark
