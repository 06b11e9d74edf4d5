"""The score drift baseline moves forward with harmless traffic, never with a drift."""

from __future__ import annotations

import numpy as np

from estimators import QuantileSketch
from monitor import Policy
from monitor.gates._score_drift import BASELINE_WINDOW_PER_MIN_N
from monitor.store import _keys as fields
from monitor.subjects._labels import LabelHandler, LabelState

from .test_label_value import EMPTY, NOW, events, fitted, fold, fresh_state, view

POLICY = Policy()
WINDOW = BASELINE_WINDOW_PER_MIN_N * POLICY.score_drift.min_n


def score_verdicts(
    handler: LabelHandler, state: LabelState, scores: np.ndarray, first: int
) -> list[dict]:
    """Feed ``scores`` (score-only events) in batches of 250; the score gate after each."""
    shown = []
    for offset, start in enumerate(range(0, scores.size, 250), first):
        chunk = scores[start : start + 250]
        fold(handler, state, events(chunk, np.full(chunk.size, np.nan), offset, NOW + start))
        score = next(
            v for v in handler.model.evaluate("p", state, NOW).verdicts if v.gate == "score_drift"
        )
        shown.append({"verdict": score.verdict, **score.evidence})
    return shown


def test_a_stream_drawn_from_its_baseline_moves_it_and_stays_pass() -> None:
    rng = np.random.default_rng(41)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler, fitted())  # fitted on uniform scores
    shown = score_verdicts(handler, state, rng.uniform(size=6 * WINDOW), 0)
    judged = [s for s in shown if s["verdict"] != "INCONCLUSIVE"]
    assert {s["verdict"] for s in judged} == {"PASS"}
    assert {s["band"] for s in judged} == {"minor"}
    assert state.score_baseline is not None  # moved forward
    assert state.score_baseline.n == WINDOW  # a full window of the stream's own scores
    # From the first window on, the gate always judges at least one window of scores.
    assert all(s["n"] >= WINDOW for s in shown[WINDOW // 250 :])


def test_a_drift_does_not_move_the_baseline_and_climbs_the_bands() -> None:
    rng = np.random.default_rng(42)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler, fitted())
    score_verdicts(handler, state, rng.uniform(size=3 * WINDOW), 0)
    baseline_before = state.baseline
    assert baseline_before is not None
    shown = score_verdicts(handler, state, rng.uniform(0.45, 1.0, 12 * WINDOW), 100)
    assert state.baseline is baseline_before  # the drift never became the reference
    bands = [s["band"] for s in shown]
    # minor, then moderate, then severe as drifted scores fill the recent window (the
    # time-uniform margin against a baseline of one window needs ~10 windows for severe)
    assert bands[0] == "minor" and bands[-1] == "severe" and "moderate" in bands
    assert bands.index("moderate") < bands.index("severe")
    assert [s["verdict"] for s in shown][-1] == "FAIL"
    assert shown[-1]["significant"] is True


def test_set_baseline_restarts_the_recent_scores_and_round_trips() -> None:
    rng = np.random.default_rng(43)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler, fitted())
    score_verdicts(handler, state, rng.uniform(size=2 * WINDOW), 0)
    chosen = QuantileSketch(0.01).update(rng.uniform(0.45, 1.0, 2000))
    state.set_baseline(chosen)
    assert state.baseline is chosen and state.previous_scores is None
    assert state.score_sketch.n == 0
    shown = score_verdicts(handler, state, rng.uniform(0.45, 1.0, 500), 50)
    assert shown[-1]["verdict"] == "PASS" and shown[-1]["baseline_n"] == 2000

    dumped = handler.model.dump(state)[fields.STATE]
    assert isinstance(dumped, bytes)
    stored = {**EMPTY, fields.CALIBRATOR: fitted().record(), fields.CALIBRATOR_VERSION: b"3"}
    restored = handler.model.load("p", {**stored, fields.STATE: dumped})
    assert restored.to_state() == state.to_state()
    assert view(handler, restored)["score_band"] == "minor"


def test_an_identity_stream_gets_a_score_gate_once_a_baseline_is_set() -> None:
    rng = np.random.default_rng(44)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    assert [v.gate for v in handler.model.evaluate("p", state, NOW).verdicts] == ["residual_drift"]
    state.set_baseline(QuantileSketch(0.01).update(rng.uniform(size=1000)))
    shown = score_verdicts(handler, state, rng.uniform(0.5, 1.0, 1000), 0)
    assert shown[-1]["verdict"] == "FAIL" and shown[-1]["band"] == "severe"


def test_the_same_scores_give_the_same_state_however_they_are_batched() -> None:
    """A replay after a crash or a rebalance batches the same events differently: the
    baseline moves at exact window boundaries, so the state is the same."""
    rng = np.random.default_rng(44)
    scores = rng.uniform(size=3 * WINDOW + 137)
    states = []
    for batch in (scores.size, 250, 300, 700, 999):
        handler = LabelHandler(POLICY)
        state = fresh_state(handler, fitted())
        for offset, start in enumerate(range(0, scores.size, batch)):
            chunk = scores[start : start + batch]
            fold(handler, state, events(chunk, np.full(chunk.size, np.nan), offset, NOW))
        states.append(state)
    first = states[0]
    assert first.score_baseline is not None and first.score_baseline.n == WINDOW
    assert first.previous_scores is not None and first.previous_scores.n == WINDOW
    assert first.score_sketch.n == 137  # moved at 1, 2 and 3 windows
    for other in states[1:]:
        for sketch in ("score_sketch", "previous_scores", "score_baseline"):
            assert buckets(getattr(other, sketch)) == buckets(getattr(first, sketch)), sketch


def buckets(sketch: QuantileSketch | None) -> tuple[int, list[tuple[int, int]]] | None:
    """A sketch's content: its count and its buckets (in any order of insertion)."""
    if sketch is None:
        return None
    state = sketch.to_state()
    return state["n"], sorted(state["positive"]) + sorted(state["negative"])
