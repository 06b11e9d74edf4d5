"""Storing a stream's calibrator versions (the one write outside the batch runner)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import cast

import numpy as np

from . import _keys as fields
from ._client import SyncClient
from ._keys import OUTBOX_GROUP, KeyLayout, OutboxEntry, encode_audit_entry

__all__ = [
    "MAX_STORED_PAIRS",
    "Announcement",
    "PoolReceipt",
    "StateConflictError",
    "activate_calibrator",
    "add_to_pool",
    "decode_pairs",
    "encode_pairs",
    "read_calibration_pairs",
    "read_calibrator",
    "read_pool",
]


class StateConflictError(RuntimeError):
    """Stored state that cannot be used as it is: a key driftgate needs holds another type
    (another application shares the prefix), stored data is not in driftgate's format, or
    the state kept changing under a compare-and-set. The command line answers exit 1."""


LATEST = "latest"

MAX_STORED_PAIRS = 200_000
"""The most calibration pairs kept of one version, and the most a stream's pool holds:
3.2 MB each as float64 (a larger fit keeps a uniform sample of this many)."""

_PAIRS_MAGIC = b"dgpairs1"
_PAIRS_HEADER = struct.Struct("<8sQ")  # magic, number of pairs


def encode_pairs(s: np.ndarray, y: np.ndarray) -> bytes:
    """Labeled pairs as bytes: a 16-byte header, then ``s`` and ``y`` as little-endian
    float64 (16 bytes a pair; JSON would take about three times that)."""
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("s and y must be 1-d arrays of one length")
    return (
        _PAIRS_HEADER.pack(_PAIRS_MAGIC, s.size)
        + s.astype("<f8").tobytes()
        + y.astype("<f8").tobytes()
    )


def decode_pairs(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The ``(s, y)`` arrays of :func:`encode_pairs`."""
    if len(blob) < _PAIRS_HEADER.size:
        raise StateConflictError("stored calibration pairs are truncated")
    magic, count = _PAIRS_HEADER.unpack_from(blob)
    if magic != _PAIRS_MAGIC or len(blob) != _PAIRS_HEADER.size + 16 * count:
        raise StateConflictError("stored calibration pairs are not in driftgate's pair format")
    values = np.frombuffer(blob, dtype="<f8", offset=_PAIRS_HEADER.size).astype(np.float64)
    return values[:count], values[count:]


@dataclass(frozen=True)
class Announcement:
    """The decision that announces a new calibrator version, written with it atomically:
    into the outbox (for Kafka) and the audit log, and as the gate's published verdict,
    so that the next batch judges the new interval against it, not against the retired
    version's verdict."""

    gate: str
    action: str
    decision: bytes
    """The decision event (JSON)."""
    published: bytes
    """The gate's published record (``published:{gate}`` in the state hash)."""
    topic: str
    """The decisions topic."""
    audit_maxlen: int


@dataclass(frozen=True)
class Fresh:
    """What the new version starts with: the view and gates of empty statistics, and the
    decision that announces it."""

    view: bytes
    gates: bytes
    announcement: Announcement


