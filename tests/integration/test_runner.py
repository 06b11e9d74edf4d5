"""The batch runner against a real Redis and a real Redis Cluster (no Kafka): fences,
duplicates, compare-and-set, atomicity, calibrators, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from estimators import IsotonicCalibrator, QuantileSketch
from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.slices import agent_status, status_document
from monitor.store import KeyLayout, ReadModel, SyncClient, connect_async
from monitor.store._keys import Fence
from monitor.store._write import SubjectWrite
from monitor.subjects import CanaryHandler, LabelHandler, TelemetryHandler
from monitor.workflows._calibration import activate_calibrator

from .conftest import BOTH_REDIS, RedisServer, encode, label

pytestmark = pytest.mark.integration

TOPIC = "driftgate.labels"
TOPICS = TopicNames("driftgate.decisions", "driftgate.dlq")
LAYOUT = KeyLayout()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # after the events' times: they are not from the future

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect_async(redis_server.url, redis_server.cluster)
    yield redis
    await redis.aclose()


@pytest.fixture
async def make_runner(client: Any, redis_server: RedisServer, clock: Clock) -> AsyncIterator[Any]:
    scripts: list[WriteScript] = []

    def make(window: float = 3600.0) -> BatchRunner[Any]:
        scripts.append(WriteScript(client, redis_server.url))
        return BatchRunner(
            client, LAYOUT, LabelHandler(Policy()), scripts[-1], TOPICS, window, clock=clock
        )

    yield make
    for script in scripts:
        await script.aclose()


@pytest.fixture
def runner(make_runner: Any) -> BatchRunner[Any]:
    return make_runner()


@pytest.fixture
def sync_client(redis_server: RedisServer) -> Iterator[SyncClient]:
    client = redis_server.client()
    yield client
    client.close()


def view(client: SyncClient, stream: str) -> dict[str, Any]:
    snapshot = ReadModel(client, LAYOUT).snapshot(with_history=True)
    return status_document(snapshot).to_builtins()["streams"][stream]  # type: ignore[no-any-return]


def messages(
    stream: str, values: list[tuple[float, float | None]], partition: int = 0, first: int = 0
) -> list[RawMessage]:
    return [
        RawMessage(
            TOPIC,
            partition,
            first + i,
            encode(label(f"{stream}-{partition}-{first + i}", stream, s, y, ts=1.7e9 + first + i)),
        )
        for i, (s, y) in enumerate(values)
    ]


def dump(client: SyncClient) -> dict[bytes, Any]:
    """Every key and its content: to show that a refused write changed nothing."""
    nodes = (
        client.get_primaries() if hasattr(client, "get_primaries") else [None]  # type: ignore[union-attr]
    )
    keys: list[bytes] = []
    for node in nodes:
        keys += client.keys("*", target_nodes=node) if node else client.keys("*")  # type: ignore[call-arg, operator]
    state = {}
    for key in sorted(set(keys)):
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"stream":
            state[key] = client.xrange(key)
        elif kind == b"set":
            state[key] = client.smembers(key)
        else:
            state[key] = client.dump(key)
    return state


async def test_replay_below_the_fence_is_skipped(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    batch = messages("p", [(0.5, 0.6)] * 150)
    first = await runner.apply(batch[:100])
    second = await runner.apply(batch[50:150])
    assert (first.ok, first.skipped) == (100, 0)
    assert (second.ok, second.skipped, second.duplicate) == (50, 50, 0)
    row = view(sync_client, "p")
    assert row["n"] == 150
    fence = sync_client.hget(LAYOUT.subject("stream", "p").state, f"fence:{TOPIC}:0")
    assert Fence.decode(fence) == Fence(0, 150)


@BOTH_REDIS
async def test_concurrent_batches_on_one_stream_merge_exactly(
    make_runner: Any, sync_client: SyncClient
) -> None:
    rng = np.random.default_rng(5)
    values = [
        [(float(s), float(s + rng.normal())) for s in rng.uniform(size=400)] for _ in range(4)
    ]
    batches = [messages("shared", v, partition=p) for p, v in enumerate(values)]
    runners = [make_runner() for _ in batches]  # four workers, one partition each

    async def in_partition_order(runner: BatchRunner[Any], batch: list[RawMessage]) -> int:
        conflicts = 0
        for i in range(0, 400, 100):
            conflicts += (await runner.apply(batch[i : i + 100])).conflicts
        return conflicts

    conflicts = await asyncio.gather(*map(in_partition_order, runners, batches))
    assert sum(conflicts) > 0, "the race should have hit the compare-and-set at least once"
    residuals = np.array([y - s for v in values for s, y in v])
    row = view(sync_client, "shared")
    assert row["n"] == 1600
    assert row["all_time"]["residual_mean"] == pytest.approx(residuals.mean(), rel=1e-12)


async def test_score_only_events_count_in_n_not_in_residuals(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    await runner.apply(messages("mixed", [(0.2, 0.3), (0.4, None), (0.6, None), (0.8, 0.5)]))
    row = view(sync_client, "mixed")
    assert (row["n"], row["labeled_n"]) == (4, 2)
    assert row["all_time"]["residual_mean"] == pytest.approx(((0.3 - 0.2) + (0.5 - 0.8)) / 2)
    assert row["score_mean"] == pytest.approx(0.5)


async def test_duplicates_are_judged_by_event_time_not_by_the_clock(
    make_runner: Any, clock: Clock
) -> None:
    runner = make_runner(window=60.0)

    def event(event_id: str, ts: float, offset: int) -> list[RawMessage]:
        return [RawMessage(TOPIC, 0, offset, encode(label(event_id, "window", 0.5, 0.5, ts=ts)))]

    results = [await runner.apply(event("same", 1000.0, 0))]
    clock.now += 10 * 3600  # the worker's clock moves on; event time does not
    results.append(await runner.apply(event("same", 1000.0, 1)))
    results.append(await runner.apply(event("later", 1000.0 + 200, 2)))  # window moves
    results.append(await runner.apply(event("same", 1000.0, 3)))  # now older than the window
    assert [(r.ok, r.duplicate) for r in results] == [(1, 0), (0, 1), (1, 0), (1, 0)]


@BOTH_REDIS
async def test_duplicates_across_partitions_and_workers(
    make_runner: Any, sync_client: SyncClient
) -> None:
    events = [label(f"big-{i}", "big", 0.1, 0.1) for i in range(7500)]
    first = await make_runner().apply([RawMessage(TOPIC, 0, 0, encode(events[:5000]))])
    # Another worker (nothing in memory) sees half of them again on another partition.
    second = await make_runner().apply([RawMessage(TOPIC, 1, 0, encode(events[2500:]))])
    assert (first.ok, second.ok, second.duplicate) == (5000, 2500, 2500)
    assert view(sync_client, "big")["n"] == 7500
    stored = sync_client.hget(LAYOUT.subject("stream", "big").state, f"seen:{TOPIC}")
    [bucket] = stored.decode().split(";")[1].split(",")
    blob = sync_client.get(LAYOUT.subject("stream", "big").seen_bucket(TOPIC, int(bucket)))
    assert len(blob) == 8 * 7500  # 8 bytes a remembered id


async def test_new_calibrator_version_starts_fresh_and_keeps_history(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=600)
    y = s**2 + rng.normal(0, 0.05, 600)  # the identity is biased for this judge
    pairs = list(zip(s.tolist(), y.tolist(), strict=True))

    await runner.apply(messages("judge", pairs[:300]))
    before = view(sync_client, "judge")
    assert before["verdict"] == "FAIL" and before["calibrator"]["kind"] == "identity"

    model = IsotonicCalibrator().fit(s[:300], y[:300])
    assert activate_calibrator(sync_client, LAYOUT, Policy(), "judge", model) == 1
    fresh = view(sync_client, "judge")
    assert fresh["verdict"] == "INCONCLUSIVE" and fresh["n"] == 0
    assert fresh["calibrator"] == {"kind": "isotonic", "version": 1}

    result = await runner.apply(messages("judge", pairs[300:], first=300))
    assert result.conflicts == 1  # the batch was computed again under the new calibrator
    after = view(sync_client, "judge")
    assert after["calibrator"] == {"kind": "isotonic", "version": 1}
    assert (after["n"], after["labeled_n"]) == (300, 300)
    expected = y[300:] - model.predict(s[300:])
    assert after["all_time"]["residual_mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert after["verdict"] == "PASS"
    assert [d.verdict for d in result.decisions] == ["PASS"]  # recovery is news after a FAIL
    assert after["history"]["0"]["labeled_n"] == 300
    assert after["history"]["0"]["all_time"]["residual_mean"] == pytest.approx(
        float(np.mean(y[:300] - s[:300]))
    )


async def test_calibrating_under_traffic_never_conflicts(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    rng = np.random.default_rng(10)
    model = IsotonicCalibrator().fit(rng.uniform(size=100), rng.uniform(size=100))
    stop = asyncio.Event()

    async def traffic() -> None:
        offset = 0
        while not stop.is_set():
            await runner.apply(messages("busy", [(0.5, 0.5)] * 50, first=offset))
            offset += 50

    task = asyncio.create_task(traffic())
    versions = []
    for _ in range(5):
        await asyncio.sleep(0.05)
        versions.append(
            await asyncio.to_thread(
                activate_calibrator, sync_client, LAYOUT, Policy(), "busy", model
            )
        )
    stop.set()
    await task
    assert versions == [1, 2, 3, 4, 5]
    assert view(sync_client, "busy")["calibrator"]["version"] == 5


async def test_dead_letters_go_to_the_outbox_once(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    batch = [
        RawMessage(TOPIC, 2, 7, b"not json"),
        RawMessage(TOPIC, 2, 8, encode([label("ok-1", "d", 0.1, 0.1), {"event_id": "x"}])),
    ]
    result = await runner.apply(batch)
    again = await runner.apply(batch)  # redelivered: already dead-lettered
    assert (result.ok, result.dlq) == (1, 2)
    assert (again.ok, again.dlq, again.skipped) == (0, 0, 1)
    outbox = LAYOUT.subject("partition", f"{TOPIC}:2").outbox
    entries = [fields for _, fields in sync_client.xrange(outbox)]
    assert [e[b"value"] for e in entries] == [b"not json", b'{"event_id":"x"}']
    headers = [orjson.loads(e[b"headers"]) for e in entries]
    assert [(h["driftgate-source-partition"], h["driftgate-source-offset"]) for h in headers] == [
        ("2", "7"),
        ("2", "8"),
    ]
    assert headers[0]["driftgate-error"].startswith("JSONDecodeError: ")
    assert headers[1]["driftgate-error"].startswith("EventValidationError: ")
    assert headers[1]["driftgate-error"].endswith("- at `$[1]`")


async def test_a_fence_past_the_end_of_the_log_starts_a_new_epoch(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    await runner.apply(messages("old", [(0.5, 0.5)] * 500))
    # The broker restarted empty: offsets start at 0 again, with new event ids.
    reborn = [
        RawMessage(TOPIC, 0, i, encode(label(f"new-{i}", "old", 0.5, 0.5))) for i in range(10)
    ]
    unaware = await runner.apply(reborn)  # without the log end, it looks like a replay
    assert (unaware.ok, unaware.skipped) == (0, 10)
    aware = await runner.apply(reborn, highwaters={0: 10})
    assert (aware.ok, aware.skipped) == (10, 0)
    key = LAYOUT.subject("stream", "old").state
    assert Fence.decode(sync_client.hget(key, f"fence:{TOPIC}:0")) == Fence(1, 10)
    assert sync_client.hget(LAYOUT.log_epochs, f"{TOPIC}:0") == b"1"
    replay = await runner.apply(reborn[5:], highwaters={0: 10})
    assert (replay.ok, replay.skipped) == (0, 5)


async def test_a_log_end_seen_before_a_pause_starts_no_new_epoch(
    make_runner: Any, sync_client: SyncClient
) -> None:
    """A worker paused with a batch that begins the log, while another moved the fence
    past the log end it had seen: asked afresh, the log ends past the fence, so the batch
    is a replay below the fence (not a new log): skipped, counted as nothing, same epoch."""
    other, paused = make_runner(), make_runner()
    batch = messages("shared", [(0.5, 0.5)] * 500)
    await other.apply(batch)
    asked: list[tuple[str, int]] = []

    async def log_end(topic: str, partition: int) -> int:
        asked.append((topic, partition))
        return 500

    paused.log_end = log_end
    stale = await paused.apply(batch[:10], highwaters={0: 10})
    assert (stale.ok, stale.duplicate, stale.skipped) == (0, 0, 10)
    assert asked == [(TOPIC, 0)]
    key = LAYOUT.subject("stream", "shared").state
    assert Fence.decode(sync_client.hget(key, f"fence:{TOPIC}:0")) == Fence(0, 500)
    assert sync_client.hget(LAYOUT.log_epochs, f"{TOPIC}:0") is None

    async def new_log_end(topic: str, partition: int) -> int:
        return 10  # the broker really restarted empty: the log is new

    paused.log_end = new_log_end
    reborn = [
        RawMessage(TOPIC, 0, i, encode(label(f"new-{i}", "shared", 0.5, 0.5))) for i in range(10)
    ]
    fresh = await paused.apply(reborn, highwaters={0: 10})
    assert (fresh.ok, fresh.skipped) == (10, 0)
    assert sync_client.hget(LAYOUT.log_epochs, f"{TOPIC}:0") == b"1"


async def test_a_late_shift_fails_through_the_restarted_interval(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    rng = np.random.default_rng(12)
    s = rng.uniform(size=20_600)
    r = rng.normal(0, 0.1, 20_600)
    r[20_000:] += 0.08
    pairs = list(zip(s.tolist(), (s + r).tolist(), strict=True))
    decisions = []
    for start in range(0, len(pairs), 200):
        result = await runner.apply(messages("late", pairs[start : start + 200], first=start))
        decisions += result.decisions
    row = view(sync_client, "late")
    assert row["verdict"] == "FAIL" and row["interval"] == "since_change"
    assert abs(row["all_time"]["residual_mean"]) < 0.01  # all-time mean: diluted
    assert row["changes_detected"] == 1
    assert 20_000 <= row["since_change"]["since_labeled_n"] < 20_600
    assert row["residual_mean"] == row["since_change"]["residual_mean"]  # what the verdict used
    assert row["ci_low"] > 0.04
    fail = [d for d in decisions if d.verdict == "FAIL"]
    assert len(fail) == 1
    assert fail[0].evidence["method"] == "empirical_bernstein_cs_after_change"


async def test_scores_drifting_from_the_calibration_scores_fail_the_score_gate(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    rng = np.random.default_rng(13)
    s = rng.uniform(size=2000)
    model = IsotonicCalibrator().fit(s, s)
    activate_calibrator(
        sync_client, LAYOUT, Policy(), "scored", model, QuantileSketch(0.01).update(s)
    )
    await runner.apply(messages("scored", [(float(v), None) for v in rng.uniform(size=1000)]))
    row = view(sync_client, "scored")
    assert row["score_verdict"] == "PASS" and row["score_ks"] < 0.1
    shifted = rng.uniform(0.6, 1.0, 3000)
    result = await runner.apply(messages("scored", [(float(v), None) for v in shifted], first=1000))
    row = view(sync_client, "scored")
    assert row["score_verdict"] == "FAIL"
    assert row["score_ks"] == pytest.approx(0.45, abs=0.05)
    assert [d.reason for d in result.decisions] == ["score_drift_severe"]
    assert row["labeled_n"] == 0 and row["n"] == 4000


@BOTH_REDIS
async def test_a_wrong_type_key_changes_nothing_and_its_events_are_dead_lettered(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    await runner.apply(messages("good", [(0.5, 0.5)] * 10))
    await runner.apply(messages("bad", [(0.5, 0.5)] * 10, partition=1))
    # Someone else's list where the stream's audit stream belongs: the write must refuse
    # before its first change (the old script moved the fence, then failed).
    audit = LAYOUT.subject("stream", "bad").audit
    sync_client.delete(audit)
    sync_client.rpush(audit, "not a stream")
    bad_key = LAYOUT.subject("stream", "bad").state
    before = {k: v for k, v in dump(sync_client).items() if b"{stream:bad}" in k}

    batch = messages("bad", [(0.9, 0.1)] * 5, partition=1, first=10)
    batch += messages("good", [(0.5, 0.5)] * 5, first=10)
    fresh = await runner.__class__(
        runner.client, LAYOUT, runner.handler, runner.script, TOPICS, 3600.0, clock=runner.clock
    ).apply(batch)  # a worker with nothing in memory reads the state first
    after = {k: v for k, v in dump(sync_client).items() if b"{stream:bad}" in k}
    assert after == before, "the refused subject's keys changed"
    assert fresh.ok == 5  # the good stream's events were applied
    assert fresh.dlq == 5  # the bad stream's messages went to the dead-letter outbox
    outbox = LAYOUT.subject("partition", f"{TOPIC}:1").outbox
    errors = [orjson.loads(f[b"headers"])["driftgate-error"] for _, f in sync_client.xrange(outbox)]
    assert len(errors) == 5 and all(
        f"{audit.decode() if isinstance(audit, bytes) else audit}" in e for e in errors
    )
    assert Fence.decode(sync_client.hget(bad_key, f"fence:{TOPIC}:1")) == Fence(0, 10)


@BOTH_REDIS
async def test_bad_input_to_the_write_changes_nothing(
    runner: BatchRunner[Any], sync_client: SyncClient
) -> None:
    await runner.apply(messages("s", [(0.5, 0.5)] * 10))
    keys = LAYOUT.subject("stream", "s")
    before = dump(sync_client)
    rev = int(sync_client.hget(keys.state, "rev"))
    cases = {
        "a fence that moves backwards": {"fences": {f"fence:{TOPIC}:0": "0:3"}},
        "a fence that is not one": {"fences": {f"fence:{TOPIC}:0": "eleven"}},
        "a counter that is not an integer": {"counters": {f"count:{TOPIC}:ok": 1.5}},
        "a maximum that is not a number": {"maxima": {f"last_ts:{TOPIC}": float("nan")}},
        "a digest blob of the wrong size": {"appends": [(keys.seen_bucket(TOPIC, 1), b"1234567")]},
    }
    for what, change in cases.items():
        write = SubjectWrite(keys, rev, state={"state": b"overwritten"})
        for name, value in change.items():
            setattr(write, name, value)
        [outcome] = await runner.script.run([write])
        assert type(outcome).__name__ == "Refused", what
        assert dump(sync_client) == before, f"{what} changed Redis"


@BOTH_REDIS
async def test_fences_never_decrease(runner: BatchRunner[Any], sync_client: SyncClient) -> None:
    rng = np.random.default_rng(14)
    key = LAYOUT.subject("stream", "f").state
    seen: list[Fence] = []
    for _ in range(40):  # deliveries in any order: replays, overlaps, gaps
        first = int(rng.integers(0, 400))
        count = int(rng.integers(1, 60))
        await runner.apply(messages("f", [(0.5, 0.5)] * count, first=first))
        seen.append(Fence.decode(sync_client.hget(key, f"fence:{TOPIC}:0")))
    assert seen == sorted(seen)


class TakingTurns(WriteScript):
    """Writes slowly, counting the writes of one runner in flight at once."""

    def __init__(self, client: Any, url: str) -> None:
        super().__init__(client, url)
        self.in_flight = self.most_in_flight = 0

    async def run(self, writes: list[SubjectWrite]) -> list[Any]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return await super().run(writes)
        finally:
            self.in_flight -= 1


def canary_and_telemetry(
    client: Any, redis_server: RedisServer, clock: Clock, telemetry_script: type[WriteScript]
) -> tuple[BatchRunner[Any], BatchRunner[Any]]:
    """The runners of the canary events and of the telemetry, under the default policy;
    the telemetry's writes go through ``telemetry_script``."""
    policy = Policy()
    canary, telemetry = (
        BatchRunner(client, LAYOUT, handler, script, TOPICS, 3600.0, clock=clock)
        for handler, script in [
            (CanaryHandler(policy), WriteScript(client, redis_server.url)),
            (TelemetryHandler(policy), telemetry_script(client, redis_server.url)),
        ]
    )
    return canary, telemetry


