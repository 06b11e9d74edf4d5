"""Adding a subject is a handler file and a registration, nothing else.

The handler below watches queue depths: a kind of subject ("queue") that the store, the
read model and the outbox have never heard of. Registered in ``HANDLERS``, it runs on the
batch runner as the built-in ones do (fences, duplicates, the atomic write, the outbox),
and its verdicts reach the read model, the HTTP API's gates and the decisions topic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import pytest

from estimators import Moments
from monitor import Policy
from monitor.config import Settings
from monitor.events._decisions import Decision
from monitor.gates import Verdict
from monitor.pipeline import (
    BatchRunner,
    DecodedBatch,
    Judgement,
    RawMessage,
    SubjectEvents,
    TopicNames,
    WriteScript,
)
from monitor.pipeline._outbox import OutboxDrainer
from monitor.runtime._kafka import start_producer
from monitor.store import KeyLayout, ReadModel, connect_async
from monitor.store import _keys as fields
from monitor.subjects import HANDLERS
from monitor.subjects._decode import EventRows, MessageDecoder

from .conftest import BOTH_REDIS, RedisServer, consume, encode

pytestmark = pytest.mark.integration

LAYOUT = KeyLayout()
DEPTH_MAX = 100.0
NOW = 1.7e9


# --- the handler file -----------------------------------------------------------------------


class QueueEvent(msgspec.Struct, forbid_unknown_fields=True):
    event_id: str
    ts: float
    queue: str
    depth: float


@dataclass
class QueueState:
    depth: Moments = field(default_factory=Moments)
    deepest: float = 0.0


class QueueView(msgspec.Struct):
    n: int
    mean_depth: float
    verdict: str


class QueueModel:
    kind: str = "queue"
    gates: tuple[str, ...] = ("queue_depth",)
    stored_fields: tuple[str, ...] = (fields.STATE,)
    tick_seconds: float | None = None

    def load(self, subject: str, stored: Mapping[str, bytes | None]) -> QueueState:
        raw = stored[fields.STATE]
        if not raw:
            return QueueState()
        document = orjson.loads(raw)
        return QueueState(Moments.from_state(document["depth"]), document["deepest"])

    def dump(self, state: QueueState) -> dict[str, bytes | str]:
        document = {"depth": state.depth.to_state(), "deepest": state.deepest}
        return {fields.STATE: orjson.dumps(document)}

    def evaluate(self, subject: str, state: QueueState, now: float) -> Judgement:
        deep = state.deepest > DEPTH_MAX
        evidence = {
            "n": state.depth.n,
            "estimate": state.deepest,
            "ci_low": None,
            "ci_high": None,
            "threshold": DEPTH_MAX,
            "method": "maximum",
        }
        verdict, action, reason = ("FAIL", "alert", "too_deep") if deep else ("PASS", "none", "")
        return Judgement([Verdict("queue_depth", subject, verdict, action, reason, evidence)])

    def view(self, subject: str, state: QueueState, judgement: Judgement) -> QueueView:
        return QueueView(state.depth.n, state.depth.mean, judgement.verdicts[0].verdict)

    def settle(
        self,
        subject: str,
        state: QueueState,
        judgement: Judgement,
        decisions: Sequence[Decision],
    ) -> bool:
        return False

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        return False


class QueueHandler:
    topic: str = "queues"

    def __init__(self, policy: Policy) -> None:
        self.model = QueueModel()
        self.decoder = MessageDecoder(QueueEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, "queue", EventRows)

    def update(
        self, subject: str, state: QueueState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        depths = [event.depth for event in events.columns.events]
        state.depth.update(depths)
        state.deepest = max(state.deepest, *depths)
        return []


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HANDLERS, QueueHandler.topic, QueueHandler)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect_async(redis_server.url, redis_server.cluster)
    yield redis
    await redis.aclose()


def queue_batch(offset: int = 0) -> list[RawMessage]:
    events = [
        {"event_id": f"{queue}-{i}", "ts": NOW, "queue": queue, "depth": depth}
        for queue, depth in (("orders", 12.0), ("refunds", 480.0))
        for i in range(3)
    ]
    return [RawMessage("queues", 0, offset + i, encode(e)) for i, e in enumerate(events)]


@BOTH_REDIS
@pytest.mark.usefixtures("registered")
async def test_a_registered_handler_of_a_new_kind_runs_end_to_end(
    client: Any, redis_server: RedisServer, kafka_bootstrap: str
) -> None:
    prefix = f"q{uuid.uuid4().hex[:8]}."
    topics = TopicNames(f"{prefix}decisions", f"{prefix}dlq")
    script = WriteScript(client, redis_server.url)
    runner = BatchRunner(client, LAYOUT, HANDLERS["queues"](Policy()), script, topics, 3600.0)
    try:
        first = await runner.apply(queue_batch())
        replay = await runner.apply(queue_batch())  # the same offsets: below the fences
    finally:
        await script.aclose()
    assert (first.ok, replay.ok, replay.skipped) == (6, 0, 6)
    assert [(d.gate, d.subject, d.verdict) for d in first.decisions] == [
        ("queue_depth", "refunds", "FAIL")
    ]

    read_model = ReadModel(redis_server.client(), LAYOUT)
    assert "queue" in read_model.kinds()
    snapshot = read_model.snapshot()
    assert snapshot.section("queue") == {
        "orders": {"n": 3, "mean_depth": 12.0, "verdict": "PASS"},
        "refunds": {"n": 3, "mean_depth": 480.0, "verdict": "FAIL"},
    }
    gate = snapshot.gate("queue_depth", "refunds")
    assert gate is not None and (gate["verdict"], gate["kind"]) == ("FAIL", "queue")

    producer = await start_producer(Settings(kafka_bootstrap=kafka_bootstrap))

    async def the_producer() -> Any:
        return producer

    try:
        sent = await OutboxDrainer(client, LAYOUT, the_producer).sweep()
    finally:
        await producer.stop()
    assert sent == 1
    [record] = await consume(kafka_bootstrap, topics.decisions, 1, 20.0)
    assert orjson.loads(record.value)["decision_id"] == first.decisions[0].decision_id
