"""Crashes and outages: nothing counted twice, nothing lost, clear errors at start-up."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.pipeline._letters import record_size
from monitor.pipeline._outbox import OutboxDrainer
from monitor.runtime._kafka import MAX_MESSAGE_BYTES
from monitor.runtime._services import free_port
from monitor.store import KeyLayout, connect_async
from monitor.subjects import LabelHandler

from .conftest import Deployment, RedisServer, consume, encode, label

pytestmark = pytest.mark.integration


def labelled_messages(
    stream: str, count_messages: int, seed: int
) -> tuple[list[bytes], np.ndarray]:
    """Messages alternating a single event and a 50-event envelope; returns the residuals."""
    rng = np.random.default_rng(seed)
    messages: list[bytes] = []
    residuals: list[float] = []
    counter = 0
    for m in range(count_messages):
        size = 1 if m % 2 == 0 else 50
        s = rng.uniform(0, 1, size)
        y = s + rng.normal(0.0, 0.1, size)
        events = [
            label(f"{stream}-{counter + i}", stream, float(a), float(b))
            for i, (a, b) in enumerate(zip(s, y, strict=True))
        ]
        counter += size
        residuals.extend((y - s).tolist())
        messages.append(encode(events[0]) if size == 1 else encode(events))
    return messages, np.asarray(residuals)


def assert_exact(deployment: Deployment, stream: str, residuals: np.ndarray) -> None:
    assert deployment.count("labels", "ok") == residuals.size
    assert deployment.count("labels", "duplicate") == 0
    row = deployment.status()["streams"][stream]
    assert row["n"] == row["labeled_n"] == residuals.size
    assert row["all_time"]["residual_mean"] == pytest.approx(residuals.mean(), rel=1e-12)


# On a standalone Redis, and for the broker paused, the oracle tests under tests/reliability
# prove these guarantees (a kill -9 under load in test_crashes.py, Redis killed and the
# broker paused for 10 s in test_outages.py); on a Redis Cluster they run with `-m soak`.
ON_A_CLUSTER_UNDER_SOAK = pytest.mark.parametrize(
    "redis_server", [pytest.param("cluster", marks=pytest.mark.soak)], indirect=True
)


@ON_A_CLUSTER_UNDER_SOAK
def test_kill_9_mid_stream_then_restart_counts_exactly(deployment: Deployment) -> None:
    messages, residuals = labelled_messages("crash", 400, seed=1)
    first = deployment.start_worker()

    def trickle() -> None:
        for start in range(0, len(messages), 10):
            deployment.produce("labels", messages[start : start + 10])
            time.sleep(0.05)

    producer = threading.Thread(target=trickle)
    producer.start()
    deployment.wait_for(lambda: deployment.count("labels", "ok") >= 1500, 60, "progress")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = deployment.count("labels", "ok")
    producer.join()
    assert killed_at < residuals.size, "the kill must land mid-stream"

    deployment.start_worker()
    deployment.wait_for_count("labels", "ok", residuals.size, timeout=90)
    time.sleep(2)  # anything redelivered late would show up as a double count
    assert_exact(deployment, "crash", residuals)


@ON_A_CLUSTER_UNDER_SOAK
def test_redis_lost_while_running_is_waited_out(deployment: Deployment) -> None:
    messages, residuals = labelled_messages("outage", 60, seed=2)
    worker = deployment.start_worker()
    deployment.produce("labels", messages[:30])
    first_half = sum(1 if i % 2 == 0 else 50 for i in range(30))
    deployment.wait_for_count("labels", "ok", first_half)

    deployment.redis_server.stop()
    deployment.produce("labels", messages[30:])
    time.sleep(3)
    assert worker.poll() is None, "the worker must wait for Redis, not die"
    deployment.redis_server.start()

    deployment.wait_for_count("labels", "ok", residuals.size, timeout=60)
    assert_exact(deployment, "outage", residuals)
    assert b"retrying" in deployment.worker_log()


def test_unreachable_services_at_start_exit_1_naming_them(deployment: Deployment) -> None:
    closed = free_port()
    result = deployment.cli("worker", DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed}")
    assert result.returncode == 1
    assert f"Kafka unreachable at 127.0.0.1:{closed}" in result.stderr

    redis_url = f"redis://127.0.0.1:{closed}/0"
    result = deployment.cli("worker", DRIFTGATE_REDIS_URL=redis_url)
    assert result.returncode == 1
    assert f"Redis unreachable at {redis_url}" in result.stderr

    result = deployment.cli("status", "--redis-url", redis_url)
    assert result.returncode == 1 and "Redis unreachable" in result.stderr


@pytest.mark.parametrize(
    ("url", "cannot"),
    [
        ("rediss://:s3cret-pw@127.0.0.1:{port}/0", "does not start one with TLS"),
        (
            "redis://alice:s3cret-pw@127.0.0.1:{port}/0",
            "starts one with a password only, not for the ACL user 'alice'",
        ),
        ("redis://:s3cret-pw@192.0.2.1:{port}/0", "starts one on loopback only"),
    ],
    ids=["tls", "acl-user", "not-loopback"],
)
def test_up_starts_no_redis_it_cannot_serve_and_names_the_url(
    deployment: Deployment, tmp_path, url: str, cannot: str
) -> None:
    """TLS, an ACL user or another host: up cannot start that Redis, so it starts none, and
    exits 1 naming the URL without its password (the broker is the test's, found running)."""
    port = free_port()
    url = url.format(port=port)
    started = time.monotonic()
    result = deployment.cli(
        "up", "--no-demo", "--state-dir", str(tmp_path / "up"), DRIFTGATE_REDIS_URL=url
    )
    assert result.returncode == 1, result.stderr
    redacted = url.replace("s3cret-pw", "***")
    assert f"Redis unreachable at {redacted}, and driftgate up {cannot}" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "up" / "redis").exists()  # no Redis was started for it


