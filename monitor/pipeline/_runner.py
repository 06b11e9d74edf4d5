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
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

from ..gates import Verdict
from ..store import AsyncClient
from ..store import _keys as fields
from ..store._keys import (
    Fence,
    KeyLayout,
    OutboxEntry,
    SubjectKeys,
    decode_seen_buckets,
    encode_audit_entry,
    encode_seen_buckets,
)
from ._dedupe import DuplicateWindow
from ._errors import PermanentError, TransientError
from ._judge import gate_records, judge_subject
from ._letters import MAX_MESSAGE_BYTES, dead_letter_headers, fit_dead_letter
from ._types import BatchResult, DeadLetter, DecodedBatch, Handler, RawMessage, SubjectEvents
from ._write import Applied, Conflict, Refused, SubjectWrite, WriteScript

__all__ = ["BatchRunner", "TopicNames"]

log = logging.getLogger(__name__)

StateT = TypeVar("StateT")

MAX_ROUNDS = 25
CACHE_SIZE = 10_000
# Dead letters are written a partition's chunk of whole messages at a time (a script that
# runs for seconds makes Redis answer BUSY to every other client meanwhile); a message with
# more bad elements than LETTERS_PER_MESSAGE (a megabyte of them is half a million) goes
# to the dead-letter topic whole, once.
LETTERS_PER_MESSAGE = 1_000
LETTERS_PER_WRITE = 5_000
LETTER_BYTES_PER_WRITE = 8 * 1024 * 1024

_BUMP_EPOCH = """
local stored = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if stored == ARGV[2] then return redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end
return tonumber(stored)
"""


@dataclass(frozen=True)
class TopicNames:
    """Where outbox entries go."""

    decisions: str
    dlq: str


@dataclass
class _Subject(Generic[StateT]):
    """What the worker knows of a subject: as of revision ``rev`` in Redis."""

    rev: int | None
    state: StateT
    fences: dict[int, Fence | None]
    window: DuplicateWindow
    published: dict[str, dict[str, Any]]


@dataclass
class _Ledger:
    """A partition's dead-letter subject: only a revision and a fence."""

    rev: int | None
    fence: Fence | None


class _StaleEpochs(Exception):
    """A fence from a newer log epoch than this worker knows: read the epochs again."""


class _LogRecreated(Exception):
    """A fence lies beyond the end of its log: the log was created anew."""

    def __init__(self, partition: int, epoch: int) -> None:
        super().__init__(partition, epoch)
        self.partition, self.epoch = partition, epoch


@dataclass
class _Plan(Generic[StateT]):
    name: str
    write: SubjectWrite | None
    after: _Subject[StateT]
    ok: int
    duplicate: int
    skipped: int
    decisions: list[dict[str, Any]]


