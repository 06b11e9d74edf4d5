"""The label path end to end: Kafka -> worker -> Redis -> decisions, DLQ, status, /metrics."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.store import KeyLayout, connect_async
from monitor.subjects import LabelHandler

from .conftest import CLUSTER_NOW_STANDALONE_IN_SOAK, Deployment, encode, label

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def stream_messages(name: str, s: np.ndarray, y: np.ndarray, start: int) -> list[bytes]:
    """Alternate single-event messages and 100-event envelopes."""
    events = [
        label(f"{name}-{start + i}", name, float(a), float(b))
        for i, (a, b) in enumerate(zip(s, y, strict=True))
    ]
    messages: list[bytes] = []
    i = 0
    while i < len(events):
        if (i // 100) % 2 == 0:
            messages.extend(encode(e) for e in events[i : i + 100])
        else:
            messages.append(encode(events[i : i + 100]))
        i += 100
    return messages


@CLUSTER_NOW_STANDALONE_IN_SOAK
def test_drift_fails_steady_passes_bad_input_dead_lettered(deployment: Deployment) -> None:
    rng = np.random.default_rng(20261122)
    worker = deployment.start_worker()

    s_drift = rng.uniform(0, 1, 2000)
    y_drift = s_drift + rng.normal(0, 0.1, 2000)
    y_drift[1000:] += 0.2
    s_steady = rng.uniform(0, 1, 3000)
    y_steady = s_steady + rng.normal(0, 0.1, 3000)

    good = stream_messages("drift", s_drift[:1000], y_drift[:1000], 0)
    good += stream_messages("steady", s_steady, y_steady, 0)
    good += stream_messages("drift", s_drift[1000:], y_drift[1000:], 1000)
    bad = [
        b'{"event_id": "m1", "ts": 1, "stream": "drift", "s": 0.5',  # malformed JSON
        encode({"event_id": "m2", "ts": 1, "stream": "drift", "y": 0.5}),  # missing s
        encode({"event_id": "m3", "ts": 1, "stream": "drift", "s": "abc", "y": 0.5}),
        b'{"event_id": "m4", "ts": 1, "stream": "drift", "s": NaN, "y": 0.5}',
    ]
    envelope = [
        label("env-good-1", "envelope", 0.4, 0.4),
        {"event_id": "env-bad", "ts": 1, "stream": "envelope", "s": None, "y": 0.3},
        label("env-good-2", "envelope", 0.6, 0.6),
    ]
    deployment.produce("labels", [*good, *bad, encode(envelope)])

    total_ok = 2000 + 3000 + 2
    deployment.wait_for_count("labels", "ok", total_ok)
    deployment.wait_for_count("labels", "dlq", 5)
    assert deployment.count("labels", "ok") == total_ok
    assert deployment.count("labels", "dlq") == 5
    assert deployment.count("labels", "duplicate") == 0

    status = deployment.status()
    drift, steady = status["streams"]["drift"], status["streams"]["steady"]
    assert drift["verdict"] == "FAIL"
    assert steady["verdict"] == "PASS"
    assert (drift["n"], drift["labeled_n"]) == (2000, 2000)
    assert (steady["n"], steady["labeled_n"]) == (3000, 3000)
    assert drift["residual_mean"] == pytest.approx(np.mean(y_drift - s_drift), rel=1e-12)
    assert steady["residual_mean"] == pytest.approx(np.mean(y_steady - s_steady), rel=1e-12)
    assert drift["ci_low"] > 0 and steady["ci_low"] < 0 < steady["ci_high"]
    assert drift["calibrator"] == {"kind": "identity", "version": 0}
    assert status["streams"]["envelope"]["n"] == 2

    metrics = scrape(worker.metrics_port)  # type: ignore[attr-defined]
    stream_label = (("stream", "drift"),)
    assert metrics[("driftgate_residual_n", stream_label)] == 2000
    assert metrics[("driftgate_residual_mean", stream_label)] == pytest.approx(
        np.mean(y_drift - s_drift), rel=1e-12
    )
    assert metrics[("driftgate_residual_ci_lower", stream_label)] == pytest.approx(drift["ci_low"])
    labels_topic = deployment.topic("labels")
    assert metrics[("driftgate_events_total", (("outcome", "dlq"), ("topic", labels_topic)))] == 5
    assert (
        metrics[("driftgate_events_total", (("outcome", "ok"), ("topic", labels_topic)))]
        == total_ok
    )
    assert (
        metrics[("driftgate_gate_status", (("gate", "residual_drift"), ("subject", "drift")))] == 2
    )
    assert (
        metrics[("driftgate_gate_status", (("gate", "residual_drift"), ("subject", "steady")))] == 0
    )
    assert ("driftgate_batch_duration_seconds_count", (("topic", labels_topic),)) in metrics
    # No late labels on this stream: its join series are there, at 0 (alert rules see them).
    assert metrics[("driftgate_join_waiting", stream_label)] == 0
    assert metrics[("driftgate_join_joined_total", stream_label)] == 0
    assert "late_labels" not in drift
    # Everything is applied: no partition that had a batch has messages left to process.
    lag = {
        labels: value
        for (name, labels), value in metrics.items()
        if name == "driftgate_consumer_lag"
    }
    assert lag, "no driftgate_consumer_lag series"
    for labels, value in lag.items():
        partition = dict(labels)["partition"]
        assert dict(labels)["topic"] == labels_topic and partition in {"0", "1", "2", "3"}
        assert value == 0, (partition, value)

    # Until the drift's FAIL (awaiting a count of 2 waited out the 20 s give-up when there
    # was no WARN before it), then a second more, in which any other decision shows too.
    def drift_failed(records: list[Any]) -> bool:
        found = [orjson.loads(r.value) for r in records]
        return any(d["subject"] == "drift" and d["verdict"] == "FAIL" for d in found)

    decisions = [
        orjson.loads(r.value)
        for r in deployment.consume_all("decisions", expected=1, until=drift_failed)
    ]
    drift_fail = [d for d in decisions if d["subject"] == "drift" and d["verdict"] == "FAIL"]
    assert len(drift_fail) == 1
    assert not [d for d in decisions if d["subject"] == "steady"]
    fail = drift_fail[0]
    assert fail["gate"] == "residual_drift" and fail["reason"] == "residual_bias"
    assert fail["evidence"]["ci_low"] > 0
    # Whichever saw it first: the all-time interval, or the one the change detector restarted.
    assert fail["evidence"]["method"] in {
        "empirical_bernstein_cs",
        "empirical_bernstein_cs_after_change",
    }  # labels in [0, 1]: the exact interval
    assert {"n", "estimate", "ci_low", "ci_high", "threshold"} <= set(fail["evidence"])

    dead = deployment.consume_all("dlq", expected=5)
    assert len(dead) == 5
    payloads = {r.value for r in dead}
    assert bad[0] in payloads and bad[3] in payloads
    assert orjson.dumps(envelope[1]) in payloads  # only the bad element of the envelope
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["driftgate-source-topic"] == labels_topic
        assert int(headers["driftgate-source-offset"]) >= 0
        assert headers["driftgate-source-partition"].isdigit()
        assert ": " in headers["driftgate-error"]
    errors = sorted(dict(r.headers)["driftgate-error"].decode() for r in dead)
    assert any("Object missing required field `s`" in e for e in errors)
    assert any("Expected `float | null`, got `str` - at `$.s`" in e for e in errors)
    assert any("at `$[1].s`" in e for e in errors)  # the bad element of the envelope

    log = orjson.loads(deployment.cli("log", "--json").stdout)
    assert [e["decision_id"] for e in log if e["verdict"] == "FAIL"] == [fail["decision_id"]]


def test_redelivered_event_ids_count_once(deployment: Deployment) -> None:
    deployment.start_worker()
    events = [label(f"dup-{i}", "dups", 0.5, 0.5) for i in range(50)]
    deployment.produce("labels", [encode(events)])
    deployment.wait_for_count("labels", "ok", 50)
    # The same ids again: as single messages and inside an envelope with a new one.
    deployment.produce(
        "labels",
        [encode(e) for e in events[:10]]
        + [encode([*events[10:20], label("new", "dups", 0.1, 0.2)])],
    )
    deployment.wait_for_count("labels", "duplicate", 20)
    deployment.wait_for_count("labels", "ok", 51)
    assert deployment.count("labels", "ok") == 51
    assert deployment.count("labels", "duplicate") == 20
    assert deployment.status()["streams"]["dups"]["n"] == 51


def test_a_fence_past_the_new_log_asks_the_broker_and_starts_a_new_epoch(
    deployment: Deployment,
) -> None:
    """Fences 1,000 deep on every partition (as a log the broker has since lost would
    leave them), then a new log of 10 events: the worker's first batch begins the log, its
    fences lie past the end it fetched, it asks the broker for the log's end now (the
    consumer's ListOffsets) and, that end being before the fences too, starts a new epoch
    and applies the 10 events."""
    topic = deployment.topic("labels")
    old = [
        RawMessage(topic, p, offset, encode(label(f"old-{p}-{offset}", "s", 0.5, 0.5)))
        for p in range(4)
        for offset in range(1000)
    ]

    async def seed() -> None:
        client = connect_async(deployment.redis_server.url, deployment.redis_server.cluster)
        script = WriteScript(client, deployment.redis_server.url)
        runner = BatchRunner(
            client, KeyLayout(), LabelHandler(Policy()), script, TopicNames("d", "q"), 3600.0
        )
        try:
            for partition in range(4):
                await runner.apply(old[partition * 1000 : (partition + 1) * 1000])
        finally:
            await script.aclose()
            await client.aclose()

    asyncio.run(seed())
    deployment.start_worker()
    deployment.produce(
        "labels", [encode(label(f"new-{i}", "s", 0.5, 0.5)) for i in range(10)], [b"s"] * 10
    )
    deployment.wait_for_count("labels", "ok", 4010)
    log = deployment.worker_log().decode()
    # The end asked of the broker, not a fallback: between the first event and the tenth.
    ends = re.findall(r"the broker says it ends at (\d+)\): the log was created anew", log)
    assert ends and all(1 <= int(end) <= 10 for end in ends), log[-2000:]
    assert "could not ask the end" not in log
