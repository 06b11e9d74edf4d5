from __future__ import annotations

import numpy as np
import orjson
import pytest

from estimators import RestartingMeanSequence
from monitor import ResidualDriftPolicy, residual_drift_gate
from monitor.events._decisions import encode
from monitor.gates import (
    GATE_STATUS_CODES,
    SEVERITY,
    Verdict,
    decision_id,
    decision_record,
    finite_or_none,
    rfc3339,
    should_publish,
)

POLICY = ResidualDriftPolicy()


def failing(version: int = 1) -> tuple[RestartingMeanSequence, Verdict]:
    sequence = RestartingMeanSequence().update(np.full(100, 0.3))
    return sequence, residual_drift_gate("s", sequence, POLICY, version)


@pytest.mark.parametrize(
    ("last", "verdict", "publish"),
    [
        (None, "PASS", False),
        (None, "INCONCLUSIVE", False),
        (None, "WARN", True),
        (None, "FAIL", True),
        ("FAIL", "PASS", True),
        ("FAIL", "FAIL", False),
        ("WARN", "FAIL", True),
        ("PASS", "INCONCLUSIVE", True),
    ],
)
def test_publish_only_on_change_with_a_quiet_start(
    last: str | None, verdict: str, publish: bool
) -> None:
    assert should_publish(last, verdict) is publish


@pytest.mark.parametrize(
    ("last", "now", "publish"),
    [
        (("FAIL", "alert"), ("FAIL", "rollback"), True),
        (("FAIL", "rollback"), ("FAIL", "alert"), False),
        (("FAIL", "alert"), ("FAIL", "alert"), False),
        (("HOLD", "hold"), ("HOLD", "rollback"), True),
        (("WARN", "alert"), ("WARN", "none"), False),
        ((None, "none"), ("PASS", "promote"), True),
        (("PASS", "none"), ("PASS", "promote"), True),
        (("PASS", "promote"), ("PASS", "none"), False),
    ],
)
def test_the_same_verdict_publishes_again_only_when_its_action_escalates(
    last: tuple[str | None, str], now: tuple[str, str], publish: bool
) -> None:
    assert should_publish(last[0], now[0], last_action=last[1], action=now[1]) is publish


def test_decision_id_is_deterministic_in_the_evidence() -> None:
    sequence, first = failing(1)
    again = residual_drift_gate(
        "s", RestartingMeanSequence.from_state(sequence.to_state()), POLICY, 1
    )
    _, other_version = failing(2)
    more_labels = residual_drift_gate("s", sequence.update([0.3]), POLICY, 1)
    assert decision_id(first) == decision_id(again)
    assert len({decision_id(v) for v in (first, other_version, more_labels)}) == 3
    assert len(decision_id(first)) == 32 and int(decision_id(first), 16) >= 0


def test_decision_id_tells_gates_subjects_and_bundles_apart() -> None:
    base = Verdict("g", "s", "FAIL", "alert", "r", {"n": 1})
    others = [
        Verdict("h", "s", "FAIL", "alert", "r", {"n": 1}),
        Verdict("g", "t", "FAIL", "alert", "r", {"n": 1}),
        Verdict("g", "s", "WARN", "alert", "r", {"n": 1}),
        Verdict("g", "s", "FAIL", "hold", "r", {"n": 1}),
        Verdict("g", "s", "FAIL", "alert", "r", {"n": 1, "bundle_id": "b2"}),
    ]
    assert decision_id(base) not in {decision_id(v) for v in others}
    # The reason and the numbers beside n are not part of the identity.
    assert decision_id(base) == decision_id(
        Verdict("g", "s", "FAIL", "alert", "x", {"n": 1, "estimate": 2})
    )


def test_decision_record_follows_the_contract() -> None:
    _, verdict = failing(3)
    record = decision_record(verdict, 1_795_341_600.5)
    assert record.decision_id == decision_id(verdict)
    assert record.ts == "2026-11-22T10:00:00.500000Z"
    assert (record.gate, record.subject) == ("residual_drift", "s")
    assert (record.verdict, record.action, record.reason) == (
        "FAIL",
        "alert",
        "residual_bias",
    )
    assert record.evidence == verdict.evidence
    written = orjson.loads(encode(record))
    assert "bundle_id" not in written and "canary_percent" not in written
    assert list(written) == [
        "decision_id",
        "ts",
        "gate",
        "subject",
        "verdict",
        "action",
        "reason",
        "evidence",
    ]


def test_decision_record_lifts_the_canary_fields() -> None:
    verdict = Verdict(
        "canary", "agent", "FAIL", "rollback", "r", {"bundle_id": "b7", "canary_percent": 5}
    )
    record = decision_record(verdict, 0.0)
    assert (record.bundle_id, record.canary_percent) == ("b7", 5)
    assert record.ts == "1970-01-01T00:00:00Z"


def test_finite_or_none() -> None:
    assert finite_or_none(1.5) == 1.5
    assert [finite_or_none(x) for x in (None, float("nan"), float("inf"), -float("inf"))] == [
        None
    ] * 4


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(1_795_341_600.0) == "2026-11-22T10:00:00Z"


def test_severity_orders_worst_first() -> None:
    order = sorted(SEVERITY, key=SEVERITY.__getitem__, reverse=True)
    assert order == ["FAIL", "HOLD", "INCONCLUSIVE", "WARN", "PASS"]
    assert GATE_STATUS_CODES["PASS"] == 0 and GATE_STATUS_CODES["FAIL"] == 2
