"""The fenced batch runner: one way through for every subject.

    messages -> handler.decode (validate; bad input -> dead letters)
             -> per subject: offset fences, duplicates, handler.update (estimators),
                model.evaluate (gates), decisions on verdict changes
             -> one atomic script call per subject (all of them in one pipeline)
             -> dead letters, with their own fence, in their partition's outbox

Each subject's write carries its revision (compare-and-set), its offset fences (per
topic and partition, in the subject's own hash slot) and its duplicate window, so each
subject's update is atomic and applied exactly once even when a batch spans many slots
of a Redis Cluster and the worker dies half way. The worker keeps what it wrote last
(state, fences, duplicate window) and usually writes without reading first: a revision
that moved makes the write fail and the subject is read and recomputed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic

import numpy as np
import orjson

from ..events._decisions import encode
from ..store import AsyncClient
from ..store import _keys as fields
from ..store._keys import (
    KeyLayout,
    OutboxEntry,
    SubjectKeys,
    encode_audit_entry,
    encode_seen_buckets,
)
from ..store._runner_reads import RunnerReads, StoredLedger
from ..store._write import Applied, Conflict, Refused, SubjectWrite, WriteScript
from ._dedupe import DuplicateWindow
from ._errors import PermanentError, TransientError
from ._fences import plan_fences
from ._judge import Judged, gate_records, judge_subject
from ._letters import MAX_MESSAGE_BYTES
from ._runner_letters import _at_most_per_message, _DeadLetters, _refused_letters
from ._runner_types import (
    MAX_ROUNDS,
    StateT,
    TopicNames,
    _LogRecreated,
    _Plan,
    _StaleEpochs,
    _Subject,
)
from ._types import (
    BatchResult,
    DeadLetter,
    DecodedBatch,
    Handler,
    KeepsPending,
    RawMessage,
    SubjectEvents,
)

__all__ = ["BatchRunner", "TopicNames"]

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000


class BatchRunner(_DeadLetters, Generic[StateT]):
    """Applies batches of one topic's messages to Redis, exactly once per subject.

    Parameters
    ----------
    client
        An asyncio Redis client (standalone or cluster).
    layout
        The key layout.
    handler
        The topic's handler: decoding, grouping and estimator updates; its ``model``
        evaluates gates.
    script
        The subject write script, shared by the runners of one worker.
    topics
        Full names of the decision and dead-letter topics.
    dedupe_window
        Seconds of event time over which an event id counts once.
    clock
        Wall clock, injectable for tests.
    max_message_bytes
        The largest record the producer may send (its ``max_request_size``, the broker's
        ``message.max.bytes``): a dead letter that would be larger keeps a prefix of its
        payload (see ``pipeline._letters``) instead of being refused by Kafka for good.
    """

    def __init__(
        self,
        client: AsyncClient,
        layout: KeyLayout,
        handler: Handler[StateT],
        script: WriteScript,
        topics: TopicNames,
        dedupe_window: float,
        clock: Callable[[], float] = time.time,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        log_end: Callable[[str, int], Awaitable[int | None]] | None = None,
    ) -> None:
        self.client = client
        # The end of a partition's log asked of the broker now (not as last fetched): a new
        # epoch is started only when it too lies before the fence.
        self.log_end = log_end
        self.layout = layout
        self.reads = RunnerReads(client, layout)
        self.handler = handler
        self.model = handler.model
        # A model with records beside its state (the late-label join's halves).
        self.pending: KeepsPending[StateT] | None = (
            self.model if isinstance(self.model, KeepsPending) else None
        )
        self.script = script
        self.topics = topics
        self.dedupe_window = dedupe_window
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self._subjects: OrderedDict[str, _Subject[StateT]] = OrderedDict()
        self._ledgers: dict[tuple[str, int], StoredLedger] = {}
        self._epochs: dict[tuple[str, int], int] | None = None
        # A batch and a clock tick take subjects out of ``_subjects`` while they wait on
        # Redis: one at a time.
        self._busy = asyncio.Lock()

    # --- the batch ------------------------------------------------------------------------

    async def apply(
        self, messages: Sequence[RawMessage], highwaters: Mapping[int, int | None] | None = None
    ) -> BatchResult:
        """Process one batch; returns once all of it is durably in Redis (or was already).

        ``highwaters`` (partition -> log end offset, as the consumer last saw it) lets a
        fence beyond the end of its log be recognised in a batch that begins the log (at
        offset 0): the log was created anew (an in-memory broker restarted), its offsets
        start again, and the partition gets a new epoch instead of a fence moved backwards.
        """
        if not messages:
            return BatchResult()
        async with self._busy:
            return await self._apply(messages, highwaters)

    async def _apply(
        self, messages: Sequence[RawMessage], highwaters: Mapping[int, int | None] | None
    ) -> BatchResult:
        result = BatchResult()
        topic = messages[0].topic
        # A fence beyond the log end proves the log new only in a batch that begins the
        # log (offset 0: a new log's consumer offsets went with the old one). Otherwise
        # the log end may be one this worker saw before a pause or a rebalance, older than
        # the fence another worker wrote since; a new epoch would apply that worker's
        # events again.
        first = {m.partition for m in messages if m.offset == 0}
        highwaters = {p: end for p, end in (highwaters or {}).items() if p in first}
        decoded = self._decode(messages)
        dead_letters = _at_most_per_message(messages, decoded.dead_letters)
        pending = dict(decoded.subjects)
        try:
            for attempt in range(MAX_ROUNDS):
                refused = await self._round(pending, topic, highwaters, result)
                for name, reason in refused.items():
                    log.error("subject %r not written: %s; its events go to the DLQ", name, reason)
                    dead_letters += _refused_letters(messages, pending.pop(name), name, reason)
                if not pending:
                    break
                result.conflicts += len(pending)
                await asyncio.sleep(min(0.2, 0.002 * 2**attempt) * random.random())
            else:
                raise TransientError(
                    f"subjects {sorted(pending)[:5]} kept changing under this worker"
                )
            if dead_letters or decoded.ignored:
                await self._dead_letter(
                    topic, [*dead_letters, *decoded.ignored], highwaters, result
                )
        except BaseException:
            # What the worker holds of these subjects may be ahead of Redis now.
            for name in decoded.subjects:
                self._subjects.pop(name, None)
            raise
        return result

    async def _round(
        self,
        pending: dict[str, SubjectEvents],
        topic: str,
        highwaters: dict[int, int | None],
        result: BatchResult,
    ) -> dict[str, str]:
        """Plan and write every pending subject once; drops the applied ones from
        ``pending`` and returns the refused ones with the reason."""
        if self._epochs is None:
            await self._read_epochs()
        needed = {
            name: set(np.unique(events.partitions).tolist()) for name, events in pending.items()
        }
        cold = [
            name
            for name, partitions in needed.items()
            if name not in self._subjects or not partitions <= self._subjects[name].fences.keys()
        ]
        if cold:
            await self._load(cold, topic, needed)
        now = self.clock()
        plans: list[_Plan[StateT]] = []
        for name, events in pending.items():
            entry = self._subjects.pop(name)
            try:
                plans.append(self._plan(name, entry, events, topic, highwaters, now))
            except _StaleEpochs:
                self._subjects[name] = entry
                await self._read_epochs()
            except _LogRecreated as recreated:
                self._subjects[name] = entry
                await self._log_recreated(topic, recreated, highwaters)
        writes = [plan.write for plan in plans if plan.write is not None]
        landed = iter(await self.script.run(writes))
        refused: dict[str, str] = {}
        for plan in plans:
            outcome = next(landed) if plan.write is not None else Applied()
            if isinstance(outcome, Applied):
                self._remember(plan.name, plan.after)
                del pending[plan.name]
                result.ok += plan.ok
                result.duplicate += plan.duplicate
                result.skipped += plan.skipped
                result.decisions += plan.decisions
                if plan.write is not None and plan.write.outbox:
                    result.outboxes.add((self.model.kind, plan.name))
            elif isinstance(outcome, Refused):
                refused[plan.name] = outcome.reason
            else:
                assert isinstance(outcome, Conflict)
                log.debug("subject %r moved to revision %s; re-reading", plan.name, outcome)
        return refused

    def _dump(self, keys: SubjectKeys, state: StateT, write: SubjectWrite) -> None:
        """The state's fields into the write, and the records of its rings (a model that
        keeps one, such as a stream's residual history, has ``ring_records``)."""
        write.state.update(self.model.dump(state))
        ring_records = getattr(self.model, "ring_records", None)
        if ring_records is not None:
            write.overwrites += ring_records(keys, state)

    def _remember(self, name: str, entry: _Subject[StateT]) -> None:
        self._subjects[name] = entry
        self._subjects.move_to_end(name)
        while len(self._subjects) > CACHE_SIZE:
            self._subjects.popitem(last=False)

    def _decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        """The handler's decoding of the batch; a message that makes it raise (JSON nested
        deeper than the decoder's recursion limit) goes to the dead-letter topic whole,
        with the exception as its reason, instead of stopping the worker on every retry."""
        try:
            return self.handler.decode(messages)
        except Exception:  # found below, message by message
            log.exception(
                "decoding a batch of %s failed; now message by message", messages[0].topic
            )
        survivors, letters = [], []
        for message in messages:
            try:
                self.handler.decode([message])
            except Exception as exc:  # noqa: BLE001 - the message's answer: the dead-letter topic
                reason = f"{type(exc).__name__}: {exc}"
                letters.append(
                    DeadLetter(message.value or b"", reason, message.partition, message.offset)
                )
            else:
                survivors.append(message)
        decoded = self.handler.decode(survivors)
        decoded.dead_letters += letters
        return decoded

    # --- the clock -------------------------------------------------------------------------

    async def tick(self, source: str) -> BatchResult:
        """Evaluate the subjects whose verdicts time alone can change (a canary without data
        turns stale, one monitored for days stalls) and publish what changed.

        ``source`` is this runner's input topic. Only verdict changes are written, with the
        same compare-and-set as a batch, so every worker may tick: a decision still goes
        out once.
        """
        async with self._busy:
            return await self._tick(source)

    async def _tick(self, source: str) -> BatchResult:
        result = BatchResult()
        pending = await self._ticking()
        for attempt in range(MAX_ROUNDS):
            cold = [name for name in pending if name not in self._subjects]
            if cold:
                await self._load(cold, source, {name: set() for name in cold})
            now = self.clock()
            plans = []
            for name in pending:
                entry = self._subjects.pop(name)
                keys = self.layout.subject(self.model.kind, name)
                write = SubjectWrite(keys, entry.rev)
                judged = self._judge(name, entry, keys, now, write)
                if not judged.decisions:
                    self._subjects[name] = entry
                    continue
                if judged.settled:
                    self._dump(keys, entry.state, write)
                self._views(name, entry.state, judged, now, write)
                after = _Subject(
                    write.new_rev, entry.state, entry.fences, entry.window, judged.published
                )
                plans.append(_Plan(name, write, after, 0, 0, 0, judged.decisions))
            outcomes = await self.script.run([plan.write for plan in plans])  # type: ignore[misc]
            pending = []
            for plan, outcome in zip(plans, outcomes, strict=True):
                if isinstance(outcome, Applied):
                    self._remember(plan.name, plan.after)
                    result.decisions += plan.decisions
                    result.outboxes.add((self.model.kind, plan.name))
                elif isinstance(outcome, Conflict):
                    pending.append(plan.name)  # moved meanwhile: judge the new state
                else:
                    raise PermanentError(f"subject {plan.name!r} not written: {outcome.reason}")
            if not pending:
                return result
            await asyncio.sleep(min(0.2, 0.002 * 2**attempt) * random.random())
        raise TransientError(f"subjects {sorted(pending)[:5]} kept changing under this worker")

    async def _ticking(self) -> list[str]:
        """The subjects whose stored view says that time can change their verdicts."""
        return [
            name
            for name, view in await self.reads.views(self.model.kind)
            if view is not None and self.model.needs_tick(view)
        ]

    # --- reading what the worker does not hold ----------------------------------------------

    async def _read_epochs(self) -> None:
        self._epochs = await self.reads.epochs()

    async def _log_recreated(
        self, topic: str, recreated: _LogRecreated, highwaters: dict[int, int | None]
    ) -> None:
        """A fence beyond the log end the consumer last saw: the log is new, or that end is
        older than the fence (this worker was paused, with a batch that begins the log,
        while another moved the fence). Asked afresh, an end at or past the fence is the
        second case: that end is dropped and the batch is planned against the fence."""
        fresh = None if self.log_end is None else await self.log_end(topic, recreated.partition)
        if fresh is not None and fresh >= recreated.fence:
            log.info(
                "%s[%d]: the log end seen before (%s) was older than the fence %d; the log "
                "ends at %d: no new epoch",
                topic,
                recreated.partition,
                highwaters.get(recreated.partition),
                recreated.fence,
                fresh,
            )
            highwaters.pop(recreated.partition, None)
            return
        await self._new_epoch(topic, recreated.partition, recreated.epoch, fresh)

    async def _new_epoch(
        self, topic: str, partition: int, epoch: int, end: int | None = None
    ) -> None:
        log.warning(
            "offset fences of %s[%d] lie beyond the end of the log%s: the log was created "
            "anew; its offsets start a new epoch",
            topic,
            partition,
            "" if end is None else f" (the broker says it ends at {end})",
        )
        await self.reads.bump_epoch(topic, partition, epoch)
        await self._read_epochs()

    async def _load(self, names: list[str], topic: str, needed: dict[str, set[int]]) -> None:
        model = self.model
        parts = getattr(model, "gates_of", None)  # records of gates judged in parts
        stored = await self.reads.subjects(
            model.kind, names, topic, model.stored_fields, model.gates, needed, parts
        )
        states = {name: model.load(name, subject.values) for name, subject in stored.items()}
        if self.pending is not None:
            buckets = {name: self.pending.pending_buckets(state) for name, state in states.items()}
            blobs = await self.reads.pending(model.kind, buckets)
            for name, state in states.items():
                self.pending.restore_pending(state, blobs[name])
        for name, subject in stored.items():
            self._subjects[name] = _Subject(
                rev=subject.rev,
                state=states[name],
                fences=subject.fences,
                window=DuplicateWindow.restore(self.dedupe_window, subject.watermark, subject.seen),
                published=subject.published,
            )

    # --- one subject's share --------------------------------------------------------------

    def _plan(
        self,
        name: str,
        entry: _Subject[StateT],
        events: SubjectEvents,
        topic: str,
        highwaters: Mapping[int, int | None],
        now: float,
    ) -> _Plan[StateT]:
        keys = self.layout.subject(self.model.kind, name)
        write = SubjectWrite(keys, entry.rev)
        starts, fences = plan_fences(
            self._known_epochs, entry.fences, events.partitions, events.offsets, topic, highwaters
        )
        for partition, fence in fences.items():
            write.fences[fields.fence(topic, partition)] = fence.encode()
        live = np.ones(len(events), dtype=bool)
        for partition, start in starts.items():
            live &= (events.partitions != partition) | (events.offsets >= start)
        skipped = len(events) - int(live.sum())
        if skipped:
            events = events.take(np.flatnonzero(live))

        update = entry.window.assess(events.digests, events.ts, now)
        fresh_rows = np.flatnonzero(update.fresh)
        duplicate = len(events) - fresh_rows.size
        fresh = events if fresh_rows.size == len(events) else events.take(fresh_rows)
        for bucket, digests in update.appended.items():
            write.appends.append((keys.seen_bucket(topic, bucket), digests.tobytes()))
        write.deletions = [keys.seen_bucket(topic, bucket) for bucket in update.expired]
        if update.appended or update.expired:
            write.state[fields.seen(topic)] = encode_seen_buckets(update.watermark, update.live)

        audit: list[dict[str, Any]] = []
        if len(fresh):
            audit = self.handler.update(name, entry.state, fresh, now)
            write.maxima[fields.last_ts(topic)] = float(fresh.ts.max())
        write.audit += [encode_audit_entry(orjson.dumps(record)) for record in audit]
        write.count(fields.count(topic, "ok"), len(fresh))
        write.count(fields.count(topic, "duplicate"), duplicate)
        judged = self._judge(name, entry, keys, now, write)
        if not (len(fresh) or duplicate or judged.decisions or fences or update.expired):
            return _Plan(name, None, entry, 0, 0, skipped, [])  # a replay: nothing to write
        if len(fresh) or judged.settled:
            self._dump(keys, entry.state, write)
        if len(fresh) and self.pending is not None:
            self._pending_writes(write, keys, entry.state)
        self._views(name, entry.state, judged, now, write)
        # Only kept if the write lands; otherwise the subject is read again.
        entry.window.apply(update)
        after = _Subject(
            write.new_rev, entry.state, {**entry.fences, **fences}, entry.window, judged.published
        )
        return _Plan(name, write, after, len(fresh), duplicate, skipped, judged.decisions)

    def _views(
        self, name: str, state: StateT, judged: Judged, now: float, write: SubjectWrite
    ) -> None:
        """The subject's view and its gates' records after ``judged``, in the write."""
        write.view[fields.VIEW] = encode(self.model.view(name, state, judged.judgement))
        write.view[fields.GATES] = encode(gate_records(judged.verdicts, judged.published, now))

    def _pending_writes(self, write: SubjectWrite, keys: SubjectKeys, state: StateT) -> None:
        """The model's records beside its state (``KeepsPending``), in the same write."""
        assert self.pending is not None
        changes = self.pending.drain_pending(state)
        write.appends += [(keys.pending_bucket(b), blob) for b, blob in changes.appends.items()]
        write.deletions += [keys.pending_bucket(bucket) for bucket in changes.deleted]
        for counter, amount in changes.counts.items():
            write.count(counter, amount)

    @property
    def _known_epochs(self) -> Mapping[tuple[str, int], int]:
        """The log epochs, read before the first batch (the fences are planned in them)."""
        assert self._epochs is not None
        return self._epochs

    def _judge(
        self, name: str, entry: _Subject, keys: SubjectKeys, now: float, write: SubjectWrite
    ) -> Judged:
        """Judge the subject (:func:`judge_subject`) and put its decisions into the outbox
        and the audit log, in the same write; a gate's published record is written only
        with a decision."""
        judged = judge_subject(self.model, name, entry.state, entry.published, now)
        for decision in judged.decisions:
            encoded = encode(decision)
            write.outbox.append(
                OutboxEntry(
                    "decision", self.topics.decisions, keys.name.encode(), encoded, {}
                ).encode()
            )
            write.audit.append(encode_audit_entry(encoded))
            write.count(fields.decisions(decision.gate, decision.action), 1)
        # The records the decisions moved: by the verdict's key, the gate and its part
        # (a gate judging each covariate keeps one record per covariate).
        for key, record in judged.published.items():
            if record is not entry.published.get(key):
                write.state[fields.published(key)] = encode(record)
        return judged
