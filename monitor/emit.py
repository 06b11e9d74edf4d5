"""Send driftgate's events from an application: checked at the call, sent in columnar envelopes.

>>> from monitor.emit import Emitter
>>> with Emitter(bootstrap="127.0.0.1:9092") as emit:  # doctest: +SKIP
...     emit.score("policy:gpt-4-mini", 0.82)
...     emit.label("policy:gpt-4-mini", 0.41, y=1)
...     emit.telemetry("inbox_triage", unit_id="u-5f2c", variant="canary",
...                    primary_outcome=1, guardrails={"latency_ms": 412.5})

Each helper builds the event with the worker's own ``msgspec`` Struct (``monitor._events``),
so a bad event raises :class:`EventValidationError` at the call, naming the field, instead
of reaching the dead-letter topic later. Events wait per topic and subject until
``batch_size`` of them or ``linger`` seconds, then go as one columnar envelope keyed by the
subject: a worker reads a message of a thousand events for about the price of one.

Nothing is lost silently. At most ``max_buffered`` events wait or are in flight; a call
beyond that waits up to ``max_block`` seconds for room (backpressure), then drops the event.
An envelope Kafka refuses after the producer's retries is dropped too. Either way
:attr:`Emitter.dropped` counts the events and a warning is logged. Leaving the ``with``
block (or :meth:`Emitter.close`, or the interpreter's exit) sends what waits.

:class:`Emitter` runs its Kafka producer (aiokafka) on an event loop in a background
thread of its own, for code without asyncio; :class:`AsyncEmitter` runs on the caller's
loop (``async with AsyncEmitter(...) as emit: await emit.score(...)``). Neither imports the
worker (Faust, numpy, scipy).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import numbers
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaProducer

from .events._structs import CanaryEvent, LabelEvent, TelemetryEvent
from .runtime._kafka import MAX_MESSAGE_BYTES

__all__ = ["AsyncEmitter", "Emitter", "EventValidationError"]

log = logging.getLogger(__name__)

# Per event Struct: its topic (after the prefix) and the field that names its subject.
TOPICS: dict[type[msgspec.Struct], tuple[str, str]] = {
    LabelEvent: ("labels", "stream"),
    TelemetryEvent: ("telemetry", "experiment_id"),
    CanaryEvent: ("canary", "agent"),
}
# An envelope leaves room below the broker's limit for the record's key and overhead.
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES - 16_384
DROP_WARNING_SECONDS = 10.0  # at most one warning this often while events are dropped
Timestamp = datetime | float | None


class EventValidationError(ValueError):
    """An event the worker would refuse; the message names the field (``$.s``)."""


# --- events -----------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """numpy's and other numeric scalars as float, so msgspec judges the value, not its
    class (a bool stays a bool: it is no number here, but may be an outcome)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _event(kind: type[msgspec.Struct], fields: dict[str, Any]) -> msgspec.Struct:
    fields = {name: value for name, value in fields.items() if value is not None}
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("ts", time.time())
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise EventValidationError(f"{kind.__name__}: {exc}") from None


def label_event(
    stream: str,
    s: float,
    y: float | None = None,
    *,
    event_id: str | None = None,
    ts: Timestamp = None,
    covariates: Mapping[str, Any] | None = None,
) -> msgspec.Struct:
    """A checked label event (``y`` None: a score without its oracle label)."""
    return _event(
        LabelEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "stream": stream,
            "s": _number(s),
            "y": _number(y),
            "covariates": None if covariates is None else dict(covariates),
        },
    )


def telemetry_event(
    experiment_id: str,
    unit_id: str,
    variant: str,
    *,
    primary_outcome: float | bool | None = None,
    sec_outcomes: Mapping[str, float] | None = None,
    guardrails: Mapping[str, Any] | None = None,
    covariates: Mapping[str, Any] | None = None,
    environment: Literal["prod", "staging"] = "prod",
    event_id: str | None = None,
    ts: Timestamp = None,
) -> msgspec.Struct:
    """A checked telemetry event; ``guardrails`` and ``covariates`` take the fields of
    docs/events.md (``latency_ms``, ``toxicity``, ...; ``pre_period``, ``segment``)."""

    def numbers_of(mapping: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if mapping is None else {k: _number(v) for k, v in mapping.items()}

    return _event(
        TelemetryEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "experiment_id": experiment_id,
            "unit_id": unit_id,
            "variant": variant,
            "primary_outcome": _number(primary_outcome),
            "sec_outcomes": numbers_of(sec_outcomes),
            "guardrails": numbers_of(guardrails),
            "covariates": numbers_of(covariates),
            "environment": environment,
        },
    )