class BatchRunner(Generic[StateT]):
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
    ) -> None:
        self.client = client
        self.layout = layout
        self.handler = handler
        self.model = handler.model
        self.script = script
        self.topics = topics
        self.dedupe_window = dedupe_window
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self._subjects: OrderedDict[str, _Subject[StateT]] = OrderedDict()
        self._ledgers: dict[tuple[str, int], _Ledger] = {}
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
            if dead_letters:
                await self._dead_letter(topic, dead_letters, highwaters, result)
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
        highwaters: Mapping[int, int | None],
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
                await self._new_epoch(topic, recreated.partition, recreated.epoch)
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
                verdicts, published, decisions, settled = self._judge(name, entry, keys, now, write)
                if not decisions:
                    self._subjects[name] = entry
                    continue
                if settled:
                    write.state.update(self.model.dump(entry.state))
                write.view[fields.VIEW] = orjson.dumps(self.model.view(name, entry.state, verdicts))
                write.view[fields.GATES] = orjson.dumps(gate_records(verdicts, published, now))
                after = _Subject(write.new_rev, entry.state, entry.fences, entry.window, published)
                plans.append(_Plan(name, write, after, 0, 0, 0, decisions))
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
        kind = self.model.kind
        members: Any = await self.client.smembers(self.layout.registry(kind))
        names = sorted(member.decode() for member in members)
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.layout.subject(kind, name).view, fields.VIEW)
        views = await pipe.execute()
        return [
            name
            for name, view in zip(names, views, strict=True)
            if view is not None and self.model.needs_tick(orjson.loads(view))
        ]

    # --- reading what the worker does not hold ----------------------------------------------

    async def _read_epochs(self) -> None:
        raw: dict[bytes, bytes] = await self.client.hgetall(self.layout.log_epochs)  # type: ignore[assignment]
        epochs = {}
        for name, value in raw.items():
            topic, _, partition = name.decode().rpartition(":")
            epochs[(topic, int(partition))] = int(value)
        self._epochs = epochs

    async def _new_epoch(self, topic: str, partition: int, epoch: int) -> None:
        log.warning(
            "offset fences of %s[%d] lie beyond the end of the log: the log was created anew; "
            "its offsets start a new epoch",
            topic,
            partition,
        )
        await self.client.eval(
            _BUMP_EPOCH,
            1,
            self.layout.log_epochs,
            KeyLayout.log_epoch_field(topic, partition),
            str(epoch),
        )
        await self._read_epochs()

    async def _load(self, names: list[str], topic: str, needed: dict[str, set[int]]) -> None:
        model = self.model
        wanted = [
            fields.REV,
            *model.stored_fields,
            *(fields.published(gate) for gate in model.gates),
            fields.seen(topic),
        ]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            keys = self.layout.subject(model.kind, name)
            partitions = sorted(needed[name])
            pipe.hmget(keys.state, [*wanted, *(fields.fence(topic, p) for p in partitions)])
            pipe.sadd(self.layout.registry(model.kind), name)
        pipe.sadd(self.layout.kinds, model.kind)  # last: the replies above keep their places
        replies = await pipe.execute()
        rows = {name: replies[2 * i] for i, name in enumerate(names)}
        windows = {name: decode_seen_buckets(rows[name][len(wanted) - 1]) for name in names}

        pipe = self.client.pipeline(transaction=False)
        blobs_wanted = []
        for name in names:
            keys = self.layout.subject(model.kind, name)
            for bucket in windows[name][1]:
                pipe.get(keys.seen_bucket(topic, bucket))
                blobs_wanted.append((name, bucket))
        blobs = await pipe.execute() if blobs_wanted else []
        by_subject: dict[str, dict[int, bytes | None]] = {name: {} for name in names}
        for (name, bucket), blob in zip(blobs_wanted, blobs, strict=True):
            by_subject[name][bucket] = blob

        for name in names:
            row = rows[name]
            values = dict(zip(wanted, row[: len(wanted)], strict=True))
            partitions = sorted(needed[name])
            rev = values[fields.REV]
            published = {
                gate: orjson.loads(raw)
                for gate in model.gates
                if (raw := values[fields.published(gate)]) is not None
            }
            watermark, _ = windows[name]
            self._subjects[name] = _Subject(
                rev=None if rev is None else int(rev),
                state=model.load(name, {f: values[f] for f in model.stored_fields}),
                fences={
                    p: Fence.decode(raw)
                    for p, raw in zip(partitions, row[len(wanted) :], strict=True)
                },
                window=DuplicateWindow.restore(self.dedupe_window, watermark, by_subject[name]),
                published=published,
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
        starts, fences = self._fences(
            entry.fences, events.partitions, events.offsets, topic, highwaters
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
        verdicts, published, decisions, settled = self._judge(name, entry, keys, now, write)
        if not (len(fresh) or duplicate or decisions or fences or update.expired):
            return _Plan(name, None, entry, 0, 0, skipped, [])  # a replay: nothing to write
        if len(fresh) or settled:
            write.state.update(self.model.dump(entry.state))
        write.view[fields.VIEW] = orjson.dumps(self.model.view(name, entry.state, verdicts))
        write.view[fields.GATES] = orjson.dumps(gate_records(verdicts, published, now))
        # Only kept if the write lands; otherwise the subject is read again.
        entry.window.apply(update)
        after = _Subject(
            write.new_rev, entry.state, {**entry.fences, **fences}, entry.window, published
        )
        return _Plan(name, write, after, len(fresh), duplicate, skipped, decisions)

    def _fences(
        self,
        stored: Mapping[int, Fence | None],
        partitions: np.ndarray,
        offsets: np.ndarray,
        topic: str,
        highwaters: Mapping[int, int | None],
    ) -> tuple[dict[int, int], dict[int, Fence]]:
        """Per partition, the first offset to apply and the new fence (only where it moves).

        A fence of an older log epoch means nothing was applied from the current log yet;
        one beyond the end of the current log means the log was created anew.
        """
        assert self._epochs is not None
        starts, moved = {}, {}
        one = partitions.size and partitions.min() == partitions.max()
        for partition in [int(partitions[0])] if one else np.unique(partitions).tolist():
            epoch = self._epochs.get((topic, partition), 0)
            fence = stored.get(partition)
            if fence is not None and fence.epoch > epoch:
                raise _StaleEpochs
            start = fence.offset if fence is not None and fence.epoch == epoch else 0
            end = highwaters.get(partition)
            if fence is not None and fence.epoch == epoch and end and start > end:
                raise _LogRecreated(partition, epoch)
            new = Fence(epoch, max(start, int(offsets[partitions == partition].max()) + 1))
            if fence is None or new > fence:
                moved[partition] = new
            starts[partition] = start
        return starts, moved

    def _judge(
        self, name: str, entry: _Subject, keys: SubjectKeys, now: float, write: SubjectWrite
    ) -> tuple[list[Verdict], dict[str, dict[str, Any]], list[dict[str, Any]], bool]:
        """Judge the subject (:func:`judge_subject`) and put its decisions into the outbox
        and the audit log, in the same write; a gate's published record is written only
        with a decision."""
        judged = judge_subject(self.model, name, entry.state, entry.published, now)
        for decision in judged.decisions:
            encoded = orjson.dumps(decision)
            write.outbox.append(
                OutboxEntry(
                    "decision", self.topics.decisions, keys.name.encode(), encoded, {}
                ).encode()
            )
            write.audit.append(encode_audit_entry(encoded))
            write.count(fields.decisions(decision["gate"], decision["action"]), 1)
        # The records the decisions moved: by the verdict's key, the gate and its part
        # (a gate judging each covariate keeps one record per covariate).
        for key, record in judged.published.items():
            if record is not entry.published.get(key):
                write.state[fields.published(key)] = orjson.dumps(record)
        return judged.verdicts, judged.published, judged.decisions, judged.settled

    # --- dead letters ---------------------------------------------------------------------

    async def _dead_letter(
        self,
        topic: str,
        letters: list[DeadLetter],
        highwaters: Mapping[int, int | None],
        result: BatchResult,
    ) -> None:
        """Put dead letters into their partition's outbox, once: a fence per partition,
        moved by each chunk of whole messages."""
        by_partition: dict[int, list[DeadLetter]] = {}
        for letter in sorted(letters, key=lambda letter: letter.offset):
            by_partition.setdefault(letter.partition, []).append(letter)
        retries = 0
        while by_partition:
            missing = [p for p in by_partition if (topic, p) not in self._ledgers]
            if missing:
                await self._load_ledgers(topic, missing)
            plans = []
            for partition, waiting in list(by_partition.items()):
                ledger = self._ledgers[(topic, partition)]
                chunk = _whole_messages(waiting)
                try:
                    write = self._ledger_write(topic, ledger, chunk, highwaters)
                except _StaleEpochs:
                    retries += 1
                    await self._read_epochs()
                except _LogRecreated as recreated:
                    retries += 1
                    await self._new_epoch(topic, recreated.partition, recreated.epoch)
                else:
                    plans.append((partition, len(chunk), write))
            outcomes = await self.script.run([write for _, _, write in plans])
            for (partition, taken, write), outcome in zip(plans, outcomes, strict=True):
                if isinstance(outcome, Refused):
                    raise PermanentError(f"dead letters of {topic}[{partition}]: {outcome.reason}")
                if isinstance(outcome, Conflict):
                    retries += 1
                    del self._ledgers[(topic, partition)]
                    continue
                sent = write.counters.get(fields.count(topic, "dlq"), 0)
                result.dlq += sent
                if sent:
                    result.outboxes.add(("partition", write.keys.name))
                ledger = self._ledgers[(topic, partition)]
                fence = next(iter(write.fences.values()), None)
                self._ledgers[(topic, partition)] = _Ledger(
                    write.new_rev, Fence.decode(fence) if fence else ledger.fence
                )
                if rest := by_partition[partition][taken:]:
                    by_partition[partition] = rest
                else:
                    del by_partition[partition]
            if retries > MAX_ROUNDS:
                raise TransientError(
                    f"dead-letter ledgers of {topic} kept changing under this worker"
                )

    async def _load_ledgers(self, topic: str, partitions: list[int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            keys = self._ledger_keys(topic, partition)
            pipe.hmget(keys.state, [fields.REV, fields.fence(topic, partition)])
            pipe.sadd(self.layout.registry("partition"), keys.name)
        replies = await pipe.execute()
        for i, partition in enumerate(partitions):
            rev, fence = replies[2 * i]
            self._ledgers[(topic, partition)] = _Ledger(
                None if rev is None else int(rev), Fence.decode(fence)
            )

    def _ledger_keys(self, topic: str, partition: int) -> SubjectKeys:
        return self.layout.subject("partition", KeyLayout.partition_subject(topic, partition))

    def _ledger_write(
        self,
        topic: str,
        ledger: _Ledger,
        letters: list[DeadLetter],
        highwaters: Mapping[int, int | None],
    ) -> SubjectWrite:
        partition = letters[0].partition
        starts, fences = self._fences(
            {partition: ledger.fence},
            np.full(len(letters), partition),
            np.array([letter.offset for letter in letters]),
            topic,
            highwaters,
        )
        write = SubjectWrite(self._ledger_keys(topic, partition), ledger.rev)
        for moved, fence in fences.items():
            write.fences[fields.fence(topic, moved)] = fence.encode()
        fresh = [letter for letter in letters if letter.offset >= starts[partition]]
        for letter in fresh:
            payload, headers = fit_dead_letter(
                letter.payload,
                dead_letter_headers(letter.error, topic, letter.partition, letter.offset),
                self.max_message_bytes,
            )
            if len(payload) < len(letter.payload):
                log.warning(
                    "dead letter of %s[%d]@%d: %d bytes with its headers is over the "
                    "%d-byte message limit; sent truncated to %d bytes",
                    topic,
                    letter.partition,
                    letter.offset,
                    len(letter.payload),
                    self.max_message_bytes,
                    len(payload),
                )
            write.outbox.append(
                OutboxEntry("dead_letter", self.topics.dlq, b"", payload, headers).encode()
            )
        write.count(fields.count(topic, "dlq"), len(fresh))
        return write


def _at_most_per_message(
    messages: Sequence[RawMessage], letters: Sequence[DeadLetter]
) -> list[DeadLetter]:
    """The dead letters, with each message of more than LETTERS_PER_MESSAGE of them
    replaced by the whole message, once (its good elements were still applied)."""
    per_message = Counter((letter.partition, letter.offset) for letter in letters)
    crowded = {where for where, n in per_message.items() if n > LETTERS_PER_MESSAGE}
    if not crowded:
        return list(letters)
    kept = [letter for letter in letters if (letter.partition, letter.offset) not in crowded]
    first: dict[tuple[int, int], DeadLetter] = {}
    for letter in letters:
        first.setdefault((letter.partition, letter.offset), letter)
    for message in messages:
        where = (message.partition, message.offset)
        if where in crowded:
            reason = f"{first[where].error} (the first of {per_message[where]} bad elements)"
            kept.append(DeadLetter(message.value or b"", reason, *where))
    return kept


def _whole_messages(letters: list[DeadLetter]) -> list[DeadLetter]:
    """The first of a partition's dead letters (in offset order) that one write takes:
    whole messages, up to LETTERS_PER_WRITE letters and LETTER_BYTES_PER_WRITE bytes (at
    least one message)."""
    size = 0
    for i, letter in enumerate(letters):
        if (
            i
            and letter.offset != letters[i - 1].offset
            and (i >= LETTERS_PER_WRITE or size >= LETTER_BYTES_PER_WRITE)
        ):
            return letters[:i]
        size += len(letter.payload)
    return letters


def _refused_letters(
    messages: Sequence[RawMessage], events: SubjectEvents, name: str, reason: str
) -> list[DeadLetter]:
    """The messages that held a refused subject's events, whole (they may hold others' too,
    which were applied: the error names the subject that was not)."""
    where = set(zip(events.partitions.tolist(), events.offsets.tolist(), strict=True))
    return [
        DeadLetter(m.value or b"", f"StateError: subject {name!r}: {reason}", m.partition, m.offset)
        for m in messages
        if (m.partition, m.offset) in where
    ]
