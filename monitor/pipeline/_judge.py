"""Judging a subject and deciding what to publish: pure, shared by the worker and replay.

The batch runner writes what :func:`judge_subject` returns (outbox, audit log, the gates'
published records) in the subject's atomic write; ``driftgate replay`` keeps it in memory.
Both get the same decisions from the same state, because both call this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..gates import Verdict, decision_record, should_publish
from ._types import SubjectModel

__all__ = ["Judged", "gate_records", "judge_subject", "publish_changes"]


@dataclass
class Judged:
    """One evaluation of a subject: its verdicts, each gate's published record after it,
    the decisions it published (in order) and whether settling them changed the state."""

    verdicts: list[Verdict]
    published: dict[str, dict[str, Any]]
    decisions: list[dict[str, Any]]
    settled: bool


def publish_changes(
    published: Mapping[str, dict[str, Any]], verdicts: list[Verdict], now: float
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """A decision for each verdict that changed or escalated its action
    (:func:`~monitor.gates.should_publish`), and the gates' published records after them."""
    after = dict(published)
    decisions = []
    for verdict in verdicts:
        last = after.get(verdict.key)
        if not should_publish(
            last["verdict"] if last else None,
            verdict.verdict,
            last_action=last.get("action", "none") if last else "none",
            action=verdict.action,
        ):
            continue
        decision = decision_record(verdict, now)
        after[verdict.key] = {
            "verdict": verdict.verdict,
            "action": verdict.action,
            "reason": verdict.reason,
            "decision_id": decision["decision_id"],
            "ts": decision["ts"],
        }
        decisions.append(decision)
    return after, decisions


def judge_subject(
    model: SubjectModel[Any],
    name: str,
    state: Any,
    published: Mapping[str, dict[str, Any]],
    now: float,
) -> Judged:
    """Evaluate the gates, decide what to publish and let the model settle it.

    A settled decision changes what the gates see (a canary rolled back by its guardrail
    is no longer live): the gates are judged once more, so that what is recorded now
    already shows it, rather than after the subject's next event."""
    verdicts = model.evaluate(name, state, now)
    after, decisions = publish_changes(published, verdicts, now)
    settled = model.settle(name, state, decisions)
    if settled:
        verdicts = model.evaluate(name, state, now)
        after, more = publish_changes(after, verdicts, now)
        model.settle(name, state, more)
        decisions += more
    return Judged(verdicts, after, decisions, settled)


def gate_records(
    verdicts: list[Verdict], published: Mapping[str, dict[str, Any]], now: float
) -> dict[str, dict[str, Any]]:
    """The view of each gate: the latest verdict and the last decision published."""
    records = {}
    for verdict in verdicts:
        last = published.get(verdict.key) or {}
        records[verdict.key] = {
            "gate": verdict.gate,
            **verdict.to_record(),
            "evaluated_at": now,
            "decision_id": last.get("decision_id"),
            "published_verdict": last.get("verdict"),
            "published_action": last.get("action"),
            "published_reason": last.get("reason"),
            "published_at": last.get("ts"),
        }
    return records
