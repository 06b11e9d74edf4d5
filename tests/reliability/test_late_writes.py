"""A worker frozen between computing a write and sending it (a stop-the-world pause, a
SIGSTOP, a lost network) while the group gives its partition to another: its late write
meets a moved revision and fence and changes nothing. Deterministic: the batch runner of
the frozen worker is held at its write; the other runs in full, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.store import connect_async
from monitor.store._write import Outcome, SubjectWrite
from monitor.subjects import LabelHandler

from ..integration.conftest import BOTH_REDIS, RedisServer, encode, label
from ._oracle import LAYOUT, Log, mismatches, one_clean_pass, read_stored

pytestmark = pytest.mark.integration

TOPIC = "late.labels"
TOPICS = TopicNames("late.decisions", "late.dlq")


class HeldScript(WriteScript):
    """The write script of a worker that freezes once it has computed a write: ``run``
    waits for ``thawed`` (set: it does not wait)."""

    def __init__(self, client: Any, url: str) -> None:
        super().__init__(client, url)
        self.frozen = asyncio.Event()
        self.thawed = asyncio.Event()
        self.thawed.set()

    async def run(self, writes: Sequence[SubjectWrite]) -> list[Outcome]:
        if not self.thawed.is_set():
            self.frozen.set()
            await self.thawed.wait()
        return await super().run(writes)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect_async(redis_server.url, redis_server.cluster)
    yield redis
    await redis.aclose()


def messages(count: int) -> list[RawMessage]:
    """One label event a message, all of stream ``z`` on partition 0 from offset 0."""
    return [
        RawMessage(TOPIC, 0, i, encode(label(f"z-{i}", "z", i / count, (i % 7) / 7)))
        for i in range(count)
    ]


@BOTH_REDIS
async def test_a_frozen_workers_late_write_changes_nothing(
    client: Any, redis_server: RedisServer
) -> None:
    log = messages(300)
    scripts = [HeldScript(client, redis_server.url), WriteScript(client, redis_server.url)]
    frozen, other = (
        BatchRunner(client, LAYOUT, LabelHandler(Policy()), script, TOPICS, 3600.0)
        for script in scripts
    )
    await frozen.apply(log[:100], {0: 100})
    # It fetched up to offset 200 (the log end it saw) and froze with its write computed.
    scripts[0].thawed.clear()
    late = asyncio.create_task(frozen.apply(log[100:200], {0: 200}))
    await scripts[0].frozen.wait()
    # Meanwhile the partition moved: the other worker applied from the committed offset
    # (100) to the log's end, now 300.
    taken = await other.apply(log[100:], {0: 300})
    scripts[0].thawed.set()
    result = await late
    for script in scripts:
        await script.aclose()

    assert (taken.ok, taken.skipped) == (200, 0)
    assert (result.ok, result.duplicate, result.skipped, result.conflicts) == (0, 0, 100, 1)
    # The fence stays in the log's epoch: a new one would apply 100..299 again.
    expected = one_clean_pass(Log(records={TOPIC: log}, ends={TOPIC: {0: 300}}), {"labels": TOPIC})
    sync = redis_server.client()
    try:
        assert mismatches(expected, read_stored(sync)) == []
        assert sync.hgetall(LAYOUT.log_epochs) == {}
    finally:
        sync.close()
