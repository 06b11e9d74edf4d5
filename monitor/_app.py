"""The Faust application: agents that read the input topics and publish decisions."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import faust
import orjson
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._config import Settings
from ._labels import LabelBatchProcessor, RawMessage
from ._state import Keys

__all__ = ["MonitorApp", "create_app"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "a service is away for now": retried with backoff, never dropped.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, KafkaError, ConnectionError)

BATCH_MAX = 10_000
BATCH_WITHIN_SECONDS = 0.1
OUTBOX_CHUNK = 500


async def retry_with_backoff(
    action: Callable[[], Awaitable[T]], what: str, first_delay: float = 0.1, max_delay: float = 5.0
) -> T:
    """Run ``action`` until it succeeds; transient outages are waited out, not skipped."""
    delay = first_delay
    while True:
        try:
            return await action()
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


class MonitorApp:
    """Owns the Faust app, its topics, the Redis client and the batch processors."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.policy = settings.policy
        self.keys = Keys(settings.redis_prefix)
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            value_serializer="raw",
            key_serializer="raw",
            web_enabled=False,
            datadir=tempfile.mkdtemp(prefix="driftgate-faust-"),
            topic_partitions=settings.partitions,
            broker_rebalance_timeout=5,
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            producer_acks=-1,
        )
        self.labels_topic = self.app.topic(settings.topic("labels"), value_type=bytes)
        self.dlq_topic = self.app.topic(settings.topic("dlq"), value_type=bytes)
        self.decisions_topic = self.app.topic(settings.topic("decisions"), value_type=bytes)
        self.redis: aioredis.Redis = aioredis.from_url(settings.redis_url)
        self.batch_duration = Histogram(
            "driftgate_batch_duration_seconds",
            "Time to process one batch, decode to Redis write (this worker).",
            ["topic"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.labels = LabelBatchProcessor(
            self.redis, self.keys, self.policy, self._send_dead_letter
        )
        self.app.agent(self.labels_topic, name="labels")(self._labels_agent)
        self.app.timer(1.0)(self._drain_outbox_timer)

    async def _send_dead_letter(self, payload: bytes, headers: dict[str, str]) -> None:
        pending = await self.dlq_topic.send(
            value=payload, headers={k: v.encode() for k, v in headers.items()}
        )
        await pending

    async def _labels_agent(self, stream: Any) -> None:
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN_SECONDS):
            messages = [
                RawMessage(e.message.topic, e.message.partition, e.message.offset, e.value)
                for e in events
            ]
            highwaters = {
                tp.partition: self.app.consumer.highwater(tp)
                for tp in {e.message.tp for e in events}
            }
            started = time.perf_counter()
            await retry_with_backoff(
                partial(self.labels.apply, messages, highwaters), "label batch"
            )
            self.batch_duration.labels(self.labels_topic.get_topic_name()).observe(
                time.perf_counter() - started
            )
            # Acks only now: the offsets Kafka commits never run ahead of Redis.
            for event in events:
                await stream.ack(event)
            await retry_with_backoff(self.drain_outbox, "decision outbox")

    async def _drain_outbox_timer(self) -> None:
        try:
            await self.drain_outbox()
        except TRANSIENT_ERRORS as exc:
            log.warning("decision outbox not drained (%s: %s)", type(exc).__name__, exc)

    async def drain_outbox(self) -> None:
        """Publish pending decisions, then drop them from the outbox (at least once).

        A short lock keeps two workers from publishing the same entries; if a worker
        dies holding it, it expires and the entries are published by the next one.
        """
        if not await self.redis.set(self.keys.outbox_lock, b"1", nx=True, px=10_000):
            return
        try:
            while True:
                entries = await self.redis.lrange(self.keys.outbox, 0, OUTBOX_CHUNK - 1)
                if not entries:
                    return
                pending = []
                for entry in entries:
                    decision = orjson.loads(entry)
                    pending.append(
                        await self.decisions_topic.send(
                            key=decision["subject"].encode(), value=entry
                        )
                    )
                await asyncio.gather(*pending)
                await self.redis.ltrim(self.keys.outbox, len(entries), -1)
        finally:
            await self.redis.delete(self.keys.outbox_lock)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> MonitorApp:
    return MonitorApp(settings, registry)
