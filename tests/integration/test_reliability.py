"""Crashes and outages: nothing counted twice, nothing lost, clear errors at start-up."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from monitor._services import ServiceProcess, free_port

from .conftest import BOTH_REDIS, Deployment, encode, label

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


@BOTH_REDIS
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


@BOTH_REDIS
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


def test_broker_paused_while_running_loses_nothing(
    deployment: Deployment, kafka_broker: ServiceProcess | None
) -> None:
    if kafka_broker is None:
        pytest.skip("an external Kafka cannot be paused from here")
    messages, residuals = labelled_messages("pause", 40, seed=3)
    worker = deployment.start_worker()
    deployment.produce("labels", messages[:20])
    deployment.wait_for_count("labels", "ok", sum(1 if i % 2 == 0 else 50 for i in range(20)))
    kafka_broker.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(5)
    finally:
        kafka_broker.process.send_signal(signal.SIGCONT)
    deployment.produce("labels", messages[20:])
    deployment.wait_for_count("labels", "ok", residuals.size, timeout=90)
    assert worker.poll() is None
    assert_exact(deployment, "pause", residuals)


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


def test_a_permanent_kafka_error_ends_the_worker_with_exit_1_naming_kafka(
    deployment: Deployment,
) -> None:
    worker = deployment.start_worker()
    # Accepted by the embedded broker, but its dead letter is over Kafka's default
    # message.max.bytes: no retry can send it.
    deployment.produce("labels", [b"x" * 1_500_000])
    worker.wait(60)
    assert worker.returncode == 1
    last_line = deployment.worker_log().decode().strip().splitlines()[-1]
    assert last_line.startswith("driftgate worker: Kafka at "), last_line
    assert "MessageSizeTooLargeError" in last_line and "message.max.bytes" in last_line


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
