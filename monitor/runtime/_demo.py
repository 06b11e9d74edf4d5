"""The synthetic producer of ``driftgate up``: a healthy stream that then drifts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from ..config import Settings
from ..store import KeyLayout, SyncClient
from ..store._admin import forget_subject
from ._kafka import client_options

__all__ = ["DEMO_AGENT", "DEMO_STREAM", "demo_history", "reset_demo", "run_demo_producer"]

DEMO_STREAM = "demo:judge"
DEMO_AGENT = "demo-agent"
EVENTS_PER_SECOND = 200
ENVELOPE = 20
HEALTHY_SECONDS = 10.0
DRIFT = 0.15
# The canary: 10% of 500 units a second; its toxicity rises from 0.2% to 5% after 15 s.
UNITS_PER_ENVELOPE = 50
CANARY_PERCENT = 10
CANARY_HEALTHY_SECONDS = 15.0
TOXICITY = (0.002, 0.05)


def reset_demo(client: SyncClient, layout: KeyLayout) -> None:
    """Forget the demo's subjects, so each `driftgate up` shows the flips anew."""
    forget_subject(client, layout, "stream", DEMO_STREAM)
    forget_subject(client, layout, "experiment", DEMO_AGENT)


def deploy_event(run: str, ts: float) -> dict[str, Any]:
    """The canary event that deploys the demo's new bundle (``run`` names it)."""
    return {
        "event_id": f"demo-{run}-deploy",
        "ts": ts,
        "agent": DEMO_AGENT,
        "bundle_id": f"{DEMO_AGENT}-{run}",
        "action": "deploy",
        "canary_percent": CANARY_PERCENT,
        "actor": "driftgate up",
        "rationale": "the demo's new bundle",
    }


async def run_demo_producer(
    settings: Settings,
    stop: asyncio.Event,
    seed: int = 0,
    watched: asyncio.Event | None = None,
) -> None:
    """The demo's traffic: a judge stream that drifts, and a canary that turns toxic.

    :data:`DEMO_STREAM` is calibrated for 10 s, then biased by +0.15; the oracle label
    stays noisy (sd 0.1), so the gate has to earn each verdict: PASS while calibrated,
    then WARN and FAIL a few seconds after the shift. :data:`DEMO_AGENT` deploys a new
    bundle at 10%; its toxicity rises from 0.2% to 5% after 15 s, and the guardrail
    rolls it back as soon as the lower bound of its toxicity rate passes 0.5%.

    The stream's 10 s count from when ``watched`` is set (the worker has judged the
    demo stream; at once when None): until then its labels stay calibrated, so a worker
    that joins late (a loaded machine) still judges the calibrated phase before the
    drift, instead of reading both in one batch. The canary's 15 s count from the start.
    """
    rng = np.random.default_rng(seed)
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=5)
    await producer.start()
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    judged_from: float | None = None
    sent = 0
    try:
        await producer.send_and_wait(
            settings.topic("canary"),
            orjson.dumps(deploy_event(run, time.time())),
            key=DEMO_AGENT.encode(),
        )
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if judged_from is None and (watched is None or watched.is_set()):
                judged_from = time.monotonic()
            drifted = judged_from is not None and time.monotonic() - judged_from >= HEALTHY_SECONDS
            now = time.time()
            await producer.send_and_wait(
                settings.topic("labels"),
                orjson.dumps(_labels(rng, run, sent, now, DRIFT if drifted else 0)),
                key=DEMO_STREAM.encode(),
            )
            toxic = elapsed >= CANARY_HEALTHY_SECONDS
            await producer.send_and_wait(
                settings.topic("telemetry"),
                orjson.dumps(_telemetry(rng, run, sent, now, toxic)),
                key=DEMO_AGENT.encode(),
            )
            sent += ENVELOPE
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ENVELOPE / EVENTS_PER_SECOND)
    finally:
        await producer.stop()


def _labels(
    rng: np.random.Generator, run: str, sent: int, now: float, shift: float
) -> list[dict[str, Any]]:
    scores = rng.uniform(0.0, 1.0, ENVELOPE)
    labels = scores + shift + rng.normal(0.0, 0.1, ENVELOPE)
    return [
        {
            "event_id": f"demo-{run}-{sent + i}",
            "ts": now,
            "stream": DEMO_STREAM,
            "s": float(s),
            "y": float(y),
        }
        for i, (s, y) in enumerate(zip(scores, labels, strict=True))
    ]


def _telemetry(
    rng: np.random.Generator, run: str, sent: int, now: float, toxic: bool
) -> list[dict[str, Any]]:
    canary = rng.uniform(size=UNITS_PER_ENVELOPE) < CANARY_PERCENT / 100
    rate = np.where(canary, TOXICITY[1] if toxic else TOXICITY[0], TOXICITY[0])
    flagged = rng.uniform(size=UNITS_PER_ENVELOPE) < rate
    latency = rng.lognormal(6.2, 0.3, UNITS_PER_ENVELOPE)
    quality = rng.normal(0.8, 0.1, UNITS_PER_ENVELOPE)
    return [
        {
            "event_id": f"demo-{run}-t{sent}-{i}",
            "ts": now,
            "experiment_id": DEMO_AGENT,
            "unit_id": f"user-{rng.integers(1_000_000)}",
            "variant": "canary" if canary[i] else "control",
            "primary_outcome": float(quality[i]),
            "guardrails": {
                "toxicity": bool(flagged[i]),
                "pii": False,
                "latency_ms": float(latency[i]),
                "unit_cost": 0.004,
            },
        }
        for i in range(UNITS_PER_ENVELOPE)
    ]


def demo_history(
    start: float, seconds: float, seed: int = 0, step: float = ENVELOPE / EVENTS_PER_SECOND
) -> list[Any]:
    """The demo's traffic as history, without Kafka: the messages (the deploy, then an
    envelope of labels and one of telemetry every ``step`` seconds of event time from
    ``start``), as :func:`run_demo_producer` sends them at its pace (``step`` 0.1); the
    replay demo file (``docs/examples/``) is made of it, at a slower pace."""
    rng = np.random.default_rng(seed)
    run = f"history{seed}"
    messages: list[Any] = [deploy_event(run, start)]
    for tick in range(int(seconds / step)):
        elapsed = tick * step
        now = start + elapsed + step
        sent = tick * ENVELOPE
        shift = DRIFT if elapsed >= HEALTHY_SECONDS else 0
        messages.append(_labels(rng, run, sent, now, shift))
        messages.append(_telemetry(rng, run, sent, now, elapsed >= CANARY_HEALTHY_SECONDS))
    return messages
