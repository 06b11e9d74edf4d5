"""Experiments and canaries: the lifecycle of an agent's bundles, and the names of the
experiment subject's parts.

One subject per ``experiment_id`` (for a canary, its ``agent``): telemetry events
(``driftgate.telemetry``, :mod:`._telemetry`) feed each variant's statistics, canary events
(``driftgate.canary``, here) move the agent's lifecycle, and both are judged together by
one :class:`~._experiment_model.ExperimentModel` over one
:class:`~._experiment_state.ExperimentState`, so that a guardrail breach is always judged
with the bundle and percent it happened under.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import Policy
from ..events._structs import CanaryEvent, Guardrails, TelemetryEvent
from ..gates import rfc3339
from ..pipeline import DecodedBatch, RawMessage, SubjectEvents
from ._decode import EventRows, MessageDecoder
from ._experiment_model import ExperimentModel, recommendation
from ._experiment_state import HISTORY, ExperimentState, Lifecycle, VariantStats
from ._telemetry import TelemetryColumns, TelemetryHandler

__all__ = [
    "HISTORY",
    "CanaryEvent",
    "CanaryHandler",
    "ExperimentModel",
    "ExperimentState",
    "Guardrails",
    "Lifecycle",
    "TelemetryColumns",
    "TelemetryEvent",
    "TelemetryHandler",
    "VariantStats",
    "recommendation",
]


class CanaryHandler:
    """``driftgate.canary``: deploy, promote, roll back, pause and resume an agent's bundle."""

    topic: str = "canary"

    def __init__(self, policy: Policy) -> None:
        self.model = ExperimentModel(policy)
        self.decoder = MessageDecoder(CanaryEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, "agent", EventRows)

    def update(
        self, subject: str, state: ExperimentState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Each action in order; returns the audit log's entries for them."""
        audit = []
        for event, ts in zip(events.columns.events, events.ts.tolist(), strict=True):
            note = _step(state, event, ts, now)
            entry = {
                "kind": "canary",
                "ts": rfc3339(ts),
                "subject": event.agent,
                "agent": event.agent,
                "bundle_id": event.bundle_id,
                "action": event.action,
                "canary_percent": event.canary_percent,
                "actor": event.actor,
                "rationale": event.rationale,
                "event_id": event.event_id,
            }
            audit.append(entry if note is None else {**entry, "note": note})
        return audit


def _step(state: ExperimentState, event: CanaryEvent, ts: float, now: float) -> str | None:
    """One lifecycle transition (``ts``: the event's time, ``now``: the worker's clock).

    Returns why the event changed nothing, for its audit log entry: it names a bundle the
    agent does not run, or one that was rolled back. A rolled-back bundle is settled: it
    is not promoted, resumed, paused, deployed or rolled back again (a new bundle is
    deployed instead), so it is rolled back once, by construction."""
    lifecycle = state.lifecycle
    if lifecycle is not None and lifecycle.refuses(event.bundle_id):
        return (
            f"ignored: bundle {event.bundle_id} was rolled back; "
            "deploy a new bundle_id to try again"
        )
    same_bundle = lifecycle is not None and lifecycle.bundle_id == event.bundle_id
    record = {
        "action": event.action,
        "ts": ts,
        "percent": event.canary_percent,
        "actor": event.actor,
        "rationale": event.rationale,
    }
    if event.action == "deploy" or (event.action == "promote" and not same_bundle):
        state.lifecycle = Lifecycle(
            event.bundle_id,
            "promoted" if event.canary_percent == 100 else "monitoring",
            float(event.canary_percent or 0),
            deployed_at=ts,
            stage_started_at=now,
            rolled_back_bundles=lifecycle.retired() if lifecycle is not None else [],
        )
        lifecycle = state.lifecycle
        state.new_stage(ts)
    elif lifecycle is None or not same_bundle:
        running = "no bundle" if lifecycle is None else f"bundle {lifecycle.bundle_id}"
        return f"ignored: the agent runs {running}"
    elif event.action == "promote":
        lifecycle.canary_percent = float(event.canary_percent or lifecycle.canary_percent)
        lifecycle.phase = "promoted" if lifecycle.canary_percent >= 100 else "monitoring"
        lifecycle.stage_started_at, lifecycle.last_data_at = now, None
        state.new_stage(ts)
    elif event.action == "rollback":
        lifecycle.phase = "rolled_back"
        lifecycle.rollback = {
            "decision_id": None,
            "reason": "manual_rollback",
            "by": event.actor or "manual",
            "rationale": event.rationale,
            "ts": rfc3339(ts),
        }
    elif event.action == "pause" and lifecycle.phase == "monitoring":
        lifecycle.phase = "paused"
    elif event.action == "resume" and lifecycle.phase == "paused":
        lifecycle.phase = "monitoring"
        lifecycle.last_data_at = now  # the fail-safe clock starts again on resume
        state.restart_split(ts)
    lifecycle.history = [*lifecycle.history, record][-HISTORY:]
    return None
