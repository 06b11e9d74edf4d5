"""A subject kind driftgate has never heard of, in one module: queue depths.

Everything of the kind is here: its event, state, model and gate, its handler, its policy
section, its status lines and ``status --json`` key, its Prometheus family, its HTTP API
collection, its section of ``report`` and a command. The last line registers it; a worker or a
command imports the module when ``DRIFTGATE_SUBJECTS`` names it
(``tests.integration.queue_subject``), as a deployment would name its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from prometheus_client.core import GaugeMetricFamily, Metric

from estimators import Moments
from monitor.config import ConfigError, Policy, PolicySection
from monitor.gates import Verdict
from monitor.pipeline import DecodedBatch, Judgement, RawMessage, SubjectEvents
from monitor.presentation._memo import Heading, Memo, Paragraph
from monitor.slices import REGISTRY, ApiRoute, SubjectKind
from monitor.store import Snapshot
from monitor.store import _keys as fields
from monitor.subjects._decode import EventRows, MessageDecoder

__all__ = ["QUEUES", "QueueHandler", "QueuePolicy"]

KIND = "queue"
GATE = "queue_depth"


# --- the policy section ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePolicy:
    """``queues:`` of the policy file: the depth past which a queue fails its gate."""

    depth_max: float = 100.0


def check_queue_policy(policy: QueuePolicy) -> None:
    if policy.depth_max <= 0:
        raise ConfigError(f"queues.depth_max must be positive, got {policy.depth_max}")


# --- the events, the state, the model and its gate ------------------------------------------


class QueueEvent(msgspec.Struct, forbid_unknown_fields=True):
    event_id: str
    ts: float
    queue: str
    depth: float


@dataclass
class QueueState:
    depth: Moments = field(default_factory=Moments)
    deepest: float = 0.0


class QueueModel:
    kind: str = KIND
    gates: tuple[str, ...] = (GATE,)
    stored_fields: tuple[str, ...] = (fields.STATE,)
    tick_seconds: float | None = None

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy

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
        deep = state.deepest > self.policy.depth_max
        evidence = {
            "n": state.depth.n,
            "estimate": state.deepest,
            "ci_low": None,
            "ci_high": None,
            "threshold": self.policy.depth_max,
            "method": "maximum",
        }
        verdict, action, reason = ("FAIL", "alert", "too_deep") if deep else ("PASS", "none", "")
        return Judgement([Verdict(GATE, subject, verdict, action, reason, evidence)])

    def view(self, subject: str, state: QueueState, judgement: Judgement) -> dict[str, Any]:
        verdict = judgement.verdicts[0].verdict
        return {"n": state.depth.n, "mean_depth": state.depth.mean, "verdict": verdict}

    def settle(
        self, subject: str, state: QueueState, judgement: Judgement, decisions: Sequence[Any]
    ) -> bool:
        return False

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        return False


# --- the handler ----------------------------------------------------------------------------


class QueueHandler:
    topic: str = "queues"

    def __init__(self, policy: Policy) -> None:
        self.model = QueueModel(policy.section("queues"))
        self.decoder = MessageDecoder(QueueEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, "queue", EventRows)  # the subject field

    def update(
        self, subject: str, state: QueueState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        depths = [event.depth for event in events.columns.events]
        state.depth.update(depths)
        state.deepest = max(state.deepest, *depths)
        return []


# --- what people and machines read ----------------------------------------------------------


def status(snapshot: Snapshot, now: float | None) -> dict[str, Any]:
    return {"queues": snapshot.section(KIND)}


def status_lines(document: Mapping[str, Any]) -> list[str]:
    return [
        f"queue {name}: {row['verdict']}, mean depth {row['mean_depth']:g} over {row['n']} readings"
        for name, row in document["queues"].items()
    ]


def metrics(snapshot: Snapshot) -> Iterator[Metric]:
    mean = GaugeMetricFamily(
        "driftgate_queue_depth_mean", "Mean depth of the queue's readings.", labels=["queue"]
    )
    for name, view in sorted(snapshot.section(KIND).items()):
        mean.add_metric([name], view["mean_depth"])
    yield mean


def api_answer(snapshot: Snapshot, name: str) -> dict[str, Any] | None:
    view = snapshot.section(KIND).get(name)
    if view is None:
        return None
    return {"queue": name, **view, "gates": snapshot.gates_of(KIND, name)}


def report(
    memo: Memo, snapshot: Snapshot, name: str, entries: list[dict[str, Any]], now: float
) -> None:
    view = snapshot.section(KIND)[name]
    memo.blocks += [
        Heading(f"Queue {name}"),
        Paragraph(
            f"Verdict: {view['verdict']}. Mean depth {view['mean_depth']:g} over "
            f"{view['n']} readings."
        ),
    ]


def cmd_deepest(args: argparse.Namespace) -> int:
    """``driftgate deepest-queue``: the queue of the deepest mean."""
    from monitor.cli._common import load_settings, open_read_model

    views = open_read_model(load_settings(args)).snapshot().section(KIND)
    if not views:
        print("no queue yet")
        return 0
    name, view = max(views.items(), key=lambda item: item[1]["mean_depth"])
    print(f"{name} {view['mean_depth']:g}")
    return 0


def commands(cli: Any) -> None:
    examples = ("driftgate deepest-queue",)
    deepest = cli.add("deepest-queue", "the queue of the deepest mean", cmd_deepest, examples)
    cli.connection_flags(deepest, kafka=False, redis_=True)


QUEUES = SubjectKind(
    name="queues",
    kinds=(KIND,),
    handlers={QueueHandler.topic: QueueHandler},
    policy=(PolicySection("queues", QueuePolicy, check_queue_policy),),
    status=status,
    status_lines=status_lines,
    metrics=metrics,
    api={"queues": ApiRoute(KIND, "queue", api_answer)},
    report=report,
    report_nouns=("queue",),
    commands=commands,
)

REGISTRY.register(QUEUES)
