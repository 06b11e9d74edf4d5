"""A stream's online value estimate, residuals by decile, wait and plan in its view."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson
import pytest

from estimators import (
    CoMoments,
    Moments,
    NormalMixtureSequence,
    online_value_estimate,
    residuals_by_decile,
)
from monitor import Policy, ResidualDriftPolicy
from monitor.events._decisions import to_builtins
from monitor.pipeline import RawMessage
from monitor.store import _keys as fields
from monitor.subjects._labels import LabelHandler, LabelState

from .test_labels import EMPTY, NOW, fitted, fresh_state

POLICY = Policy()


def events(
    s: np.ndarray, y: np.ndarray, offset: int, start: float = NOW, spacing: float = 1.0
) -> RawMessage:
    """One envelope of events one ``spacing`` apart; a NaN ``y`` is a score-only event."""
    batch = [
        {
            "event_id": f"{offset}-{i}",
            "ts": start + i * spacing,
            "stream": "p",
            "s": float(a),
            "y": None if np.isnan(b) else float(b),
        }
        for i, (a, b) in enumerate(zip(s, y, strict=True))
    ]
    return RawMessage("labels", 0, offset, orjson.dumps(batch))


def fold(handler: LabelHandler, state: LabelState, *messages: RawMessage) -> LabelState:
    for subject in handler.decode(messages).subjects.values():
        handler.update("p", state, subject, NOW)
    return state


def view(handler: LabelHandler, state: LabelState) -> dict:
    return to_builtins(handler.model.view("p", state, handler.model.evaluate("p", state, NOW)))


def test_value_is_mean_prediction_over_every_score_plus_labeled_residual() -> None:
    rng = np.random.default_rng(21)
    handler = LabelHandler(POLICY)
    calibrator = fitted()
    state = fresh_state(handler, calibrator)
    s = rng.uniform(size=4000)
    y = s**2 + rng.normal(0, 0.05, s.size)
    y[rng.uniform(size=s.size) > 0.2] = np.nan  # 20% labeled
    fold(handler, state, events(s[:2000], y[:2000], 0), events(s[2000:], y[2000:], 1))

    f = calibrator.model.predict(s)
    labeled = ~np.isnan(y)
    pairs = CoMoments().update(f[labeled], (y - f)[labeled])
    expected = online_value_estimate(Moments().update(f), pairs.y_moments(), pairs.cov)
    value = view(handler, state)["value"]
    assert value["estimate"] == pytest.approx(expected.estimate, rel=1e-12)
    assert value["ci_low"] == pytest.approx(expected.interval.low, rel=1e-9)
    assert value["ci_high"] == pytest.approx(expected.interval.high, rel=1e-9)
    assert value["plug_in"] == pytest.approx(f.mean(), rel=1e-12)
    assert (value["n_scored"], value["n_labeled"]) == (4000, int(labeled.sum()))
    assert value["ci_low"] < np.mean(s**2) < value["ci_high"]


def test_residuals_by_decile_cut_at_the_calibrators_baseline_scores() -> None:
    rng = np.random.default_rng(22)
    handler = LabelHandler(POLICY)
    calibrator = fitted()
    state = fresh_state(handler, calibrator)
    s = rng.uniform(size=3000)
    y = calibrator.model.predict(s) + rng.normal(0, 0.05, s.size) + 0.3 * (s > 0.9)
    fold(handler, state, events(s, y, 0))
    rows = view(handler, state)["residuals_by_decile"]
    assert len(rows) == 10 and sum(row["n"] for row in rows) == 3000
    offline = residuals_by_decile(s, calibrator.model.residuals(s, y))
    # The baseline (uniform too) cuts near the live deciles: the same picture.
    assert [row["mean_residual"] for row in rows] == pytest.approx(
        [d.mean_residual for d in offline], abs=0.03
    )
    assert rows[-1]["mean_residual"] > 0.25 > max(abs(r["mean_residual"]) for r in rows[:-1])


def test_without_a_calibrator_the_bins_are_tenths_of_the_unit_interval() -> None:
    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    fold(handler, state, events(np.array([0.05, 0.15, 0.95]), np.array([0.1, 0.2, 0.9]), 0))
    rows = view(handler, state)["residuals_by_decile"]
    assert [row["n"] for row in rows] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert rows[1]["score_low"] == pytest.approx(0.1)


def test_until_decided_collecting_then_watching_then_decided() -> None:
    rng = np.random.default_rng(23)
    handler = LabelHandler(POLICY)  # min_labeled 30
    state = fresh_state(handler)
    s = rng.uniform(size=10)
    fold(handler, state, events(s, s + 0.01, 0, spacing=2.0))  # a label every 2 s
    wait = view(handler, state)["until_decided"]
    assert (wait["status"], wait["labels"]) == ("collecting", 20)
    assert wait["seconds"] == pytest.approx(40.0, rel=0.05)

    s = rng.uniform(size=200)
    fold(handler, state, events(s, s + rng.normal(0.01, 0.1, 200), 1, NOW + 20, 2.0))
    shown = view(handler, state)
    assert shown["verdict"] == "PASS"
    wait = shown["until_decided"]
    assert wait["status"] == "watching" and wait["labels"] > 0
    # That many more labels at today's mean and spread would exclude 0; one fewer would not.
    moments = state.residuals.all_time.moments
    grown = Moments.from_state({**moments.to_state(), "n": moments.n + wait["labels"]})
    grown.weight = float(grown.n)
    grown.m2 = moments.variance * (grown.n - 1)
    sequence = replace_moments(state, grown)
    assert not sequence.interval.contains(0.0)

    s = rng.uniform(size=500)
    fold(handler, state, events(s, s + 0.3, 2, NOW + 500))
    shown = view(handler, state)
    assert shown["verdict"] == "FAIL"
    assert shown["until_decided"]["status"] == "decided"
    assert shown["until_decided"]["labels"] == 0


def replace_moments(state: LabelState, moments: Moments) -> NormalMixtureSequence:
    sequence = state.residuals.all_time.copy()
    sequence.moments = moments
    sequence.bounded = None  # the labels-to-decide figure is the normal mixture's
    return sequence


def test_label_plan_reports_the_mde_now_and_the_labels_still_needed() -> None:
    rng = np.random.default_rng(24)
    handler = LabelHandler(replace(POLICY, residual_drift=ResidualDriftPolicy(bias_threshold=0.01)))
    state = fresh_state(handler)
    s = rng.uniform(size=2000)
    y = s + rng.normal(0, 0.2, s.size)
    y[500:] = np.nan  # 500 labels in 2,000 events
    fold(handler, state, events(s, y, 0))
    plan = view(handler, state)["label_plan"]
    assert plan["target_mde"] == 0.01
    assert plan["current_mde"] > 0.01
    assert plan["more_labels"] == plan["labels_needed"] - 500 > 0
    assert plan["sigma2_cal"] == pytest.approx(0.04, rel=0.2)
    assert view(handler, fresh_state(handler))["label_plan"] is None


def test_new_statistics_round_trip_and_an_older_state_still_loads() -> None:
    rng = np.random.default_rng(25)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler, fitted())
    s = rng.uniform(size=300)
    fold(handler, state, events(s, s + rng.normal(0, 0.1, 300), 0))
    dumped = handler.model.dump(state)[fields.STATE]
    assert isinstance(dumped, bytes)
    stored = {**EMPTY, fields.CALIBRATOR: fitted().record(), fields.CALIBRATOR_VERSION: b"3"}
    restored = handler.model.load("p", {**stored, fields.STATE: dumped})
    assert restored.to_state() == state.to_state()

    older = orjson.loads(dumped)
    for key in ("predictions", "labeled_pairs", "residuals_by_bin", "label_rate"):
        del older[key]
    loaded = handler.model.load("p", {**stored, fields.STATE: orjson.dumps(older)})
    assert loaded.residuals.n == 300 and loaded.predictions.n == 0
    assert view(handler, loaded)["value"]["n_scored"] == 0
    # The value and the plan count only what both statistics saw since the upgrade: the
    # labeled stay a subset of the scored (the 300 older labels are in the residual gate).
    more = rng.uniform(size=50)
    fold(handler, loaded, events(more, more + rng.normal(0, 0.1, 50), 1))
    value = view(handler, loaded)["value"]
    assert (value["n_scored"], value["n_labeled"]) == (50, 50)
    assert loaded.residuals.n == 350


def test_extreme_scores_give_a_view_that_stores_and_prints() -> None:
    """Scores at the 1e100 bound of the decoders: every count stays storable (orjson
    refuses integers past 64 bits) and status still prints."""
    from monitor.presentation._status import stream_lines

    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    s = np.array([1e100, -1e100, 0.5] * 20)
    fold(handler, state, events(s, s[::-1], 0))
    shown = view(handler, state)
    orjson.dumps(shown)  # raises on an integer it cannot store
    assert shown["label_plan"]["labels_needed"] is None
    assert any("out of reach" in line for line in stream_lines("wild", shown))
