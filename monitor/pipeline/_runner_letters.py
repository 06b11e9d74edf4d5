"""The batch runner's dead letters: written once into their partition's outbox, each
partition's ledger fenced like a subject, a chunk of whole messages per write."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..store import _keys as fields
from ..store._keys import Fence, OutboxEntry
from ..store._runner_reads import RunnerReads, StoredLedger
from ..store._write import Conflict, Refused, SubjectWrite, WriteScript
from ._errors import PermanentError, TransientError
from ._fences import plan_fences
from ._letters import dead_letter_headers, fit_dead_letter
from ._runner_types import MAX_ROUNDS, TopicNames, _LogRecreated, _StaleEpochs
from ._types import BatchResult, DeadLetter, Ignored, RawMessage, SubjectEvents

__all__ = ["LETTERS_PER_MESSAGE", "LETTERS_PER_WRITE", "LETTER_BYTES_PER_WRITE"]

# The runner's logger: these lines were the runner's before it was split.
log = logging.getLogger("monitor.pipeline._runner")

# Dead letters are written a partition's chunk of whole messages at a time (a script that
# runs for seconds makes Redis answer BUSY to every other client meanwhile); a message with
# more bad elements than LETTERS_PER_MESSAGE (a megabyte of them is half a million) goes
# to the dead-letter topic whole, once.
LETTERS_PER_MESSAGE = 1_000
LETTERS_PER_WRITE = 5_000
LETTER_BYTES_PER_WRITE = 8 * 1024 * 1024


class _DeadLetters:
    """The dead-letter half of :class:`BatchRunner` (a mixin: it shares the runner's log
    epochs, fences and write script)."""

    if TYPE_CHECKING:
        reads: RunnerReads
        script: WriteScript
        topics: TopicNames
        max_message_bytes: int
        _ledgers: dict[tuple[str, int], StoredLedger]

        async def _read_epochs(self) -> None: ...

        async def _new_epoch(
            self, topic: str, partition: int, epoch: int, end: int | None = None
        ) -> None: ...

        async def _log_recreated(
            self, topic: str, recreated: _LogRecreated, highwaters: dict[int, int | None]
        ) -> None: ...

        @property
        def _known_epochs(self) -> Mapping[tuple[str, int], int]: ...

    async def _dead_letter(
        self,
        topic: str,
        letters: list[DeadLetter | Ignored],
        highwaters: dict[int, int | None],
        result: BatchResult,
    ) -> None:
        """Put dead letters into their partition's outbox, and count ignored records, once:
        a fence per partition, moved by each chunk of whole messages."""
        by_partition: dict[int, list[DeadLetter | Ignored]] = {}
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
                    await self._log_recreated(topic, recreated, highwaters)
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
                result.ignored += write.counters.get(fields.count(topic, "ignored"), 0)
                if sent:
                    result.outboxes.add(("partition", write.keys.name))
                ledger = self._ledgers[(topic, partition)]
                fence = next(iter(write.fences.values()), None)
                self._ledgers[(topic, partition)] = StoredLedger(
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
        for partition, ledger in (await self.reads.ledgers(topic, partitions)).items():
            self._ledgers[(topic, partition)] = ledger

    def _ledger_write(
        self,
        topic: str,
        ledger: StoredLedger,
        letters: list[DeadLetter | Ignored],
        highwaters: Mapping[int, int | None],
    ) -> SubjectWrite:
        partition = letters[0].partition
        starts, fences = plan_fences(
            self._known_epochs,
            {partition: ledger.fence},
            np.full(len(letters), partition),
            np.array([letter.offset for letter in letters]),
            topic,
            highwaters,
        )
        write = SubjectWrite(self.reads.ledger_keys(topic, partition), ledger.rev)
        for moved, fence in fences.items():
            write.fences[fields.fence(topic, moved)] = fence.encode()
        fresh = [letter for letter in letters if letter.offset >= starts[partition]]
        for letter in fresh:
            if isinstance(letter, Ignored):
                write.count(fields.count(topic, "ignored"), letter.count)
                write.count(fields.ignored(topic, letter.reason), letter.count)
                continue
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
        write.count(fields.count(topic, "dlq"), sum(isinstance(x, DeadLetter) for x in fresh))
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


def _whole_messages(letters: list[DeadLetter | Ignored]) -> list[DeadLetter | Ignored]:
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
        size += len(letter.payload) if isinstance(letter, DeadLetter) else 0
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
