"""Real services for integration tests: the embedded broker (or DRIFTGATE_TEST_KAFKA) and
a Redis of each test's own on free loopback ports, standalone or a three-node Redis
Cluster (parametrize ``redis_server`` with ``"cluster"``). Never the Redis on 6379."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from monitor.runtime._services import (
    ServiceProcess,
    create_cluster,
    free_cluster_port,
    free_port,
    start_broker,
    start_redis,
    wait_for_cluster,
)
from monitor.slices import status_document
from monitor.store import KeyLayout, ReadModel, Snapshot, SyncClient, connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess | None]:
    """The embedded broker, or None when DRIFTGATE_TEST_KAFKA names an external Kafka."""
    if os.environ.get("DRIFTGATE_TEST_KAFKA"):
        yield None
        return
    broker = start_broker(free_port(), tmp_path_factory.mktemp("broker") / "broker.log")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: ServiceProcess | None) -> str:
    return kafka_broker.address if kafka_broker else os.environ["DRIFTGATE_TEST_KAFKA"]


@dataclass
class RedisServer:
    """A Redis the test owns, standalone or a three-node cluster (no replicas): it can be
    stopped and started again on the same ports, keeping its data (AOF)."""

    directory: Path
    cluster: bool = False
    ports: list[int] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)
    created: bool = False

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = [free_cluster_port() for _ in range(3)] if self.cluster else [free_port()]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        self.processes = [
            start_redis(port, self.directory / f"node-{port}", cluster=self.cluster)
            for port in self.ports
        ]
        if self.cluster and not self.created:
            create_cluster(self.ports)
        elif self.cluster:
            wait_for_cluster(self.ports)
        self.created = True

    def stop(self) -> None:
        for process in self.processes:
            process.stop()  # SIGTERM: Redis writes its append-only file and exits

    def client(self) -> SyncClient:
        return connect(self.url, self.cluster)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A standalone Redis; ``indirect`` parametrization with ``"cluster"`` gives a cluster."""
    server = RedisServer(tmp_path / "redis", cluster=getattr(request, "param", "") == "cluster")
    server.start()
    yield server
    server.stop()


# Modules the workers import by name (DRIFTGATE_SUBJECTS), not tests: --doctest-modules
# would import them into the test process, and queue_subject's registration would then
# stay in the registry for every test after it.
collect_ignore = ["queue_subject.py", "drainer_process.py"]

BOTH_REDIS = pytest.mark.parametrize("redis_server", ["standalone", "cluster"], indirect=True)
"""Run a test against one Redis and against a Redis Cluster."""

CLUSTER_NOW_STANDALONE_IN_SOAK = pytest.mark.parametrize(
    "redis_server",
    [pytest.param("standalone", marks=pytest.mark.soak), "cluster"],
    indirect=True,
)
"""For the slowest end-to-end tests: the Redis Cluster in every run (the stricter of the
two: a subject's keys must share a slot), one Redis under ``-m soak``, where it adds
half a minute and nothing the many standalone tests do not already cover."""


