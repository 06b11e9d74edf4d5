"""The batch processor against a real Redis (no Kafka): fences, dedupe, CAS, calibrators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import numpy as np
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from estimators import IsotonicCalibrator, QuantileSketch
from monitor import LabelBatchProcessor, Policy, RawMessage
from monitor._calibration import activate_calibrator
from monitor._snapshot import read_snapshot
from monitor._state import Keys

from .conftest import RedisServer, encode, label

pytestmark = pytest.mark.integration

TOPIC = "driftgate.labels"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dead_letters() -> list[tuple[bytes, dict[str, str]]]:
    return []


@pytest.fixture
async def processor(
    redis_server: RedisServer, clock: Clock, dead_letters: list
) -> AsyncIterator[LabelBatchProcessor]:
    async def send(payload: bytes, headers: dict[str, str]) -> None:
        dead_letters.append((payload, headers))

    client = aioredis.from_url(redis_server.url)
    yield LabelBatchProcessor(client, Keys(), Policy(dedupe_window_seconds=60.0), send, clock=clock)
    await client.aclose()


@pytest.fixture
def sync_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def messages(
    stream: str, values: list[tuple[float, float | None]], partition: int = 0, first: int = 0
) -> list[RawMessage]:
    return [
        RawMessage(
            TOPIC,
            partition,
            first + i,
            encode(label(f"{stream}-{partition}-{first + i}", stream, s, y)),
        )
        for i, (s, y) in enumerate(values)
    ]


async def test_replay_below_the_fence_is_skipped(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    batch = messages("p", [(0.5, 0.6)] * 150)

    first = await processor.apply(batch[:100])
    second = await processor.apply(batch[50:150])
    assert (first.ok, first.skipped_messages) == (100, 0)
    assert (second.ok, second.skipped_messages, second.duplicate) == (50, 50, 0)
    snapshot = read_snapshot(sync_client, Keys())
    assert snapshot.counters[f"{TOPIC}|ok"] == 150
    assert snapshot.streams["p"]["n"] == 150
    assert sync_client.hget(Keys().fence, f"{TOPIC}|0") == b"150"


async def test_concurrent_batches_on_one_stream_merge_exactly(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    rng = np.random.default_rng(5)
    values = [
        [(float(s), float(s + rng.normal())) for s in rng.uniform(size=400)] for _ in range(4)
    ]
    batches = [messages("shared", v, partition=p) for p, v in enumerate(values)]

    async def in_partition_order(batch: list[RawMessage]) -> int:
        retries = 0
        for i in range(0, 400, 100):
            retries += (await processor.apply(batch[i : i + 100])).retries
        return retries

    # Partitions race each other on the same stream hash; each stays in offset order.
    retries = await asyncio.gather(*(in_partition_order(b) for b in batches))
    assert sum(retries) > 0, "the race should have hit the compare-and-set at least once"
    residuals = np.array([y - s for v in values for s, y in v])
    row = read_snapshot(sync_client, Keys()).streams["shared"]
    assert row["n"] == 1600
    assert row["residual_mean"] == pytest.approx(residuals.mean(), rel=1e-12)


async def test_score_only_events_count_in_n_not_in_residuals(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    (await processor.apply(messages("mixed", [(0.2, 0.3), (0.4, None), (0.6, None), (0.8, 0.5)])))
    row = read_snapshot(sync_client, Keys()).streams["mixed"]
    assert (row["n"], row["labeled_n"]) == (4, 2)
    assert row["residual_mean"] == pytest.approx(((0.3 - 0.2) + (0.5 - 0.8)) / 2)
    assert row["score_mean"] == pytest.approx(0.5)


async def test_ids_are_forgotten_after_the_dedupe_window(
    processor: LabelBatchProcessor, clock: Clock, sync_client: redis.Redis
) -> None:
    event = encode(label("same-id", "window", 0.5, 0.5))

    results = [await processor.apply([RawMessage(TOPIC, 0, 0, event)])]
    clock.now += 30
    results.append(await processor.apply([RawMessage(TOPIC, 0, 1, event)]))
    clock.now += 121  # ids are kept for one to two 60 s windows: now surely forgotten
    other = encode(label("other", "window", 0.5, 0.5))
    results.append(await processor.apply([RawMessage(TOPIC, 0, 2, other)]))
    results.append(await processor.apply([RawMessage(TOPIC, 0, 3, event)]))
    assert [(r.ok, r.duplicate) for r in results] == [(1, 0), (0, 1), (1, 0), (1, 0)]


async def test_large_batches_cross_the_lua_chunk_size(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    batch = [
        RawMessage(TOPIC, 0, 0, encode([label(f"big-{i}", "big", 0.1, 0.1) for i in range(5000)]))
    ]
    again = [
        RawMessage(
            TOPIC, 1, 0, encode([label(f"big-{i}", "big", 0.1, 0.1) for i in range(2500, 7500)])
        )
    ]

    first = await processor.apply(batch)
    second = await processor.apply(again)
    assert (first.ok, second.ok, second.duplicate) == (5000, 2500, 2500)
    assert sync_client.scard(f"{Keys().seen(TOPIC)}{int(1_000_000.0 // 60)}") == 7500


async def test_new_calibrator_version_starts_fresh_and_keeps_history(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=600)
    y = s**2 + rng.normal(0, 0.05, 600)  # the identity is biased for this judge
    pairs = list(zip(s.tolist(), y.tolist(), strict=True))

    (await processor.apply(messages("judge", pairs[:300])))
    client = sync_client
    before = read_snapshot(client, Keys()).streams["judge"]
    assert before["verdict"] == "FAIL" and before["calibrator"]["kind"] == "identity"

    model = IsotonicCalibrator().fit(s[:300], y[:300])
    assert activate_calibrator(client, Keys(), "judge", model) == 1
    assert read_snapshot(client, Keys()).streams["judge"]["verdict"] == "INCONCLUSIVE"

    result = await processor.apply(messages("judge", pairs[300:], first=300))
    after = read_snapshot(client, Keys()).streams["judge"]
    assert after["calibrator"] == {"kind": "isotonic", "version": 1}
    assert (after["n"], after["labeled_n"]) == (300, 300)
    expected = y[300:] - model.predict(s[300:])
    assert after["residual_mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert after["verdict"] == "PASS"
    assert [d["verdict"] for d in result.decisions] == ["PASS"]  # recovery is news after a FAIL
    history = orjson.loads(client.hget(Keys().stream("judge"), "history:0"))
    assert history["n"] == 300
    shown = read_snapshot(client, Keys(), with_history=True).streams["judge"]["history"]
    assert shown["0"]["labeled_n"] == 300
    assert shown["0"]["residual_mean"] == pytest.approx(float(np.mean(y[:300] - s[:300])))


async def test_dead_letters_are_sent_once_per_bad_element(
    processor: LabelBatchProcessor, dead_letters: list
) -> None:
    batch = [
        RawMessage(TOPIC, 2, 7, b"not json"),
        RawMessage(TOPIC, 2, 8, encode([label("ok-1", "d", 0.1, 0.1), {"event_id": "x"}])),
    ]
    result = await processor.apply(batch)
    assert (result.ok, result.dlq) == (1, 2)
    assert [
        (p, h["driftgate-source-offset"], h["driftgate-source-partition"]) for p, h in dead_letters
    ] == [
        (b"not json", "7", "2"),
        (b'{"event_id":"x"}', "8", "2"),
    ]
    assert dead_letters[1][1]["driftgate-error"].startswith("EventValidationError: ")


async def test_a_fence_past_the_end_of_the_log_is_recognised_as_stale(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    await processor.apply(messages("old", [(0.5, 0.5)] * 500))
    # The broker restarted empty: offsets start at 0 again, with new event ids.
    reborn = [
        RawMessage(TOPIC, 0, i, encode(label(f"new-{i}", "new", 0.5, 0.5))) for i in range(10)
    ]
    unaware = await processor.apply(reborn)  # without the log end, it looks like a replay
    assert (unaware.ok, unaware.skipped_messages) == (0, 10)
    aware = await processor.apply(reborn, highwaters={0: 10})
    assert (aware.ok, aware.skipped_messages) == (10, 0)
    assert sync_client.hget(Keys().fence, f"{TOPIC}|0") == b"10"
    replay = await processor.apply(reborn[5:], highwaters={0: 10})
    assert (replay.ok, replay.skipped_messages) == (0, 5)


async def test_a_late_shift_fails_through_the_restarted_interval(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    rng = np.random.default_rng(12)
    s = rng.uniform(size=20_600)
    r = rng.normal(0, 0.1, 20_600)
    r[20_000:] += 0.08
    pairs = list(zip(s.tolist(), (s + r).tolist(), strict=True))
    decisions = []
    for start in range(0, len(pairs), 200):
        result = await processor.apply(messages("late", pairs[start : start + 200], first=start))
        decisions += result.decisions
    row = read_snapshot(sync_client, Keys()).streams["late"]
    assert row["verdict"] == "FAIL"
    assert abs(row["residual_mean"]) < 0.01  # all-time mean: diluted
    assert row["changes_detected"] == 1
    recent = row["since_last_change"]
    assert 20_000 <= recent["since_labeled_n"] < 20_600
    assert recent["ci_low"] > 0.04
    fail = [d for d in decisions if d["verdict"] == "FAIL"]
    assert len(fail) == 1 and fail[0]["evidence"]["method"] == "normal_mixture_cs_after_change"


async def test_scores_drifting_from_the_calibration_scores_fail_the_score_gate(
    processor: LabelBatchProcessor, sync_client: redis.Redis
) -> None:
    rng = np.random.default_rng(13)
    s = rng.uniform(size=2000)
    model = IsotonicCalibrator().fit(s, s)
    activate_calibrator(sync_client, Keys(), "scored", model, QuantileSketch(0.01).update(s))
    calm = rng.uniform(size=1000)
    await processor.apply(messages("scored", [(float(v), None) for v in calm]))
    row = read_snapshot(sync_client, Keys()).streams["scored"]
    assert row["score_verdict"] == "PASS" and row["score_ks"] < 0.1
    shifted = rng.uniform(0.6, 1.0, 3000)
    result = await processor.apply(
        messages("scored", [(float(v), None) for v in shifted], first=1000)
    )
    row = read_snapshot(sync_client, Keys()).streams["scored"]
    assert row["score_verdict"] == "FAIL"
    assert row["score_ks"] == pytest.approx(0.45, abs=0.05)
    assert [d["reason"] for d in result.decisions] == ["score_drift_severe"]
    assert row["labeled_n"] == 0 and row["n"] == 4000
