"""The outbox streams' I/O for a drainer: which outboxes hold entries, take a chunk of one
(read, claim), renew the claim, acknowledge and delete.

Every subject's outbox is a Redis stream read through one consumer group
(``OUTBOX_GROUP``); a drainer is one consumer of it. What to take when, how long to wait
and what to do on failure is the drainer's (``pipeline._outbox``); this module only
speaks to Redis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from redis.typing import StreamIdT

from ._client import AsyncClient
from ._keys import OUTBOX_GROUP, KeyLayout, OutboxEntry, SubjectKeys, known_kinds

__all__ = ["OutboxStreams", "Taken"]

# Entries read or claimed at a time.
CHUNK = 500


class Taken(NamedTuple):
    """A chunk of one outbox, now pending with the drainer that took it."""

    ids: list[bytes]
    entries: list[OutboxEntry]


class OutboxStreams:
    """The outboxes as one consumer (``consumer``, a drainer's name) of their group sees
    them.

    ``min_idle_ms``: how long an entry stays pending with a silent consumer before
    :meth:`take` claims it for this one.
    """

    def __init__(
        self, client: AsyncClient, layout: KeyLayout, consumer: str, min_idle_ms: int
    ) -> None:
        self.client = client
        self.layout = layout
        self.consumer = consumer
        self.min_idle_ms = min_idle_ms

    async def holding_entries(self) -> list[tuple[str, str]]:
        """The ``(kind, name)`` of every registered subject whose outbox holds entries."""
        names: list[tuple[str, str]] = []
        registered: Any = await self.client.smembers(self.layout.kinds)
        for kind in known_kinds(registered):
            members: Any = await self.client.smembers(self.layout.registry(kind))
            names += [(kind, member.decode()) for member in members]
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for kind, name in names:
            pipe.xlen(self.layout.subject(kind, name).outbox)
        lengths = await pipe.execute()
        return [subject for subject, n in zip(names, lengths, strict=True) if n]

    async def take(self, keys: SubjectKeys, *, fresh_only: bool) -> Taken:
        """Up to a chunk of ``keys``' outbox, now pending with this consumer.

        Unless ``fresh_only``: first the entries delivered to this consumer and not
        acknowledged (a failed send), then those another consumer has left pending longer
        than ``min_idle_ms`` (claimed); only when there are none, entries never delivered.
        Entries deleted while pending (no fields) are passed over.
        """
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        mine: Any
        claimed: Any
        fresh: Any
        if not fresh_only:
            mine = await self.client.xreadgroup(
                OUTBOX_GROUP, self.consumer, {keys.outbox: "0"}, count=CHUNK
            )
            entries += [entry for entry in (mine[0][1] if mine else []) if entry[1]]
            claimed = await self.client.xautoclaim(
                keys.outbox, OUTBOX_GROUP, self.consumer, self.min_idle_ms, "0-0", count=CHUNK
            )
            entries += [entry for entry in claimed[1] if entry[1]]
        if not entries:
            fresh = await self.client.xreadgroup(
                OUTBOX_GROUP, self.consumer, {keys.outbox: ">"}, count=CHUNK
            )
            entries += fresh[0][1] if fresh else []
        return Taken(
            [entry_id for entry_id, _ in entries],
            [OutboxEntry.decode(fields) for _, fields in entries],
        )

    async def renew(self, keys: SubjectKeys, ids: list[bytes]) -> None:
        """Reset the idle time of ``ids`` (pending with this consumer): no other consumer
        claims them for another ``min_idle_ms``."""
        claimed: list[StreamIdT] = list(ids)
        await self.client.xclaim(keys.outbox, OUTBOX_GROUP, self.consumer, 0, claimed, justid=True)

    async def done(self, keys: SubjectKeys, ids: list[bytes]) -> None:
        """Acknowledge and delete ``ids``: Kafka has them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(keys.outbox, OUTBOX_GROUP, *ids)
        pipe.xdel(keys.outbox, *ids)
        await pipe.execute()
