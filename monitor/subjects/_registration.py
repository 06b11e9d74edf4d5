"""Pre-registration: an A/B experiment's analysis plan is locked with its first production
event, and a later change of the policy's section is a deviation, written to the audit log
once (the guide: "changes require addendum"). The memo is analysed under the locked plan
and lists every deviation; a plan that only comes after the first event is locked then,
and that is a deviation too."""

from __future__ import annotations

from typing import Any

from ..config import ExperimentPolicy
from ..gates import rfc3339
from ._experiment_state import HISTORY, ExperimentState

__all__ = ["locked_policy", "observe_registration"]


def locked_policy(state: ExperimentState, live: ExperimentPolicy) -> ExperimentPolicy:
    """The plan the experiment is analysed under: the locked one, else the policy's."""
    if state.registration is None:
        return live
    return ExperimentPolicy(**state.registration)


def observe_registration(
    subject: str,
    state: ExperimentState,
    policy: ExperimentPolicy,
    first: float,
    last: float,
    now: float,
) -> list[dict[str, Any]]:
    """Note a batch of production events (event times ``first`` to ``last``; ``now`` the
    worker's clock) against the policy's section; returns the audit log's entries: the
    lock, or a deviation from it."""
    started = state.first_ts
    state.first_ts = first if started is None else min(started, first)
    state.last_ts = last if state.last_ts is None else max(state.last_ts, last)
    current = policy.registration()
    if current == state.policy_seen:
        return []
    state.policy_seen = current
    if state.registration is None:
        if not policy.registered:
            return []
        state.registration, state.registered_at = current, first
        late = started is not None and started < first
        entry = _entry(
            subject,
            "deviation" if late else "registration",
            now,
            f"pre-registration locked: {policy.primary_metric} ({policy.outcome_type}), "
            f"MDE {policy.mde:g}, alpha {policy.alpha:g}, power {policy.power:g}"
            + (
                f"; registered after the experiment's first event at {rfc3339(started)}"
                if late and started is not None
                else ""
            ),
        )
        if late:
            state.deviations = [*state.deviations, entry][-HISTORY:]
        return [entry]
    changes = {
        key: [state.registration.get(key), value]
        for key, value in current.items()
        if state.registration.get(key) != value
    }
    if not changes:
        return []  # back to the locked plan: nothing to add to the addenda
    shown = "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in sorted(changes.items()))
    entry = {
        **_entry(
            subject,
            "deviation",
            now,
            f"policy changed after the start: {shown}; the memo keeps the locked plan",
        ),
        "changes": changes,
    }
    state.deviations = [*state.deviations, entry][-HISTORY:]
    return [entry]


def _entry(subject: str, kind: str, now: float, note: str) -> dict[str, Any]:
    return {"kind": kind, "ts": rfc3339(now), "subject": subject, "note": note}