@BOTH_REDIS
async def test_batches_and_clock_ticks_of_one_runner_take_turns(
    client: Any, redis_server: RedisServer, clock: Clock, sync_client: SyncClient
) -> None:
    """The worker ticks on a timer while the agent's batches arrive. Both take subjects
    out of the runner's memory while they wait on Redis: they must not interleave."""
    canary, telemetry = canary_and_telemetry(client, redis_server, clock, TakingTurns)
    deploy = {"event_id": "deploy", "ts": clock(), "agent": "a", "bundle_id": "v2"}
    deploy |= {"action": "deploy", "canary_percent": 10}
    events = [
        {
            "event_id": f"e{i}",
            "ts": clock() + 1000,
            "experiment_id": "a",
            "unit_id": f"u{i}",
            "variant": "canary" if i % 10 == 0 else "control",
            "guardrails": {"toxicity": False, "latency_ms": 300.0},
        }
        for i in range(20)
    ]
    try:
        await canary.apply([RawMessage("canary", 0, 0, encode(deploy))])
        clock.now += 1000  # no canary data for longer than stale_after_seconds: a tick holds
        applied, ticked = await asyncio.gather(
            telemetry.apply(
                [RawMessage("telemetry", 0, i, encode(e)) for i, e in enumerate(events)]
            ),
            telemetry.tick("telemetry"),
        )
    finally:
        await canary.script.aclose()
        await telemetry.script.aclose()
    assert telemetry.script.most_in_flight == 1  # type: ignore[attr-defined]
    # The tick judged the state the batch left: canary data is fresh, nothing to hold.
    assert applied.ok == 20 and ticked.decisions == []
    snapshot = ReadModel(sync_client, LAYOUT).snapshot()
    variants = snapshot.section("experiment")["a"]["experiment"]["variants"]
    assert (variants["canary"]["n"], variants["control"]["n"]) == (2, 18)


