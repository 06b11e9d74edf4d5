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

__all__ = [
    "DEMO_AGENT",
    "DEMO_EXPERIMENT",
    "DEMO_EXPERIMENT_POLICY",
    "DEMO_STREAM",
    "ab_telemetry",
    "demo_history",
    "demo_policy",
    "reset_demo",
    "run_demo_producer",
]

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
# The A/B experiment: 50 units an envelope split 50/50; the treatment answers grounded
# 7 points more often (the MDE is 5), costs 15% more, and 3% of either arm's events come
# without an outcome. Each unit's pre-period rate is its expected rate under control.
DEMO_EXPERIMENT = "demo-ab"
AB_UNITS_PER_ENVELOPE = 50
AB_EFFECT = 0.07
AB_COST = (0.004, 0.0046)
AB_MISSING = 0.03
AB_SEGMENTS = (("enterprise", 0.3), ("consumer", 0.5), ("education", 0.2))
DEMO_EXPERIMENT_POLICY: dict[str, Any] = {
    "allocation": {"control": 0.5, "treatment": 0.5},
    "control_variant": "control",
    "primary_metric": "grounded_answer_rate",
    "hypothesis": "retrieval with citations raises the grounded answer rate by 5 points",
    "outcome_type": "binary",
    "baseline": 0.6,
    "mde": 0.05,
    "alpha": 0.05,
    "power": 0.8,
    "cuped_r2": 0.08,
    "non_inferiority_margin": 0.02,
    "owner": "demo (driftgate up)",
}


def reset_demo(client: SyncClient, layout: KeyLayout) -> None:
    """Forget the demo's subjects, so each `driftgate up` shows the flips anew."""
    forget_subject(client, layout, "stream", DEMO_STREAM)
    forget_subject(client, layout, "experiment", DEMO_AGENT)
    forget_subject(client, layout, "experiment", DEMO_EXPERIMENT)


def demo_policy() -> dict[str, Any]:
    """The policy ``driftgate up`` gives its worker when none is configured: the defaults,
    with the demo's A/B experiment pre-registered."""
    return {"experiments": {DEMO_EXPERIMENT: DEMO_EXPERIMENT_POLICY}}


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
    :data:`DEMO_EXPERIMENT` is an A/B test whose treatment wins by more than its
    pre-registered MDE (``driftgate report demo-ab`` writes its memo).
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
            await producer.send_and_wait(
                settings.topic("telemetry"),
                orjson.dumps(ab_telemetry(rng, run, sent, now)),
                key=DEMO_EXPERIMENT.encode(),
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


def ab_telemetry(rng: np.random.Generator, run: str, sent: int, now: float) -> list[dict[str, Any]]:
    """An envelope of the demo's A/B experiment: :data:`AB_UNITS_PER_ENVELOPE` units, each
    with its pre-period rate (CUPED), segment, outcome, guardrails and a secondary CSAT."""
    n = AB_UNITS_PER_ENVELOPE
    treated = rng.uniform(size=n) < 0.5
    pre = rng.uniform(0.35, 0.85, n)
    grounded = rng.uniform(size=n) < pre + np.where(treated, AB_EFFECT, 0.0)
    missing = rng.uniform(size=n) < AB_MISSING
    names = [name for name, _ in AB_SEGMENTS]
    segments = rng.choice(len(names), size=n, p=[share for _, share in AB_SEGMENTS])
    cost = np.where(treated, AB_COST[1], AB_COST[0]) * rng.lognormal(0.0, 0.1, n)
    latency = rng.lognormal(np.where(treated, 6.25, 6.2), 0.3)
    toxic = rng.uniform(size=n) < 0.001
    csat = rng.normal(np.where(grounded, 4.4, 3.9), 0.5)
    events = []
    for i in range(n):
        event: dict[str, Any] = {
            "event_id": f"demo-{run}-ab{sent}-{i}",
            "ts": now,
            "experiment_id": DEMO_EXPERIMENT,
            "unit_id": f"user-{rng.integers(1_000_000)}",
            "variant": "treatment" if treated[i] else "control",
            "sec_outcomes": {"csat": float(csat[i])},
            "guardrails": {
                "toxicity": bool(toxic[i]),
                "pii": False,
                "latency_ms": float(latency[i]),
                "unit_cost": float(cost[i]),
            },
            "covariates": {"pre_period": float(pre[i]), "segment": names[segments[i]]},
        }
        if not missing[i]:
            event["primary_outcome"] = bool(grounded[i])
        events.append(event)
    return events