def activate_calibrator(
    client: SyncClient,
    layout: KeyLayout,
    stream: str,
    record: bytes,
    describe: Callable[[int, int], Fresh],
    *,
    pairs: bytes = b"",
    pooled_entries: int = 0,
    based_on: int | None = None,
) -> int:
    """Store ``record`` as ``stream``'s next calibrator version and make it active.

    ``describe(version, previous)`` gives the view and the gates of the fresh statistics,
    shown until the next batch arrives, and the decision announcing the change from the
    active version ``previous`` (0: the identity) to ``version``. Returns the new version.

    ``pairs`` (:func:`encode_pairs`) are kept with the new version; the pairs of the
    retiring version stay, older ones are dropped. A pooled refit passes the number of
    pool entries it used (they leave the pool in the same write) and ``based_on``, the
    version whose pairs it used: if another calibrate made another version active
    meanwhile, nothing is written and :class:`StateConflictError` says so.
    """
    keys = layout.subject("stream", stream)
    source = resources.files("monitor.store").joinpath("activate_calibrator.lua").read_text()
    client.sadd(layout.registry("stream"), stream)
    client.sadd(layout.kinds, "stream")  # so that every drainer's sweep finds the outbox
    for _ in range(10):  # only another calibrate of the same stream can take the version
        latest = client.hget(keys.calibrators, LATEST)
        active = client.hget(keys.state, fields.CALIBRATOR_VERSION)
        version = int(latest or 0) + 1  # type: ignore[arg-type]
        previous = int(active or 0)  # type: ignore[arg-type]
        if based_on is not None and previous != based_on:
            raise StateConflictError(
                f"stream {stream!r} was calibrated by someone else meanwhile (version "
                f"{previous} is active, the refit used version {based_on}): run it again"
            )
        fresh = describe(version, previous)
        announcement = fresh.announcement
        outbox_entry = OutboxEntry(
            "decision", announcement.topic, stream.encode(), announcement.decision, {}
        ).encode()
        audit_entry = encode_audit_entry(announcement.decision)
        reply = client.eval(
            source,
            6,
            keys.state,
            keys.view,
            keys.calibrators,
            keys.outbox,
            keys.audit,
            keys.pool,
            record,
            fresh.view,
            fresh.gates,
            fields.REV,
            fields.CALIBRATOR,
            fields.CALIBRATOR_VERSION,
            fields.STATE,
            fields.VIEW,
            fields.GATES,
            fields.history(""),
            LATEST,
            "v",
            str(version),
            str(previous),
            fields.published(announcement.gate),
            announcement.published,
            fields.decisions(announcement.gate, announcement.action),
            OUTBOX_GROUP,
            str(announcement.audit_maxlen),
            fields.calibration_pairs(version),
            pairs,
            fields.calibration_pairs(previous),
            fields.CALIBRATION_PAIRS_PREFIX,
            str(pooled_entries),
            str(len(outbox_entry) // 2),
            *outbox_entry,
            *audit_entry,
        )
        if not isinstance(reply, list):
            return int(reply)  # type: ignore[arg-type]
        if int(reply[0]) == -2:  # retrying cannot help: the fit was made of other probes
            raise StateConflictError(
                f"the pool of stream {stream!r} lost probes this refit used (now "
                f"{int(reply[1])} entries; another refit took them?): run the command again"
            )
        if int(reply[0]) == -1:
            key, kind = (part.decode() for part in reply[1:])
            raise StateConflictError(
                f"Redis key {key} holds a {kind}, not the type driftgate expects: does "
                "another application use the prefix? (check DRIFTGATE_REDIS_PREFIX)"
            )
    raise StateConflictError(f"stream {stream!r} is being calibrated by someone else right now")


def read_calibrator(
    client: SyncClient, layout: KeyLayout, stream: str
) -> tuple[bytes | None, bytes | None]:
    """The active calibrator's record and version of ``stream`` (None, None: identity)."""
    record, version = client.hmget(
        layout.subject("stream", stream).state, [fields.CALIBRATOR, fields.CALIBRATOR_VERSION]
    )
    return record, version  # type: ignore[return-value]


def read_calibration_pairs(
    client: SyncClient, layout: KeyLayout, stream: str, version: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The pairs ``stream``'s calibrator ``version`` was fitted on (None: not kept, as
    for a version fitted before driftgate kept them)."""
    blob = client.hget(
        layout.subject("stream", stream).calibrators, fields.calibration_pairs(version)
    )
    return decode_pairs(cast(bytes, blob)) if blob else None


def read_pool(client: SyncClient, layout: KeyLayout, stream: str) -> list[bytes]:
    """The pooled probes of ``stream``, oldest first (each :func:`encode_pairs`)."""
    return cast(list[bytes], client.lrange(layout.subject("stream", stream).pool, 0, -1))


@dataclass(frozen=True)
class PoolReceipt:
    """What :func:`add_to_pool` did: whether the probe joined, and what the pool holds."""

    added: bool
    pairs: int
    probes: int


# Appends a probe to the pool unless the pool would pass its cap (a check and a write
# that must not interleave with another audit's).
# KEYS: 1 the pool. ARGV: 1 the probe (encoded pairs), 2 its pairs, 3 the cap, 4 the
# header size of an encoded probe. Returns {added 0/1, pairs held, probes held} or
# {-1, key, type} when the key is not a list.
_POOL_SCRIPT = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'list' then return {-1, KEYS[1], kind} end
local held = 0
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
for _, entry in ipairs(entries) do
  held = held + (#entry - tonumber(ARGV[4])) / 16
end
if held + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, held, #entries} end
redis.call('RPUSH', KEYS[1], ARGV[1])
return {1, held + tonumber(ARGV[2]), #entries + 1}
"""


def add_to_pool(
    client: SyncClient,
    layout: KeyLayout,
    stream: str,
    s: np.ndarray,
    y: np.ndarray,
    max_pairs: int = MAX_STORED_PAIRS,
) -> PoolReceipt:
    """Add a probe's pairs to ``stream``'s pool, unless it would hold more than
    ``max_pairs`` pairs (then nothing is added: a pooled refit empties the pool)."""
    key = layout.subject("stream", stream).pool
    reply = cast(
        list[int | bytes],
        client.eval(
            _POOL_SCRIPT,
            1,
            key,
            encode_pairs(s, y),
            str(s.size),
            str(max_pairs),
            str(_PAIRS_HEADER.size),
        ),
    )
    if int(reply[0]) == -1:
        raise StateConflictError(
            f"Redis key {key} holds a {cast(bytes, reply[2]).decode()}, not the list driftgate "
            "expects: does another application use the prefix? (check DRIFTGATE_REDIS_PREFIX)"
        )
    return PoolReceipt(bool(int(reply[0])), int(reply[1]), int(reply[2]))