@BOTH_REDIS
async def test_a_rollback_shows_in_every_gate_record_of_its_batch(
    client: Any, redis_server: RedisServer, clock: Clock, sync_client: SyncClient
) -> None:
    """The guardrail rolls the canary back within a batch: the records written with it
    already show the agent rolled back (FAIL, recommendation rollback) without another
    event, and the rollback is the agent's last decision: settled, the bundle's gates
    keep the verdicts that announced it (the canary gate no FAIL of its own after it)."""
    canary, telemetry = canary_and_telemetry(client, redis_server, clock, WriteScript)
    deploy = {"event_id": "deploy", "ts": clock(), "agent": "a", "bundle_id": "v2"}
    deploy |= {"action": "deploy", "canary_percent": 10}
    rng = np.random.default_rng(7)
    events = [
        {
            "event_id": f"e{i}",
            "ts": clock(),
            "experiment_id": "a",
            "unit_id": f"u{i}",
            "variant": "canary" if i % 10 == 0 else "control",
            # 20% of the canary's answers are toxic, 0.1% of the control's.
            "guardrails": {
                "toxicity": bool(rng.uniform() < (0.2 if i % 10 == 0 else 0.001)),
                "latency_ms": 300.0,
            },
        }
        for i in range(4000)
    ]
    try:
        await canary.apply([RawMessage("canary", 0, 0, encode(deploy))])
        applied = await telemetry.apply(
            [RawMessage("telemetry", 0, i, encode(e)) for i, e in enumerate(events)]
        )
    finally:
        await canary.script.aclose()
        await telemetry.script.aclose()
    mine = [(d.gate, d.action, d.reason) for d in applied.decisions if d.subject == "a"]
    assert mine[-1:] == [("guardrail", "rollback", "toxicity_rate")], mine
    assert [d for d in mine if d[1] == "rollback"] == mine[-1:]
    snapshot = ReadModel(sync_client, LAYOUT).snapshot()
    gate = snapshot.gate("canary", "a")
    assert gate is not None and gate.verdict != "FAIL" and gate.action == "none"
    agent = agent_status(snapshot, "a")
    assert agent is not None
    assert (agent.phase, agent.verdict, agent.recommendation) == (
        "rolled_back",
        "FAIL",
        "rollback",
    )
