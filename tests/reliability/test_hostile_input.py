"""Hostile input in every input topic: each bad part reaches the dead-letter topic with a
reason, the good events beside it count, the worker lives and its memory stays bounded.

Fast, with hypothesis: the batch runner (decoding, fences, the write script) against a
real Redis. Once end to end: a corpus through a real worker, checked against the oracle.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.slices import HANDLERS
from monitor.store import KeyLayout, connect_async
from monitor.store._keys import OutboxEntry

from ..integration.conftest import Deployment, RedisServer, encode, label
from ._hostile import Hostile, HostileInput
from ._oracle import INPUTS, check_against_oracle, reconcile_outputs

pytestmark = pytest.mark.integration

LAYOUT = KeyLayout()
REASON = re.compile(r"^[A-Za-z]+Error: .")
OFFSETS = itertools.count()


def runner(client: Any, url: str, topic: str) -> BatchRunner[Any]:
    return BatchRunner(
        client,
        LAYOUT,
        HANDLERS[topic](Policy()),
        WriteScript(client, url),
        TopicNames(f"{topic}.decisions", f"{topic}.dlq"),
        3600.0,
    )


async def apply_hostile(server: RedisServer, topic: str, hostile: list[Hostile]) -> None:
    """Apply one batch of hostile messages, then check what it came to, and that every
    subject it wrote loads again (a fresh worker applies one more event to each)."""
    client = connect_async(server.url, server.cluster)
    try:
        outbox = LAYOUT.subject("partition", KeyLayout.partition_subject(topic, 0)).outbox
        last = await client.xrevrange(outbox, count=1)
        batch = [RawMessage(topic, 0, next(OFFSETS), h.value) for h in hostile]
        result = await runner(client, server.url, topic).apply(batch)
        assert (result.ok, result.duplicate) == (sum(h.good for h in hostile), 0)
        assert result.dlq == sum(h.dead_letters for h in hostile)
        added = await client.xrange(outbox, min=b"(" + last[0][0] if last else "-")
        reasons = [OutboxEntry.decode(fields).headers["driftgate-error"] for _, fields in added]
        assert len(reasons) == result.dlq
        assert all(REASON.match(reason) for reason in reasons), reasons

        names = await client.smembers(LAYOUT.registry(HANDLERS[topic](Policy()).model.kind))
        again = [
            RawMessage(topic, 0, next(OFFSETS), encode(one_more(topic, name.decode())))
            for name in names
        ]
        if again:  # a cold worker: every stored state is read back
            reread = await runner(client, server.url, topic).apply(again)
            assert reread.ok == len(again)
    finally:
        await client.aclose()


def one_more(topic: str, subject: str) -> dict[str, Any]:
    event_id = f"again-{next(OFFSETS)}"
    if topic == "labels":
        return label(event_id, subject, 0.5, 0.5, ts=time.time())
    if topic == "telemetry":
        return {
            "event_id": event_id,
            "ts": time.time(),
            "experiment_id": subject,
            "unit_id": "u",
            "variant": "control",
        }
    return {
        "event_id": event_id,
        "ts": time.time(),
        "agent": subject,
        "bundle_id": "b",
        "action": "pause",
    }


@pytest.mark.parametrize("topic", INPUTS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chance=st.randoms(use_true_random=False), size=st.integers(1, 6))
def test_hostile_batches_are_dead_lettered_and_the_good_events_count(
    redis_server: RedisServer, topic: str, chance: random.Random, size: int
) -> None:
    source = HostileInput(topic, chance, run=str(next(OFFSETS)))
    asyncio.run(apply_hostile(redis_server, topic, [source.message() for _ in range(size)]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # as in the worker: printed, not raised
def test_a_finite_number_whose_square_overflows_does_not_poison_its_subject(
    redis_server: RedisServer,
) -> None:
    async def poison_then_read_again() -> tuple[int, int]:
        client = connect_async(redis_server.url, redis_server.cluster)
        try:
            big = label("big", "poison", 1e308, -1e308, ts=time.time())
            first = await runner(client, redis_server.url, "labels").apply(
                [RawMessage("labels", 0, next(OFFSETS), encode(big))]
            )
            later = label("later", "poison", 0.5, 0.5, ts=time.time())
            try:
                again = await runner(client, redis_server.url, "labels").apply(
                    [RawMessage("labels", 0, next(OFFSETS), encode(later))]
                )
            except TypeError:  # the stored state does not load
                return first.dlq, 0
            return first.dlq, again.ok
        finally:
            await client.aclose()

    assert asyncio.run(poison_then_read_again()) == (1, 1)


def worker_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_hostile_corpus_through_a_worker(deployment: Deployment) -> None:
    """Every kind of hostile message in every topic, and the extremes once each: the worker
    lives, its memory stays bounded, the statistics equal the oracle's and every bad part
    reaches the dead-letter topic with its reason and its source."""
    worker = deployment.start_worker()
    chance = random.Random(51)
    sources = {topic: HostileInput(topic, chance) for topic in INPUTS}
    corpus = {topic: [source.message() for _ in range(40)] for topic, source in sources.items()}
    corpus["labels"] += [
        Hostile(b"[" + b",".join([b"1"] * 450_000) + b"]", 0, 1),  # 0.9 MB of junk elements
        Hostile(b"[" * 100_000 + b"]" * 100_000, 0, 1),  # past the decoder's recursion limit
        Hostile(b"\xff" * 500_000, 0, 1),
    ]
    before = worker_rss_mb(worker.pid)
    for topic, hostile in corpus.items():
        # One key a topic: one partition, so an agent's lifecycle has the log's order.
        deployment.produce(topic, [h.value for h in hostile], [b"hostile"] * len(hostile))
    expected = check_against_oracle(deployment)
    assert expected.ok == {
        deployment.topic(topic): sum(h.good for h in hostile) for topic, hostile in corpus.items()
    }
    assert expected.dead_letters == {
        deployment.topic(topic): sum(h.dead_letters for h in hostile)
        for topic, hostile in corpus.items()
    }
    reconcile_outputs(deployment, expected)
    assert worker.poll() is None
    grown = worker_rss_mb(worker.pid) - before
    print(f"worker RSS {before:.0f} MB before the corpus, grew by {grown:.0f} MB")
    assert grown < 150, f"the worker's memory grew by {grown:.0f} MB"
    assert orjson.loads(deployment.cli("status", "--json").stdout)["streams"]
