"""What driftgate says about its gates, as ``msgspec`` Structs: the decision event of the
contract, a gate's published record, and the gate record of a subject's view.

Their JSON is the one the contract and the stored views have always had (field order,
names, which fields are left out): :func:`encode` writes them with ``orjson`` (through
:func:`msgspec.to_builtins`), as every record was written before they were typed, so the
bytes do not change. Beside them, what every layer spells the same way: the verdicts'
order and status codes, a time as the contract writes it (RFC 3339), a number JSON can
read. Light (``msgspec`` and the standard library): the store and the command line import
it.

>>> finite_or(float("nan")), finite_or(float("inf"), 0.0), finite_or(2.5)
(None, 0.0, 2.5)
>>> rfc3339(0.5), rfc3339(0.5, timespec="seconds")
('1970-01-01T00:00:00.500000Z', '1970-01-01T00:00:00Z')
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import msgspec
import orjson
from msgspec import UNSET, UnsetType

__all__ = [
    "GATE_STATUS_CODES",
    "SEVERITY",
    "Decision",
    "GateAnswer",
    "GateDocument",
    "GateRecord",
    "Published",
    "decode_published",
    "encode",
    "finite_or",
    "rfc3339",
    "to_builtins",
]

T = TypeVar("T")

# A verdict as a number: the ``driftgate_gate_status`` metric and the exit codes.
GATE_STATUS_CODES = {"PASS": 0, "WARN": 1, "FAIL": 2, "INCONCLUSIVE": 3, "HOLD": 3}

# Worst first, as the contract orders an agent's verdict: FAIL, HOLD, INCONCLUSIVE, WARN, PASS.
SEVERITY = {"FAIL": 4, "HOLD": 3, "INCONCLUSIVE": 2, "WARN": 1, "PASS": 0}


@overload
def finite_or(value: float | None) -> float | None: ...
@overload
def finite_or(value: float | None, default: T) -> float | T: ...
def finite_or(value: float | None, default: Any = None) -> Any:
    """``value`` when it is a finite number, else ``default`` (for None, NaN and +-inf,
    which JSON and people cannot read)."""
    return value if value is not None and math.isfinite(value) else default


def rfc3339(ts: float, timespec: str = "auto") -> str:
    """A Unix time in seconds as RFC 3339 in UTC, ``...Z`` (the contract's ``ts``)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


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


class GateAnswer(msgspec.Struct, frozen=True):
    """A gate's verdict of a subject as the HTTP API answers it (``GATE`` of the
    contract): the current verdict, as the decision that announced it, with the current
    evidence; ``decision_id`` is None (and ``ts`` the time of the evaluation) for a
    verdict never announced."""

    gate: str
    subject: str
    verdict: str
    action: str | None
    reason: str | None
    decision_id: str | None
    ts: str | None
    evidence: dict[str, Any]


class GateDocument(GateAnswer, frozen=True):
    """A gate's verdict as the read model reads it: ``GATE``, and when it was evaluated
    (Unix seconds), the kind of its subject and, for one of several verdicts of a gate
    (a covariate, a group), its part; what ``status`` shows of an agent's gates."""

    evaluated_at: float | None
    kind: str
    part: str | UnsetType = UNSET

    def answer(self) -> GateAnswer:
        """``GATE`` alone, as the HTTP API shows it."""
        return GateAnswer(*msgspec.structs.astuple(self)[: len(GateAnswer.__struct_fields__)])


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
