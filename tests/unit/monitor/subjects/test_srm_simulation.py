"""The split test with a delayed canary start, through the real handlers: how often a
correct split is held.

Each run deploys a bundle at 10% (``CanaryHandler.update``); the controller routes the
canary its share only after a random 0 to 400 control-only events (an interval or two
of Flagger's), then every unit goes to the canary with probability 0.1. Units are
users of a pool of 2,000 with a fixed assignment, so many come back: the test counts
each (variant, user) once. ``TelemetryHandler.update`` folds batches of 100 events and
the srm gate judges after every batch, as a worker does, up to 3,000 events a run.

The gate's level is ``canary.srm_alpha``; at the default 0.001 a few hundred runs can
only show that nothing is held, so the runs use 0.05, where the false-HOLD rate can be
told from its bound: the Wilson interval of the runs held must reach down to 0.05.
Counted from the deploy, as before, the control-only events hold most runs. Measured
(seed 1818, 300 runs, ~4.5 s): held 4 (Wilson [0.005, 0.034]); from the deploy, 239.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from estimators import SampleRatioSequence
from monitor import Policy
from monitor.config import CanaryPolicy
from monitor.gates._srm import srm_gate
from monitor.pipeline import SubjectEvents
from monitor.subjects import CanaryHandler, TelemetryHandler
from monitor.subjects._decode import EventRows
from monitor.subjects._experiment_model import SRM_MIN_N
from monitor.subjects._experiments import (
    CanaryEvent,
    ExperimentState,
    TelemetryColumns,
    TelemetryEvent,
)

AGENT = "agent"
NOW = 1_795_341_600.0
ALPHA = 0.05
POLICY = Policy(canary=CanaryPolicy(srm_alpha=ALPHA))
RUNS = 300
BATCH = 100
EVENTS = 3_000
USERS = 2_000
SHARE = 0.10
Z = 1.96  # the Wilson interval's 95%


def events(rows: list[Any], ts: float) -> SubjectEvents:
    """Canary events whole, telemetry as the handler's columns."""
    none = np.zeros(len(rows), dtype=np.int64)
    telemetry = all(isinstance(row, TelemetryEvent) for row in rows)
    columns = TelemetryColumns.from_events(rows) if telemetry else EventRows(rows)
    return SubjectEvents(none.astype(np.uint64), np.full(len(rows), ts), none, none, columns)


def deploy(state: ExperimentState) -> None:
    event = CanaryEvent("deploy-v2", NOW, AGENT, "v2", "deploy", SHARE * 100, "ci")
    CanaryHandler(POLICY).update(AGENT, state, events([event], NOW), NOW)


def run(rng: np.random.Generator, handler: TelemetryHandler) -> tuple[bool, bool]:
    """One stage: whether the gate held it, and whether a test counted from the deploy
    (every event, as before) would have."""
    state = ExperimentState()
    deploy(state)
    assigned_canary = rng.random(USERS) < SHARE
    users = rng.integers(0, USERS, EVENTS)
    routed = np.arange(EVENTS) >= rng.integers(0, 401)
    canary = assigned_canary[users] & routed
    from_the_deploy = SampleRatioSequence([SHARE, 1 - SHARE])
    held = False
    for start in range(0, EVENTS, BATCH):
        rows = [
            TelemetryEvent(f"e{start + i}", NOW, AGENT, f"u{user}", "canary" if k else "control")
            for i, (user, k) in enumerate(
                zip(
                    users[start : start + BATCH].tolist(),
                    canary[start : start + BATCH].tolist(),
                    strict=True,
                )
            )
        ]
        handler.update(AGENT, state, events(rows, NOW + 1), NOW + 1)
        verdict = srm_gate(
            AGENT, state.srm, state.srm_variants, ALPHA, SRM_MIN_N, split=state.split
        )
        held = held or verdict.verdict == "HOLD"
        on_canary = int(canary[start : start + BATCH].sum())
        from_the_deploy.update([on_canary, BATCH - on_canary])
    return held, from_the_deploy.rejects(ALPHA)


def wilson(successes: int, n: int) -> tuple[float, float]:
    centre = (successes + Z**2 / 2) / (n + Z**2)
    half = Z * math.sqrt(successes * (n - successes) / n + Z**2 / 4) / (n + Z**2)
    return centre - half, centre + half


def test_a_correct_split_with_a_delayed_start_is_held_at_most_at_the_level() -> None:
    rng = np.random.default_rng(1818)
    handler = TelemetryHandler(POLICY)
    results = [run(rng, handler) for _ in range(RUNS)]
    held = sum(gate for gate, _ in results)
    low, high = wilson(held, RUNS)
    report = f"held {held}/{RUNS} runs: Wilson 95% [{low:.4f}, {high:.4f}] at alpha {ALPHA}"
    assert low <= ALPHA, report
    before = sum(old for _, old in results)
    assert before >= RUNS // 2, f"counted from the deploy: held {before}/{RUNS}; {report}"
