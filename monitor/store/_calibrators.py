"""Storing a stream's calibrator versions (the one write outside the batch runner)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from . import _keys as fields
from ._client import SyncClient
from ._keys import OUTBOX_GROUP, KeyLayout, OutboxEntry, encode_audit_entry

__all__ = [
    "Announcement",
    "StateConflictError",
    "activate_calibrator",
    "read_calibrator",
]


class StateConflictError(RuntimeError):
    """A key driftgate needs holds another type: another application shares the prefix."""


LATEST = "latest"


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
) -> int:
    """Store ``record`` as ``stream``'s next calibrator version and make it active.

    ``describe(version, previous)`` gives the view and the gates of the fresh statistics,
    shown until the next batch arrives, and the decision announcing the change from the
    active version ``previous`` (0: the identity) to ``version``. Returns the new version.
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
        fresh = describe(version, previous)
        announcement = fresh.announcement
        outbox_entry = OutboxEntry(
            "decision", announcement.topic, stream.encode(), announcement.decision, {}
        ).encode()
        audit_entry = encode_audit_entry(announcement.decision)
        reply = client.eval(
            source,
            5,
            keys.state,
            keys.view,
            keys.calibrators,
            keys.outbox,
            keys.audit,
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
            str(len(outbox_entry) // 2),
            *outbox_entry,
            *audit_entry,
        )
        if not isinstance(reply, list):
            return int(reply)  # type: ignore[arg-type]
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
