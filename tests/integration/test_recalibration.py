"""A new calibrator version starts a new, announced interval: recalibrating a stream whose
gate is FAIL, while labels keep arriving, publishes exactly one decision that announces
the new version (the old and the new one in its evidence), and the verdict never flips
without a decision, nor back and forth."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from estimators import IsotonicCalibrator
from monitor import Policy
from monitor.slices import status_document
from monitor.store import KeyLayout, ReadModel
from monitor.store._calibrators import StateConflictError
from monitor.workflows._calibration import activate_calibrator

from .conftest import Deployment, RedisServer, encode, label


def judge(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """A judge whose scale is not the label's: the identity is biased, a fit is not."""
    s = rng.uniform(0, 1, count)
    return s, np.clip(s**2 + rng.normal(0, 0.05, count), 0.0, 1.0)  # labels in [0, 1]


def envelope(first: int, s: np.ndarray, y: np.ndarray) -> bytes:
    return encode(
        [
            label(f"j-{first + i}", "judge", float(a), float(b))
            for i, (a, b) in enumerate(zip(s, y, strict=True))
        ]
    )


def once_each(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions in order, each decision_id once (a repeat must be the same record)."""
    first: dict[str, dict[str, Any]] = {}
    for decision in decisions:
        seen = first.setdefault(decision["decision_id"], decision)
        assert seen == decision, (seen, decision)
    return list(first.values())


def read_model(deployment: Deployment) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stream's status row (with its retired versions) and the gates' records."""
    client = deployment.redis_server.client()
    try:
        snapshot = ReadModel(client, KeyLayout()).snapshot(with_history=True)
        return status_document(snapshot).to_builtins()["streams"]["judge"], snapshot.gates
    finally:
        client.close()


def test_recalibration_during_traffic_is_announced_once_and_never_flaps(
    deployment: Deployment, tmp_path: Path
) -> None:
    rng = np.random.default_rng(31)
    deployment.start_worker()
    s, y = judge(rng, 1000)
    deployment.produce(
        "labels", [envelope(i, s[i : i + 100], y[i : i + 100]) for i in range(0, 1000, 100)]
    )
    deployment.wait_for_count("labels", "ok", 1000)
    assert deployment.status()["streams"]["judge"]["verdict"] == "FAIL"

    # A calibration sample of the judge, large enough for a fit without visible bias.
    fit_s, fit_y = judge(rng, 5000)
    pairs = tmp_path / "oracle.jsonl"
    pairs.write_bytes(
        b"\n".join(
            orjson.dumps({"s": float(a), "y": float(b)}) for a, b in zip(fit_s, fit_y, strict=True)
        )
    )

    # Labels keep arriving, 50 every 50 ms, before, during and after the recalibration:
    # until the calibration is active and 20 batches more (an event, not a duration, so a
    # slow machine cannot let the traffic end before the new version sees any). Batch b
    # is drawn from its own seed, so the traffic is the same however long it runs; its
    # bound only keeps a calibrate that never returns from producing for ever (it is far
    # beyond what a slow calibrate needs: 400 batches, the former bound, are 20 s of it).
    batches, size, after_it = 20_000, 50, 20
    calibrated, produced = threading.Event(), threading.Event()
    sent = [0]

    def traffic() -> None:
        left = after_it
        for b in range(batches):
            first = b * size
            traffic_s, traffic_y = judge(np.random.default_rng((31, b)), size)
            deployment.produce("labels", [envelope(1000 + first, traffic_s, traffic_y)])
            sent[0] += size
            if calibrated.is_set():
                left -= 1
                if left == 0:
                    break
            time.sleep(0.05)  # a pace for the traffic, not a wait for anything
        produced.set()

    thread = threading.Thread(target=traffic)
    thread.start()
    deployment.wait_for_count("labels", "ok", 1500)  # traffic is flowing
    result = deployment.cli("calibrate", str(pairs), "--stream", "judge")
    calibrated.set()
    assert result.returncode == 0, result.stderr
    thread.join(timeout=120)  # 20 batches after the activation
    assert produced.is_set() and sent[0] < batches * size  # it ended after the activation
    total = 1000 + sent[0]
    deployment.wait_for_count("labels", "ok", total)

    # Every residual_drift decision of the stream, in the order of the topic, once each:
    # the test broker has no idempotent producers, so a send retried under load (past the
    # producer's 10 s request timeout, or a chunk the drainer sends again after its own
    # send timeout) may put a decision on the topic twice, with the same decision_id (the
    # contract: at least once, by decision_id). A repeat is the same decision, not a flap.
    records = deployment.consume_all("decisions", expected=3, timeout=30)
    decisions = once_each([orjson.loads(r.value) for r in records])
    judged = [d for d in decisions if d["subject"] == "judge" and d["gate"] == "residual_drift"]
    announcements = [d for d in decisions if d["reason"] == "recalibrated"]
    assert len(announcements) == 1, decisions
    [announcement] = announcements
    assert (announcement["gate"], announcement["subject"]) == ("residual_drift", "judge")
    assert (announcement["verdict"], announcement["action"]) == ("INCONCLUSIVE", "none")
    evidence = announcement["evidence"]
    assert (evidence["previous_calibrator_version"], evidence["calibrator_version"]) == (0, 1)
    assert evidence["n"] == 0 and evidence["estimate"] is None

    at = judged.index(announcement)
    before, after = judged[:at], judged[at + 1 :]
    assert [d["verdict"] for d in before] == ["FAIL"]
    assert {d["evidence"]["calibrator_version"] for d in before} == {0}
    # After the announcement: the new interval fills and passes, once, and stays.
    assert [(d["verdict"], d["evidence"]["calibrator_version"]) for d in after] == [("PASS", 1)]

    # Traffic was judged under both versions, and the status agrees with the decisions.
    row, gates = read_model(deployment)
    assert row["calibrator"] == {"kind": "isotonic", "version": 1}
    assert row["verdict"] == "PASS"
    retired = row["history"]["0"]["labeled_n"]
    assert retired > 1000 and row["labeled_n"] > 0
    assert retired + row["labeled_n"] == total
    [residual] = [g for g in gates if g.subject == "judge" and g.gate == "residual_drift"]
    assert residual.decision_id == after[0]["decision_id"]

    # The audit log holds the announcement too (it was written in the same atomic write).
    log = deployment.cli("log", "--json")
    assert log.returncode == 0, log.stderr
    logged = orjson.loads(log.stdout)
    assert [d["decision_id"] for d in logged if d.get("reason") == "recalibrated"] == [
        announcement["decision_id"]
    ]


def test_each_version_is_announced_from_the_one_it_retires(redis_server: RedisServer) -> None:
    # No worker: the announcements wait in the stream's outbox, in order, with the audit
    # log and the gate's published verdict written by the same script.
    client = redis_server.client()
    layout = KeyLayout()
    keys = layout.subject("stream", "quiet")
    rng = np.random.default_rng(32)
    model = IsotonicCalibrator().fit(*judge(rng, 200))
    versions = [
        activate_calibrator(client, layout, Policy(), "quiet", model, decisions_topic="t.decisions")
        for _ in range(2)
    ]
    assert versions == [1, 2]

    entries = [fields for _, fields in client.xrange(keys.outbox)]
    assert [e[b"topic"] for e in entries] == [b"t.decisions"] * 2
    assert {e[b"key"] for e in entries} == {b"quiet"}
    decisions = [orjson.loads(e[b"value"]) for e in entries]
    assert [
        (d["evidence"]["previous_calibrator_version"], d["evidence"]["calibrator_version"])
        for d in decisions
    ] == [(0, 1), (1, 2)]
    assert {(d["gate"], d["verdict"], d["action"], d["reason"]) for d in decisions} == {
        ("residual_drift", "INCONCLUSIVE", "none", "recalibrated")
    }
    assert len({d["decision_id"] for d in decisions}) == 2
    audited = [orjson.loads(fields[b"json"]) for _, fields in client.xrange(keys.audit)]
    assert audited == decisions
    published = orjson.loads(client.hget(keys.state, "published:residual_drift"))
    assert published["decision_id"] == decisions[-1]["decision_id"]
    assert published["verdict"] == "INCONCLUSIVE" and published["reason"] == "recalibrated"
    assert client.hget(keys.view, "decisions:residual_drift:none") == b"2"
    assert b"stream" in client.smembers(layout.kinds)  # every drainer's sweep finds it
    gate = orjson.loads(client.hget(keys.view, "gates"))["residual_drift"]
    assert gate["published_reason"] == "recalibrated" and gate["verdict"] == "INCONCLUSIVE"
    client.close()


def test_a_key_of_another_type_stops_the_activation_before_any_write(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    layout = KeyLayout()
    keys = layout.subject("stream", "taken")
    client.set(keys.outbox, b"someone else's")
    model = IsotonicCalibrator().fit(*judge(np.random.default_rng(33), 100))
    with pytest.raises(StateConflictError, match="outbox"):
        activate_calibrator(client, layout, Policy(), "taken", model, decisions_topic="t.d")
    assert client.exists(keys.state, keys.view, keys.calibrators, keys.audit) == 0
    client.close()
