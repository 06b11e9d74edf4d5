"""What driftgate says about its gates, as ``msgspec`` Structs: the decision event of the
contract, a gate's published record, and the gate record of a subject's view.

Their JSON is the one the contract and the stored views have always had (field order,
names, which fields are left out): :func:`encode` writes them with ``orjson`` (through
:func:`msgspec.to_builtins`), as every record was written before they were typed, so the
bytes do not change. Light (``msgspec`` only): the store and the command line import it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType

__all__ = ["Decision", "GateRecord", "Published", "decode_published", "encode", "to_builtins"]


class Decision(msgspec.Struct, frozen=True):
    """A decision event (the ``driftgate.decisions`` topic).

    ``bundle_id`` and ``canary_percent`` are there when the verdict's evidence has them
    (canary decisions); ``event_ts`` only in ``driftgate replay``'s output: the event time
    at which it would have gone out."""

    decision_id: str
    ts: str
    gate: str
    subject: str
    verdict: str
    action: str
    reason: str
    evidence: dict[str, Any]
    bundle_id: str | UnsetType | None = UNSET
    canary_percent: int | float | UnsetType | None = UNSET
    event_ts: str | UnsetType = UNSET


class Published(msgspec.Struct, frozen=True):
    """A gate's last published decision, as the subject's state keeps it: what the next
    evaluation is compared with (``should_publish``)."""

    verdict: str
    action: str
    reason: str
    decision_id: str
    ts: str

    @classmethod
    def of(cls, decision: Decision) -> Published:
        return cls(
            decision.verdict, decision.action, decision.reason, decision.decision_id, decision.ts
        )


class GateRecord(msgspec.Struct, frozen=True):
    """One gate's entry of a subject's stored gates: the latest verdict (evaluated at
    ``evaluated_at``, Unix seconds) and the last decision published (``None`` before any)."""

    gate: str
    verdict: str
    action: str
    reason: str
    evidence: dict[str, Any]
    evaluated_at: float
    decision_id: str | None = None
    published_verdict: str | None = None
    published_action: str | None = None
    published_reason: str | None = None
    published_at: str | None = None


def to_builtins(record: Any) -> Any:
    """``record`` as dicts and lists (what a reader of the stored JSON would get)."""
    return msgspec.to_builtins(record)


def encode(record: Any) -> bytes:
    """JSON of a record (or of dicts and lists holding records), byte for byte as
    ``orjson.dumps`` wrote the dictionaries the records replaced: non-finite numbers as
    ``null``, ``1e+16`` rather than ``msgspec``'s ``1e16``."""
    return orjson.dumps(record, default=msgspec.to_builtins)


_published_decoder = msgspec.json.Decoder(Published)


def decode_published(raw: bytes) -> Published:
    """A gate's published record as stored."""
    return _published_decoder.decode(raw)
