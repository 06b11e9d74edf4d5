"""Verdicts, and the decisions published when they change."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from msgspec import UNSET

from ..events._decisions import GATE_STATUS_CODES, SEVERITY, Decision, rfc3339
from ..events._decisions import finite_or as finite_or_none

__all__ = [
    "ACTION_RANK",
    "GATE_STATUS_CODES",
    "SEVERITY",
    "Verdict",
    "decision_id",
    "decision_record",
    "finite_or_none",
    "record_key",
    "rfc3339",
    "should_publish",
]


def record_key(gate: str, part: str = "") -> str:
    """``gate`` or ``gate/part``: the name of a verdict's published record.

    >>> record_key("score_drift"), record_key("covariate_drift", "domain")
    ('score_drift', 'covariate_drift/domain')
    """
    return f"{gate}/{part}" if part else gate


@dataclass(frozen=True)
class Verdict:
    """One gate's judgement of one subject; ``evidence`` carries at least ``n``,
    ``estimate``, ``ci_low``, ``ci_high``, ``threshold`` and ``method``.

    ``part`` tells apart the verdicts one gate gives one subject several of (a covariate's
    drift, a subgroup's residuals): empty for a gate's only verdict."""

    gate: str
    subject: str
    verdict: str
    action: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    part: str = ""

    @property
    def key(self) -> str:
        """What its published record is kept under: the gate, and its part if any."""
        return record_key(self.gate, self.part)


# How far an action reaches: a decision goes out again when the same verdict asks for more.
ACTION_RANK = {"none": 0, "alert": 1, "promote": 1, "hold": 2, "rollback": 3}


def should_publish(
    last_verdict: str | None,
    verdict: str,
    *,
    last_action: str = "none",
    action: str = "none",
) -> bool:
    """A decision goes out when the verdict changes, or when the same verdict escalates its
    action (the contract: once for each action).

    A gate starts quiet: PASS or INCONCLUSIVE before anything was published is no news,
    unless it asks for an action (a first ``promote``). An escalation goes out because a
    controller acts on actions: a breach that only alerted (the policy said ``alert``, or
    the canary was not live) and now asks for ``rollback`` must reach it. A de-escalation
    with the same verdict (after a rollback has settled, the breach only alerts) is no news.

    >>> should_publish(None, "PASS"), should_publish(None, "FAIL"), should_publish("FAIL", "PASS")
    (False, True, True)
    >>> should_publish("FAIL", "FAIL", last_action="alert", action="rollback")
    True
    >>> should_publish("FAIL", "FAIL", last_action="rollback", action="alert")
    False
    """
    if last_verdict is None:
        return verdict not in ("PASS", "INCONCLUSIVE") or ACTION_RANK.get(action, 0) > 0
    if verdict != last_verdict:
        return True
    return ACTION_RANK.get(action, 0) > ACTION_RANK.get(last_action, 0)


def decision_id(verdict: Verdict) -> str:
    """Deterministic id: the same verdict on the same evidence gives the same id."""
    evidence = verdict.evidence
    key = "|".join(
        str(part)
        for part in (
            verdict.key,
            verdict.subject,
            verdict.verdict,
            verdict.action,
            evidence.get("calibrator_version", ""),
            evidence.get("n", ""),
            evidence.get("bundle_id", ""),
        )
    )
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def decision_record(verdict: Verdict, now: float) -> Decision:
    """The decision event of the contract for ``verdict``; a canary's evidence lends it
    ``bundle_id`` and ``canary_percent``."""
    evidence = verdict.evidence
    return Decision(
        decision_id(verdict),
        rfc3339(now),
        verdict.gate,
        verdict.subject,
        verdict.verdict,
        verdict.action,
        verdict.reason,
        evidence,
        bundle_id=evidence.get("bundle_id", UNSET),
        canary_percent=evidence.get("canary_percent", UNSET),
    )
