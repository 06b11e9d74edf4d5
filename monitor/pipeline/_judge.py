"""Judging a subject and deciding what to publish: pure, shared by the worker, replay and
``calibrate``.

The batch runner writes what :func:`judge_subject` returns (outbox, audit log, the gates'
published records) in the subject's atomic write; ``driftgate replay`` keeps it in memory.
Both get the same decisions from the same state, because both call this. A gate's
decision and published record are made by :func:`publish` only, and its gate record by
:func:`gate_records` only: the runner, replay and a calibrator's activation all use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..events._decisions import Decision, GateRecord, Published
from ..gates import Verdict, decision_record, should_publish
from ._types import Judgement, SubjectModel

__all__ = ["Judged", "gate_records", "judge_subject", "publish", "publish_changes"]


@dataclass
class Judged:
    """One evaluation of a subject: its judgement (the verdicts and what the view shows
    with them), each gate's published record after it, the decisions it published (in
    order) and whether settling them changed the state."""

    judgement: Judgement
    published: dict[str, Published]
    decisions: list[Decision]
    settled: bool

    @property
    def verdicts(self) -> list[Verdict]:
        return self.judgement.verdicts


def publish(verdict: Verdict, now: float) -> tuple[Published, Decision]:
    """The decision that publishes ``verdict`` now, and the gate's published record after
    it."""
    decision = decision_record(verdict, now)
    return Published.of(decision), decision


def publish_changes(
    published: Mapping[str, Published], verdicts: list[Verdict], now: float
) -> tuple[dict[str, Published], list[Decision]]:
    """A decision for each verdict that changed or escalated its action
    (:func:`~monitor.gates.should_publish`), and the gates' published records after them."""
    after = dict(published)
    decisions = []
    for verdict in verdicts:
        last = after.get(verdict.key)
        if not should_publish(
            last.verdict if last else None,
            verdict.verdict,
            last_action=last.action if last else "none",
            action=verdict.action,
        ):
            continue
        after[verdict.key], decision = publish(verdict, now)
        decisions.append(decision)
    return after, decisions


def judge_subject(
    model: SubjectModel[Any],
    name: str,
    state: Any,
    published: Mapping[str, Published],
    now: float,
) -> Judged:
    """Evaluate the gates, decide what to publish and let the model settle it.

    A settled decision changes what the gates see (a canary rolled back by its guardrail
    is no longer live): the gates are judged once more, so that what is recorded now
    already shows it, rather than after the subject's next event."""
    judgement = model.evaluate(name, state, now)
    after, decisions = publish_changes(published, judgement.verdicts, now)
    settled = model.settle(name, state, judgement, decisions)
    if settled:
        judgement = model.evaluate(name, state, now)
        after, more = publish_changes(after, judgement.verdicts, now)
        model.settle(name, state, judgement, more)
        decisions += more
    return Judged(judgement, after, decisions, settled)


def gate_records(
    verdicts: list[Verdict], published: Mapping[str, Published], now: float
) -> dict[str, GateRecord]:
    """The view of each gate: the latest verdict and the last decision published."""
    records = {}
    for verdict in verdicts:
        last = published.get(verdict.key)
        records[verdict.key] = GateRecord(
            verdict.gate,
            verdict.verdict,
            verdict.action,
            verdict.reason,
            verdict.evidence,
            now,
            *(
                (last.decision_id, last.verdict, last.action, last.reason, last.ts)
                if last is not None
                else ()
            ),
        )
    return records
