"""The worker's handlers, gates and decisions on a file's events, in memory, on event time.

What the batch runner does per subject (duplicates, ``handler.update``, then
:func:`~monitor.pipeline._judge.judge_subject`: evaluate, publish on a change, settle) is
done here with the state in a dictionary instead of Redis: no fences (a file is read
once), no outbox (a decision is output when it is made). The clock is the event time:
each batch is judged at its last event's time (the newest seen), and subjects whose
verdicts time alone can change (``model.tick_seconds``: a canary without data) are
judged again every ``tick_seconds`` of event time in which they had no batch, as the
worker's clock tick does.

A batch is ``batch`` consecutive events in replay order, across topics. Within it each
subject's events are taken in order, a run of one topic at a time (a canary event
between two telemetry events splits them), and the subject is judged after each run,
as the worker judges it after each topic's batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from ..config import Policy
from ..events._decisions import Decision, Published, to_builtins
from ..gates import rfc3339
from ..pipeline import Handler, Judgement, KeepsPending, SubjectModel
from ..pipeline._dedupe import DuplicateWindow
from ..pipeline._judge import gate_records, judge_subject, publish
from ..presentation._format import finite_or
from ..slices import HANDLERS, status_document
from ..store import Snapshot
from ..store import _keys as fields
from ..store._read_model import _gate_document
from ..subjects._late_labels import MemoryBuckets
from ._calibrators import StoredCalibrator
from ._input import EventLog

__all__ = ["DecisionMark", "Replay", "RunResult", "TimelinePoint"]

# A timeline keeps at most this many points per gate and subject (every other one is
# dropped, and the stride doubled, when it is full): plots need no more.
TIMELINE_POINTS = 4_000


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    ts: float
    verdict: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float | None


@dataclass(frozen=True, slots=True)
class DecisionMark:
    """Where in the replay a decision went out."""

    ts: float
    events: int
    """Events replayed (all subjects) when it went out."""
    subject_events: int
    """Events of its subject applied by then (duplicates not counted)."""


@dataclass
class _Timeline:
    points: list[TimelinePoint] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, point: TimelinePoint) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.points.append(point)
        if len(self.points) >= TIMELINE_POINTS:
            self.points = self.points[::2]
            self.stride *= 2


@dataclass
class _Subject:
    kind: str
    name: str
    model: SubjectModel[Any]
    state: Any
    published: dict[str, Published] = field(default_factory=dict)
    judgement: Judgement = field(default_factory=lambda: Judgement([]))
    """The last evaluation (what the view shows)."""
    events: int = 0
    judged_at: float = -math.inf
    windows: dict[str, DuplicateWindow] = field(default_factory=dict)
    needs_tick: bool | None = None
    """From the view, computed when a tick asks (None: not known since the last change)."""
    timelines: dict[str, _Timeline] = field(default_factory=dict)
    pending: MemoryBuckets = field(default_factory=MemoryBuckets)
    """What the worker's write would keep beside the state (``KeepsPending``)."""
    counters: dict[str, int] = field(default_factory=dict)
    """The view counters those writes would move."""


@dataclass
class RunResult:
    """One policy's replay: its decisions (in order), where each went out, the status."""

    decisions: list[Decision]
    marks: list[DecisionMark]
    status: dict[str, Any]
    timelines: dict[tuple[str, str], dict[str, list[TimelinePoint]]]
    """``(kind, subject)`` -> gate -> points (only when asked for)."""
    events: int
    duplicates: int
    clock: float


def _number(value: Any) -> float | None:
    return finite_or(float(value)) if isinstance(value, int | float) else None