def driftgate_env(**settings: str) -> dict[str, str]:
    """This process's environment without its own ``DRIFTGATE_*`` settings, with
    ``settings``: a command run in it sees only what the test names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    env.update(settings)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m monitor ARGS`` (this interpreter, so the tree under test) in ``env``;
    its output captured as text, its exit status left to the test."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Deployment:
    """One isolated driftgate deployment: its own topic prefix, Redis and workers."""

    kafka: str
    redis_server: RedisServer
    workdir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}.")
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DRIFTGATE_KAFKA_BOOTSTRAP=self.kafka,
            DRIFTGATE_REDIS_URL=self.redis_server.url,
            DRIFTGATE_TOPIC_PREFIX=self.prefix,
            DRIFTGATE_PARTITIONS="4",
        )
        env.update(extra)
        return env

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env(**extra_env))

    def start_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        (process,) = self.start_workers(1, **extra_env)
        return process

    def start_workers(self, count: int, **extra_env: str) -> list[subprocess.Popen[bytes]]:
        """``count`` workers started at once, returned once each is ready: they start up
        side by side and join the group in one rebalance, where one after the other
        each would wait out its own (the broker holds a join for the rebalance timeout)."""
        first = len(self.workers)
        for index in range(first, first + count):
            env = dict(extra_env)
            metrics_port = env.pop("DRIFTGATE_METRICS_PORT", str(free_port()))
            with open(self.workdir / f"worker{index}.log", "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "monitor", "worker", "--loglevel", "info"],
                    env=self.env(DRIFTGATE_METRICS_PORT=metrics_port, **env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            process.metrics_port = int(metrics_port)  # type: ignore[attr-defined]
            self.workers.append(process)
        for index in range(first, first + count):
            process = self.workers[index]
            self.wait_for(
                lambda: (
                    b"[^Worker]: Ready" in self.worker_log(index)  # noqa: B023 - used at once
                    or process.poll() is not None  # noqa: B023
                ),
                timeout=60,
                what="worker ready",
            )
            assert process.poll() is None, self.worker_log(index).decode()[-3000:]
        return self.workers[first:]

    def worker_log(self, index: int = 0) -> bytes:
        return (self.workdir / f"worker{index}.log").read_bytes()

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def snapshot(self) -> Snapshot:
        client = self.redis_server.client()
        try:
            return ReadModel(client, KeyLayout()).snapshot()
        finally:
            client.close()

    def count(self, topic: str, outcome: str) -> int:
        """Events of ``topic`` (short name) with ``outcome``, over every subject."""
        return self.snapshot().events.get((self.topic(topic), outcome), 0)

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)  # type: ignore[no-any-return]

    def status_now(self) -> dict[str, Any]:
        """The document ``status --json`` prints, read here: for waits, which poll, where a
        ``driftgate`` process a poll pays its start-up (seconds on a loaded machine)."""
        client = self.redis_server.client()
        try:
            snapshot = ReadModel(client, KeyLayout()).snapshot(with_history=True)
            return status_document(snapshot).to_builtins()
        finally:
            client.close()

    def audit(self) -> list[dict[str, Any]]:
        """The entries ``log --json`` lists, read here (for waits, as :meth:`status_now`)."""
        client = self.redis_server.client()
        try:
            return list(ReadModel(client, KeyLayout()).audit())
        finally:
            client.close()

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except (redis.ConnectionError, redis.exceptions.ClusterError):
                pass
            except KeyError:
                # A subject or field not in the state yet is "not yet": a worker takes the
                # topics in no fixed order (an agent's deploy may come after its telemetry).
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}{self._complaints()}")

    def _complaints(self) -> str:
        """The workers' last lines above INFO, so that a wait that timed out says why."""
        lines = [
            f"worker{index}: {line}"
            for index in range(len(self.workers))
            if (self.workdir / f"worker{index}.log").exists()
            for line in self.worker_log(index).decode(errors="replace").splitlines()
            if line.startswith("[") and "[INFO]" not in line
        ]
        return "".join(f"\n  {line[:300]}" for line in lines[-30:])

    def wait_for_count(self, topic: str, outcome: str, expected: int, timeout: float = 60) -> None:
        self.wait_for(
            lambda: self.count(topic, outcome) >= expected,
            timeout,
            f"{topic} {outcome} to reach {expected} (now {self.count(topic, outcome)})",
        )

    def produce(
        self, topic: str, values: list[bytes], keys: list[bytes | None] | None = None
    ) -> None:
        asyncio.run(produce(self.kafka, self.topic(topic), values, keys))

    def consume_all(
        self,
        topic: str,
        expected: int,
        timeout: float = 20.0,
        until: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """The topic's records, once there are ``expected`` (or ``until`` holds of them),
        and a second more, in which an unwanted extra would show too; what came within
        ``timeout`` if never."""
        return asyncio.run(consume(self.kafka, self.topic(topic), expected, timeout, until))


async def produce(
    bootstrap: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_request_size=8_388_608
    )
    await producer.start()
    try:
        keys = keys or [None] * len(values)
        pending = [
            await producer.send(topic, value, key=key)
            for value, key in zip(values, keys, strict=True)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    expected: int,
    give_up_after: float,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + give_up_after

    def done() -> bool:
        return until(records) if until is not None else len(records) >= expected

    try:
        while not done() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        # A little longer, so that extra (unwanted) records are seen too.
        batch = await consumer.getmany(timeout_ms=1000)
        for messages in batch.values():
            records.extend(messages)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def deployment(
    kafka_bootstrap: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Deployment]:
    dep = Deployment(kafka_bootstrap, redis_server, tmp_path)
    yield dep
    dep.stop_workers()


def label(
    event_id: str, stream: str, s: float, y: float | None, ts: float = 1.7e9
) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "stream": stream, "s": s, "y": y}


def encode(document: Any) -> bytes:
    return orjson.dumps(document)
