"""The oracle of the reliability tests: what one clean pass over the log gives.

A workload of label, telemetry and canary events (envelopes of many sizes, producer
retries, a few bad elements), produced keyed by subject at a steady rate; and, once a
deployment has been through its faults, the log read back from the broker and folded,
in one pass, by the project's own decoders and estimators into what every subject must
hold: its statistics, its counts, its offset fences. The stored state must equal it:
integers exactly, floats to 1e-9 relative, except the few fields that are by design a
function of when the worker looked (:data:`BATCH_DEPENDENT`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from monitor import Policy
from monitor.gates import decision_record, should_publish
from monitor.pipeline import DeadLetter, DecodedBatch, RawMessage
from monitor.slices import HANDLERS
from monitor.store import KeyLayout, ReadModel, SyncClient
from monitor.store import _keys as fields

from ..integration.conftest import Deployment

INPUTS = ("labels", "telemetry", "canary")
LAYOUT = KeyLayout()

# State fields that depend on where the batches were cut or on the worker's clock, not on
# the events alone: the change detector plugs in the scale estimated before each batch
# (its log-wealth and alarm time), the sample-ratio test keeps the running maximum of its
# e-value over the times it was looked at, and a canary's stage start and last data are
# the worker's wall clock. Everything else must match the oracle.
BATCH_DEPENDENT = frozenset(
    {
        "log_w",
        "alarm_time",
        "alarm_shift",
        "max_log_e_value",
        "stage_started_at",
        "last_data_at",
    }
)
# Paths (suffixes) of fields that hold the worker's clock: when a rollback was announced,
# and the verdicts of that evaluation, which stand for the rolled-back bundle from then on.
CLOCK_PATHS = (".lifecycle.rollback.ts", ".lifecycle.settled")
# Lists that are mappings: a quantile sketch's (bucket, count) pairs.
SKETCH_BUCKETS = (".positive", ".negative")
REL_TOL = 1e-9
ABS_TOL = 1e-12


# --- the workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message to produce: its input topic (short name), key (the subject) and value."""

    topic: str
    key: bytes
    value: bytes


