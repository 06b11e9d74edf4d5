"""The Redis key layout and field encodings: the only module that spells a key or a field.

Every key of one subject (a label stream, an experiment or agent, a partition's dead
letters) carries the subject in one hash tag, ``{kind:name}``, so that on Redis Cluster
they all live in one slot and one script can update them atomically::

    {prefix}{kind:name}                 hash    rev, state, published:{gate},
                                                fence:{topic}:{partition}, seen:{topic},
                                                calibrator, calibrator_version, join,
                                                residual_history (the ring's first and
                                                newest minute) (streams)
    {prefix}{kind:name}:view            hash    view, gates (the latest evaluation),
                                                count:{topic}:{outcome},
                                                ignored:{topic}:{reason} (partitions),
                                                decisions:{gate}:{action}, last_ts:{topic},
                                                join:{waiting|joined|expired|repeated}
                                                (streams),
                                                history:{version} (retired calibrators)
    {prefix}{kind:name}:outbox          stream  decisions / dead letters not yet on Kafka
    {prefix}{kind:name}:audit           stream  decisions and canary actions (driftgate log)
    {prefix}{kind:name}:calibrators     hash    latest, v{version} (streams),
                                                pairs:v{version} (its calibration pairs)
    {prefix}{kind:name}:pool            list    labeled pairs of probes that passed their
                                                audit, waiting for a pooled refit (streams)
    {prefix}{kind:name}:residual_history
                                        string  a ring of fixed-size records, one per
                                                minute of event time (streams): the
                                                residual interval over time
    {prefix}{kind:name}:seen:{topic}:{bucket}
                                        string  8-byte digests of the event ids seen with
                                                event times in that bucket
    {prefix}{kind:name}:pending:{bucket} string  32-byte records of the halves of late-labeled
                                                pairs (streams) with event times in that
                                                bucket, and of their joins

and a few global keys, read without atomicity needs::

    {prefix}subjects:{kind}             set     the subjects of a kind
    {prefix}log_epochs                  hash    "{topic}:{partition}" -> log epoch
    {prefix}retired_counts              hash    count:{topic}:{outcome},
                                                decisions:{gate}:{action},
                                                join:{joined|expired|repeated}:{stream}
                                                of subjects forgotten (the counters
                                                never go back)
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "KINDS",
    "Fence",
    "HistoryPoint",
    "KeyLayout",
    "OutboxEntry",
    "SubjectKeys",
    "decode_audit_entry",
    "decode_history_ring",
    "decode_seen_buckets",
    "encode_audit_entry",
    "encode_history_point",
    "encode_seen_buckets",
    "known_kinds",
]

# The subject kinds of the built-in handlers ("partition": the dead-letter ledgers). A new
# handler's model may name another kind: the runner registers it under ``KeyLayout.kinds``
# and everything that reads every subject finds it there.
KINDS: Final = ("stream", "experiment", "partition")
_KIND = re.compile(r"[a-z][a-z0-9_]*")

# State hash fields.
REV: Final = "rev"
STATE: Final = "state"
CALIBRATOR: Final = "calibrator"
CALIBRATOR_VERSION: Final = "calibrator_version"
# A stream's late-label join (its own field: a new calibrator version keeps what waits).
JOIN: Final = "join"
# Calibrator versions hash: the field prefix of a version's calibration pairs.
CALIBRATION_PAIRS_PREFIX: Final = "pairs:v"
# State hash field of a stream's residual history ring: its first and newest minute. Not
# the statistics' field: a new calibrator version deletes those, the history goes on.
RESIDUAL_HISTORY: Final = "residual_history"
# View hash fields.
VIEW: Final = "view"
GATES: Final = "gates"
# Consumer group of every outbox stream.
OUTBOX_GROUP: Final = "drain"

_BRACES = re.compile(r"[{}%]")


def _check_kind(kind: str) -> None:
    if not _KIND.fullmatch(kind):
        raise ValueError(f"subject kind {kind!r} is not a lowercase name ([a-z][a-z0-9_]*)")


def known_kinds(registered: Iterable[bytes | str]) -> list[str]:
    """The built-in kinds, then the others registered (the members of ``KeyLayout.kinds``)."""
    names = {m.decode() if isinstance(m, bytes) else m for m in registered}
    return [*KINDS, *sorted(names.difference(KINDS))]


def _escape(name: str) -> str:
    """Keep a subject name from closing its hash tag early (``}``) or opening another."""
    return _BRACES.sub(lambda match: f"%{ord(match.group()):02X}", name)


def published(gate: str) -> str:
    return f"published:{gate}"


def fence(topic: str, partition: int) -> str:
    return f"fence:{topic}:{partition}"


def seen(topic: str) -> str:
    return f"seen:{topic}"


def count(topic: str, outcome: str) -> str:
    return f"count:{topic}:{outcome}"


def ignored(topic: str, reason: str) -> str:
    """Records of ``topic`` counted and skipped for ``reason`` (a partition's view)."""
    return f"ignored:{topic}:{reason}"


def decisions(gate: str, action: str) -> str:
    return f"decisions:{gate}:{action}"


def last_ts(topic: str) -> str:
    return f"last_ts:{topic}"


JOIN_COUNTS: Final = ("waiting", "joined", "expired", "repeated")
"""The late-label join's view counters: halves waiting now, pairs joined, halves expired,
halves repeated (a second half of one kind for a response whose first still waits)."""
JOIN_COUNTERS: Final = ("joined", "expired", "repeated")
"""Those of :data:`JOIN_COUNTS` that only grow (``waiting`` is a gauge)."""


def join_count(what: str) -> str:
    """A view hash counter of the late-label join (one of :data:`JOIN_COUNTS`)."""
    return f"join:{what}"


def retired_join_count(stream: str, what: str) -> str:
    """A forgotten stream's join counter in :attr:`KeyLayout.retired_counts` (one of
    :data:`JOIN_COUNTERS`); the stream goes last, as its name may hold ``:``."""
    return f"join:{what}:{stream}"


def parse_retired_join_count(name: str) -> tuple[str, str] | None:
    """``(stream, what)`` of a :func:`retired_join_count` field, None for another field."""
    kind, _, rest = name.partition(":")
    what, _, stream = rest.partition(":")
    if kind != "join" or what not in JOIN_COUNTERS or not stream:
        return None
    return stream, what


def history(version: int | str) -> str:
    return f"history:{version}"


def calibration_pairs(version: int | str) -> str:
    """The calibrators hash field of the pairs a version was fitted on."""
    return f"{CALIBRATION_PAIRS_PREFIX}{version}"


def parse_view_field(name: str) -> tuple[str, ...]:
    """Split a view hash field into its kind and parts: ``count:t:ok`` -> ``(count, t, ok)``.

    Topic names cannot hold ``:`` (Kafka allows letters, digits, ``.``, ``_``, ``-``), gate
    and action names neither, so the split is exact.
    """
    return tuple(name.split(":"))


@dataclass(frozen=True, slots=True, order=True)
class Fence:
    """Next offset to apply of one partition, in one incarnation (epoch) of its log.

    Fences compare as ``(epoch, offset)``: a log that was recreated (an in-memory broker
    restarted, a topic deleted and created) gets a higher epoch, so its offsets start
    again from 0 without any fence ever moving backwards.
    """

    epoch: int
    offset: int

    def encode(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Fence | None:
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        epoch, _, offset = text.partition(":")
        return cls(int(epoch), int(offset))


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message waiting in a subject's outbox for Kafka: a decision or a dead letter."""

    kind: str
    """``decision`` or ``dead_letter``."""
    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]

    def encode(self) -> list[bytes | str]:
        """Field-value pairs of the outbox stream entry."""
        return [
            "kind",
            self.kind,
            "topic",
            self.topic,
            "key",
            self.key,
            "value",
            self.value,
            "headers",
            json.dumps(self.headers),
        ]

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> OutboxEntry:
        return cls(
            fields[b"kind"].decode(),
            fields[b"topic"].decode(),
            fields[b"key"],
            fields[b"value"],
            json.loads(fields[b"headers"]),
        )


def encode_audit_entry(document: bytes) -> list[bytes | str]:
    """Field-value pairs of an audit stream entry (a decision or a canary action, as JSON)."""
    return ["json", document]


def decode_audit_entry(fields: dict[bytes, bytes]) -> bytes:
    return fields[b"json"]


def encode_seen_buckets(watermark: float, buckets: list[int]) -> str:
    """The duplicate window of one subject and topic: newest event time and live buckets."""
    return f"{watermark!r};{','.join(map(str, buckets))}"


def decode_seen_buckets(raw: bytes | str | None) -> tuple[float, list[int]]:
    if not raw:
        return float("-inf"), []
    text = raw.decode() if isinstance(raw, bytes) else raw
    watermark, _, buckets = text.partition(";")
    return float(watermark), [int(b) for b in buckets.split(",") if b]


# The residual history ring: a record per minute of event time, for seven days. A record
# is (minute since the epoch, labels, mean, low, high): 32 bytes, 322 KB per stream when
# full; the ring grows from its first minute, so a young stream's is small.
HISTORY_MINUTES: Final = 7 * 24 * 60
_HISTORY_RECORD = struct.Struct("<iIddd")
HISTORY_RECORD_SIZE: Final = _HISTORY_RECORD.size


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """The residual interval the verdict used when a minute's last label was folded in."""

    minute: int
    """Minutes since the epoch (event time)."""
    n: int
    estimate: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def ts(self) -> float:
        """The minute's start, in seconds since the epoch."""
        return 60.0 * self.minute


def _stored(value: float | None) -> float:
    return math.nan if value is None else value


def _shown(value: float) -> float | None:
    return value if math.isfinite(value) else None


def encode_history_point(point: HistoryPoint) -> bytes:
    return _HISTORY_RECORD.pack(
        point.minute,
        point.n,
        _stored(point.estimate),
        _stored(point.ci_low),
        _stored(point.ci_high),
    )


def history_slot(origin: int, minute: int) -> int:
    """The byte offset of a minute's record in a ring that started at ``origin``."""
    return ((minute - origin) % HISTORY_MINUTES) * HISTORY_RECORD_SIZE


def decode_history_ring(raw: bytes | None) -> list[HistoryPoint]:
    """The points of a ring, oldest first: the seven days before its newest minute
    (slots never written are zero, and slots of an earlier lap are older than that)."""
    if not raw:
        return []
    usable = len(raw) - len(raw) % HISTORY_RECORD_SIZE
    points = [
        HistoryPoint(minute, n, _shown(mean), _shown(low), _shown(high))
        for minute, n, mean, low, high in _HISTORY_RECORD.iter_unpack(raw[:usable])
        if minute > 0
    ]
    if not points:
        return []
    newest = max(point.minute for point in points)
    return sorted(
        (p for p in points if p.minute > newest - HISTORY_MINUTES), key=lambda p: p.minute
    )


def encode_history_span(origin: int, newest: int) -> str:
    """The ``residual_history`` state field: the ring's first and newest minute."""
    return f"{origin}:{newest}"


def decode_history_span(raw: bytes | str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    origin, _, newest = text.partition(":")
    return int(origin), int(newest)


@dataclass(frozen=True, slots=True)
class SubjectKeys:
    """The keys of one subject; they share a hash slot."""

    kind: str
    name: str
    state: str

    @property
    def view(self) -> str:
        return f"{self.state}:view"

    @property
    def outbox(self) -> str:
        return f"{self.state}:outbox"

    @property
    def audit(self) -> str:
        return f"{self.state}:audit"

    @property
    def calibrators(self) -> str:
        return f"{self.state}:calibrators"

    @property
    def pool(self) -> str:
        """Pooled probe pairs of a stream (a list of encoded pair sets)."""
        return f"{self.state}:pool"

    @property
    def residual_history(self) -> str:
        """A stream's residual interval by minute: a ring of fixed-size records."""
        return f"{self.state}:residual_history"

    def seen_bucket(self, topic: str, bucket: int) -> str:
        return f"{self.state}:seen:{topic}:{bucket}"

    def pending_bucket(self, bucket: int) -> str:
        """Halves of late-labeled pairs with event times in ``bucket`` (a stream's)."""
        return f"{self.state}:pending:{bucket}"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Keys under one prefix; several deployments can share a Redis with other prefixes."""

    prefix: str = "driftgate:"

    def __post_init__(self) -> None:
        if _BRACES.search(self.prefix):
            raise ValueError(f"the Redis key prefix {self.prefix!r} may not contain {{, }} or %")

    def subject(self, kind: str, name: str) -> SubjectKeys:
        _check_kind(kind)
        return SubjectKeys(kind, name, f"{self.prefix}{{{kind}:{_escape(name)}}}")

    def registry(self, kind: str) -> str:
        """The set of a kind's subject names."""
        _check_kind(kind)
        return f"{self.prefix}subjects:{kind}"

    @property
    def kinds(self) -> str:
        """The set of the subject kinds written so far (built-in ones included)."""
        return f"{self.prefix}kinds"

    @property
    def log_epochs(self) -> str:
        return f"{self.prefix}log_epochs"

    @property
    def retired_counts(self) -> str:
        """The event and decision counts of forgotten subjects: added to the living
        subjects' counts, so ``driftgate_events_total`` and ``driftgate_decisions_total``
        only ever increase."""
        return f"{self.prefix}retired_counts"

    @staticmethod
    def partition_subject(topic: str, partition: int) -> str:
        """Name of the subject that holds a partition's dead letters."""
        return f"{topic}:{partition}"

    @staticmethod
    def log_epoch_field(topic: str, partition: int) -> str:
        return f"{topic}:{partition}"