def test_bad_usage_and_bad_input_exit_2(deployment: Deployment, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"s": 0.1, "y": 0.2}\n{"s": "x", "y": 1}\n')
    result = deployment.cli("calibrate", str(bad), "--stream", "p")
    assert result.returncode == 2 and f"{bad}:2" in result.stderr

    result = deployment.cli("calibrate", str(tmp_path / "missing.jsonl"), "--stream", "p")
    assert result.returncode == 2 and "must name an existing file" in result.stderr

    config = tmp_path / "config.yaml"
    config.write_text("residual_drift:\n  alpha: 2\n")
    result = deployment.cli("worker", DRIFTGATE_CONFIG=str(config))
    assert result.returncode == 2 and "alpha" in result.stderr

    result = deployment.cli("calibrate", str(bad))
    assert result.returncode == 2 and "--stream" in result.stderr

    assert deployment.status() == {"streams": {}, "experiments": {}, "agents": {}}


def test_a_dead_letter_over_the_message_limit_goes_truncated_and_the_worker_lives(
    deployment: Deployment,
) -> None:
    """An input within a few hundred bytes of the broker's message limit is accepted, but
    sent back whole with its headers it would be refused for good (the worker exited 1, and
    so did every restart): its dead letter keeps a prefix, with the whole payload's size
    and digest, and the good events of the batch count."""
    worker = deployment.start_worker()
    huge = b"x" * (MAX_MESSAGE_BYTES - 100)  # not JSON: the whole message is dead-lettered
    good = [encode(label(f"near-{i}", "near", 0.5, 0.5)) for i in range(3)]
    # One key: one partition, offsets 0 to 3, one batch.
    deployment.produce("labels", [good[0], huge, good[1], good[2]], keys=[b"near"] * 4)
    deployment.wait_for_count("labels", "dlq", 1)
    deployment.wait_for_count("labels", "ok", 3)

    (record,) = deployment.consume_all("dlq", expected=1)
    headers = {name: value.decode() for name, value in record.headers}
    assert 0 < len(record.value) < len(huge) and huge.startswith(record.value)
    assert record_size(record.value, headers) <= MAX_MESSAGE_BYTES
    assert headers["driftgate-payload-bytes"] == str(len(huge))
    assert headers["driftgate-payload-sha256"] == hashlib.sha256(huge).hexdigest()
    assert headers["driftgate-error"].startswith("JSONDecodeError: ")
    assert headers["driftgate-error"].endswith(
        f"[payload truncated: the first {len(record.value)} bytes of {len(huge)} kept]"
    )
    assert headers["driftgate-source-topic"] == deployment.topic("labels")
    assert headers["driftgate-source-offset"] == "1"
    time.sleep(1)  # a worker about to die of it would be gone by now
    assert worker.poll() is None, deployment.worker_log().decode()[-2000:]
    assert deployment.count("labels", "ok") == 3 and deployment.count("labels", "dlq") == 1
    assert b"sent truncated" in deployment.worker_log()


