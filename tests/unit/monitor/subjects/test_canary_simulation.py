"""Canaries monitored after every batch, through the real handlers and gates: how often an
identical canary is rolled back, and how surely a worse one is.

Each run deploys a bundle at 10% (``CanaryHandler.update``), then feeds batches of 500
units (10% canary) to ``TelemetryHandler.update`` and judges after every batch with
``ExperimentModel.evaluate`` (guardrails, SRM and the canary gate, through
``_one_rollback``), as a worker does; a run ends at its first verdict whose action is
``rollback``. Promotions are not acted on: the canary stays at 10%.

The horizon is 10,000 units (20 looks, ~1,000 canary units), not 20,000, to keep this
file near 20 s: an evaluation costs ~4-6 ms, mostly ``BernoulliSequence.interval`` (two
``brentq`` root searches in Python per rate: PII, toxicity, the tail at the p95 ceiling
twice and the p95 interval, for control as well as the canary), so 200 null runs of 40
looks take ~26 s alone (measured once: 0/200 rolled back; the worse canaries 200/200).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from monitor import Policy
from monitor.pipeline import SubjectEvents
from monitor.subjects import CanaryHandler, TelemetryHandler
from monitor.subjects._decode import EventRows
from monitor.subjects._experiments import (
    CanaryEvent,
    ExperimentState,
    Guardrails,
    TelemetryColumns,
    TelemetryEvent,
)

pytestmark = pytest.mark.slow

POLICY = Policy()
AGENT = "agent"
NOW = 1_795_341_600.0
BATCH = 500
HORIZON = 10_000
SHARE = 0.10
QUALITY, QUALITY_SD = 0.8, 0.1
LATENCY_LOG_MEAN, LATENCY_LOG_SD = 6.0, 0.4  # median ~400 ms, p95 ~780 ms
TOXICITY = 0.001
ALPHA = 0.05

IDS = [f"u{i}" for i in range(BATCH)]
NO_ROWS = np.zeros(BATCH, dtype=np.int64)


@dataclass(frozen=True)
class Canary:
    """How the canary differs from control."""

    quality: float = QUALITY
    latency_factor: float = 1.0


@dataclass(frozen=True)
class Rollback:
    units: int
    gate: str
    reason: str


def events(columns: EventRows[Any], ts: float, size: int) -> SubjectEvents:
    rows = np.zeros(size, dtype=np.int64)
    return SubjectEvents(rows.astype(np.uint64), np.full(size, ts), rows, rows, columns)


def deploy(state: ExperimentState) -> None:
    event = CanaryEvent("deploy-v2", NOW, AGENT, "v2", "deploy", SHARE * 100, "ci")
    CanaryHandler(POLICY).update(AGENT, state, events(EventRows([event]), NOW, 1), NOW)


def batch(rng: np.random.Generator, canary: Canary) -> SubjectEvents:
    """500 units: 10% to the canary, quality scores, log-normal latencies, rare toxicity,
    no PII."""
    arm = rng.random(BATCH) < SHARE
    quality = rng.normal(np.where(arm, canary.quality, QUALITY), QUALITY_SD)
    shift = np.where(arm, math.log(canary.latency_factor), 0.0)
    latency = rng.lognormal(LATENCY_LOG_MEAN + shift, LATENCY_LOG_SD)
    toxic = rng.random(BATCH) < TOXICITY
    rows = [
        TelemetryEvent(
            event_id=unit,
            ts=NOW,
            experiment_id=AGENT,
            unit_id=unit,
            variant="canary" if is_canary else "control",
            primary_outcome=score,
            guardrails=Guardrails(toxicity=is_toxic, pii=False, latency_ms=ms),
        )
        for unit, is_canary, score, ms, is_toxic in zip(
            IDS, arm.tolist(), quality.tolist(), latency.tolist(), toxic.tolist(), strict=True
        )
    ]
    return SubjectEvents(
        NO_ROWS.astype(np.uint64),
        np.full(BATCH, NOW),
        NO_ROWS,
        NO_ROWS,
        TelemetryColumns.from_events(rows),
    )


def run(rng: np.random.Generator, handler: TelemetryHandler, canary: Canary) -> Rollback | None:
    """One canary's life up to the horizon: its first rollback, if any."""
    state = ExperimentState()
    deploy(state)
    for look in range(1, HORIZON // BATCH + 1):
        now = NOW + 30.0 * look  # a batch every 30 s: never stale, never stalled
        handler.update(AGENT, state, batch(rng, canary), now)
        verdicts = handler.model.evaluate(AGENT, state, now).verdicts
        rollbacks = [v for v in verdicts if v.action == "rollback"]
        assert len(rollbacks) <= 1  # one rollback per bundle
        if rollbacks:
            return Rollback(look * BATCH, rollbacks[0].gate, rollbacks[0].reason)
    return None


def simulate(canary: Canary, runs: int, seed: int) -> list[Rollback | None]:
    rng = np.random.default_rng(seed)
    handler = TelemetryHandler(POLICY)
    return [run(rng, handler, canary) for _ in range(runs)]


def summary(results: list[Rollback | None]) -> str:
    rolled = [r for r in results if r is not None]
    reasons = Counter(f"{r.gate}:{r.reason}" for r in rolled)
    units = sorted(r.units for r in rolled)
    timing = (
        f"; units to rollback: median {units[len(units) // 2]}, "
        f"90% {units[min(len(units) - 1, int(0.9 * len(units)))]}, max {units[-1]}"
        if units
        else ""
    )
    return (
        f"rolled back in {len(rolled)}/{len(results)} runs "
        f"({len(rolled) / len(results):.3f}) within {HORIZON} units; reasons {dict(reasons)}"
        f"{timing}"
    )


def test_an_identical_canary_is_rarely_rolled_back() -> None:
    runs = 200
    results = simulate(Canary(), runs, seed=101)
    rate = sum(r is not None for r in results) / runs
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert rate <= ALPHA + slack, summary(results)


@pytest.mark.parametrize(
    ("canary", "reason"),
    [
        (Canary(quality=0.72), "quality_regression"),  # 10% worse: 0.8 -> 0.72
        (Canary(latency_factor=1.2), "latency_regression"),  # 20% slower
    ],
    ids=["quality_drop_10pct", "latency_up_20pct"],
)
def test_a_worse_canary_is_rolled_back_for_its_regression(canary: Canary, reason: str) -> None:
    runs = 200
    results = simulate(canary, runs, seed=202 if canary.quality != QUALITY else 303)
    right = sum(r is not None and (r.gate, r.reason) == ("canary", reason) for r in results)
    assert right / runs >= 0.90, summary(results)
