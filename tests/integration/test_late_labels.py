"""Late oracle labels end to end: scores now, their labels an hour of event time later,
across worker kills (-9), redelivery and the join window, on a Redis Cluster (every key
of the join shares its stream's slot)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from monitor.store import KeyLayout

from .conftest import Deployment, encode
from .test_label_pipeline import scrape

pytestmark = pytest.mark.integration

STREAM = "late:judge"
HOUR = 3600.0
DAY = 24 * HOUR


def score(response: str, ts: float, s: float) -> dict[str, object]:
    return {
        "event_id": f"s-{response}",
        "ts": ts,
        "stream": STREAM,
        "s": s,
        "response_id": response,
    }


def oracle(response: str, ts: float, y: float, event_id: str | None = None) -> dict[str, object]:
    return {
        "event_id": event_id or f"y-{response}",
        "ts": ts,
        "stream": STREAM,
        "y": y,
        "response_id": response,
    }


def kill_9_and_restart(deployment: Deployment) -> None:
    worker = deployment.workers[-1]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deployment.start_worker()


def join_counts(deployment: Deployment) -> dict[str, int]:
    return deployment.snapshot().joins.get(STREAM, {})


def pending_keys(deployment: Deployment) -> list[bytes]:
    keys = KeyLayout().subject("stream", STREAM)
    client = deployment.redis_server.client()
    try:
        return [k for k in client.scan_iter(match=f"{keys.state}:pending:*")]  # type: ignore[union-attr]
    finally:
        client.close()


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_a_score_and_its_label_an_hour_later_join_once_across_kills(
    deployment: Deployment,
) -> None:
    # Eight days ago in event time: the default window (7 days) ends before now.
    start = time.time() - 8 * DAY
    deployment.start_worker()
    scores = [score(f"r{i}", start + i, 0.2 + 0.2 * i) for i in range(3)]
    deployment.produce("labels", [encode(scores)], [STREAM.encode()])
    deployment.wait_for_count("labels", "ok", 3)
    assert join_counts(deployment) == {"waiting": 3, "joined": 0, "expired": 0, "repeated": 0}
    assert pending_keys(deployment), "the waiting halves are in Redis"

    # Killed between the score and its label: the new worker reads what waits.
    kill_9_and_restart(deployment)
    deployment.produce("labels", [encode(oracle("r0", start + HOUR, 1.0))], [STREAM.encode()])
    deployment.wait_for_count("labels", "ok", 4)
    # Killed again right after the join was written, before its offset is surely
    # committed: the label may be delivered again, and the fence keeps it from counting.
    kill_9_and_restart(deployment)
    # The same label again (the same event id, as a producer retry sends it): a duplicate.
    deployment.produce("labels", [encode([oracle("r0", start + HOUR, 1.0)])], [STREAM.encode()])
    deployment.wait_for_count("labels", "duplicate", 1)

    stream = deployment.status()["streams"][STREAM]
    assert stream["late_labels"] == {"waiting": 2, "joined": 1, "expired": 0, "repeated": 0}
    assert (stream["n"], stream["labeled_n"]) == (3, 1)  # every score; the one pair
    assert stream["residual_mean"] == pytest.approx(1.0 - 0.2, rel=1e-12)
    assert stream["value"]["n_scored"] == 3 and stream["value"]["n_labeled"] == 1

    # Event time reaches now: the other two scores waited seven days in vain. They still
    # count as scores (n stays 3).
    deployment.produce(
        "labels",
        [encode({"event_id": "now", "ts": time.time(), "stream": STREAM, "s": 0.5})],
        [STREAM.encode()],
    )
    deployment.wait_for(
        lambda: join_counts(deployment).get("expired") == 2, 60, "the unmatched halves to expire"
    )
    stream = deployment.status()["streams"][STREAM]
    assert stream["late_labels"] == {"waiting": 0, "joined": 1, "expired": 2, "repeated": 0}
    assert (stream["n"], stream["labeled_n"]) == (4, 1)
    assert pending_keys(deployment) == []  # their buckets went with them

    # A label for an expired score finds nothing: it is older than the window itself.
    deployment.produce("labels", [encode(oracle("r1", start + 2 * HOUR, 0.0))], [STREAM.encode()])
    deployment.wait_for(
        lambda: join_counts(deployment).get("expired") == 3, 60, "the late label to expire"
    )
    metrics = scrape(deployment.workers[-1].metrics_port)  # type: ignore[attr-defined]
    series = (("stream", STREAM),)
    assert metrics[("driftgate_join_waiting", series)] == 0
    assert metrics[("driftgate_join_joined_total", series)] == 1
    assert metrics[("driftgate_join_expired_total", series)] == 3
    assert metrics[("driftgate_join_repeated_total", series)] == 0
    assert deployment.count("labels", "ok") == 6 and deployment.count("labels", "dlq") == 0
    text = deployment.cli("status")
    assert "late labels:  0 waiting, 1 joined, 3 expired, 0 repeated" in text.stdout, text.stdout
