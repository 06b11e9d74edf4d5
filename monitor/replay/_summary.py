"""What a replay found, per subject and gate, and how policies differ on the same events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..events._decisions import Decision
from ..workflows._calibration import InputError
from ._engine import DecisionMark, RunResult

__all__ = ["GateSummary", "KnownGood", "gate_summaries", "parse_known_good", "summary_lines"]


@dataclass(frozen=True)
class KnownGood:
    """A period of event time where nothing was wrong: a FAIL there is a false alarm."""

    start: float
    end: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts <= self.end


def _time(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"--known-good {where}: {text!r} is neither RFC 3339 nor Unix seconds"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # event times without an offset are UTC
    return moment.timestamp()


def parse_known_good(text: str) -> KnownGood:
    """``START..END``, each RFC 3339 or Unix seconds, START not after END."""
    start, sep, end = text.partition("..")
    if not sep or not start or not end:
        raise InputError(f"--known-good {text!r}: give START..END (RFC 3339 or Unix seconds)")
    period = KnownGood(_time(start, "START"), _time(end, "END"))
    if period.start > period.end:
        raise InputError(f"--known-good {text!r}: START is after END")
    return period


@dataclass
class GateSummary:
    """One policy's decisions of one gate on one subject."""

    decisions: int = 0
    first: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``WARN`` / ``FAIL`` -> the first such decision: ``event_ts``, ``events``,
    ``subject_events``, ``action``, ``reason``."""
    false_alarms: int = 0
    """FAIL decisions inside a known-good period."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "first_warn": self.first.get("WARN"),
            "first_fail": self.first.get("FAIL"),
            "false_alarms": self.false_alarms,
        }


def gate_summaries(
    result: RunResult, known_good: Sequence[KnownGood] = ()
) -> dict[tuple[str, str], GateSummary]:
    """``(subject, gate)`` -> what the run decided there."""
    found: dict[tuple[str, str], GateSummary] = {}
    for decision, mark in zip(result.decisions, result.marks, strict=True):
        summary = found.setdefault((decision.subject, decision.gate), GateSummary())
        summary.decisions += 1
        verdict = decision.verdict
        if verdict in ("WARN", "FAIL") and verdict not in summary.first:
            summary.first[verdict] = _first(decision, mark)
        if verdict == "FAIL" and any(period.holds(mark.ts) for period in known_good):
            summary.false_alarms += 1
    return found


def _first(decision: Decision, mark: DecisionMark) -> dict[str, Any]:
    return {
        "event_ts": decision.event_ts,
        "events": mark.events,
        "subject_events": mark.subject_events,
        "action": decision.action,
        "reason": decision.reason,
    }


def _cell(first: dict[str, Any] | None) -> str:
    if first is None:
        return "-"
    return f"{first['event_ts']} (event {first['events']:,}, {first['reason']})"


def summary_lines(
    names: Sequence[str], results: Sequence[RunResult], known_good: Sequence[KnownGood]
) -> list[str]:
    """Per subject and gate, each policy's decisions side by side, then what differs."""
    summaries = [gate_summaries(result, known_good) for result in results]
    keys = sorted({key for summary in summaries for key in summary})
    width = max(len(name) for name in names)
    lines = []
    for subject, gate in keys:
        lines.append(f"{subject} / {gate}")
        rows = [summary.get((subject, gate), GateSummary()) for summary in summaries]
        for name, row in zip(names, rows, strict=True):
            alarms = f", {row.false_alarms} false alarm(s)" if known_good else ""
            lines.append(
                f"  {name:<{width}}  {row.decisions} decision(s){alarms}; "
                f"first WARN {_cell(row.first.get('WARN'))}; "
                f"first FAIL {_cell(row.first.get('FAIL'))}"
            )
        lines += [f"  {difference}" for difference in _differences(names, rows)]
    if known_good and results:
        for name, summary in zip(names, summaries, strict=True):
            total = sum(row.false_alarms for row in summary.values())
            lines.append(f"false alarms (FAIL in a known-good period) under {name}: {total}")
    return lines


def _differences(names: Sequence[str], rows: Sequence[GateSummary]) -> list[str]:
    """How each policy after the first differs from the first on this gate."""
    base_name, base = names[0], rows[0]
    found = []
    for name, row in zip(names[1:], rows[1:], strict=True):
        for verdict in ("WARN", "FAIL"):
            mine, theirs = row.first.get(verdict), base.first.get(verdict)
            if mine == theirs:
                continue
            if mine is None or theirs is None:
                has, lacks = (name, base_name) if theirs is None else (base_name, name)
                found.append(f"{verdict}: under {has} only, never under {lacks}")
                continue
            later = mine["events"] - theirs["events"]
            seconds = _seconds(mine["event_ts"]) - _seconds(theirs["event_ts"])
            word = "later" if later >= 0 else "earlier"
            found.append(
                f"first {verdict} under {name}: {abs(seconds):,.1f} s of event time and "
                f"{abs(later):,} events {word} than under {base_name}"
            )
        if row.decisions != base.decisions:
            found.append(
                f"{row.decisions} decision(s) under {name}, {base.decisions} under {base_name}"
            )
    return found


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
