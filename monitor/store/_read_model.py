"""The read model: what status, the metrics, the HTTP API and reports read, in one read.

Workers write each subject's view (the statistics as the gates saw them, and each gate's
latest verdict) with the statistics themselves; readers never recompute a statistic,
so what is shown is what the gate saw, and a scrape costs one small read per subject.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from msgspec import UNSET

from ..events._decisions import SEVERITY, GateDocument, rfc3339
from . import _keys as fields
from ._client import SyncClient
from ._keys import (
    HistoryPoint,
    KeyLayout,
    decode_audit_entry,
    decode_history_ring,
    known_kinds,
)

__all__ = ["ReadModel", "Snapshot", "ts_seconds"]


@dataclass
class Snapshot:
    views: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Kind -> subject -> the view its model wrote."""
    gates: list[GateDocument] = field(default_factory=list)
    """Every gate of every subject (``GATE`` of the contract, with its kind and part)."""
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    """``(topic, outcome)`` -> events, summed over subjects (and forgotten ones)."""
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    """``(gate, action)`` -> decisions published."""
    ignored: dict[tuple[str, str], int] = field(default_factory=dict)
    """``(topic, reason)`` -> records counted and skipped (OpenTelemetry input that
    carries nothing driftgate reads)."""
    last_event_ts: dict[str, float] = field(default_factory=dict)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stream -> retired calibrator version -> its view (with ``with_history``)."""
    residual_history: dict[str, list[HistoryPoint]] = field(default_factory=dict)
    """Stream -> its residual interval by minute, oldest first (the streams asked for)."""
    joins: dict[str, dict[str, int]] = field(default_factory=dict)
    """Stream -> its late-label join's counts (``waiting``, ``joined``, ``expired``,
    ``repeated``; a forgotten stream's counters included), for the streams that had a
    half of a late-labeled pair."""

    def add_join_counter(self, stream: str, what: str, value: int) -> None:
        counts = self.joins.setdefault(stream, dict.fromkeys(fields.JOIN_COUNTS, 0))
        counts[what] += value

    def section(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.views.get(kind, {})

    def gate(self, gate: str, subject: str, part: str | None = None) -> GateDocument | None:
        """A gate's verdict of a subject. A gate that gives a subject several (covariate
        drift: one per covariate, ``part`` the covariate's name) answers the one of
        ``part`` when given, else the worst of them (FAIL first, as an agent's verdict)."""
        found = [
            g
            for g in self.gates
            if g.gate == gate and g.subject == subject and part in (None, g.part or "")
        ]
        return max(found, key=lambda g: SEVERITY.get(g.verdict, -1), default=None)

    def gates_of(self, kind: str, subject: str) -> list[GateDocument]:
        """Every gate of one subject."""
        return [g for g in self.gates if g.subject == subject and g.kind == kind]

    def of_subject(self, kind: str, name: str) -> Snapshot:
        """The view and gates of one subject: what :meth:`ReadModel.subject` reads."""
        view = self.section(kind).get(name)
        views = {kind: {name: view}} if view is not None else {}
        return Snapshot(views=views, gates=self.gates_of(kind, name))


class ReadModel:
    """Reads the views of every subject (blocking client: CLI, metrics thread, HTTP API)."""

    def __init__(self, client: SyncClient, layout: KeyLayout) -> None:
        self.client = client
        self.layout = layout

    def kinds(self) -> list[str]:
        return known_kinds(self.client.smembers(self.layout.kinds))  # type: ignore[arg-type]

    def subjects(self, kind: str) -> list[str]:
        members = self.client.smembers(self.layout.registry(kind))
        return sorted(member.decode() for member in members)  # type: ignore[union-attr]

    def snapshot(
        self, with_history: bool = False, residual_history_of: str | None = None
    ) -> Snapshot:
        """Every subject's view; with ``with_history``, the streams' retired calibrator
        versions; with ``residual_history_of``, that stream's residual history (a ring of
        up to 322 KB: a report's, not every reader's)."""
        names = {kind: self.subjects(kind) for kind in self.kinds()}
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.layout.retired_counts)
        for kind, kind_names in names.items():
            for name in kind_names:
                pipe.hgetall(self.layout.subject(kind, name).view)
        if residual_history_of is not None:
            pipe.get(self.layout.subject("stream", residual_history_of).residual_history)
        rows = iter(pipe.execute())
        snapshot = Snapshot()
        self._add_counts(snapshot, next(rows))
        for kind, kind_names in names.items():
            for name in kind_names:
                self._add(snapshot, kind, name, next(rows), with_history)
        if residual_history_of is not None:
            points = decode_history_ring(next(rows))
            if points:
                snapshot.residual_history[residual_history_of] = points
        return snapshot

    def subject(self, kind: str, name: str) -> Snapshot:
        """A snapshot of one subject (one read, however many subjects there are): what a
        controller polling one agent needs."""
        snapshot = Snapshot()
        row: Any = self.client.hgetall(self.layout.subject(kind, name).view)
        self._add(snapshot, kind, name, row, with_history=False)
        return snapshot

    def _add(
        self,
        snapshot: Snapshot,
        kind: str,
        name: str,
        row: dict[bytes, bytes],
        with_history: bool,
    ) -> None:
        self._add_counts(snapshot, row)
        for raw_field, raw in row.items():
            parts = fields.parse_view_field(raw_field.decode())
            if parts[0] == "last_ts" and len(parts) == 2:
                snapshot.last_event_ts[parts[1]] = max(
                    float(raw), snapshot.last_event_ts.get(parts[1], float("-inf"))
                )
            elif parts[0] == "join" and len(parts) == 2 and kind == "stream":
                snapshot.add_join_counter(name, parts[1], int(raw))
            elif parts[0] == "history" and with_history:
                snapshot.history.setdefault(name, {})[parts[1]] = orjson.loads(raw)
        view = row.get(fields.VIEW.encode())
        if view is not None and kind != "partition":
            snapshot.views.setdefault(kind, {})[name] = orjson.loads(view)
        gates = row.get(fields.GATES.encode())
        for gate, record in (orjson.loads(gates) if gates else {}).items():
            snapshot.gates.append(_gate_document(gate, name, kind, record))

    @staticmethod
    def _add_counts(snapshot: Snapshot, row: dict[bytes, bytes]) -> None:
        """Add a view's (or the retired subjects') event and decision counts."""
        for raw_field, raw in row.items():
            parts = fields.parse_view_field(raw_field.decode())
            if parts[0] == "count" and len(parts) == 3:
                key = (parts[1], parts[2])
                snapshot.events[key] = snapshot.events.get(key, 0) + int(raw)
            elif parts[0] == "decisions" and len(parts) == 3:
                key = (parts[1], parts[2])
                snapshot.decisions[key] = snapshot.decisions.get(key, 0) + int(raw)
            elif parts[0] == "ignored" and len(parts) == 3:
                key = (parts[1], parts[2])
                snapshot.ignored[key] = snapshot.ignored.get(key, 0) + int(raw)
            elif (retired := fields.parse_retired_join_count(raw_field.decode())) is not None:
                snapshot.add_join_counter(*retired, int(raw))

    def audit(self, since_ms: int | None = None) -> Iterator[dict[str, Any]]:
        """The audit log of every subject, oldest first (by each entry's ``ts``)."""
        start = "-" if since_ms is None else str(since_ms)
        keys = [
            self.layout.subject(kind, name).audit
            for kind in self.kinds()
            if kind != "partition"
            for name in self.subjects(kind)
        ]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.xrange(key, min=start)
        entries = [
            (_entry_id(entry_id), orjson.loads(decode_audit_entry(entry_fields)))
            for reply in pipe.execute()
            for entry_id, entry_fields in reply
        ]
        # In the order of the times shown: a canary action's is its event's time, which a
        # late event puts before entries written earlier; then in the order written.
        entries.sort(key=lambda entry: (ts_seconds(entry[1].get("ts")) or 0.0, entry[0]))
        for _, record in entries:
            yield record


