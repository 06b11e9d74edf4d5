"""The label path: a batch of Kafka messages to residual statistics, gates and decisions.

decode, validate, dead-letter -> read fences and stream states -> group by stream ->
estimators update -> gates -> one atomic Redis write, fenced by offsets and revisions,
that also refuses event ids it already remembers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis

from ._config import Policy
from ._events import BadElement, LabelColumns, decode_label_message
from ._gates import (
    Verdict,
    decision_id,
    residual_drift_gate,
    score_drift_gate,
    should_publish,
)
from ._state import (
    AUDIT_MAXLEN,
    Keys,
    PlanConflict,
    WritePlan,
    apply_plan,
    event_digests,
    fence_field,
    load_apply_script,
)
from ._streams import ActiveCalibrator, StreamState

__all__ = ["BatchResult", "LabelBatchProcessor", "RawMessage", "decision_record"]

log = logging.getLogger(__name__)

STATE_CACHE_SIZE = 10_000

DeadLetterSender = Callable[[bytes, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Kafka message as the agent received it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class BatchResult:
    """What one batch did (for logs, tests and the batch-duration metric)."""

    ok: int = 0
    duplicate: int = 0
    dlq: int = 0
    skipped_messages: int = 0
    retries: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def decision_record(verdict: Verdict, now: float) -> dict[str, Any]:
    record = {
        "decision_id": decision_id(verdict),
        "ts": rfc3339(now),
        "gate": verdict.gate,
        "subject": verdict.subject,
        "verdict": verdict.verdict,
        "action": verdict.action,
        "reason": verdict.reason,
        "evidence": verdict.evidence,
    }
    for extra in ("bundle_id", "canary_percent"):
        if extra in verdict.evidence:
            record[extra] = verdict.evidence[extra]
    return record


Decoded = tuple[LabelColumns, list[BadElement]]


def _column(columns: list[LabelColumns], name: str) -> np.ndarray:
    values = chain.from_iterable(getattr(c, name) for c in columns)
    return np.array(list(values), dtype=np.float64)


@dataclass
class _Snapshot:
    """What the read phase saw: the compare-and-set guards of the write."""

    fences: dict[int, bytes | None]
    streams: dict[str, tuple[bytes | None, bytes | None, bytes | None]]
    gates: dict[str, bytes | None]


class LabelBatchProcessor:
    """Applies batches of ``driftgate.labels`` messages to Redis, exactly once.

    Parameters
    ----------
    client
        An asyncio Redis client.
    keys
        The Redis key layout.
    policy
        Gate thresholds.
    send_dead_letter
        Coroutine that publishes ``(payload, headers)`` to the dead-letter topic and
        returns once the broker has it.
    clock
        Wall clock, injectable for tests.
    """

    gate_names = ("residual_drift", "score_drift")

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        policy: Policy,
        send_dead_letter: DeadLetterSender,
        clock: Callable[[], float] = time.time,
        script_source: str | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.policy = policy
        self.send_dead_letter = send_dead_letter
        self.clock = clock
        self.script = client.register_script(script_source or load_apply_script())
        self._calibrators: dict[bytes, ActiveCalibrator] = {}
        # Stream states this worker wrote last, by stream: (revision, state). A stream
        # lives on one partition, so the next batch usually finds its own write there
        # and skips parsing the JSON; any other revision in Redis means someone else
        # wrote, and the stored state is read instead.
        self._states: dict[str, tuple[str, StreamState]] = {}

    async def apply(
        self, messages: Sequence[RawMessage], highwaters: Mapping[int, int | None] | None = None
    ) -> BatchResult:
        """Process one batch; returns once it is durably in Redis (or was already).

        ``highwaters`` (partition -> log end offset, as the consumer last saw it) lets a
        fence that lies beyond the end of the log be recognised as stale: the topic was
        deleted and created again (an in-memory broker restarted), so its offsets
        started over and nothing of the new log has been applied yet.

        Event ids already remembered are found by the write itself, which refuses the
        batch and names them; the batch is then recomputed without them. Duplicates are
        rare, so the common case costs no extra round trip.
        """
        if not messages:
            return BatchResult()
        decoded = [decode_label_message(m.value) for m in messages]
        dead_lettered: set[int] = set()
        known_duplicates: set[bytes] = set()
        retries = 0
        while True:
            snapshot = await self._read(messages, decoded)
            fences = self._effective_fences(messages[0].topic, snapshot, highwaters or {})
            live = [i for i, m in enumerate(messages) if m.offset >= fences[m.partition]]
            for index in live:
                if index not in dead_lettered:
                    await self._dead_letter(messages[index], decoded[index][1])
                    dead_lettered.add(index)
            written: dict[str, tuple[str, StreamState]] = {}
            plan, result = self._plan(messages, decoded, live, snapshot, known_duplicates, written)
            result.skipped_messages = len(messages) - len(live)
            result.retries = retries
            try:
                await apply_plan(self.client, self.script, plan)
            except PlanConflict as conflict:
                log.info("batch guard moved (%s); re-reading", conflict.reason)
                known_duplicates.update(conflict.seen)
                retries += 1
                continue
            self._remember_states(written)
            if result.skipped_messages:
                log.info("skipped %d messages below the offset fence", result.skipped_messages)
            return result

    def _remember_states(self, written: dict[str, tuple[str, StreamState]]) -> None:
        self._states.update(written)
        while len(self._states) > STATE_CACHE_SIZE:  # drop the least recently written
            del self._states[next(iter(self._states))]

    @staticmethod
    def _effective_fences(
        topic: str, snapshot: _Snapshot, highwaters: Mapping[int, int | None]
    ) -> dict[int, int]:
        fences = {}
        for partition, raw in snapshot.fences.items():
            fence, end = _as_int(raw, 0), highwaters.get(partition)
            if end is not None and fence > end:
                log.warning(
                    "offset fence %d of %s[%d] is past the end of the log (%d): the topic was "
                    "recreated; applying its messages from the start",
                    fence,
                    topic,
                    partition,
                    end,
                )
                fence = 0
            fences[partition] = fence
        return fences

    async def _dead_letter(self, message: RawMessage, bad: list[BadElement]) -> None:
        for element in bad:
            headers = {
                "driftgate-error": element.error,
                "driftgate-source-topic": message.topic,
                "driftgate-source-partition": str(message.partition),
                "driftgate-source-offset": str(message.offset),
            }
            await self.send_dead_letter(element.payload, headers)

    async def _read(self, messages: Sequence[RawMessage], decoded: list[Decoded]) -> _Snapshot:
        topic = messages[0].topic
        partitions = sorted({m.partition for m in messages})
        streams = sorted({name for columns, _ in decoded for name in set(columns.streams)})
        gate_fields = [f"{gate}|{name}" for name in streams for gate in self.gate_names]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.fence, [fence_field(topic, p) for p in partitions])
        for name in streams:
            pipe.hmget(self.keys.stream(name), ["calibrator", "state", "rev"])
        if gate_fields:
            pipe.hmget(self.keys.gate, gate_fields)
        replies = iter(await pipe.execute())
        fences = dict(zip(partitions, next(replies), strict=True))
        stream_rows = {name: tuple(next(replies)) for name in streams}
        gates = dict(zip(gate_fields, next(replies), strict=True)) if gate_fields else {}
        return _Snapshot(fences, stream_rows, gates)  # type: ignore[arg-type]

    def _calibrator(self, raw: bytes | None) -> ActiveCalibrator:
        if not raw:
            return ActiveCalibrator.from_json(None)
        cached = self._calibrators.get(raw)
        if cached is None:
            cached = self._calibrators[raw] = ActiveCalibrator.from_json(raw)
        return cached

    def _plan(
        self,
        messages: Sequence[RawMessage],
        decoded: list[Decoded],
        live: list[int],
        snapshot: _Snapshot,
        known_duplicates: set[bytes],
        written: dict[str, tuple[str, StreamState]],
    ) -> tuple[WritePlan, BatchResult]:
        topic = messages[0].topic
        keys, now = self.keys, self.clock()
        plan, result = WritePlan(), BatchResult()
        result.dlq = sum(len(decoded[i][1]) for i in live)

        # The live events, in offset order, as columns.
        ids = [event_id for i in live for event_id in decoded[i][0].event_ids]
        streams = [name for i in live for name in decoded[i][0].streams]
        live_columns = [decoded[i][0] for i in live]
        scores = _column(live_columns, "s")
        labels = _column(live_columns, "y")  # None becomes NaN: unlabeled
        times = _column(live_columns, "ts")

        # First occurrence of an id wins; ids remembered from earlier batches are out.
        digests = event_digests(ids)
        if len(dict.fromkeys(digests)) == len(digests) and not known_duplicates:
            accepted = np.ones(len(ids), dtype=bool)  # the common case, at C speed
            new_digests = digests
        else:
            accepted = np.zeros(len(ids), dtype=bool)
            batch_ids: set[bytes] = set()
            new_digests = []
            for index, digest in enumerate(digests):
                if digest in batch_ids or digest in known_duplicates:
                    continue
                batch_ids.add(digest)
                new_digests.append(digest)
                accepted[index] = True
        result.ok = len(new_digests)
        result.duplicate = len(ids) - result.ok

        for partition, raw_fence in snapshot.fences.items():
            field_name = fence_field(topic, partition)
            plan.checks.append((keys.fence, field_name, _as_text(raw_fence)))
            offsets = [messages[i].offset for i in live if messages[i].partition == partition]
            if offsets:
                plan.hset.append((keys.fence, field_name, str(max(offsets) + 1)))
        plan.remember_ids(keys.seen(topic), new_digests, now, self.policy.dedupe_window_seconds)

        by_stream: dict[str, list[int]] = {}
        for index in np.flatnonzero(accepted).tolist():
            by_stream.setdefault(streams[index], []).append(index)
        for name, rows in by_stream.items():
            chosen = np.asarray(rows)
            for verdict in self._update_stream(
                plan, name, scores[chosen], labels[chosen], snapshot, written
            ):
                previous = snapshot.gates.get(f"{verdict.gate}|{name}")
                self._record_verdict(plan, verdict, previous, now, result)

        plan.count(keys.counters, f"{topic}|ok", result.ok)
        plan.count(keys.counters, f"{topic}|duplicate", result.duplicate)
        plan.count(keys.counters, f"{topic}|dlq", result.dlq)
        if result.ok:
            newest = float(times[accepted].max())
            plan.hmax.append((keys.last_event_ts, topic, repr(newest)))
        return plan, result

    def _update_stream(
        self,
        plan: WritePlan,
        name: str,
        scores: np.ndarray,
        labels: np.ndarray,
        snapshot: _Snapshot,
        written: dict[str, tuple[str, StreamState]],
    ) -> list[Verdict]:
        raw_calibrator, raw_state, raw_rev = snapshot.streams[name]
        calibrator = self._calibrator(raw_calibrator)
        revision = _as_text(raw_rev)
        # Taken out of the cache: it is mutated below and only comes back once written.
        cached = self._states.pop(name, None)
        if cached is not None and revision is not None and cached[0] == revision:
            state = cached[1]
        elif raw_state:
            state = StreamState.from_json(raw_state)
        else:
            state = StreamState.empty(calibrator.version, self.policy)
        labeled = ~np.isnan(labels)
        residuals = labels[labeled] - calibrator.model.predict(scores[labeled])
        state.update(scores, residuals, self.policy.residual_drift)

        stream_key = self.keys.stream(name)
        new_revision = str(_as_int(raw_rev, 0) + 1)
        plan.checks.append((stream_key, "rev", revision))
        plan.hset.append((stream_key, "state", state.to_json()))
        plan.hset.append((stream_key, "rev", new_revision))
        written[name] = (new_revision, state)
        plan.sadd.append((self.keys.streams, name))
        verdicts = [
            residual_drift_gate(
                name,
                state.residuals,
                self.policy.residual_drift,
                calibrator.version,
                state.recent,
            )
        ]
        if calibrator.baseline_scores is not None:
            verdicts.append(
                score_drift_gate(
                    name,
                    state.score_sketch,
                    calibrator.baseline_scores,
                    self.policy.score_drift,
                    calibrator.version,
                )
            )
        return verdicts

    def _record_verdict(
        self,
        plan: WritePlan,
        verdict: Verdict,
        raw_previous: bytes | None,
        now: float,
        result: BatchResult,
    ) -> None:
        previous = orjson.loads(raw_previous) if raw_previous else {}
        published = previous.get("published")
        record = {
            "verdict": verdict.verdict,
            "action": verdict.action,
            "reason": verdict.reason,
            "evidence": verdict.evidence,
            "published": published,
            "updated": now,
        }
        if should_publish(published, verdict.verdict):
            decision = decision_record(verdict, now)
            encoded = orjson.dumps(decision).decode()
            record["published"] = verdict.verdict
            plan.rpush.append((self.keys.outbox, encoded))
            plan.xadd.append((self.keys.audit, AUDIT_MAXLEN, ["kind", "decision", "json", encoded]))
            plan.count(self.keys.counters, f"decisions|{verdict.gate}|{verdict.action}", 1)
            result.decisions.append(decision)
        plan.hset.append(
            (self.keys.gate, f"{verdict.gate}|{verdict.subject}", orjson.dumps(record).decode())
        )


def _as_int(raw: bytes | str | None, default: int) -> int:
    return default if raw is None else int(raw)


def _as_text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw
