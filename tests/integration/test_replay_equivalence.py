"""The same events through Kafka and a real worker, and through ``driftgate replay``: the
same decisions, in the same order per subject, and the same final estimates.

A worker judges a subject after each batch of its topic; the replay after each batch of
``--batch`` events in event-time order. The events come in phases of exactly ``PHASE``
events, each phase one message per topic (a message is never split across batches) and
produced only once the worker has applied the one before; with ``--batch PHASE`` the
replay's batches are the same phases, so both judge the same states.

Late oracle labels: a hundred scores of the drift's first phase come without their
labels (``response_id``, ``y`` null); eighty of the labels come alone in the next phase
(``response_id``, no ``s``), twenty never: the join's pairs and counts must agree too.

The clock: canary gates read the time (stale data after 15 minutes without canary data,
a stall after 72 hours of monitoring); the worker reads the wall clock, the replay the
event time. The events carry the wall time of the test's start plus a second per phase,
and the test runs for well under 15 minutes: neither clock comes near a limit, so the
clock does not matter here (a replay of old history judges staleness on event time,
which is what the worker would have done at the time).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from .conftest import Deployment, encode

pytestmark = pytest.mark.integration

PHASE = 400
STREAM = "eq:judge"
AGENT = "eq-agent"
START = time.time()


def _labels(rng: np.random.Generator, phase: int, shift: float) -> list[dict[str, Any]]:
    s = rng.uniform(0.0, 1.0, PHASE)
    y = np.clip(s + shift + rng.normal(0.0, 0.1, PHASE), 0.0, 1.0)
    ts = START + phase + np.arange(PHASE) / PHASE
    return [
        {
            "event_id": f"l{phase}-{i}",
            "ts": float(ts[i]),
            "stream": STREAM,
            "s": float(s[i]),
            "y": float(y[i]),
        }
        for i in range(PHASE)
    ]


LATE = 100
LABELED_LATE = 80


def _late_halves(
    scored: list[dict[str, Any]], labeled: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first LATE events of ``scored`` as scores waiting for their labels, and
    ``labeled`` with its first LABELED_LATE events replaced by those labels, alone."""
    scores = [
        {**event, "y": None, "response_id": f"resp-{i}"} for i, event in enumerate(scored[:LATE])
    ]
    labels = [
        {
            "event_id": f"late-{i}",
            "ts": labeled[i]["ts"],
            "stream": STREAM,
            "y": scored[i]["y"],
            "response_id": f"resp-{i}",
        }
        for i in range(LABELED_LATE)
    ]
    return scores + scored[LATE:], labels + labeled[LABELED_LATE:]


def _telemetry(
    rng: np.random.Generator, phase: int, count: int, toxicity: float
) -> list[dict[str, Any]]:
    canary = rng.uniform(size=count) < 0.5
    toxic = rng.uniform(size=count) < np.where(canary, toxicity, 0.001)
    latency = rng.lognormal(6.0, 0.3, count)
    quality = rng.normal(0.8, 0.1, count)
    ts = START + phase + (1 + np.arange(count)) / (count + 1)
    return [
        {
            "event_id": f"t{phase}-{i}",
            "ts": float(ts[i]),
            "experiment_id": AGENT,
            "unit_id": f"u{phase}-{i}",
            "variant": "canary" if canary[i] else "control",
            "primary_outcome": float(quality[i]),
            "guardrails": {
                "toxicity": bool(toxic[i]),
                "pii": False,
                "latency_ms": float(latency[i]),
                "unit_cost": 0.004,
            },
        }
        for i in range(count)
    ]


def _phases() -> list[tuple[str, Any]]:
    """``(topic, message)`` in order: each phase is PHASE events of increasing event time."""
    rng = np.random.default_rng(19)
    deploy = {
        "event_id": "deploy-1",
        "ts": START + 3,
        "agent": AGENT,
        "bundle_id": f"{AGENT}-v2",
        "action": "deploy",
        "canary_percent": 50,
        "actor": "ci",
    }
    drift, more = _late_halves(_labels(rng, 1, 0.3), _labels(rng, 2, 0.3))
    return [
        ("labels", _labels(rng, 0, 0.0)),  # calibrated
        ("labels", drift),  # the drift, with scores waiting for their labels
        ("labels", more),  # with most of those labels
        ("canary", deploy),  # with the next message: one phase
        ("telemetry", _telemetry(rng, 3, PHASE - 1, 0.001)),
        ("telemetry", _telemetry(rng, 4, PHASE, 0.3)),  # the breach: a rollback
        ("telemetry", _telemetry(rng, 5, PHASE, 0.3)),  # after it: nothing more
    ]