def canary_event(
    agent: str,
    bundle_id: str,
    action: Literal["deploy", "promote", "rollback", "pause", "resume"],
    *,
    canary_percent: float | None = None,
    actor: str | None = None,
    rationale: str | None = None,
    event_id: str | None = None,
    ts: Timestamp = None,
) -> msgspec.Struct:
    """A checked canary event (``canary_percent`` is required to deploy and promote)."""
    return _event(
        CanaryEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "agent": agent,
            "bundle_id": bundle_id,
            "action": action,
            "canary_percent": _number(canary_percent),
            "actor": actor,
            "rationale": rationale,
        },
    )


# --- envelopes --------------------------------------------------------------------------


def _same(values: list[Any]) -> bool:
    first = values[0]
    return all(type(v) is type(first) and v == first for v in values)


def envelope(events: list[msgspec.Struct]) -> dict[str, Any]:
    """The columnar envelope of one subject's events (as a JSON-able document).

    A nested Struct's fields go as dotted columns, a field absent from every event is left
    out, and one equal in every event (the subject, ``environment``, ...) goes once at the
    top level; ``event_id`` stays a column, so a lone event is a column of one.
    """
    kind = type(events[0])
    document: dict[str, Any] = {}
    columns: dict[str, list[Any]] = {}
    for name in kind.__struct_fields__:
        values = [getattr(event, name) for event in events]
        nested = next((v for v in values if isinstance(v, msgspec.Struct)), None)
        if nested is not None:
            for child in type(nested).__struct_fields__:
                columns[f"{name}.{child}"] = [
                    None if v is None else getattr(v, child) for v in values
                ]
        else:
            columns[name] = values
    for name, values in list(columns.items()):
        if all(v is None for v in values):
            del columns[name]
        elif name != "event_id" and _same(values):
            document[name] = values[0]
            del columns[name]
    document["columns"] = columns
    return document


def envelopes(events: list[msgspec.Struct]) -> list[tuple[bytes, int]]:
    """The events as encoded envelopes within the broker's message limit, with how many
    events each holds (halved until each fits; one event alone that does not is left
    out, for the caller to count as dropped)."""
    payload = msgspec.json.encode(envelope(events))
    if len(payload) <= MAX_ENVELOPE_BYTES:
        return [(payload, len(events))]
    if len(events) == 1:
        return []
    half = len(events) // 2
    return envelopes(events[:half]) + envelopes(events[half:])


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
        """``count`` events left the buffer: sent, or dropped because of ``error``."""
        with self.room:
            self.buffered -= count
            if error is None:
                self.sent += count
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
            parts = envelopes(events)
            left_out = len(events) - sum(count for _, count in parts)
            if left_out:
                too_big = ValueError(f"an event over {MAX_ENVELOPE_BYTES} bytes")
                self.batches.done(left_out, too_big, f"encoding for {topic}")
            for payload, count in parts:
                try:
                    future = await self.producer.send(topic, payload, key=subject.encode())
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


# --- the two flavours ----------------------------------------------------------------------


