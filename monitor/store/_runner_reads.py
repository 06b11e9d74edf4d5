"""What the batch runner reads from Redis: log epochs, subjects, dead-letter ledgers, and
the views the clock looks at. The runner plans and retries; these are its round trips."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..events._decisions import Published, decode_published
from . import _keys as fields
from ._client import AsyncClient
from ._keys import Fence, KeyLayout, SubjectKeys, decode_seen_buckets

__all__ = ["RunnerReads", "StoredLedger", "StoredSubject"]

_BUMP_EPOCH = """
local stored = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if stored == ARGV[2] then return redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end
return tonumber(stored)
"""


@dataclass(frozen=True)
class StoredSubject:
    """A subject as Redis holds it: its revision, its stored fields (``None`` where
    absent), its published gate records, its fences and its duplicate window's parts."""

    rev: int | None
    values: dict[str, Any]
    published: dict[str, Published]
    fences: dict[int, Fence | None]
    watermark: Any
    seen: dict[int, bytes | None]


@dataclass(frozen=True)
class StoredLedger:
    """A partition's dead-letter subject: only a revision and a fence."""

    rev: int | None
    fence: Fence | None


class RunnerReads:
    """The runner's reads, each one pipeline (or script call) per call.

    Parameters
    ----------
    client
        An asyncio Redis client (standalone or cluster).
    layout
        The key layout.
    """

    def __init__(self, client: AsyncClient, layout: KeyLayout) -> None:
        self.client = client
        self.layout = layout

    async def epochs(self) -> dict[tuple[str, int], int]:
        """Every partition's log epoch, by (topic, partition)."""
        raw: dict[bytes, bytes] = await self.client.hgetall(self.layout.log_epochs)  # type: ignore[assignment]
        epochs = {}
        for name, value in raw.items():
            topic, _, partition = name.decode().rpartition(":")
            epochs[(topic, int(partition))] = int(value)
        return epochs

    async def bump_epoch(self, topic: str, partition: int, epoch: int) -> None:
        """Start a new epoch of the partition's log, unless another worker did already
        (compare-and-increment: the epoch moves once however many workers see it)."""
        await self.client.eval(
            _BUMP_EPOCH,
            1,
            self.layout.log_epochs,
            KeyLayout.log_epoch_field(topic, partition),
            str(epoch),
        )

    async def subjects(
        self,
        kind: str,
        names: Sequence[str],
        topic: str,
        stored_fields: Sequence[str],
        gates: Iterable[str],
        needed: Mapping[str, set[int]],
        gates_of: Callable[[Mapping[str, Any]], Iterable[str]] | None = None,
    ) -> dict[str, StoredSubject]:
        """Read subjects of one kind (registering them and their kind), with the fences
        of the partitions each needs and the duplicate window of ``topic``; ``gates_of``
        names, from a subject's stored fields, the records of gates it judges in parts
        not known in advance (subgroups), whose published records come in one more read."""
        gates = list(gates)
        wanted = [
            fields.REV,
            *stored_fields,
            *(fields.published(gate) for gate in gates),
            fields.seen(topic),
        ]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            keys = self.layout.subject(kind, name)
            partitions = sorted(needed[name])
            pipe.hmget(keys.state, [*wanted, *(fields.fence(topic, p) for p in partitions)])
            pipe.sadd(self.layout.registry(kind), name)
        pipe.sadd(self.layout.kinds, kind)  # last: the replies above keep their places
        replies = await pipe.execute()
        rows = {name: replies[2 * i] for i, name in enumerate(names)}
        windows = {name: decode_seen_buckets(rows[name][len(wanted) - 1]) for name in names}

        pipe = self.client.pipeline(transaction=False)
        blobs_wanted = []
        for name in names:
            keys = self.layout.subject(kind, name)
            for bucket in windows[name][1]:
                pipe.get(keys.seen_bucket(topic, bucket))
                blobs_wanted.append((name, bucket))
        blobs = await pipe.execute() if blobs_wanted else []
        by_subject: dict[str, dict[int, bytes | None]] = {name: {} for name in names}
        for (name, bucket), blob in zip(blobs_wanted, blobs, strict=True):
            by_subject[name][bucket] = blob

        stored = {}
        extra: dict[str, list[str]] = {}
        for name in names:
            row = rows[name]
            values = dict(zip(wanted, row[: len(wanted)], strict=True))
            partitions = sorted(needed[name])
            rev = values[fields.REV]
            published = {
                gate: decode_published(raw)
                for gate in gates
                if (raw := values[fields.published(gate)]) is not None
            }
            watermark, _ = windows[name]
            if gates_of is not None:
                extra[name] = [g for g in gates_of(values) if g not in gates]
            stored[name] = StoredSubject(
                rev=None if rev is None else int(rev),
                values={f: values[f] for f in stored_fields},
                published=published,
                fences={
                    p: Fence.decode(raw)
                    for p, raw in zip(partitions, row[len(wanted) :], strict=True)
                },
                watermark=watermark,
                seen=by_subject[name],
            )
        if any(extra.values()):
            await self._published_parts(kind, extra, stored)
        return stored

    async def _published_parts(
        self, kind: str, extra: Mapping[str, list[str]], stored: Mapping[str, StoredSubject]
    ) -> None:
        """The published records of ``extra`` gate keys, into each subject's ``published``."""
        wanted = [(name, keys) for name, keys in extra.items() if keys]
        pipe = self.client.pipeline(transaction=False)
        for name, keys in wanted:
            state = self.layout.subject(kind, name).state
            pipe.hmget(state, [fields.published(gate) for gate in keys])
        for (name, keys), row in zip(wanted, await pipe.execute(), strict=True):
            for gate, raw in zip(keys, row, strict=True):
                if raw is not None:
                    stored[name].published[gate] = decode_published(raw)

    async def pending(
        self, kind: str, buckets: Mapping[str, Sequence[int]]
    ) -> dict[str, dict[int, bytes | None]]:
        """The contents of each subject's pending buckets (the late-label join's halves),
        one pipeline; no round trip when no subject has any."""
        wanted = [(name, bucket) for name, numbers in buckets.items() for bucket in numbers]
        found: dict[str, dict[int, bytes | None]] = {name: {} for name in buckets}
        if not wanted:
            return found
        pipe = self.client.pipeline(transaction=False)
        for name, bucket in wanted:
            pipe.get(self.layout.subject(kind, name).pending_bucket(bucket))
        for (name, bucket), blob in zip(wanted, await pipe.execute(), strict=True):
            found[name][bucket] = blob
        return found

    async def views(self, kind: str) -> list[tuple[str, dict[str, Any] | None]]:
        """Every registered subject of ``kind`` with its stored view, by name."""
        members: Any = await self.client.smembers(self.layout.registry(kind))
        names = sorted(member.decode() for member in members)
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.layout.subject(kind, name).view, fields.VIEW)
        views = await pipe.execute()
        return [
            (name, None if view is None else orjson.loads(view))
            for name, view in zip(names, views, strict=True)
        ]

    def ledger_keys(self, topic: str, partition: int) -> SubjectKeys:
        """The keys of a partition's dead-letter subject."""
        return self.layout.subject("partition", KeyLayout.partition_subject(topic, partition))

    async def ledgers(self, topic: str, partitions: Sequence[int]) -> dict[int, StoredLedger]:
        """Read (and register) the dead-letter subjects of ``topic``'s partitions."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            keys = self.ledger_keys(topic, partition)
            pipe.hmget(keys.state, [fields.REV, fields.fence(topic, partition)])
            pipe.sadd(self.layout.registry("partition"), keys.name)
        replies = await pipe.execute()
        ledgers = {}
        for i, partition in enumerate(partitions):
            rev, fence = replies[2 * i]
            ledgers[partition] = StoredLedger(
                None if rev is None else int(rev), Fence.decode(fence)
            )
        return ledgers
