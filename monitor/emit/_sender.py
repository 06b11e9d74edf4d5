"""The emitter's buffer (events waiting per topic and subject, shared by the callers'
threads and the sender's loop) and its Kafka sender. Part of :mod:`monitor.emit`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from ..runtime._kafka import MAX_MESSAGE_BYTES
from ._events import MAX_ENVELOPE_BYTES, MAX_KEY_BYTES, TOPICS, envelopes

__all__ = ["DROP_WARNING_SECONDS"]

# monitor.emit's logger: applications configure the emitter's warnings under that name.
log = logging.getLogger("monitor.emit")

DROP_WARNING_SECONDS = 10.0  # at most one warning this often while events are dropped


# --- the buffer ---------------------------------------------------------------------------


class _Batches:
    """Events waiting per ``(topic, subject)``, shared by the callers' threads and the
    sender's loop; ``buffered`` counts them until Kafka has them (or they are dropped)."""

    def __init__(self, batch_size: int, linger: float, max_buffered: int) -> None:
        if batch_size < 1 or linger < 0 or max_buffered < batch_size:
            raise ValueError("need batch_size >= 1, linger >= 0 and max_buffered >= batch_size")
        self.batch_size, self.linger, self.max_buffered = batch_size, linger, max_buffered
        self.room = threading.Condition()
        self._pending: dict[tuple[str, str], list[msgspec.Struct]] = {}
        self._since: dict[tuple[str, str], float] = {}
        self.buffered = 0
        self.dropped = 0
        self.sent = 0
        self.messages = 0  # envelopes Kafka acknowledged
        self._warned_at = -float("inf")
        self.on_room: Callable[[], None] | None = None  # for waiters on an event loop

    def full(self) -> bool:
        return self.buffered >= self.max_buffered

    def add(self, key: tuple[str, str], event: msgspec.Struct) -> bool:
        """Keep the event; whether its batch is full (time to wake the sender)."""
        with self.room:
            batch = self._pending.setdefault(key, [])
            if not batch:
                self._since[key] = time.monotonic()
            batch.append(event)
            self.buffered += 1
            return len(batch) >= self.batch_size

    def due(self, everything: bool = False) -> list[tuple[tuple[str, str], list[msgspec.Struct]]]:
        """The batches to send now: full, older than ``linger``, or all of them."""
        now = time.monotonic()
        with self.room:
            keys = [
                key
                for key, batch in self._pending.items()
                if everything
                or len(batch) >= self.batch_size
                or now - self._since[key] >= self.linger
            ]
            taken = []
            for key in keys:
                batch = self._pending.pop(key)
                del self._since[key]
                size = self.batch_size
                taken += [(key, batch[i : i + size]) for i in range(0, len(batch), size)]
            return taken

    def wait(self) -> float | None:
        """Seconds until the oldest batch is due (None: nothing waits)."""
        with self.room:
            if not self._since:
                return None
            return max(0.0, min(self._since.values()) + self.linger - time.monotonic())

    def done(self, count: int, error: BaseException | None = None, what: str = "") -> None:
        """``count`` events left the buffer: sent (in one envelope), or dropped because of
        ``error``."""
        with self.room:
            self.buffered -= count
            if error is None:
                self.sent += count
                self.messages += 1
            self.room.notify_all()
        if self.on_room is not None:
            self.on_room()
        if error is not None:
            self.drop(count, f"{what}: {type(error).__name__}: {error}")

    def drop(self, count: int, why: str) -> None:
        """Count dropped events, and say so (at most one warning per few seconds)."""
        with self.room:
            self.dropped += count
            now = time.monotonic()
            warn = now - self._warned_at >= DROP_WARNING_SECONDS
            if warn:
                self._warned_at = now
        if warn:
            log.warning(
                "driftgate emitter dropped %d events (%d in all): %s", count, self.dropped, why
            )


# --- the sender (on an event loop) ------------------------------------------------------


class _Sender:
    """Takes due batches to Kafka as columnar envelopes, on one event loop."""

    def __init__(self, batches: _Batches, topic_prefix: str, options: dict[str, Any]) -> None:
        self.batches = batches
        self.topic_prefix = topic_prefix
        self.options = {
            "acks": "all",
            "linger_ms": 5,
            "max_request_size": MAX_MESSAGE_BYTES,
            "request_timeout_ms": 10_000,
            **options,
        }
        self.producer: AIOKafkaProducer | None = None
        self.wake = asyncio.Event()
        self.closing = False
        self.in_flight: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(**self.options)
        try:
            await self.producer.start()
        except BaseException:
            await self.producer.stop()
            raise

    async def run(self) -> None:
        """Send batches as they fill or linger, until :meth:`stop`."""
        while not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.batches.wait())
            self.wake.clear()
            await self.send(self.batches.due())

    async def send(self, due: list[tuple[tuple[str, str], list[msgspec.Struct]]]) -> None:
        assert self.producer is not None
        for (topic, subject), events in due:
            key = subject.encode()[:MAX_KEY_BYTES]
            parts = envelopes(events)
            left_out = len(events) - sum(count for _, count in parts)
            if left_out:
                too_big = ValueError(f"an event over {MAX_ENVELOPE_BYTES} bytes")
                self.batches.done(left_out, too_big, f"encoding for {topic}")
            for payload, count in parts:
                try:
                    future = await self.producer.send(topic, payload, key=key)
                except Exception as exc:  # noqa: BLE001 - whatever it is, it is counted and said
                    self.batches.done(count, exc, f"sending to {topic}")
                    continue
                future.add_done_callback(self._acked(count, topic))
                self.in_flight.add(future)

    def _acked(self, count: int, topic: str) -> Any:
        def acked(future: asyncio.Future[Any]) -> None:
            self.in_flight.discard(future)
            error = None if future.cancelled() else future.exception()
            if future.cancelled():
                error = asyncio.CancelledError("send cancelled")
            self.batches.done(count, error, f"sending to {topic}")

        return acked

    async def flush(self) -> None:
        """Send every waiting event and wait until Kafka has each envelope (or refused it)."""
        await self.send(self.batches.due(everything=True))
        if self.in_flight:
            await asyncio.wait(list(self.in_flight))

    async def stop(self) -> None:
        self.closing = True
        self.wake.set()
        try:
            await self.flush()
        finally:
            if self.producer is not None:
                await self.producer.stop()


def _key(event: msgspec.Struct, topic_prefix: str) -> tuple[str, str]:
    topic, subject_field = TOPICS[type(event)]
    return f"{topic_prefix}{topic}", getattr(event, subject_field)
