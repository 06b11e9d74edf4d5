"""Send driftgate's events from an application: checked at the call, sent in columnar envelopes.

>>> from monitor.emit import Emitter
>>> with Emitter(bootstrap="127.0.0.1:9092") as emit:  # doctest: +SKIP
...     emit.score("policy:gpt-4-mini", 0.82)
...     emit.label("policy:gpt-4-mini", 0.41, y=1)
...     emit.score("policy:gpt-4-mini", 0.67, response_id="resp-88")  # its label comes later
...     emit.late_label("policy:gpt-4-mini", "resp-88", y=0)
...     emit.telemetry("inbox_triage", unit_id="u-5f2c", variant="canary",
...                    primary_outcome=1, guardrails={"latency_ms": 412.5})

Each helper builds the event with the worker's own ``msgspec`` Struct (``monitor.events._structs``),
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
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, TypeVar

import msgspec

from ..events._structs import CanaryEvent, LabelEvent, TelemetryEvent
from ._events import (
    EventValidationError,
    Timestamp,
    canary_event,
    label_event,
    late_label_event,
    telemetry_event,
)
from ._sender import _Batches, _key, _Sender

Event = LabelEvent | TelemetryEvent | CanaryEvent

__all__ = ["AsyncEmitter", "Emitter", "EventValidationError"]

log = logging.getLogger(__name__)

# --- what the two flavours share ---------------------------------------------------------

R = TypeVar("R")


class _EmitterBase(Generic[R]):
    """The buffer, the sender and the helpers that build and check events; a flavour
    only says how a call waits for room and wakes the sender (``_put``): :class:`Emitter`
    returns the event id (``R`` is ``str``), :class:`AsyncEmitter` a coroutine of it."""

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
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.max_block = max_block
        self.connect_timeout = connect_timeout
        options = {"bootstrap_servers": bootstrap, **producer_options}
        self._sender = _Sender(self._batches, topic_prefix, options)
        self._open()

    def _open(self) -> None:
        """The flavour's start, at the end of ``__init__``."""

    def _unreachable(self, exc: BaseException) -> ConnectionError | None:
        """The error to raise for a producer that could not start with ``exc``: Kafka did
        not answer; ``None`` when ``exc`` says something else (raised as it is)."""
        if isinstance(exc, (TimeoutError, OSError)) or "Connection" in type(exc).__name__:
            return ConnectionError(f"Kafka unreachable at {self.bootstrap}: {exc!r}")
        return None

    @property
    def dropped(self) -> int:
        """Events dropped (buffer full past ``max_block``, or refused by Kafka)."""
        return self._batches.dropped

    @property
    def sent(self) -> int:
        """Events Kafka acknowledged."""
        return self._batches.sent

    @property
    def messages(self) -> int:
        """Envelopes (Kafka messages) Kafka acknowledged, holding :attr:`sent` events."""
        return self._batches.messages

    def score(self, stream: str, s: float, *, response_id: str | None = None, **fields: Any) -> R:
        """A judge's score without its oracle label; returns the event id. With
        ``response_id`` its label may come later (:meth:`late_label`): the worker joins
        the two into one pair."""
        return self._put(label_event(stream, s, None, response_id=response_id, **fields))

    def label(self, stream: str, s: float, y: float, **fields: Any) -> R:
        """A score with its oracle label ``y``; returns the event id."""
        return self._put(label_event(stream, s, y, **fields))

    def late_label(
        self,
        stream: str,
        response_id: str,
        y: float,
        *,
        event_id: str | None = None,
        ts: Timestamp = None,
    ) -> R:
        """The oracle label ``y`` alone, for the score sent with ``response_id`` (earlier,
        or later: either half waits for the other); returns the event id."""
        return self._put(late_label_event(stream, response_id, y, event_id=event_id, ts=ts))

    def telemetry(self, experiment_id: str, unit_id: str, variant: str, **fields: Any) -> R:
        """An observation of an experiment's (or canary's) unit; returns the event id."""
        return self._put(telemetry_event(experiment_id, unit_id, variant, **fields))

    def canary(self, agent: str, bundle_id: str, action: str, **fields: Any) -> R:
        """A step of an agent's bundle (deploy, promote, ...); returns the event id."""
        return self._put(canary_event(agent, bundle_id, action, **fields))  # type: ignore[arg-type]

    def send(self, event: Event) -> R:
        """An event already built and checked (by the helpers' ``*_event`` functions, or
        decoded by :mod:`monitor.events`' Structs, as ``driftgate produce`` does); it is not
        checked again. Returns its id."""
        return self._put(event)

    def _put(self, event: msgspec.Struct) -> R:
        raise NotImplementedError

    def _keep(self, event: msgspec.Struct) -> bool:
        """Once the call has waited for room: the event joins its batch, or is dropped if
        the buffer is still full. Whether the sender is to wake (a batch is full)."""
        batches = self._batches
        if batches.full():
            batches.drop(1, f"the buffer of {batches.max_buffered} events stayed full")
            return False
        return batches.add(_key(event, self.topic_prefix), event)


# --- the two flavours ----------------------------------------------------------------------


class Emitter(_EmitterBase[str]):
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

    def _open(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="driftgate-emitter", daemon=True
        )
        self._thread.start()
        try:
            self._call(asyncio.wait_for(self._sender.start(), self.connect_timeout), None)
        except BaseException as exc:
            self._stop_loop()
            if unreachable := self._unreachable(exc):
                raise unreachable from exc
            raise
        self._running: Future[None] = asyncio.run_coroutine_threadsafe(
            self._sender.run(), self._loop
        )
        self._closed = False
        atexit.register(self.close)

    def _put(self, event: msgspec.Struct) -> str:
        if self._closed:
            raise RuntimeError("the emitter is closed")
        batches = self._batches
        if batches.full():
            with batches.room:
                batches.room.wait_for(lambda: not batches.full(), self.max_block)
        if self._keep(event):
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


class AsyncEmitter(_EmitterBase[Coroutine[Any, Any, str]]):
    """:class:`Emitter` for asyncio code: the producer runs on the caller's loop.

    ``async with AsyncEmitter(bootstrap="host:port") as emit: await emit.score(...)``; the
    helpers wait (up to ``max_block`` seconds) while the buffer is full. Parameters as
    :class:`Emitter`'s; ``connect_timeout`` bounds :meth:`start`.
    """

    _running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the producer (``ConnectionError`` when Kafka does not answer within
        ``connect_timeout`` seconds)."""
        self._room = asyncio.Event()
        self._batches.on_room = self._room.set
        try:
            await asyncio.wait_for(self._sender.start(), self.connect_timeout)
        except BaseException as exc:
            if unreachable := self._unreachable(exc):
                raise unreachable from exc
            raise
        self._running = asyncio.create_task(self._sender.run())
        atexit.register(self._unsent_at_exit)

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
        if self._keep(event):
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