async def test_a_dead_letter_kafka_refuses_as_too_large_is_sent_cut_to_fit(
    kafka_bootstrap: str, redis_server: RedisServer
) -> None:
    """A dead letter too large for Kafka already in an outbox (written before letters were
    cut, or the broker's limit below the producer's): the drainer sends it cut to ever
    smaller sizes until Kafka takes it, instead of failing on it after every restart. The
    producer's 20 kB limit stands in for such a broker."""
    prefix = f"r{uuid.uuid4().hex[:8]}."
    topics = TopicNames(f"{prefix}decisions", f"{prefix}dlq")
    client = connect_async(redis_server.url, redis_server.cluster)
    script = WriteScript(client, redis_server.url)
    uncut = 10**9  # a worker of before: no limit on dead letters
    runner = BatchRunner(
        client, KeyLayout(), LabelHandler(Policy()), script, topics, 3600.0, max_message_bytes=uncut
    )
    huge, small = b"y" * 1_500_000, b"not json"
    good = encode(label("cut-0", "cut", 0.5, 0.5))
    batch = [RawMessage("in", 0, offset, value) for offset, value in enumerate([huge, small, good])]
    result = await runner.apply(batch)
    assert (result.ok, result.dlq) == (1, 2)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=20_000)
    await producer.start()

    async def started() -> AIOKafkaProducer:
        return producer

    try:
        drainer = OutboxDrainer(client, KeyLayout(), started)
        assert await drainer.sweep() == 2
        assert await drainer.sweep() == 0  # nothing left pending
    finally:
        await producer.stop()
        await script.aclose()
        await client.aclose()

    records = await consume(kafka_bootstrap, topics.dlq, expected=2, give_up_after=20)
    letters = {}
    for record in records:
        headers = {name: value.decode() for name, value in record.headers}
        letters[int(headers["driftgate-source-offset"])] = (record.value, headers)
    assert sorted(letters) == [0, 1]
    value, headers = letters[1]
    assert value == small and "driftgate-payload-bytes" not in headers  # fits: as it was
    value, headers = letters[0]
    # Cut to the drainer's limit (1 MiB) first, still refused; then to 16 KiB, taken.
    assert len(value) > 0 and huge.startswith(value) and record_size(value, headers) <= 16_384
    assert headers["driftgate-payload-bytes"] == str(len(huge))
    assert headers["driftgate-payload-sha256"] == hashlib.sha256(huge).hexdigest()
    assert "payload truncated" in headers["driftgate-error"]


def test_a_permanent_redis_error_ends_the_worker_with_exit_1_naming_redis(
    deployment: Deployment,
) -> None:
    messages, _ = labelled_messages("oom", 4, seed=5)
    worker = deployment.start_worker()
    deployment.produce("labels", messages[:2])
    deployment.wait_for_count("labels", "ok", 51)
    client = deployment.redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        deployment.produce("labels", messages[2:])
        worker.wait(60)
    finally:
        client.config_set("maxmemory", "0")
        client.close()
    assert worker.returncode == 1
    last_line = deployment.worker_log().decode().strip().splitlines()[-1]
    assert last_line.startswith("driftgate worker: Redis at "), last_line
    assert "maxmemory" in last_line
    assert deployment.count("labels", "ok") == 51  # the refused batch changed nothing