def _entry_id(raw: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.split(b"-"))


def ts_seconds(ts: Any) -> float | None:
    """Seconds since the epoch of a record's ``ts`` (RFC 3339 or a number), or None."""
    if isinstance(ts, int | float):
        return float(ts)
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _evaluated_at(record: dict[str, Any]) -> str | None:
    evaluated = record.get("evaluated_at")
    return None if evaluated is None else rfc3339(evaluated)


def _gate_document(key: str, subject: str, kind: str, record: dict[str, Any]) -> GateDocument:
    """``GATE`` of the contract: the current verdict, as the decision that announced it
    (its action and reason: a canary rolled back shows ``rollback`` for as long as the
    verdict stands), with the current evidence; a verdict never announced (a quiet start)
    shows the current evaluation. ``key`` is the record's name: the gate, or ``gate/part``
    for one of several verdicts of a gate (the record names its gate)."""
    announced = record.get("published_verdict") == record["verdict"]
    part = key.partition("/")[2]
    return GateDocument(
        gate=record.get("gate", key),
        subject=subject,
        verdict=record["verdict"],
        action=record.get("published_action") if announced else record["action"],
        reason=record.get("published_reason") if announced else record["reason"],
        decision_id=record.get("decision_id") if announced else None,
        ts=record.get("published_at") if announced else _evaluated_at(record),
        evidence=record["evidence"],
        evaluated_at=record.get("evaluated_at"),
        kind=kind,
        # One of several verdicts of a gate (a covariate, a group) names its part.
        part=part or UNSET,
    )