class Workload:
    """Messages for every input topic, keyed by subject, with producer retries (a message
    sent again verbatim), events repeated in a later envelope and a few bad elements.

    Subjects are disjoint between topics (an agent's lifecycle and an experiment's
    telemetry in different topics have no order the oracle could know).
    """

    def __init__(self, seed: int, streams: int = 8, experiments: int = 6, agents: int = 3):
        self.rng = np.random.default_rng(seed)
        self.streams = [f"stream-{i}" for i in range(streams)]
        self.experiments = [f"exp-{i}" for i in range(experiments)]
        self.agents = [f"agent-{i}" for i in range(agents)]
        self.ts = time.time() - 600.0
        self.counter = 0
        self.sent: dict[str, list[Message]] = {topic: [] for topic in INPUTS}
        self.ids: dict[str, set[str]] = {topic: set() for topic in INPUTS}
        # Each subject's latest events, to send one again now and then.
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.lifecycles: dict[str, tuple[str, str]] = {}  # agent -> (bundle, phase)
        self.bad = 0
        """Bad elements sent, a message sent twice counting twice."""
        self._bad_in: dict[bytes, int] = {}

    def messages(self, count: int, envelope: int | None = None) -> list[Message]:
        """``count`` messages; envelopes of ``envelope`` events, or of sizes from 1 to 200."""
        topics = self.rng.choice(INPUTS, size=count, p=[0.6, 0.35, 0.05])
        return [self._message(str(topic), envelope) for topic in topics]

    def _message(self, topic: str, envelope: int | None) -> Message:
        rng = self.rng
        if self.sent[topic] and rng.random() < 0.03:
            # A producer retry: one of the last messages, again.
            again = self.sent[topic][-int(rng.integers(1, min(50, len(self.sent[topic])) + 1))]
            self.sent[topic].append(again)
            self.bad += self._bad_in.get(again.value, 0)
            return again
        if topic == "canary":
            agent = self.agents[int(rng.integers(len(self.agents)))]
            message = Message(topic, agent.encode(), orjson.dumps(self._canary(agent)))
            self.sent[topic].append(message)
            return message
        subjects = self.streams if topic == "labels" else self.experiments
        subject = subjects[int(rng.integers(len(subjects)))]
        size = envelope or int(rng.choice([1, 1, 2, 10, 50, 200]))
        make = self._label if topic == "labels" else self._telemetry
        events: list[Any] = [make(subject) for _ in range(size)]
        recent = self.recent.setdefault(subject, deque(maxlen=1_000))
        if recent and rng.random() < 0.05:
            events.append(recent[int(rng.integers(len(recent)))])  # an event sent again
        bad = size > 1 and rng.random() < 0.05
        if bad:
            events.insert(int(rng.integers(size)), self._bad(subject))
        good = [e for e in events if "event_id" in e]
        self.ids[topic].update(e["event_id"] for e in good)
        recent.extend(good)
        value = orjson.dumps(events if size > 1 or len(events) > 1 else events[0])
        message = Message(topic, subject.encode(), value)
        if bad:
            self._bad_in[value] = 1
            self.bad += 1
        self.sent[topic].append(message)
        return message

    def _next(self) -> tuple[str, float]:
        self.counter += 1
        self.ts += 0.001
        return f"e{self.counter}", self.ts

    def _label(self, stream: str) -> dict[str, Any]:
        event_id, ts = self._next()
        s = float(self.rng.uniform())
        y = None if self.rng.random() < 0.1 else s + float(self.rng.normal(0.0, 0.1))
        return {"event_id": event_id, "ts": ts, "stream": stream, "s": s, "y": y}

    def _telemetry(self, experiment: str) -> dict[str, Any]:
        rng = self.rng
        event_id, ts = self._next()
        outcome = rng.random()
        event: dict[str, Any] = {
            "event_id": event_id,
            "ts": ts,
            "experiment_id": experiment,
            "unit_id": f"u{int(rng.integers(1000))}",
            "variant": "control" if rng.random() < 0.5 else "treatment",
            "primary_outcome": (
                None if outcome < 0.1 else bool(outcome < 0.3) if outcome < 0.5 else outcome
            ),
            "guardrails": {
                "toxicity": bool(rng.random() < 0.01),
                "pii": bool(rng.random() < 0.001),
                "latency_ms": float(rng.lognormal(6.0, 0.5)),
                "unit_cost": float(rng.uniform(0.001, 0.02)),
            },
            "covariates": {
                "pre_period": float(rng.normal()),
                "segment": str(rng.choice(["a", "b", "c"])),
            },
            "sec_outcomes": {"ctr": float(rng.uniform())},
        }
        if rng.random() < 0.05:
            event["environment"] = "staging"
        return event

    def _canary(self, agent: str) -> dict[str, Any]:
        event_id, ts = self._next()
        bundle, phase = self.lifecycles.get(agent, ("", "none"))
        choices = {
            "none": ["deploy"],
            "monitoring": ["pause", "promote", "deploy"],
            "paused": ["resume", "rollback"],
            "rolled_back": ["deploy"],
        }[phase]
        action = str(self.rng.choice(choices))
        event: dict[str, Any] = {"event_id": event_id, "ts": ts, "agent": agent, "action": action}
        if action == "deploy":
            bundle = f"{agent}-b{self.counter}"
            event["canary_percent"] = 10
            phase = "monitoring"
        elif action == "promote":
            event["canary_percent"] = 50
        elif action == "pause":
            phase = "paused"
        elif action == "resume":
            phase = "monitoring"
        elif action == "rollback":
            phase = "rolled_back"
        event["bundle_id"] = bundle
        self.lifecycles[agent] = (bundle, phase)
        self.ids["canary"].add(event_id)
        return event

    def _bad(self, subject: str) -> dict[str, Any]:
        _, ts = self._next()
        return {"stream": subject, "experiment_id": subject, "ts": ts, "s": "not a number"}

    def unique_events(self) -> dict[str, int]:
        """Distinct valid events produced, per topic."""
        return {topic: len(ids) for topic, ids in self.ids.items()}


def produce(deployment: Deployment, messages: Sequence[Message]) -> None:
    """Send ``messages`` at once, each to its topic, keyed by its subject."""
    for topic in INPUTS:
        mine = [m for m in messages if m.topic == topic]
        if mine:
            deployment.produce(topic, [m.value for m in mine], [m.key for m in mine])


