"""The decision memo of ``driftgate report``, built from an in-memory snapshot."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from monitor.events._decisions import GateDocument
from monitor.presentation._report import (
    ReportError,
    UnknownSubjectError,
    build_memo,
    default_folder,
    write_report,
)
from monitor.slices import REGISTRY
from monitor.store import Snapshot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NOW = 1_790_000_000.0


def interval(n: int, mean: float, low: float, high: float) -> dict[str, Any]:
    return {"n": n, "residual_mean": mean, "ci_low": low, "ci_high": high}


def stream_view() -> dict[str, Any]:
    """A drifting stream's view, as ``LabelModel.view`` writes it."""
    return {
        "n": 5000,
        "labeled_n": 900,
        "residual_n": 300,
        "residual_mean": 0.0812,
        "ci_low": 0.0614,
        "ci_high": 0.1011,
        "interval": "since_change",
        "verdict": "FAIL",
        "reason": "residual_bias",
        "calibrator": {"kind": "isotonic", "version": 2},
        "all_time": interval(900, 0.0233, 0.0101, 0.0365),
        "since_change": {
            "since_labeled_n": 600,
            "change_shift": 0.08,
            **interval(300, 0.0812, 0.0614, 0.1011),
        },
        "changes_detected": 1,
        "score_mean": 0.61,
        "score_ks": 0.031,
        "score_verdict": "PASS",
        "value": {"estimate": 0.6437, "ci_low": 0.6301, "ci_high": 0.6573, "n_scored": 5000},
        "residuals_by_decile": [
            {
                "bin": b,
                "score_low": None if b == 1 else round(0.1 * (b - 1), 1),
                "score_high": None if b == 10 else round(0.1 * b, 1),
                "n": 0 if b == 1 else 90,
                "mean_residual": None if b == 1 else 0.01 * b,
                "std_residual": None if b == 1 else 0.1,
            }
            for b in range(1, 11)
        ],
    }


