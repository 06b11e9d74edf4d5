"""The decision outbox: drained with claim and acknowledge, so no decision is ever lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor import Policy
from monitor.config import Settings
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.pipeline._outbox import OutboxDrainer, Sent
from monitor.runtime._kafka import start_producer
from monitor.runtime._services import ServiceProcess
from monitor.store import KeyLayout, connect_async
from monitor.store._keys import OUTBOX_GROUP, OutboxEntry, SubjectKeys, known_kinds
from monitor.subjects import LabelHandler

from .conftest import BOTH_REDIS, RedisServer, consume, encode, label

pytestmark = pytest.mark.integration

STREAMS = 20


@pytest.fixture
def topics() -> TopicNames:
    prefix = f"o{uuid.uuid4().hex[:8]}."
    return TopicNames(f"{prefix}decisions", f"{prefix}dlq")


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect_async(redis_server.url, redis_server.cluster)
    yield redis
    await redis.aclose()


async def fill_outboxes(
    client: Any, url: str, topics: TopicNames, streams: int = STREAMS
) -> set[str]:
    """A FAIL decision for each of ``streams`` streams, waiting in their outboxes."""
    script = WriteScript(client, url)
    runner = BatchRunner(client, KeyLayout(), LabelHandler(Policy()), script, topics, 3600.0)
    batch = [
        RawMessage(
            "labels",
            0,
            stream,
            encode([label(f"{stream}-{i}", f"s{stream}", 0.2, 0.9) for i in range(40)]),
        )
        for stream in range(streams)
    ]
    result = await runner.apply(batch)
    await script.aclose()
    assert len(result.decisions) == streams
    return {decision.decision_id for decision in result.decisions}


async def outbox_entries(client: Any) -> tuple[int, int]:
    """(entries, of which pending with some drainer) over every outbox."""
    layout = KeyLayout()
    total = pending = 0
    for kind in known_kinds(await client.smembers(layout.kinds)):
        for name in await client.smembers(layout.registry(kind)):
            key = layout.subject(kind, name.decode()).outbox
            if await client.exists(key):
                total += await client.xlen(key)
                pending += (await client.xpending(key, OUTBOX_GROUP))["pending"]
    return total, pending


def drainer(
    client: Any, bootstrap: str, min_idle: float, after_send: Sent | None = None
) -> tuple[OutboxDrainer, list[Any]]:
    producers: list[Any] = []

    async def producer() -> Any:
        if not producers:
            producers.append(await start_producer(Settings(kafka_bootstrap=bootstrap)))
        return producers[0]

    drainer = OutboxDrainer(client, KeyLayout(), producer, min_idle=min_idle, after_send=after_send)
    return drainer, producers


def spawn_drainer(redis_url: str, bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    """A drainer process that leaves other drainers' entries alone for a minute."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.drainer_process", redis_url, bootstrap, "60"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@BOTH_REDIS
async def test_two_drainers_at_once_send_each_decision_exactly_once(
    client: Any, redis_server: RedisServer, kafka_bootstrap: str, topics: TopicNames
) -> None:
    expected = await fill_outboxes(client, redis_server.url, topics)
    (first, p1), (second, p2) = (drainer(client, kafka_bootstrap, 30.0) for _ in range(2))
    sent = await asyncio.gather(first.sweep(), second.sweep())
    for producer in p1 + p2:
        await producer.stop()
    assert sum(sent) == STREAMS
    assert await outbox_entries(client) == (0, 0)
    records = await consume(kafka_bootstrap, topics.decisions, STREAMS, 20.0)
    ids = Counter(orjson.loads(record.value)["decision_id"] for record in records)
    assert set(ids) == expected and set(ids.values()) == {1}


