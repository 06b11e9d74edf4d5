"""Draining the subjects' outboxes to Kafka: claim, send, acknowledge.

Every subject's decisions (and every partition's dead letters) are appended to its own
Redis stream in the same atomic write as the statistics. Drainers read them through one
consumer group: an entry delivered to a drainer stays pending until that drainer has
Kafka's acknowledgement and then ``XACK``s and deletes it. A drainer that dies leaves its
entries pending; after ``min_idle`` another drainer claims them (``XAUTOCLAIM``) and sends
them. While a drainer works on a chunk (Kafka, then the webhook, whose retries can take
longer than ``min_idle`` for a chunk of several decisions) it renews its claim every
``min_idle / 3`` (``XCLAIM ... JUSTID`` to itself resets the entries' idle time), so a live
drainer is never overtaken. An entry is therefore never lost; it reaches the topic twice
only when a drainer dies (or its event loop stalls past ``min_idle``) between Kafka's
acknowledgement and its own, and then with the same ``decision_id``. The drainer decides
what to take and when; the stream commands themselves are ``store._outbox_streams``'.

A dead letter Kafka refuses as too large (one written before letters were cut to the limit,
or a broker whose ``message.max.bytes`` is below the producer's) is sent again cut to fit
(``pipeline._letters``): first to ``max_message_bytes``, then to a 16 KiB record, then with
no payload at all, its headers saying so. A refusal that no retry can change would
otherwise stop every worker that drains that outbox, again after each restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import errors as kafka_errors

from ..store import AsyncClient
from ..store._keys import KeyLayout, OutboxEntry, SubjectKeys
from ..store._outbox_streams import OutboxStreams, Taken
from ._letters import MAX_MESSAGE_BYTES, SOURCE_TOPIC, fit_dead_letter

__all__ = ["OutboxDrainer", "Sent"]

log = logging.getLogger(__name__)

# What Kafka answers for a record over its limit: the producer's own check (before
# sending), the broker's MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE.
TOO_LARGE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
)
# The sizes a refused dead letter is cut to, in turn, after max_message_bytes: a 16 KiB
# record, then the headers alone.
SMALLER_LETTERS = (16_384, 0)

Sent = Callable[[SubjectKeys, OutboxEntry], Awaitable[None]]


class OutboxDrainer:
    """Sends outbox entries to Kafka through ``producer`` (an aiokafka producer).

    Parameters
    ----------
    client
        An asyncio Redis client.
    layout
        The key layout.
    producer
        Returns the started producer (created on first use).
    min_idle
        Seconds an entry stays with a silent drainer before another one claims it. A
        working drainer renews its claim every third of it.
    after_send
        Called for each entry Kafka acknowledged, before the entry is acknowledged in
        Redis (the webhook; it must not raise).
    send_timeout
        Seconds Kafka has to acknowledge a chunk; past it the drain gives up with
        ``TimeoutError`` (transient) and the chunk stays pending for the next sweep, so a
        send that never completes cannot hold the drainer (and its claims) for ever.
    max_message_bytes
        The producer's ``max_request_size``: the first size a dead letter Kafka refused
        as too large is cut to.
    """

    def __init__(
        self,
        client: AsyncClient,
        layout: KeyLayout,
        producer: Callable[[], Awaitable[Any]],
        min_idle: float = 30.0,
        after_send: Sent | None = None,
        send_timeout: float = 20.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.layout = layout
        self.producer = producer
        self.min_idle_ms = int(min_idle * 1000)
        self.after_send = after_send
        self.send_timeout = send_timeout
        self.max_message_bytes = max_message_bytes
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # The reads, claims and acknowledgements of the outbox streams, as this drainer.
        self.streams = OutboxStreams(client, layout, self.name, self.min_idle_ms)

    async def drain(self, subjects: Iterable[tuple[str, str]]) -> int:
        """Send everything waiting in the outboxes of ``(kind, name)`` subjects."""
        sent = 0
        for kind, name in subjects:
            sent += await self._drain_one(self.layout.subject(kind, name))
        return sent

    async def sweep(self) -> int:
        """Drain every outbox that holds entries: after a crash, or another worker's."""
        return await self.drain(await self.streams.holding_entries())

    async def _drain_one(self, keys: SubjectKeys) -> int:
        sent = 0
        # Mine first (delivered to me, not acknowledged: a failed send), then others'
        # that their drainer left too long, then new ones.
        fresh_only = False
        while True:
            taken = await self.streams.take(keys, fresh_only=fresh_only)
            if not taken.ids:
                return sent
            await self._send(keys, taken)
            sent += len(taken.ids)
            fresh_only = True

    async def _send(self, keys: SubjectKeys, taken: Taken) -> None:
        renewal = asyncio.create_task(self._keep_claim(keys, taken.ids))
        try:
            await self._deliver(keys, taken.entries)
        finally:
            renewal.cancel()
            (stopped,) = await asyncio.gather(renewal, return_exceptions=True)
            if not isinstance(stopped, asyncio.CancelledError):
                # The claim may lapse: another drainer may then send these entries too.
                log.warning("could not renew the claim on %s's outbox: %r", keys.name, stopped)
        await self.streams.done(keys, taken.ids)
        log.debug("sent %d outbox entries of %s", len(taken.ids), keys.name)

    async def _deliver(self, keys: SubjectKeys, decoded: list[OutboxEntry]) -> None:
        await asyncio.wait_for(self._to_kafka(decoded), self.send_timeout)
        if self.after_send is not None:
            for entry in decoded:  # in order: a receiver sees a subject's actions as decided
                await self.after_send(keys, entry)

    async def _to_kafka(self, decoded: list[OutboxEntry]) -> None:
        producer = await self.producer()
        sends: list[tuple[OutboxEntry, Any]] = []  # with a future, or the refusal
        for entry in decoded:
            try:
                sends.append((entry, await _send(producer, entry)))
            except TOO_LARGE as exc:  # the producer's own check: nothing went out
                if entry.kind != "dead_letter":
                    raise
                sends.append((entry, exc))
        futures = [sent for _, sent in sends if not isinstance(sent, BaseException)]
        acknowledged = iter(await asyncio.gather(*futures, return_exceptions=True))
        for entry, sent in sends:
            outcome = sent if isinstance(sent, BaseException) else next(acknowledged)
            if not isinstance(outcome, BaseException):
                continue
            if entry.kind != "dead_letter" or not isinstance(outcome, TOO_LARGE):
                raise outcome
            await self._send_smaller(producer, entry, outcome)
        # Kafka has every one of them now (a refused dead letter cut to fit).

    async def _send_smaller(
        self, producer: Any, entry: OutboxEntry, refusal: BaseException
    ) -> None:
        """Send a dead letter Kafka refused as too large, cut to fit ever smaller sizes."""
        for limit in (self.max_message_bytes, *SMALLER_LETTERS):
            value, headers = fit_dead_letter(entry.value, entry.headers, limit)
            if len(value) == len(entry.value) and limit:
                continue  # this size would not cut it: the refusal would repeat
            log.warning(
                "dead letter of %s refused by Kafka (%s: %s); sending it cut to %d of its %d bytes",
                entry.headers.get(SOURCE_TOPIC, "?"),
                type(refusal).__name__,
                refusal,
                len(value),
                len(entry.value),
            )
            smaller = OutboxEntry(entry.kind, entry.topic, entry.key, value, headers)
            try:
                await (await _send(producer, smaller))
            except TOO_LARGE as exc:
                refusal = exc
            else:
                return
        raise refusal

    async def _keep_claim(self, keys: SubjectKeys, ids: list[bytes]) -> None:
        """Renew this drainer's claim on ``ids`` until cancelled."""
        while True:
            await asyncio.sleep(self.min_idle_ms / 3000)
            await self.streams.renew(keys, ids)


async def _send(producer: Any, entry: OutboxEntry) -> Any:
    """The producer's send of ``entry``: a future that resolves once Kafka has it."""
    return await producer.send(
        entry.topic,
        entry.value,
        key=entry.key or None,
        headers=[(name, value.encode()) for name, value in entry.headers.items()],
    )
