"""Counters are counters and the audit log is in time order (issue 21, point 3)."""

from __future__ import annotations

import time
import urllib.request

import orjson
import pytest

from monitor.store import KeyLayout
from monitor.store._admin import forget_subject

from .conftest import Deployment, encode, label

pytestmark = pytest.mark.integration


def scraped_events(port: int, topic: str) -> float:
    """``driftgate_events_total{topic, outcome="ok"}`` as a worker serves it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    wanted = f'driftgate_events_total{{outcome="ok",topic="{topic}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


def test_events_and_decisions_total_never_go_back_when_a_subject_is_forgotten(
    deployment: Deployment,
) -> None:
    worker = deployment.start_worker()
    port = worker.metrics_port  # type: ignore[attr-defined]
    events = [
        encode([label(f"a{i}", "policy:a", 0.5, 1.0 + (i % 2) * 0.1) for i in range(40)]),
        encode([label(f"b{i}", "policy:b", 0.5, 0.5) for i in range(10)]),
    ]
    deployment.produce("labels", events, [b"policy:a", b"policy:b"])
    deployment.wait_for_count("labels", "ok", 50)
    deployment.wait_for(lambda: deployment.snapshot().decisions, 30, "a decision counted")
    before = deployment.snapshot()
    scraped_before = scraped_events(port, deployment.topic("labels"))
    assert scraped_before == 50

    deployment.stop_workers()  # forget_subject wants no writer (as in `driftgate up`)
    client = deployment.redis_server.client()
    try:
        forget_subject(client, KeyLayout(), "stream", "policy:a")
    finally:
        client.close()
    after = deployment.snapshot()
    assert "policy:a" not in after.section("stream")  # it was forgotten
    assert after.events == before.events
    assert after.decisions == before.decisions

    # A new worker, and more events of the forgotten subject: the counter goes on from 50.
    worker = deployment.start_worker()
    deployment.produce("labels", [encode([label("c0", "policy:a", 0.5, 0.5)])], [b"policy:a"])
    deployment.wait_for_count("labels", "ok", 51)
    assert scraped_events(worker.metrics_port, deployment.topic("labels")) == 51  # type: ignore[attr-defined]


def scraped_joins(port: int, stream: str) -> dict[str, float]:
    """The late-label join's series of ``stream`` as a worker serves them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for what in ("waiting", "joined_total", "expired_total", "repeated_total"):
        wanted = f'driftgate_join_{what}{{stream="{stream}"}} '
        found[what] = sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(wanted))
    return found


def test_late_label_join_counters_never_go_back_when_a_stream_is_forgotten(
    deployment: Deployment,
) -> None:
    stream = "judge:joins"
    now = time.time()

    def half(event_id: str, response: str, s: float | None, y: float | None) -> dict[str, object]:
        event = {"event_id": event_id, "ts": now, "stream": stream, "response_id": response}
        return {**event, **({"s": s} if s is not None else {"y": y})}

    worker = deployment.start_worker()
    halves = [
        half("s1", "r1", 0.4, None),
        half("s2", "r2", 0.6, None),
        half("s2-again", "r2", 0.7, None),  # a second score for r2: repeated, not joined
        half("y1", "r1", None, 1.0),
    ]
    deployment.produce("labels", [encode(halves)], [stream.encode()])
    deployment.wait_for_count("labels", "ok", 4)
    counts = {"waiting": 1, "joined": 1, "expired": 0, "repeated": 1}
    assert deployment.status()["streams"][stream]["late_labels"] == counts
    text = deployment.cli("status").stdout
    assert "late labels:  1 waiting, 1 joined, 0 expired, 1 repeated" in text, text
    scraped = scraped_joins(worker.metrics_port, stream)  # type: ignore[attr-defined]
    assert scraped == {"waiting": 1, "joined_total": 1, "expired_total": 0, "repeated_total": 1}

    deployment.stop_workers()
    client = deployment.redis_server.client()
    try:
        forget_subject(client, KeyLayout(), "stream", stream)
    finally:
        client.close()
    # The counters are kept (the waiting half is gone with the stream).
    assert deployment.snapshot().joins[stream] == {**counts, "waiting": 0}

    # The stream again, from scratch: its counters go on from where they were.
    worker = deployment.start_worker()
    again = [
        half("s3", "r3", 0.5, None),
        half("s3-again", "r3", 0.5, None),
        half("y3", "r3", None, 0.0),
    ]
    deployment.produce("labels", [encode(again)], [stream.encode()])
    deployment.wait_for_count("labels", "ok", 7)
    late = deployment.status()["streams"][stream]["late_labels"]
    assert late == {"waiting": 0, "joined": 2, "expired": 0, "repeated": 2}
    scraped = scraped_joins(worker.metrics_port, stream)  # type: ignore[attr-defined]
    assert scraped == {"waiting": 0, "joined_total": 2, "expired_total": 0, "repeated_total": 2}


def test_log_is_in_time_order(deployment: Deployment) -> None:
    deployment.start_worker()
    now = time.time()
    deploy = {
        "event_id": "d1",
        "ts": now,
        "agent": "bot",
        "bundle_id": "b1",
        "action": "deploy",
        "canary_percent": 10,
    }
    deployment.produce("canary", [encode(deploy)], [b"bot"])
    deployment.wait_for(lambda: len(deployment.audit()) >= 1, 30, "deploy")
    # Written later, happened an hour earlier (a late event): listed first.
    late = {**deploy, "event_id": "p0", "ts": now - 3600, "action": "pause", "bundle_id": "b0"}
    late.pop("canary_percent")
    deployment.produce("canary", [encode(late)], [b"bot"])
    deployment.wait_for(lambda: len(deployment.audit()) >= 2, 30, "pause")
    entries = orjson.loads(deployment.cli("log", "--json").stdout)
    assert [e["event_id"] for e in entries] == ["p0", "d1"], entries
    text = deployment.cli("log").stdout.splitlines()
    assert "pause" in text[0] and "deploy" in text[1], text