def evidence(n: int, estimate: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {
        "n": n,
        "estimate": estimate,
        "ci_low": low,
        "ci_high": high,
        "threshold": 0.05,
        "method": method,
        "calibrator_version": 2,
    }


def gate_document(
    gate: str, subject: str, verdict: str, action: str, reason: str, kind: str, ev: dict[str, Any]
) -> GateDocument:
    return GateDocument(
        gate, subject, verdict, action, reason, None, None, ev, evaluated_at=NOW - 60, kind=kind
    )


def experiment_view() -> dict[str, Any]:
    """An experiment with a canary agent, as ``ExperimentModel.view`` writes it."""

    def reading(value: float, low: float, high: float, threshold: float | None, status: str):
        return {
            "value": value,
            "ci_low": low,
            "ci_high": high,
            "threshold": threshold,
            "n": 400,
            "status": status,
        }

    return {
        "experiment": {
            "control": "v1",
            "variants": {
                "v1": {
                    "n": 400,
                    "staging_n": 0,
                    "guardrails": {
                        "error_rate": reading(0.010, 0.004, 0.02, 0.05, "pass"),
                        "p95_latency_ms": reading(800.0, 760.0, 850.0, 1500.0, "pass"),
                    },
                },
                "v2": {
                    "n": 400,
                    "staging_n": 0,
                    "guardrails": {
                        "error_rate": reading(0.09, 0.07, 0.11, 0.05, "breach"),
                        "p95_latency_ms": reading(900.0, 850.0, 960.0, 1500.0, "pass"),
                    },
                },
            },
            "srm_p_value": 0.42,
            "verdict": "FAIL",
            "srm_verdict": "PASS",
            "stage": "canary",
        },
        "agent": {
            "agent": "triage",
            "bundle_id": "v2",
            "phase": "rolled_back",
            "canary_percent": 10.0,
            "deployed_at": NOW - 3 * 3600,
            "verdict": "FAIL",
            "reason": "guardrail_breach",
            "recommendation": "rollback",
            "comparison": None,
            "rollback": {"reason": "guardrail_breach", "decision_id": "d9"},
            "history": [],
        },
    }


@pytest.fixture
def snapshot() -> Snapshot:
    gates = [
        gate_document(
            "residual_drift",
            "policy/gpt",
            "FAIL",
            "rollback",
            "residual_bias",
            "stream",
            {
                **evidence(300, 0.0812, 0.0614, 0.1011, "normal_mixture_cs_after_change"),
                "next_step": "recalibrate: collect labels",
            },
        ),
        gate_document(
            "score_drift",
            "policy/gpt",
            "PASS",
            "none",
            "no_drift",
            "stream",
            evidence(5000, 0.031, 0.01, 0.05, "ks_sketch"),
        ),
        gate_document(
            "guardrail",
            "triage",
            "FAIL",
            "rollback",
            "guardrail_breach",
            "experiment",
            {"n": 800, "estimate": 0.09, "ci_low": 0.07, "ci_high": 0.11},
        ),
    ]
    return Snapshot(
        views={
            "stream": {"policy/gpt": stream_view()},
            "experiment": {"triage": experiment_view()},
        },
        gates=gates,
        history={
            "policy/gpt": {
                "1": {
                    "residual_n": 500,
                    "residual_mean": 0.001,
                    "ci_low": -0.02,
                    "ci_high": 0.022,
                    "verdict": "PASS",
                }
            }
        },
    )


def audit() -> list[dict[str, Any]]:
    """Decisions of both subjects, a canary action and a webhook attempt, oldest first."""

    def decision(subject: str, gate: str, verdict: str, action: str, ts: str, ev: dict[str, Any]):
        return {
            "decision_id": f"{subject}-{gate}-{verdict}",
            "ts": ts,
            "gate": gate,
            "subject": subject,
            "verdict": verdict,
            "action": action,
            "reason": "residual_bias" if gate == "residual_drift" else "guardrail_breach",
            "evidence": ev,
        }

    return [
        decision(
            "policy/gpt",
            "residual_drift",
            "WARN",
            "alert",
            "2026-09-21T10:00:00Z",
            evidence(700, 0.0142, 0.0031, 0.0253, "normal_mixture_cs"),
        ),
        decision(
            "policy/gpt",
            "residual_drift",
            "FAIL",
            "rollback",
            "2026-09-21T11:00:00Z",
            evidence(200, 0.0771, 0.0512, 0.1030, "normal_mixture_cs_after_change"),
        ),
        decision(
            "triage",
            "guardrail",
            "FAIL",
            "rollback",
            "2026-09-21T11:30:00Z",
            {"n": 800, "estimate": 0.09, "ci_low": 0.07, "ci_high": 0.11},
        ),
        {
            "kind": "canary",
            "ts": "2026-09-21T11:31:00Z",
            "subject": "triage",
            "action": "rollback",
            "canary_percent": None,
            "bundle_id": "v2",
            "actor": "oncall",
            "rationale": "error rate above 5%",
        },
        {
            "kind": "webhook",
            "ts": "2026-09-21T11:30:01Z",
            "subject": "triage",
            "attempt": 1,
            "outcome": "delivered",
            "url": "https://hooks.example/x",
            "action": "rollback",
            "decision_id": "d9",
        },
    ]


class _Checker(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    assert checker.open == [], checker.open
    return checker


def test_a_drifting_stream(snapshot: Snapshot, tmp_path: Path) -> None:
    written = write_report(snapshot, audit(), "policy/gpt", tmp_path / "memo", REGISTRY, now=NOW)
    names = [p.name for p in written]
    assert names == [
        "report.md",
        "report.html",
        "residual_interval.png",
        "residuals_by_decile.png",
    ]
    markdown = written[0].read_text()
    assert "Verdict: FAIL (residual_bias)" in markdown
    assert "Next step: recalibrate: collect labels\n" in markdown  # the gate's evidence
    assert "+0.0812 [+0.0614, +0.1011]" in markdown  # the verdict's interval
    assert "+0.0233 [+0.0101, +0.0365]" in markdown  # the all-time one
    assert (
        "| since the change | from label 600 (shift +0.0800) | 300 | +0.0812 [+0.0614, +0.1011] |"
        in markdown
    )
    assert "isotonic version 2" in markdown and "| 1 | 500 |" in markdown  # retired version 1
    assert "Score drift: PASS (no_drift)" in markdown
    assert "Value estimate (mean f(s) over all 5000 scored events" in markdown
    assert "0.6437 [0.6301, 0.6573]" in markdown
    # The state's residuals by decile: an empty first bin, then +-2 standard errors.
    assert "| 1 | -inf to 0.100 | 0 | - |" in markdown
    assert "| 10 | 0.900 to +inf | 90 | +0.1000 [+0.0789, +0.1211] |" in markdown
    # Both decisions of the stream, none of the other subject's.
    assert "+0.0142 [+0.0031, +0.0253] n=700" in markdown
    assert "+0.0771 [+0.0512, +0.1030] n=200" in markdown
    assert "guardrail_breach" not in markdown
    assert "![mean residual interval of policy/gpt over time](residual_interval.png)" in markdown
    page = parsed(written[1].read_text())
    assert page.images == ["residual_interval.png", "residuals_by_decile.png"]
    assert "Verdict: FAIL (residual_bias)" in "".join(page.text)
    png = written[2].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_an_agent_and_its_experiment(snapshot: Snapshot, tmp_path: Path) -> None:
    written = write_report(snapshot, audit(), "triage", tmp_path, REGISTRY, now=NOW)
    assert [p.name for p in written] == ["report.md", "report.html", "guardrails.png"]
    markdown = written[0].read_text()
    assert "rolled_back at 10% for 3.0 h. Verdict: FAIL (guardrail_breach)" in markdown
    assert "Recommendation: rollback" in markdown
    assert "| guardrail | FAIL | rollback | guardrail_breach | 800 |" in markdown
    assert "| v2 | error_rate | 0.09 | [0.07, 0.11] | 0.05 | 400 | breach |" in markdown
    assert "SRM p = 0.42" in markdown
    # The decision and the canary action, not the webhook attempt.
    assert "| 2026-09-21T11:31:00Z | canary | rollback | - | error rate above 5% |" in markdown
    assert "delivered" not in markdown and "webhook" not in markdown
    parsed(written[1].read_text())
    png = written[2].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_text_is_escaped_in_html(snapshot: Snapshot) -> None:
    entries = audit()
    entries[3]["rationale"] = "<script>alert(1)</script> & more"
    memo = build_memo(snapshot, entries, "triage", REGISTRY, now=NOW)
    page = parsed(memo.html())
    assert "<script>alert(1)</script> & more" in "".join(page.text)
    assert "<script>" not in memo.html()


def test_an_unknown_subject_is_named(snapshot: Snapshot, tmp_path: Path) -> None:
    with pytest.raises(UnknownSubjectError, match="'nope'"):
        write_report(snapshot, audit(), "nope", tmp_path / "out", REGISTRY)
    assert not (tmp_path / "out").exists()


def test_a_stream_without_decisions_has_no_invented_points(tmp_path: Path) -> None:
    view = stream_view() | {"residuals_by_decile": []}
    snapshot = Snapshot(views={"stream": {"quiet": view}})
    memo = build_memo(snapshot, [], "quiet", REGISTRY, now=time.time())
    assert memo.plots == {}
    assert "No residual drift evaluation yet" in memo.markdown()
    assert "No labeled residual yet under this calibrator version" in memo.markdown()
    assert "No decision or canary action" in memo.markdown()


def test_the_default_folder_is_a_safe_name() -> None:
    assert default_folder("policy/gpt-4:mini") == Path("driftgate-report-policy_gpt-4_mini")
    assert default_folder("..") == Path("driftgate-report-subject")


def test_a_folder_that_cannot_be_made_is_named(snapshot: Snapshot, tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    with pytest.raises(ReportError, match="a-file"):
        write_report(snapshot, audit(), "policy/gpt", taken, REGISTRY, now=NOW)
