"""`driftgate status` words each stream's view: which interval decided, and what next."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from monitor import Policy, ResidualDriftPolicy
from monitor.events._views import StreamStatus
from monitor.presentation._status import stream_lines
from monitor.slices import status_document
from monitor.slices._labels import LABELS
from monitor.store import Snapshot
from monitor.subjects._labels import LabelHandler

from .subjects.test_label_value import NOW, events, fitted, fold, fresh_state, view


@pytest.fixture(scope="module")
def late_shift_view() -> dict[str, Any]:
    """5,000 calibrated labels, then a bias of 0.15: the change detector restarts the
    interval, and the verdict is taken on the restarted one."""
    rng = np.random.default_rng(31)
    handler = LabelHandler(Policy())
    state = fresh_state(handler, fitted())
    s = rng.uniform(size=5000)
    fold(handler, state, events(s, s + rng.normal(0, 0.1, s.size), 0))
    s = rng.uniform(size=400)
    fold(handler, state, events(s, s + rng.normal(0.15, 0.1, s.size), 1, NOW + 6000))
    shown = view(handler, state)
    assert shown["interval"] == "since_change", shown["reason"]
    return shown


def test_a_restarted_interval_is_named_with_the_all_time_one_beside_it(
    late_shift_view: dict[str, Any],
) -> None:
    row = late_shift_view
    lines = stream_lines("judge", row)
    since = row["since_change"]
    assert lines[0].startswith(f"judge: {row['verdict']} ({row['reason']}); 5,400 scored")
    assert lines[1].startswith(
        f"  verdict uses: the interval since the detected change "
        f"(after label {since['since_labeled_n']:,}): mean residual {row['residual_mean']:+.3g}"
    )
    assert f"over {row['residual_n']:,} labels" in lines[1]
    all_time = row["all_time"]
    assert lines[2] == (
        f"  all time:     mean residual {all_time['residual_mean']:+.3g} "
        f"[{all_time['ci_low']:+.3g}, {all_time['ci_high']:+.3g}] over 5,400 labels"
    )
    assert any(line.startswith("  decision:     decided: ") for line in lines)
    assert row["next_step"]  # a WARN or FAIL says what to do, under the decision
    assert lines[lines.index(f"  next step:    {row['next_step']}") - 1].startswith("  decision:")


# A view of an older worker: none of the later figures.
OLD_VIEW = {
    "n": 12,
    "labeled_n": 12,
    "residual_n": 12,
    "residual_mean": 0.01,
    "ci_low": None,
    "ci_high": None,
    "interval": "all_time",
    "verdict": "INCONCLUSIVE",
    "reason": "insufficient_data",
    "calibrator": {"kind": "identity", "version": 0},
}


def test_an_old_view_without_the_later_figures_still_prints() -> None:
    lines = stream_lines("old", OLD_VIEW)
    assert lines == [
        "old: INCONCLUSIVE (insufficient_data); 12 scored, 12 labeled; calibrator identity v0"
        " (identity: no calibrator fitted)",
        "  verdict uses: the all-time interval: mean residual +0.01 [-inf, +inf] over 12 labels",
    ]


def test_waiting_for_labels_says_how_many_and_how_long() -> None:
    handler = LabelHandler(Policy())
    state = fresh_state(handler)
    s = np.linspace(0.1, 0.9, 10)
    fold(handler, state, events(s, s, 0, spacing=6.0))  # a label every 6 s
    lines = stream_lines("new", view(handler, state))
    decision = next(line for line in lines if "decision:" in line)
    assert (
        decision
        == "  decision:     20 more labels before the gate may decide (~2 min at 0.167 labels/s)"
    )
    plan = next(line for line in lines if "label plan:" in line)
    assert "an MDE of 0.05 (the bias threshold as target) needs" in plan


def test_the_label_plan_line_says_why_there_is_none() -> None:
    """Before two labels there is no variance; with a bias threshold of 0 (every shift
    fails) there is no MDE to plan for: two reasons, each said as it is."""
    handler = LabelHandler(Policy(residual_drift=ResidualDriftPolicy(bias_threshold=0.0)))
    state = fresh_state(handler)

    def plan_line() -> str:
        return next(x for x in stream_lines("s", view(handler, state)) if "label plan:" in x)

    fold(handler, state, events(np.array([0.5]), np.array([0.5]), 0))
    assert plan_line().endswith("needs two labels at least (no variance yet)")
    fold(handler, state, events(np.linspace(0.1, 0.9, 9), np.linspace(0.1, 0.9, 9), 1))
    assert plan_line().endswith(
        "none: residual_drift.bias_threshold is 0, so there is no MDE to aim for"
    )


def test_a_state_from_before_the_paired_labels_does_not_blame_the_threshold() -> None:
    """Upgraded from a state without predictions: many residuals, no paired labels yet,
    so no plan; that is not the bias threshold's doing."""
    row = {
        "n": 500,
        "labeled_n": 500,
        "residual_n": 500,
        "residual_mean": 0.01,
        "ci_low": -0.02,
        "ci_high": 0.04,
        "interval": "all_time",
        "verdict": "PASS",
        "reason": "no_drift",
        "calibrator": {"kind": "isotonic", "version": 2},
        "value": {
            "estimate": 0.6,
            "ci_low": None,
            "ci_high": None,
            "plug_in": 0.6,
            "residual_correction": 0.0,
            "n_scored": 500,
            "n_labeled": 0,
        },
        "label_plan": None,
    }
    plan = next(x for x in stream_lines("up", row) if "label plan:" in x)
    assert plan.endswith("needs two labels at least (no variance yet)")


def test_a_stream_with_a_null_mean_says_no_decision_is_in_sight() -> None:
    row = {
        "n": 100,
        "labeled_n": 100,
        "residual_n": 100,
        "residual_mean": 0.0,
        "ci_low": -0.02,
        "ci_high": 0.02,
        "interval": "all_time",
        "verdict": "PASS",
        "reason": "no_drift",
        "calibrator": {"kind": "isotonic", "version": 2},
        "until_decided": {
            "status": "watching",
            "labels": None,
            "seconds": None,
            "label_rate_per_second": None,
        },
    }
    decision = stream_lines("flat", row)[-1]
    assert "too near 0 for its interval to exclude 0" in decision


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A view as the read model has it: decoded from the JSON the worker stored."""
    return orjson.loads(orjson.dumps(row))


def test_status_json_shows_the_stored_views_as_they_are_with_the_join_and_history(
    late_shift_view: dict[str, Any],
) -> None:
    """``status --json``'s rows are typed, yet a view (current, or an older worker's
    without the later figures) comes out byte for byte as stored, the late-label join
    and retired versions after it; an older view's lines still print."""
    current = _stored(late_shift_view)
    old = _stored(OLD_VIEW)
    joins = {"waiting": 2, "joined": 5, "expired": 1, "repeated": 0}
    snapshot = Snapshot(
        views={"stream": {"judge": current, "old": old}},
        joins={"old": joins},
        history={"judge": {"1": old}},
    )
    document = status_document(snapshot, NOW)
    assert isinstance(document.section("labels").streams["judge"], StreamStatus)
    streams = orjson.dumps(document.to_builtins()["streams"])
    assert streams == orjson.dumps(
        {
            "judge": {**current, "history": {"1": old}},
            "old": {**old, "late_labels": joins},
        }
    )
    assert LABELS.status_lines is not None
    lines = list(LABELS.status_lines(document.section("labels")))
    assert lines[0] == stream_lines("judge", current)[0]
    assert "  late labels:  2 waiting, 5 joined, 1 expired, 0 repeated" in lines