class Emitter:
    """Events to driftgate from any thread, sent by a background thread of its own.

    Parameters
    ----------
    bootstrap
        Kafka's ``host:port`` (the worker's ``DRIFTGATE_KAFKA_BOOTSTRAP``).
    topic_prefix
        The deployment's ``DRIFTGATE_TOPIC_PREFIX``.
    batch_size, linger
        An envelope goes when a subject has ``batch_size`` events or its first has waited
        ``linger`` seconds.
    max_buffered, max_block
        At most ``max_buffered`` events wait or are in flight; a call beyond that blocks
        up to ``max_block`` seconds, then drops its event (counted in :attr:`dropped`,
        and logged).
    connect_timeout
        Seconds to wait for Kafka at start (then ``ConnectionError``).
    **producer_options
        Passed to ``aiokafka.AIOKafkaProducer`` (security, ``compression_type``, ...).
    """

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = "driftgate.",
        batch_size: int = 1_000,
        linger: float = 0.2,
        max_buffered: int = 100_000,
        max_block: float = 10.0,
        connect_timeout: float = 15.0,
        **producer_options: Any,
    ) -> None:
        self._batches = _Batches(batch_size, linger, max_buffered)
        self.topic_prefix = topic_prefix
        self.max_block = max_block
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="driftgate-emitter", daemon=True
        )
        self._thread.start()
        options = {"bootstrap_servers": bootstrap, **producer_options}
        self._sender = _Sender(self._batches, topic_prefix, options)
        try:
            self._call(asyncio.wait_for(self._sender.start(), connect_timeout), None)
        except BaseException as exc:
            self._stop_loop()
            if isinstance(exc, (TimeoutError, OSError)) or "Connection" in type(exc).__name__:
                raise ConnectionError(f"Kafka unreachable at {bootstrap}: {exc!r}") from exc
            raise
        self._running: Future[None] = asyncio.run_coroutine_threadsafe(
            self._sender.run(), self._loop
        )
        self._closed = False
        atexit.register(self.close)

    @property
    def dropped(self) -> int:
        """Events dropped (buffer full past ``max_block``, or refused by Kafka)."""
        return self._batches.dropped

    @property
    def sent(self) -> int:
        """Events Kafka acknowledged."""
        return self._batches.sent

    def score(self, stream: str, s: float, **fields: Any) -> str:
        """A judge's score without its oracle label; returns the event id."""
        return self._put(label_event(stream, s, None, **fields))

    def label(self, stream: str, s: float, y: float, **fields: Any) -> str:
        """A score with its oracle label ``y``; returns the event id."""
        return self._put(label_event(stream, s, y, **fields))

    def telemetry(self, experiment_id: str, unit_id: str, variant: str, **fields: Any) -> str:
        """An observation of an experiment's (or canary's) unit; returns the event id."""
        return self._put(telemetry_event(experiment_id, unit_id, variant, **fields))

    def canary(self, agent: str, bundle_id: str, action: str, **fields: Any) -> str:
        """A step of an agent's bundle (deploy, promote, ...); returns the event id."""
        return self._put(canary_event(agent, bundle_id, action, **fields))  # type: ignore[arg-type]

    def _put(self, event: msgspec.Struct) -> str:
        if self._closed:
            raise RuntimeError("the emitter is closed")
        batches = self._batches
        if batches.full():
            with batches.room:
                batches.room.wait_for(lambda: not batches.full(), self.max_block)
            if batches.full():
                batches.drop(1, f"the buffer of {batches.max_buffered} events stayed full")
                return str(event.event_id)  # type: ignore[attr-defined]
        if batches.add(_key(event, self.topic_prefix), event):
            self._loop.call_soon_threadsafe(self._sender.wake.set)
        return str(event.event_id)  # type: ignore[attr-defined]

    def _call(self, coroutine: Any, timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Send every waiting event; return when Kafka has them (or they were dropped)."""
        self._call(self._sender.flush(), timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the producer and the thread (also at the interpreter's exit)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._call(self._sender.stop(), timeout)
            self._running.result(timeout)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncEmitter:
    """:class:`Emitter` for asyncio code: the producer runs on the caller's loop.

    ``async with AsyncEmitter(bootstrap="host:port") as emit: await emit.score(...)``; the
    helpers wait (up to ``max_block`` seconds) while the buffer is full. Parameters as
    :class:`Emitter`'s.
    """

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = "driftgate.",
        batch_size: int = 1_000,
        linger: float = 0.2,
        max_buffered: int = 100_000,
        max_block: float = 10.0,
        **producer_options: Any,
    ) -> None:
        self._batches = _Batches(batch_size, linger, max_buffered)
        self.topic_prefix = topic_prefix
        self.max_block = max_block
        options = {"bootstrap_servers": bootstrap, **producer_options}
        self._sender = _Sender(self._batches, topic_prefix, options)
        self._running: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._batches.on_room = self._room.set

    @property
    def dropped(self) -> int:
        return self._batches.dropped

    @property
    def sent(self) -> int:
        return self._batches.sent

    async def start(self) -> None:
        await self._sender.start()
        self._running = asyncio.create_task(self._sender.run())
        atexit.register(self._unsent_at_exit)

    async def score(self, stream: str, s: float, **fields: Any) -> str:
        return await self._put(label_event(stream, s, None, **fields))

    async def label(self, stream: str, s: float, y: float, **fields: Any) -> str:
        return await self._put(label_event(stream, s, y, **fields))

    async def telemetry(self, experiment_id: str, unit_id: str, variant: str, **fields: Any) -> str:
        return await self._put(telemetry_event(experiment_id, unit_id, variant, **fields))

    async def canary(self, agent: str, bundle_id: str, action: str, **fields: Any) -> str:
        return await self._put(canary_event(agent, bundle_id, action, **fields))  # type: ignore[arg-type]

    async def _put(self, event: msgspec.Struct) -> str:
        if self._running is None:
            raise RuntimeError("the emitter is not started (use async with, or await start())")
        batches = self._batches
        deadline = time.monotonic() + self.max_block
        while batches.full() and (left := deadline - time.monotonic()) > 0:
            # The sender's acknowledgements make room; they run on this very loop.
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)
        if batches.full():
            batches.drop(1, f"the buffer of {batches.max_buffered} events stayed full")
        elif batches.add(_key(event, self.topic_prefix), event):
            self._sender.wake.set()
        return str(event.event_id)  # type: ignore[attr-defined]

    async def flush(self) -> None:
        await self._sender.flush()

    async def close(self) -> None:
        if self._running is None:
            return
        atexit.unregister(self._unsent_at_exit)
        await self._sender.stop()
        await self._running
        self._running = None

    def _unsent_at_exit(self) -> None:
        """An AsyncEmitter cannot send once its loop is gone: count and say what it held."""
        if self._batches.buffered:
            self._batches.drop(self._batches.buffered, "the interpreter exited before close()")

    async def __aenter__(self) -> AsyncEmitter:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
