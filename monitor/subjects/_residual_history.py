"""A stream's residual interval over time: one point per minute of event time, in a ring.

The point of a minute is the interval the residual verdict used once the minute's last
label was folded in. Minutes follow the stream's newest event time (a late label counts
in the current minute), so the points only move forward and each batch rewrites at most
the records of the minutes it reached. The ring (see ``store._keys``) holds seven days;
its first and newest minute live in the state hash beside the statistics, and are not
deleted with them by a new calibrator version: the history goes on across versions
(its ``n`` falls back when a version starts afresh).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from estimators import RestartingMeanSequence

from ..config import ResidualDriftPolicy
from ..gates import residual_drift_gate
from ..store._keys import (
    HISTORY_MINUTES,
    HistoryPoint,
    decode_history_span,
    encode_history_point,
    encode_history_span,
    history_slot,
)

__all__ = ["ResidualHistory", "fold_by_minute", "verdict_point"]

PointOf = Callable[[int], HistoryPoint]
"""The point of a minute, from the residual statistics as they are."""


@dataclass
class ResidualHistory:
    """The ring's span, and the points not yet written (only the last seven days')."""

    origin: int | None = None
    """The ring's first minute: the minute of its slot 0."""
    newest: int | None = None
    pending: dict[int, HistoryPoint] = field(default_factory=dict)

    @classmethod
    def from_field(cls, raw: bytes | str | None) -> ResidualHistory:
        span = decode_history_span(raw)
        return cls() if span is None else cls(*span)

    def minutes(self, ts: np.ndarray) -> np.ndarray:
        """Each label's minute: of the newest event time seen up to it."""
        clock = np.maximum.accumulate(ts)
        if self.newest is not None:
            clock = np.maximum(clock, 60.0 * self.newest)
        return np.floor(clock / 60.0).astype(np.int64)

    def record(self, point: HistoryPoint) -> None:
        if self.origin is None:
            self.origin = point.minute
        self.newest = point.minute if self.newest is None else max(self.newest, point.minute)
        self.pending[point.minute] = point
        if len(self.pending) > HISTORY_MINUTES:  # never written (an offline replay): a ring too
            oldest = self.newest - HISTORY_MINUTES
            self.pending = {m: p for m, p in self.pending.items() if m > oldest}

    def span_field(self) -> str | None:
        """The state field's value (None: nothing recorded yet)."""
        if self.origin is None or self.newest is None:
            return None
        return encode_history_span(self.origin, self.newest)

    def take_records(self) -> list[tuple[int, bytes]]:
        """The pending points as ``(offset, record)`` in the ring, and forget them (they
        go into this write; a write that fails reloads the subject and computes them
        again)."""
        if self.origin is None:
            return []
        origin = self.origin
        records = [
            (history_slot(origin, minute), encode_history_point(point))
            for minute, point in sorted(self.pending.items())
        ]
        self.pending = {}
        return records


def fold_by_minute(
    residuals: RestartingMeanSequence,
    values: np.ndarray,
    ts: np.ndarray,
    history: ResidualHistory,
    point_of: PointOf,
) -> None:
    """Fold ``values`` (in order, their event times ``ts``) into ``residuals``, a minute's
    run at a time, and record each minute's point. The statistics end as batches cut at
    the minutes would leave them: the intervals take values one by one, and the change
    detector's scale moves per batch, as it does with any batching of the labels."""
    if values.size == 0:
        return
    minutes = history.minutes(ts)
    cuts = np.flatnonzero(minutes[1:] != minutes[:-1]) + 1
    for run in np.split(np.arange(values.size), cuts):
        residuals.update(values[run])
        history.record(point_of(int(minutes[run[-1]])))


def verdict_point(
    subject: str,
    residuals: RestartingMeanSequence,
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    minute: int,
) -> HistoryPoint:
    """The interval the residual verdict uses now (all-time, or since the change)."""
    evidence = residual_drift_gate(subject, residuals, policy, calibrator_version).evidence
    return HistoryPoint(
        minute, evidence["n"], evidence["estimate"], evidence["ci_low"], evidence["ci_high"]
    )
