"""The Faust application: an agent per input topic, each feeding the one batch runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP
from prometheus_client import CollectorRegistry, Gauge, Histogram

from ..config import Settings
from ..pipeline import (
    BatchResult,
    BatchRunner,
    PermanentError,
    RawMessage,
    TopicNames,
    WriteScript,
    is_transient,
    lag_after,
    permanent_failure,
    retry_transient,
)
from ..pipeline._outbox import OutboxDrainer
from ..pipeline._webhook import Webhook
from ..slices import REGISTRY
from ..store import KeyLayout, connect_async, redact
from ._kafka import MAX_MESSAGE_BYTES, faust_credentials, start_producer

__all__ = ["FAUST_SETTINGS", "MonitorApp"]

log = logging.getLogger(__name__)

BATCH_MAX = 10_000
BATCH_WITHIN_SECONDS = 0.1
SWEEP_SECONDS = 5.0

# Faust settings of the worker, shared with the benchmark's bare Faust baseline so that
# both read Kafka the same way. Fetches of 8 MiB per partition and a deep stream buffer
# roughly double what Faust's defaults (1 MiB, 4,096 messages) read of 100-event
# envelopes; the short rebalance timeouts make a group join take seconds, not 30.
FAUST_SETTINGS: dict[str, Any] = {
    "broker_rebalance_timeout": 5,
    "broker_session_timeout": 10,
    "broker_heartbeat_interval": 1,
    "broker_commit_every": 1000,
    "broker_commit_interval": 1.0,
    "consumer_max_fetch_size": 8 * 1024 * 1024,
    "stream_buffer_maxsize": 65_536,
}


class MonitorApp:
    """Owns the Faust app, the Redis client, a runner per input topic and the outbox."""

    def __init__(
        self, settings: Settings, cluster: bool, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        REGISTRY.load(settings.subject_modules)  # before the policy: their sections
        policy = settings.policy
        self.layout = KeyLayout(settings.redis_prefix)
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            broker_credentials=faust_credentials(settings),
            value_serializer="raw",
            key_serializer="raw",
            web_enabled=False,
            datadir=tempfile.mkdtemp(prefix="driftgate-faust-"),
            topic_partitions=settings.partitions,
            **FAUST_SETTINGS,
        )
        self.redis = connect_async(settings.redis_url, cluster)
        self.fatal_error: PermanentError | None = None
        self._producer: AIOKafkaProducer | None = None
        self.webhook = Webhook(settings.webhook_url, self.redis) if settings.webhook_url else None
        self.drainer = OutboxDrainer(
            self.redis,
            self.layout,
            self._started_producer,
            after_send=self.webhook,
            max_message_bytes=MAX_MESSAGE_BYTES,  # the producer's max_request_size
        )
        # Outboxes to drain, off the agents' path: a slow Kafka or webhook never holds up
        # consumption (the entries are safe in Redis); one drain at a time.
        self._to_drain: set[tuple[str, str]] = set()
        self._draining: asyncio.Task[None] | None = None
        self._drain_lock = asyncio.Lock()
        self.batch_duration = Histogram(
            "driftgate_batch_duration_seconds",
            "Time to apply one batch, decode to Redis write (this worker).",
            ["topic"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.consumer_lag = Gauge(
            "driftgate_consumer_lag",
            "Messages in the partition's log after the last batch this worker applied "
            "(log end offset minus the next offset to process), as of that batch.",
            ["topic", "partition"],
            registry=registry,
        )
        script = self.script = WriteScript(self.redis, settings.redis_url)
        topics = TopicNames(settings.topic("decisions"), settings.topic("dlq"))
        self.runners: dict[str, BatchRunner[Any]] = {}
        for name, make_handler in REGISTRY.handlers().items():
            runner = BatchRunner(
                self.redis,
                self.layout,
                make_handler(policy),
                script,
                topics,
                policy.dedupe_window_seconds,
                max_message_bytes=MAX_MESSAGE_BYTES,  # dead letters fit the producer's limit
                log_end=self._log_end,
            )
            self.runners[name] = runner
            topic = self.app.topic(settings.topic(name), value_type=bytes)
            self.app.agent(topic, name=name)(self._agent(runner))
        self.app.timer(SWEEP_SECONDS)(self._sweep)
        ticking: dict[str, BatchRunner[Any]] = {}
        for runner in self.runners.values():  # one runner per kind keeps its subjects' clock
            if runner.model.tick_seconds is not None:
                ticking.setdefault(runner.model.kind, runner)
        for runner in ticking.values():
            self.app.timer(runner.model.tick_seconds)(partial(self._tick, runner))

        async def close_clients(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            if self._producer is not None:
                await self._producer.stop()
            if self.webhook is not None:
                await self.webhook.close()
            await self.script.aclose()
            await self.redis.aclose()

        self.app.on_before_shutdown.connect(close_clients)

        async def forget_lag(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            # A partition another worker now reads is its lag, not a stale value of ours.
            (revoked,) = args
            for tp in revoked:
                with contextlib.suppress(KeyError):
                    self.consumer_lag.remove(tp.topic, str(tp.partition))

        self.app.on_partitions_revoked.connect(forget_lag)

    def health(self) -> str | None:
        """None while the worker runs and consumes, else why not (for ``/healthz``)."""
        if self.fatal_error is not None:
            return f"the worker stopped: {self.fatal_error}"
        if self.app.crashed:
            return f"the worker crashed: {self.app.crash_reason}"
        if self.app.should_stop:
            return "the worker is stopping"
        if not self.app.started:
            return "the worker is starting"
        return None

    def _permanent(self, exc: BaseException) -> PermanentError:
        return permanent_failure(
            exc, redact(self.settings.redis_url), self.settings.kafka_bootstrap
        )

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await start_producer(self.settings)
        return self._producer

    async def _log_end(self, topic: str, partition: int) -> int | None:
        """The end of a partition's log, asked of the broker now (ListOffsets); None when
        the broker does not answer (the runner then keeps the end it saw last)."""
        try:
            ends = await asyncio.wait_for(self.app.consumer.highwaters(TP(topic, partition)), 10)
        except Exception as exc:  # noqa: BLE001 - any failure: the end seen last decides
            log.warning("could not ask the end of %s[%d]: %r", topic, partition, exc)
            return None
        return ends.get(TP(topic, partition))

    def _agent(self, runner: BatchRunner[Any]) -> Callable[[Any], Awaitable[None]]:
        topic = self.settings.topic(runner.handler.topic)

        async def agent(stream: Any) -> None:
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
                try:
                    result: BatchResult = await retry_transient(
                        partial(runner.apply, messages, highwaters),
                        f"{topic} batch",
                        self._permanent,
                    )
                except PermanentError as exc:
                    await self._stop(exc)
                    return
                self.batch_duration.labels(topic).observe(time.perf_counter() - started)
                self._record_lag(topic, messages, highwaters)
                # Acknowledged only now: the offsets Kafka commits never run ahead of Redis.
                for event in events:
                    await stream.ack(event)
                self._drain_soon(result.outboxes)

        return agent

    def _record_lag(
        self, topic: str, messages: list[RawMessage], highwaters: Mapping[int, int | None]
    ) -> None:
        """``driftgate_consumer_lag`` of the batch's partitions (one whose log end is not
        known yet keeps its last value)."""
        for partition, lag in lag_after(messages, highwaters).items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)

    def _drain_soon(self, subjects: set[tuple[str, str]]) -> None:
        """Send these outboxes now, in the background."""
        self._to_drain |= subjects
        if self._to_drain and (self._draining is None or self._draining.done()):
            self._draining = asyncio.ensure_future(self._drain_pending())

    async def _drain_pending(self) -> None:
        async with self._drain_lock:
            while self._to_drain:
                subjects, self._to_drain = self._to_drain, set()
                await self._drain(partial(self.drainer.drain, subjects))

    async def _sweep(self) -> None:
        async with self._drain_lock:
            await self._drain(self.drainer.sweep)

    async def _tick(self, runner: BatchRunner[Any]) -> None:
        """Time-based verdicts (stale canaries, stalls); a Redis away for now waits for
        the next tick, a permanent failure stops the worker."""
        source = self.settings.topic(runner.handler.topic)
        try:
            result = await runner.tick(source)
        except Exception as exc:  # noqa: BLE001 - sorted: the next tick retries, or fatal
            if is_transient(exc):
                log.warning("%s clock tick failed (%s); the next tick retries", source, exc)
                return
            await self._stop(self._permanent(exc))
            return
        self._drain_soon(result.outboxes)

    async def _drain(self, action: Callable[[], Awaitable[int]]) -> None:
        """Send outbox entries now; a Kafka or Redis away for now leaves them for the
        next sweep (they are safe in Redis), a permanent failure stops the worker."""
        try:
            await action()
        except Exception as exc:  # noqa: BLE001 - sorted: left for the sweep, or fatal
            failure = self._permanent(exc)
            if is_transient(exc):
                log.warning("outbox not drained now (%s); the next sweep retries", failure)
            else:
                await self._stop(failure)

    async def _stop(self, exc: PermanentError) -> None:
        if self.fatal_error is not None:
            return
        self.fatal_error = exc
        log.critical("driftgate worker stops: %s", exc)
        await self.app.crash(exc)
