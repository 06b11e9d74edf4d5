"""Workers killed, added and frozen while events flow: the stored statistics equal one
clean pass over the log, every event counted once, every partition's fence at its end."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from ..integration.conftest import Deployment
from ._oracle import LoadProducer, Workload, check_against_oracle, produce, reconcile_outputs

pytestmark = pytest.mark.integration


def kill_9(deployment: Deployment, index: int) -> None:
    worker = deployment.workers[index]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()


@pytest.mark.soak
def test_kill_9_at_random_points_under_load_matches_the_oracle(deployment: Deployment) -> None:
    """25 kills of the only worker, each at a random point (decoding, writing to Redis,
    draining the outbox, acknowledging, joining the group), each followed by a restart."""
    rounds = 25
    chance = random.Random(rounds)
    workload = Workload(seed=rounds)
    # About as long a flow as the kills and restarts take (a restart joins the group in
    # about 20 s), so every kill lands while events arrive.
    producer = LoadProducer(deployment, workload.messages(800 * rounds), per_second=40)
    deployment.start_worker()
    producer.start()
    for _ in range(rounds):
        time.sleep(chance.uniform(0.0, 3.0))
        kill_9(deployment, -1)
        deployment.start_worker()
    producer.finish()
    expected = check_against_oracle(deployment, workload)
    repeats = reconcile_outputs(deployment, expected)
    print(f"{rounds} kills: {sum(expected.ok.values())} events exact, {repeats} records repeated")


def test_a_worker_frozen_past_its_session_timeout_another_killed_and_one_added(
    deployment: Deployment,
) -> None:
    """Two workers share the partitions while events flow. One is frozen (SIGSTOP) while
    it works through a burst, for longer than the session timeout (10 s): the group gives
    its partitions to the other, which applies what the frozen one had not acknowledged;
    resumed, the frozen worker's writes computed before the pause meet moved revisions
    and fences and change nothing twice (``test_late_writes.py`` holds one such write back
    deterministically). Then the other is killed (-9) at a random point and a third
    worker added."""
    chance = random.Random(31)
    workload = Workload(seed=31)
    producer = LoadProducer(deployment, workload.messages(1600), per_second=40)
    burst = workload.messages(150, envelope=200)
    frozen, _ = deployment.start_workers(2)  # the other: index 1
    producer.start()
    time.sleep(1.0)
    before = deployment.count("labels", "ok")
    produce(deployment, burst)
    deployment.wait_for(
        lambda: deployment.count("labels", "ok") > before + 2_000, 30, "the burst to start"
    )
    frozen.send_signal(signal.SIGSTOP)  # mid-burst: both workers hold their share of it
    try:
        deployment.wait_for(
            lambda: deployment.worker_log(1).count(b"Setting newly assigned partitions") >= 2,
            45,
            "the other worker to take the frozen one's partitions",
        )
        time.sleep(2.0)
    finally:
        frozen.send_signal(signal.SIGCONT)
    time.sleep(chance.uniform(0.5, 3.0))
    kill_9(deployment, 1)
    added = deployment.start_worker()
    producer.finish()
    expected = check_against_oracle(deployment, workload)
    reconcile_outputs(deployment, expected)
    assert frozen.poll() is None and added.poll() is None