def _by_subject(decisions: list[dict[str, Any]]) -> dict[str, list[tuple[str, ...]]]:
    found: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for d in decisions:
        found[d["subject"]].append(
            (d["gate"], d["subject"], d["verdict"], d["action"], d["reason"])
        )
    return dict(found)


def _assert_close(worker: Any, replay: Any, where: str) -> int:
    """Numbers equal to 1e-9, everything else equal; returns how many numbers compared."""
    if isinstance(worker, dict):
        assert isinstance(replay, dict) and worker.keys() == replay.keys(), where
        return sum(_assert_close(worker[k], replay[k], f"{where}.{k}") for k in worker)
    if isinstance(worker, list):
        assert isinstance(replay, list) and len(worker) == len(replay), where
        return sum(
            _assert_close(a, b, f"{where}[{i}]")
            for i, (a, b) in enumerate(zip(worker, replay, strict=True))
        )
    if isinstance(worker, float) and isinstance(replay, float | int):
        assert math.isclose(worker, replay, rel_tol=1e-9, abs_tol=1e-9), (where, worker, replay)
        return 1
    assert worker == replay, (where, worker, replay)
    return int(isinstance(worker, int) and not isinstance(worker, bool))


def test_replay_decides_as_the_worker_did(deployment: Deployment, tmp_path: Path) -> None:
    phases = _phases()
    deployment.start_worker()
    applied: dict[str, int] = defaultdict(int)
    for topic, message in phases:
        deployment.produce(
            topic, [encode(message)], [(STREAM if topic == "labels" else AGENT).encode()]
        )
        applied[topic] += len(message) if isinstance(message, list) else 1
        deployment.wait_for_count(topic, "ok", applied[topic], timeout=90)
    file = tmp_path / "history.jsonl"
    file.write_bytes(b"".join(orjson.dumps(message) + b"\n" for _, message in phases))
    total = sum(applied.values())

    result = deployment.cli("replay", str(file), "--batch", str(PHASE), "--json")
    assert result.returncode == 0, result.stderr
    replay = orjson.loads(result.stdout)
    assert replay["events"] == total
    (run,) = replay["runs"]
    # Every decision of the worker: as many as the replay's are awaited (the outbox drains
    # them after the counts), then a little longer for any more that would come late.
    worker = [
        orjson.loads(r.value)
        for r in deployment.consume_all("decisions", len(run["decisions"]), timeout=60)
    ]
    status = deployment.status()
    deployment.stop_workers()

    expected = _by_subject(worker)
    assert _by_subject(run["decisions"]) == expected
    assert ("residual_drift", STREAM, "FAIL", "alert", "residual_bias") in expected[STREAM]
    assert [d for d in expected[AGENT] if d[3] == "rollback"] == [
        ("guardrail", AGENT, "FAIL", "rollback", "toxicity_rate")
    ]
    for decision in run["decisions"]:
        assert decision["event_ts"] == decision["ts"]  # the replay's clock is event time

    late = {"waiting": LATE - LABELED_LATE, "joined": LABELED_LATE, "expired": 0, "repeated": 0}
    assert status["streams"][STREAM]["late_labels"] == late
    row = status["streams"][STREAM]
    # Phase 1 lost LATE labels to the join, phase 2 gave LABELED_LATE labels without scores.
    assert (row["n"], row["labeled_n"]) == (3 * PHASE - LABELED_LATE, 3 * PHASE - LATE)
    compared = _assert_close(status["streams"], run["status"]["streams"], "streams")
    compared += _assert_close(status["experiments"], run["status"]["experiments"], "experiments")
    assert compared > 50
    mine, theirs = status["agents"][AGENT], run["status"]["agents"][AGENT]
    for key in ("bundle_id", "phase", "canary_percent", "verdict", "reason", "recommendation"):
        assert mine[key] == theirs[key], key
    assert theirs["phase"] == "rolled_back"