@BOTH_REDIS
async def test_a_drainer_slower_than_the_claim_time_keeps_its_entries(
    client: Any, redis_server: RedisServer, kafka_bootstrap: str, topics: TopicNames
) -> None:
    """A webhook that takes longer than ``min_idle`` (retries against a slow receiver)
    does not let another drainer claim and send the same decisions again."""
    expected = await fill_outboxes(client, redis_server.url, topics, streams=1)
    hooked: list[str] = []

    async def slow_webhook(keys: SubjectKeys, entry: OutboxEntry) -> None:
        await asyncio.sleep(2.5)  # 2.5 times the claim time
        hooked.append(orjson.loads(entry.value)["decision_id"])

    slow, p1 = drainer(client, kafka_bootstrap, 1.0, after_send=slow_webhook)
    eager, p2 = drainer(client, kafka_bootstrap, 1.0, after_send=slow_webhook)
    slow_sweep = asyncio.create_task(slow.sweep())
    await asyncio.sleep(0.2)  # the slow drainer has taken the entry
    while not slow_sweep.done():
        await eager.sweep()  # would claim any entry idle for 1 s
        await asyncio.sleep(0.2)
    assert await slow_sweep == 1
    for producer in p1 + p2:
        await producer.stop()
    assert await outbox_entries(client) == (0, 0)
    assert Counter(hooked) == Counter(expected)  # each once, by the slow drainer
    records = await consume(kafka_bootstrap, topics.decisions, 1, 20.0)
    assert sorted(orjson.loads(record.value)["decision_id"] for record in records) == sorted(
        expected
    )


class SilentProducer:
    """A producer whose sends are taken and never acknowledged (a broker gone quiet)."""

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


async def test_a_send_that_never_completes_gives_up_and_is_sent_by_the_next_sweep(
    client: Any, redis_server: RedisServer, kafka_bootstrap: str, topics: TopicNames
) -> None:
    expected = await fill_outboxes(client, redis_server.url, topics, streams=1)
    producers: list[Any] = [SilentProducer()]

    async def producer() -> Any:
        return producers[-1]

    stuck = OutboxDrainer(client, KeyLayout(), producer, send_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await stuck.sweep()
    assert time.monotonic() - started < 5.0  # the drainer is free again
    assert await outbox_entries(client) == (1, 1)  # pending with it, not lost
    producers.append(await start_producer(Settings(kafka_bootstrap=kafka_bootstrap)))
    try:
        assert await stuck.sweep() == 1  # its own pending entry first
    finally:
        await producers[-1].stop()
    assert await outbox_entries(client) == (0, 0)
    records = await consume(kafka_bootstrap, topics.decisions, 1, 20.0)
    assert [orjson.loads(record.value)["decision_id"] for record in records] == sorted(expected)


@BOTH_REDIS
async def test_a_drainer_killed_mid_send_loses_no_decision(
    client: Any,
    redis_server: RedisServer,
    kafka_broker: ServiceProcess | None,
    kafka_bootstrap: str,
    topics: TopicNames,
    tmp_path: Path,
) -> None:
    if kafka_broker is None:
        pytest.skip("an external Kafka cannot be paused from here")
    expected = await fill_outboxes(client, redis_server.url, topics)
    kafka_broker.process.send_signal(signal.SIGSTOP)  # its sends cannot complete
    log = tmp_path / "drainer.log"
    try:
        victim = await asyncio.to_thread(spawn_drainer, redis_server.url, kafka_bootstrap, log)
        deadline = time.monotonic() + 30
        # Until the victim has taken entries, unacknowledged (polls Redis: no event to await).
        while (await outbox_entries(client))[1] == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        taken = await outbox_entries(client)
        victim.kill()  # SIGKILL, mid-send
        await asyncio.to_thread(victim.wait)
    finally:
        kafka_broker.process.send_signal(signal.SIGCONT)
    assert taken[1] > 0, log.read_text()

    survivor, producers = drainer(client, kafka_bootstrap, min_idle=1.0)
    deadline = time.monotonic() + 30
    while (await outbox_entries(client))[0] and time.monotonic() < deadline:
        await survivor.sweep()  # claims the victim's entries once they are 1 s idle
        await asyncio.sleep(0.2)
    for producer in producers:
        await producer.stop()
    assert await outbox_entries(client) == (0, 0)
    records = await consume(kafka_bootstrap, topics.decisions, STREAMS, 20.0)
    ids = Counter(orjson.loads(record.value)["decision_id"] for record in records)
    assert set(ids) == expected  # nothing lost; a repeat could only carry the same id
