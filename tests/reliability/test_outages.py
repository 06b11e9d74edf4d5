"""Redis killed and restarted, the broker paused, under load: the worker waits, resumes
where the offset fences stored in Redis say, and the statistics equal one clean pass."""

from __future__ import annotations

import random
import signal
import time

import pytest

from monitor.runtime._services import ServiceProcess

from ..integration.conftest import Deployment
from ._oracle import LoadProducer, Workload, check_against_oracle, reconcile_outputs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "redis_server", ["standalone", pytest.param("cluster", marks=pytest.mark.soak)], indirect=True
)
def test_redis_killed_and_the_broker_paused_under_load_lose_and_double_nothing(
    deployment: Deployment, kafka_broker: ServiceProcess | None
) -> None:
    if kafka_broker is None:
        pytest.skip("an external Kafka cannot be paused from here")
    workload = Workload(seed=41)
    producer = LoadProducer(deployment, workload.messages(800), per_second=40)
    worker = deployment.start_worker()
    producer.start()
    time.sleep(random.Random(41).uniform(1.0, 3.0))

    # SIGKILL: no shutdown, no final write of the append-only file (fsync'd on every
    # write: what was acknowledged survives).
    redis = deployment.redis_server
    for node in redis.processes:
        node.process.kill()
        node.process.wait()
    time.sleep(3.0)
    assert worker.poll() is None, "the worker must wait for Redis, not die"
    redis.start()  # the same ports and files: it loads its append-only file
    resumed = deployment.count("labels", "ok")
    deployment.wait_for(
        lambda: deployment.count("labels", "ok") > resumed, 60, "the worker to resume"
    )

    kafka_broker.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(10.0)
    finally:
        kafka_broker.process.send_signal(signal.SIGCONT)
    producer.finish()
    assert worker.poll() is None
    expected = check_against_oracle(deployment, workload)
    reconcile_outputs(deployment, expected)
    assert b"retrying" in deployment.worker_log()