class Replay:
    """One policy over one :class:`EventLog`.

    Parameters
    ----------
    policy
        The gates' policy (``--policy``, else the built-in one).
    log
        The events, checked and ordered.
    calibrators
        Each stream's active calibrator; a stream without one uses the identity. A
        calibrator counts as activated just before the first event, as ``calibrate``
        does: its announcement (INCONCLUSIVE, ``recalibrated``) is the residual gate's
        published verdict, and the first decision of the output.
    batch
        Events per batch (1: a look after every event).
    dedupe_window
        Seconds of event time over which an event id counts once.
    timelines
        Whether to keep each gate's interval over event time (for the memo's plots).
    """

    def __init__(
        self,
        policy: Policy,
        log: EventLog,
        calibrators: Iterable[StoredCalibrator] = (),
        *,
        batch: int = 10_000,
        dedupe_window: float | None = None,
        timelines: bool = False,
    ) -> None:
        self.policy = policy
        self.log = log
        self.calibrators = {c.stream: c for c in calibrators}
        self.batch = batch
        self.dedupe_window = (
            policy.dedupe_window_seconds if dedupe_window is None else dedupe_window
        )
        self.keep_timelines = timelines
        self.handlers: dict[str, Handler[Any]] = {
            topic: HANDLERS[topic](policy) for topic in {g.topic for g in log.groups}
        }
        self._subjects: dict[tuple[str, str], _Subject] = {}
        self.decisions: list[Decision] = []
        self.marks: list[DecisionMark] = []
        self._replayed = 0
        self.duplicates = 0

    # --- subjects ---------------------------------------------------------------------

    def _subject(self, model: SubjectModel[Any], name: str, now: float) -> _Subject:
        key = (model.kind, name)
        subject = self._subjects.get(key)
        if subject is None:
            stored: dict[str, bytes | None] = dict.fromkeys(model.stored_fields)
            calibrator = self.calibrators.get(name) if model.kind == "stream" else None
            if calibrator is not None:
                stored[fields.CALIBRATOR] = calibrator.record
                stored[fields.CALIBRATOR_VERSION] = str(calibrator.version).encode()
            subject = _Subject(model.kind, name, model, model.load(name, stored))
            self._subjects[key] = subject
            if calibrator is not None:
                self._announce(subject, calibrator, now)
        return subject

    def _announce(self, subject: _Subject, calibrator: StoredCalibrator, now: float) -> None:
        """The residual gate's published verdict, and the decision announcing it, as
        ``calibrate`` leaves them."""
        from ..workflows._calibration import ANNOUNCING_GATE, announce

        fresh = next(
            v
            for v in subject.model.evaluate(subject.name, subject.state, now).verdicts
            if v.gate == ANNOUNCING_GATE
        )
        announced = announce(fresh, calibrator.version - 1)
        published, decision = publish(announced, now)
        subject.published = {announced.key: published}
        self._output(subject, [decision], now)

    def _output(self, subject: _Subject, decisions: list[Decision], now: float) -> None:
        for decision in decisions:
            self.decisions.append(msgspec.structs.replace(decision, event_ts=rfc3339(now)))
            self.marks.append(DecisionMark(now, self._replayed, subject.events))

    # --- the run ----------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        groups = self.log.groups
        sizes = np.array([len(g.events) for g in groups], dtype=np.int64)
        total = int(sizes.sum())
        group_of = np.repeat(np.arange(len(groups)), sizes)
        ts = np.concatenate([g.events.ts for g in groups])
        files = np.concatenate([g.events.partitions for g in groups])
        lines = np.concatenate([g.events.offsets for g in groups])
        # lexsort is stable: each group's rows keep their (already sorted) order.
        order = np.lexsort((lines, files, ts) if self.log.sorted else (lines, files))
        group_of, ts = group_of[order], ts[order]
        clocks = np.maximum.accumulate(ts)
        kinds = {topic: handler.model.kind for topic, handler in self.handlers.items()}
        subject_ids = _subject_ids(groups, kinds)
        cursors = [0] * len(groups)
        ticking = {
            model.kind: model.tick_seconds
            for model in (h.model for h in self.handlers.values())
            if model.tick_seconds is not None
        }
        last_tick = dict.fromkeys(ticking, -math.inf)
        now = -math.inf
        for start in range(0, total, self.batch):
            stop = min(start + self.batch, total)
            now = float(clocks[stop - 1])
            for group, count in _runs(group_of[start:stop], subject_ids):
                events = groups[group].events
                taken = events.take(slice(cursors[group], cursors[group] + count))
                cursors[group] += count
                self._replayed = start + count if self.batch == 1 else stop
                self._apply(groups[group].topic, groups[group].subject, taken, now)
            self._replayed = stop
            for kind, every in ticking.items():
                if now - last_tick[kind] >= every:
                    last_tick[kind] = now
                    self._tick(kind, every, now)
            if progress is not None:
                progress(stop, total)
        return RunResult(
            self.decisions,
            self.marks,
            self._status(now),
            {
                (s.kind, s.name): {gate: t.points for gate, t in s.timelines.items()}
                for s in self._subjects.values()
            },
            total,
            self.duplicates,
            now,
        )

    def _apply(self, topic: str, name: str, events: Any, now: float) -> None:
        """One subject's run of one topic's events: what the runner's plan does."""
        handler = self.handlers[topic]
        subject = self._subject(handler.model, name, now)
        window = subject.windows.get(topic)
        if window is None:
            window = subject.windows[topic] = DuplicateWindow(self.dedupe_window)
        update = window.assess(events.digests, events.ts, now)
        window.apply(update)
        if not update.fresh.all():
            rows = np.flatnonzero(update.fresh)
            self.duplicates += len(events) - rows.size
            events = events.take(rows)
        if len(events):
            handler.update(name, subject.state, events, now)
            if isinstance(handler.model, KeepsPending):
                changes = handler.model.drain_pending(subject.state)
                subject.pending.apply(changes)
                for counter, amount in changes.counts.items():
                    subject.counters[counter] = subject.counters.get(counter, 0) + amount
            subject.events += len(events)
            subject.needs_tick = None
        self._judge(subject, handler.model, now)

    def _judge(self, subject: _Subject, model: SubjectModel[Any], now: float) -> bool:
        judged = judge_subject(model, subject.name, subject.state, subject.published, now)
        subject.published, subject.judgement, subject.judged_at = (
            judged.published,
            judged.judgement,
            now,
        )
        subject.model = model
        if self.keep_timelines:
            for verdict in judged.verdicts:
                evidence = verdict.evidence
                subject.timelines.setdefault(verdict.key, _Timeline()).add(
                    TimelinePoint(
                        now,
                        verdict.verdict,
                        _number(evidence.get("estimate")),
                        _number(evidence.get("ci_low")),
                        _number(evidence.get("ci_high")),
                        _number(evidence.get("threshold")),
                    )
                )
        if judged.decisions:
            subject.needs_tick = None
            self._output(subject, judged.decisions, now)
        return bool(judged.decisions)

    def _tick(self, kind: str, every: float, now: float) -> None:
        """The worker's clock tick, on event time: a subject of ``kind`` that had no batch
        for ``every`` seconds and whose view says time can change its verdicts."""
        for subject in self._subjects.values():
            if subject.kind != kind or now - subject.judged_at < every:
                continue
            if subject.needs_tick is None:
                view = subject.model.view(subject.name, subject.state, subject.judgement)
                subject.needs_tick = subject.model.needs_tick(to_builtins(view))
            if subject.needs_tick:
                self._judge(subject, subject.model, now)

    # --- the end ------------------------------------------------------------------------

    def _status(self, now: float) -> dict[str, Any]:
        """``status --json`` of the replay's end, from the same views the worker writes."""
        return status_document(self.snapshot(), now).to_builtins()

    def snapshot(self) -> Snapshot:
        """What the read model would read of the worker's state now: every subject's
        view and gates (the HTTP API's and ``status``'s input)."""
        snapshot = Snapshot()
        for subject in self._subjects.values():
            view = subject.model.view(subject.name, subject.state, subject.judgement)
            # The read model reads views as the worker stores them: JSON objects.
            snapshot.views.setdefault(subject.kind, {})[subject.name] = to_builtins(view)
            for counter, value in subject.counters.items():
                parts = fields.parse_view_field(counter)
                if parts[0] == "join":  # as the read model reads the view's counters
                    snapshot.add_join_counter(subject.name, parts[1], value)
            records = gate_records(subject.judgement.verdicts, subject.published, subject.judged_at)
            snapshot.gates += [
                _gate_document(gate, subject.name, subject.kind, to_builtins(record))
                for gate, record in records.items()
            ]
        return snapshot


def _subject_ids(groups: list[Any], kinds: dict[str, str]) -> np.ndarray:
    """A number per (kind of subject, subject) for each group: telemetry and canary
    events of one agent are one subject."""
    ids: dict[tuple[str, str], int] = {}
    return np.array(
        [ids.setdefault((kinds[g.topic], g.subject), len(ids)) for g in groups], dtype=np.int64
    )


def _runs(group_of: np.ndarray, subject_ids: np.ndarray) -> list[tuple[int, int]]:
    """A batch's runs: per subject (in order of subject), its events in order, cut where
    the group (topic) changes; ``(group, count)`` each."""
    if group_of.size == 1:
        return [(int(group_of[0]), 1)]
    by_subject = group_of[np.argsort(subject_ids[group_of], kind="stable")]
    cuts = np.flatnonzero(by_subject[1:] != by_subject[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    counts = np.diff(np.append(starts, by_subject.size))
    return list(zip(by_subject[starts].tolist(), counts.tolist(), strict=True))
