"""The synthetic producer of ``driftgate up``: a healthy stream that then drifts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from ._config import Settings
from ._kafka import client_options
from .store import KeyLayout, SyncClient
from .store._admin import forget_subject

__all__ = ["DEMO_STREAM", "reset_demo", "run_demo_producer"]

DEMO_STREAM = "demo:judge"
EVENTS_PER_SECOND = 200
ENVELOPE = 20
HEALTHY_SECONDS = 10.0
DRIFT = 0.15


def reset_demo(client: SyncClient, layout: KeyLayout) -> None:
    """Forget the demo's subjects, so each `driftgate up` shows the flips anew."""
    forget_subject(client, layout, "stream", DEMO_STREAM)


async def run_demo_producer(settings: Settings, stop: asyncio.Event, seed: int = 0) -> None:
    """Label events for :data:`DEMO_STREAM`: calibrated for 10 s, then biased by +0.15.

    The oracle label stays noisy (sd 0.1), so the gate has to earn each verdict: PASS
    while calibrated, then WARN and FAIL a few seconds after the shift.
    """
    rng = np.random.default_rng(seed)
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=5)
    await producer.start()
    topic = settings.topic("labels")
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    sent = 0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            shift = DRIFT if elapsed >= HEALTHY_SECONDS else 0.0
            scores = rng.uniform(0.0, 1.0, ENVELOPE)
            labels = scores + shift + rng.normal(0.0, 0.1, ENVELOPE)
            now = time.time()
            envelope = [
                {
                    "event_id": f"demo-{run}-{sent + i}",
                    "ts": now,
                    "stream": DEMO_STREAM,
                    "s": float(s),
                    "y": float(y),
                }
                for i, (s, y) in enumerate(zip(scores, labels, strict=True))
            ]
            await producer.send_and_wait(topic, orjson.dumps(envelope), key=DEMO_STREAM.encode())
            sent += ENVELOPE
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ENVELOPE / EVENTS_PER_SECOND)
    finally:
        await producer.stop()