class LoadProducer(threading.Thread):
    """Produces ``messages`` from a thread at ``per_second``, keyed by subject.

    ``hold`` stops it between chunks (``release`` lets it go on); a send the broker does not
    answer waits (aiokafka retries it), so a message may reach the log twice: the oracle
    reads the log, not this list.
    """

    def __init__(self, deployment: Deployment, messages: Sequence[Message], per_second: float):
        super().__init__(daemon=True)
        self.deployment = deployment
        self.messages = list(messages)
        self.per_second = per_second
        self.sent = 0
        self.error: BaseException | None = None
        self._go = threading.Event()
        self._go.set()

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.deployment.kafka,
            linger_ms=5,
            acks="all",
            max_request_size=8_388_608,
        )
        await producer.start()
        try:
            chunk = max(1, round(self.per_second * 0.05))
            tick = chunk / self.per_second
            started = time.monotonic()
            for first in range(0, len(self.messages), chunk):
                if not self._go.is_set():
                    await asyncio.to_thread(self._go.wait)
                pending = [
                    await producer.send(self.deployment.topic(m.topic), m.value, key=m.key)
                    for m in self.messages[first : first + chunk]
                ]
                await asyncio.gather(*pending)
                self.sent = min(first + chunk, len(self.messages))
                behind = started + (first // chunk + 1) * tick - time.monotonic()
                await asyncio.sleep(max(0.0, behind))
        finally:
            await producer.stop()

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error


# --- the log, read back ---------------------------------------------------------------------


@dataclass
class Log:
    """Every message of some topics, in (partition, offset) order, and each log's end."""

    records: dict[str, list[RawMessage]] = field(default_factory=dict)
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    ends: dict[str, dict[int, int]] = field(default_factory=dict)


def read_log(bootstrap: str, topics: Sequence[str]) -> Log:
    return asyncio.run(_read_log(bootstrap, topics))


async def _read_log(bootstrap: str, topics: Sequence[str]) -> Log:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    log = Log()
    try:
        partitions = []
        for topic in topics:
            known = await consumer._client._wait_on_metadata(topic)  # creates it if new
            assert known, topic
            partitions += [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        rows: dict[str, list[tuple[int, int, RawMessage, dict[str, str]]]] = {t: [] for t in topics}
        deadline = time.monotonic() + 60

        # The end of each log is the high watermark of the fetch responses: the embedded
        # broker answers ListOffsets (``end_offsets``) with the last batch's first offset.
        async def behind() -> list[TopicPartition]:
            return [
                tp
                for tp in partitions
                if (end := consumer.highwater(tp)) is None or await consumer.position(tp) < end
            ]

        while await behind():
            assert time.monotonic() < deadline, "could not read the log to its end"
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                for m in messages:
                    headers = {name: value.decode() for name, value in m.headers}
                    raw = RawMessage(tp.topic, tp.partition, m.offset, m.value)
                    rows[tp.topic].append((tp.partition, m.offset, raw, headers))
        for topic, found in rows.items():
            found.sort(key=lambda row: row[:2])
            log.records[topic] = [row[2] for row in found]
            log.headers[topic] = [row[3] for row in found]
            log.ends[topic] = {
                tp.partition: consumer.highwater(tp) for tp in partitions if tp.topic == topic
            }
    finally:
        await consumer.stop()
    return log


def committed_offsets(bootstrap: str, group: str, log: Log) -> dict[tuple[str, int], int]:
    """The group's committed offsets of the partitions of ``log`` (OffsetFetch, without
    joining the group; -1 where none)."""

    async def fetch() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            found = {}
            for topic, ends in log.ends.items():
                for partition in ends:
                    offset = await consumer.committed(TopicPartition(topic, partition))
                    found[(topic, partition)] = -1 if offset is None else offset
            return found
        finally:
            await consumer.stop()

    return asyncio.run(fetch())


# --- the oracle ---------------------------------------------------------------------------


@dataclass
class Expected:
    """What every subject must hold after one clean pass over the log."""

    states: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(kind, subject) -> its state document (``to_state``)."""
    counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """(kind, subject) -> ``count:{topic}:{outcome}`` -> events (nonzero only)."""
    fences: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(kind, subject) -> ``fence:{topic}:{partition}`` -> ``epoch:offset``."""
    audited: dict[str, Counter[str]] = field(default_factory=dict)
    """Agent -> event id -> lifecycle entries its audit log must hold (one each)."""
    ok: dict[str, int] = field(default_factory=dict)
    """Full topic -> distinct valid events."""
    duplicates: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    letters: Counter[tuple[str, int, int, bytes]] = field(default_factory=Counter)
    """(source topic, partition, offset, payload) of every dead letter."""
    ends: dict[str, dict[int, int]] = field(default_factory=dict)


def one_clean_pass(log: Log, topics: dict[str, str], now: float | None = None) -> Expected:
    """Fold the log (``topics``: short name -> full name) in one pass: each topic's
    messages decoded as one batch, each subject's events deduplicated by id (the first
    in offset order counts) and folded into fresh state by one ``update``."""
    now = time.time() if now is None else now
    expected = Expected(ends=dict(log.ends))
    for short, full in topics.items():
        handler = HANDLERS[short](Policy())
        model = handler.model
        decoded = _decode(handler, log.records[full])
        expected.ok[full] = expected.duplicates[full] = 0
        for name, events in decoded.subjects.items():
            key = (model.kind, name)
            assert key not in expected.states, f"{key} is fed by two topics: no order to check"
            _, first = np.unique(events.digests, return_index=True)
            fresh = events.take(np.sort(first))
            state = model.load(name, dict.fromkeys(model.stored_fields))
            audit = handler.update(name, state, fresh, now)
            # What the worker's write records of the decisions it publishes (a canary's
            # rollback, announced once: its decision id goes into the lifecycle).
            judgement = model.evaluate(name, state, now)
            decisions = [
                decision_record(v, now)
                for v in judgement.verdicts
                if should_publish(None, v.verdict, action=v.action)
            ]
            model.settle(name, state, judgement, decisions)
            expected.states[key] = orjson.loads(model.dump(state)[fields.STATE])
            counts = {fields.count(full, "ok"): len(fresh)}
            if len(events) > len(fresh):
                counts[fields.count(full, "duplicate")] = len(events) - len(fresh)
            expected.counts[key] = counts
            expected.fences[key] = _fences(full, events.partitions, events.offsets)
            if audit:
                expected.audited[name] = Counter(entry["event_id"] for entry in audit)
            expected.ok[full] += len(fresh)
            expected.duplicates[full] += len(events) - len(fresh)
        expected.dead_letters[full] = len(decoded.dead_letters)
        expected.letters.update(
            (full, letter.partition, letter.offset, letter.payload)
            for letter in decoded.dead_letters
        )
        by_partition: dict[int, list[int]] = {}
        for letter in decoded.dead_letters:
            by_partition.setdefault(letter.partition, []).append(letter.offset)
        for partition, offsets in by_partition.items():
            key = ("partition", KeyLayout.partition_subject(full, partition))
            expected.counts[key] = {fields.count(full, "dlq"): len(offsets)}
            expected.fences[key] = {fields.fence(full, partition): f"0:{max(offsets) + 1}"}
    return expected


# A message with more bad elements than this goes to the dead-letter topic whole, once.
LETTERS_PER_MESSAGE = 1_000


def _decode(handler: Any, records: list[RawMessage]) -> DecodedBatch:
    """The batch as the contract wants it decoded: a message the decoder cannot survive
    (it raises) is one dead letter, whole; so is a message of more than
    LETTERS_PER_MESSAGE bad elements (its good ones still count)."""
    try:
        decoded: DecodedBatch = handler.decode(records)
    except Exception:  # noqa: BLE001 - the message that raised is found below
        survivors, whole = [], []
        for record in records:
            try:
                handler.decode([record])
            except Exception as exc:  # noqa: BLE001 - that message's dead letter
                whole.append(DeadLetter(record.value or b"", repr(exc), *_where(record)))
            else:
                survivors.append(record)
        decoded = handler.decode(survivors)
        decoded.dead_letters += whole
    per_message = Counter((d.partition, d.offset) for d in decoded.dead_letters)
    crowded = {where for where, n in per_message.items() if n > LETTERS_PER_MESSAGE}
    if crowded:
        decoded.dead_letters = [
            d for d in decoded.dead_letters if (d.partition, d.offset) not in crowded
        ] + [
            DeadLetter(r.value or b"", "crowded", *_where(r))
            for r in records
            if _where(r) in crowded
        ]
    return decoded


def _where(record: RawMessage) -> tuple[int, int]:
    return record.partition, record.offset


def _fences(topic: str, partitions: np.ndarray, offsets: np.ndarray) -> dict[str, str]:
    return {
        fields.fence(topic, p): f"0:{int(offsets[partitions == p].max()) + 1}"
        for p in np.unique(partitions).tolist()
    }


# --- comparing ------------------------------------------------------------------------------


def differences(expected: Any, actual: Any, path: str = "$") -> Iterator[str]:
    """Where ``actual`` differs from ``expected``: integers exactly, floats to 1e-9
    relative, the :data:`BATCH_DEPENDENT` fields left out."""
    if path.endswith(SKETCH_BUCKETS) and isinstance(expected, list) and isinstance(actual, list):
        # A sketch's buckets, listed in the order they first appeared: a mapping.
        yield from differences(dict(map(tuple, expected)), dict(map(tuple, actual)), path)
    elif (
        _restarting(expected)
        and _restarting(actual)
        and (expected["since_change"] is not None or actual["since_change"] is not None)
    ):
        yield from _restarted_differences(expected, actual, path)
    elif isinstance(expected, dict) and isinstance(actual, dict):

        def compared(key: Any) -> bool:
            return key not in BATCH_DEPENDENT and not f"{path}.{key}".endswith(CLOCK_PATHS)

        mine = {k for k in expected if compared(k)}
        theirs = {k for k in actual if compared(k)}
        if mine != theirs:
            yield f"{path}: keys {sorted(mine ^ theirs)} on one side only"
        for key in sorted(mine & theirs):
            yield from differences(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            yield f"{path}: {len(expected)} items expected, {len(actual)} stored"
        else:
            for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
                yield from differences(e, a, f"{path}[{i}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        numbers = all(type(v) in (int, float) for v in (expected, actual))
        if not (numbers and math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL)):
            yield f"{path}: expected {expected!r}, stored {actual!r}"
    elif type(expected) is not type(actual) or expected != actual:
        yield f"{path}: expected {expected!r}, stored {actual!r}"


def _restarting(document: Any) -> bool:
    """Whether ``document`` is a restarting mean sequence's state."""
    return isinstance(document, dict) and {"all_time", "detector", "since_change"} <= set(document)


def _restarted_differences(expected: Any, actual: Any, path: str) -> Iterator[str]:
    """A mean sequence whose change detector alarmed on one side only: the detector plugs
    in the scale estimated before each batch, so where the batches were cut can decide
    an alarm. The all-time statistics must still match, and the values after the alarm
    must be the last ones, each once."""
    yield from differences(expected["all_time"], actual["all_time"], f"{path}.all_time")
    for side, document in (("expected", expected), ("stored", actual)):
        total = document["all_time"]["moments"]["n"]
        watched = document["detector"]["n"]
        if document["since_change"] is None:
            consistent = watched == total
        else:
            after = document["since_change"]["moments"]["n"]
            consistent = document["change_at"] + after == total and watched <= total
        if not consistent:
            yield f"{path}: {side} detector and restart do not add up to {total} values"


@dataclass
class Stored:
    states: dict[tuple[str, str], Any]
    counts: dict[tuple[str, str], dict[str, int]]
    fences: dict[tuple[str, str], dict[str, str]]
    audited: dict[str, Counter[str]]


def read_stored(client: SyncClient) -> Stored:
    """Every subject's state document, counters and fences, and the agents' lifecycle
    entries in their audit logs."""
    names = [
        (kind, member.decode())
        for kind in ("stream", "experiment", "partition")
        for member in client.smembers(LAYOUT.registry(kind))  # type: ignore[union-attr]
    ]
    pipe = client.pipeline(transaction=False)
    for kind, name in names:
        keys = LAYOUT.subject(kind, name)
        pipe.hgetall(keys.state)
        pipe.hgetall(keys.view)
        pipe.xrange(keys.audit)
    replies = iter(pipe.execute())
    stored = Stored({}, {}, {}, {})
    for kind, name in names:
        state, view, audit = next(replies), next(replies), next(replies)
        key = (kind, name)
        if kind != "partition":
            stored.states[key] = orjson.loads(state[fields.STATE.encode()])
        stored.counts[key] = {
            f.decode(): int(v) for f, v in view.items() if f.startswith(b"count:")
        }
        stored.fences[key] = {
            f.decode(): v.decode() for f, v in state.items() if f.startswith(b"fence:")
        }
        entries = [orjson.loads(fields.decode_audit_entry(e)) for _, e in audit]
        lifecycle = [e["event_id"] for e in entries if e.get("kind") == "canary"]
        if lifecycle:
            stored.audited[name] = Counter(lifecycle)
    return stored


def mismatches(expected: Expected, stored: Stored) -> list[str]:
    """Every way the stored state differs from the oracle's (empty: it matches)."""
    found: list[str] = []
    if set(stored.states) != set(expected.states):
        found.append(f"subjects: {sorted(set(stored.states) ^ set(expected.states))}")
    for what, mine, theirs in (
        ("counts", expected.counts, stored.counts),
        ("fences", expected.fences, stored.fences),
        ("audit", expected.audited, stored.audited),
    ):
        found += [
            f"{what} of {key}: expected {mine.get(key)}, stored {theirs.get(key)}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key, {}) != theirs.get(key, {})
        ]
    for key in sorted(set(stored.states) & set(expected.states)):
        found += [f"{key} {d}" for d in differences(expected.states[key], stored.states[key])]
    return found


def next_offsets(stored: Stored) -> dict[tuple[str, int], int]:
    """Per topic and partition, the highest next offset any subject stored."""
    highest: dict[tuple[str, int], int] = {}
    for fences in stored.fences.values():
        for name, raw in fences.items():
            _, topic, partition = name.split(":")
            fence = fields.Fence.decode(raw)
            assert fence is not None
            where = (topic, int(partition))
            highest[where] = max(highest.get(where, 0), fence.offset)
    return highest


# --- the checks -------------------------------------------------------------------------------


def check_against_oracle(
    deployment: Deployment, workload: Workload | None = None, timeout: float = 120.0
) -> Expected:
    """Wait until the deployment has taken in the whole log, then assert that what it
    stored equals one clean pass over the log, that per partition the highest stored
    next offset is the log's end, and that the group's committed offsets are there too.
    Returns the oracle."""
    topics = {short: deployment.topic(short) for short in INPUTS}
    log = read_log(deployment.kafka, list(topics.values()))
    expected = one_clean_pass(log, topics)
    if workload is not None:  # nothing was lost on the way in
        produced = workload.unique_events()
        assert {full: expected.ok[full] for full in topics.values()} == {
            topics[short]: n for short, n in produced.items()
        }
        assert sum(expected.dead_letters.values()) == workload.bad
    client = deployment.redis_server.client()
    try:

        def taken_in() -> bool:
            events = deployment.snapshot().events
            return all(
                events.get((full, "ok"), 0) >= expected.ok[full]
                and events.get((full, "dlq"), 0) >= expected.dead_letters[full]
                for full in topics.values()
            )

        deployment.wait_for(taken_in, timeout, "the log to be taken in")
        time.sleep(2.0)  # a late double count would show now
        stored = read_stored(client)
    finally:
        client.close()
    problems = mismatches(expected, stored)
    assert not problems, "\n".join(problems[:40])
    ends = {(t, p): end for t, by in log.ends.items() for p, end in by.items() if end}
    assert next_offsets(stored) == ends
    group = deployment.prefix.rstrip(".")
    deployment.wait_for(
        lambda: (
            {
                where: offset
                for where, offset in committed_offsets(deployment.kafka, group, log).items()
                if where in ends
            }
            == ends
        ),
        30,
        "the group's committed offsets to reach the log end",
    )
    return expected


def reconcile_outputs(deployment: Deployment, expected: Expected, timeout: float = 60.0) -> int:
    """Once every outbox is empty: each decision in an audit log reached the decisions
    topic, nothing else did, and each dead letter reached the dead-letter topic once at
    least, with its reason. Returns how many records either topic holds twice (only a
    crash between Kafka's acknowledgement and Redis's can make one, with the same
    decision_id)."""
    client = deployment.redis_server.client()
    try:
        deployment.wait_for(lambda: outbox_entries(client) == 0, timeout, "the outboxes to drain")
        audit = ReadModel(client, LAYOUT).audit()
        decided = {entry["decision_id"] for entry in audit if "kind" not in entry}
    finally:
        client.close()
    decisions, dlq = deployment.topic("decisions"), deployment.topic("dlq")
    log = read_log(deployment.kafka, [decisions, dlq])
    published = Counter(orjson.loads(r.value)["decision_id"] for r in log.records[decisions])
    assert set(published) == decided
    letters: Counter[tuple[str, int, int, bytes]] = Counter()
    for record, headers in zip(log.records[dlq], log.headers[dlq], strict=True):
        assert headers["driftgate-error"].split(": ", 1)[0].endswith("Error"), headers
        where = (
            headers["driftgate-source-topic"],
            int(headers["driftgate-source-partition"]),
            int(headers["driftgate-source-offset"]),
            record.value or b"",
        )
        letters[where] += 1
    missing = set(expected.letters) - set(letters)
    extra = set(letters) - set(expected.letters)
    assert not missing and not extra, f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
    return sum(published.values()) - len(published) + sum(letters.values()) - len(letters)


def outbox_entries(client: SyncClient) -> int:
    names = [
        LAYOUT.subject(kind, member.decode()).outbox
        for kind in ("stream", "experiment", "partition")
        for member in client.smembers(LAYOUT.registry(kind))  # type: ignore[union-attr]
    ]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xlen(name)
    return sum(pipe.execute())
