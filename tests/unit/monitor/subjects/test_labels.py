from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import orjson
import pytest

from estimators import IdentityCalibrator, IsotonicCalibrator, QuantileSketch
from monitor import Policy, ResidualDriftPolicy
from monitor.events._decisions import to_builtins
from monitor.pipeline import RawMessage
from monitor.pipeline._dedupe import event_digests
from monitor.store import _keys as fields
from monitor.subjects._labels import ActiveCalibrator, LabelHandler, LabelModel, LabelState

POLICY = Policy()
NOW = 1_795_341_600.0
EMPTY = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}


def label(event_id: str, stream: str = "p", s: float = 0.4, y: float | None = 0.5) -> dict:
    return {"event_id": event_id, "ts": NOW, "stream": stream, "s": s, "y": y}


def message(offset: int, *events: dict, partition: int = 0) -> RawMessage:
    return RawMessage("labels", partition, offset, orjson.dumps(list(events)))


def labels(s: np.ndarray, y: np.ndarray, offset: int, stream: str = "p") -> RawMessage:
    """One envelope of labeled events of one stream."""
    return message(
        offset,
        *(
            label(f"{offset}-{i}", stream, float(a), float(b))
            for i, (a, b) in enumerate(zip(s, y, strict=True))
        ),
    )


def fold(handler: LabelHandler, state: LabelState, *messages: RawMessage) -> LabelState:
    batch = handler.decode(messages)
    for events in batch.subjects.values():
        handler.update("p", state, events, 0.0)
    return state


def fresh_state(handler: LabelHandler, calibrator: ActiveCalibrator | None = None) -> LabelState:
    stored = dict(EMPTY)
    if calibrator is not None:
        stored[fields.CALIBRATOR] = calibrator.record()
        stored[fields.CALIBRATOR_VERSION] = str(calibrator.version).encode()
    return handler.model.load("p", stored)


def fitted(version: int = 3) -> ActiveCalibrator:
    rng = np.random.default_rng(1)
    s = rng.uniform(size=500)
    model = IsotonicCalibrator().fit(s, s + rng.normal(0, 0.05, 500))
    return ActiveCalibrator(version, model, QuantileSketch(0.01).update(s))


@pytest.fixture(scope="module")
def late_shift() -> tuple[LabelHandler, LabelState]:
    """20,000 calibrated labels, then a bias of 0.08 (100 labels a batch)."""
    rng = np.random.default_rng(3)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    for batch in range(20):
        s = rng.uniform(size=1000)
        fold(handler, state, labels(s, s + rng.normal(0, 0.1, 1000), batch))
    assert state.residuals.changes == 0
    for batch in range(20, 26):
        s = rng.uniform(size=100)
        fold(handler, state, labels(s, s + rng.normal(0.08, 0.1, 100), batch))
    return handler, state


# --- decode -------------------------------------------------------------------------------


def test_decode_groups_events_by_stream_with_where_they_came_from() -> None:
    batch = LabelHandler(POLICY).decode(
        [
            message(10, label("a1", "a", 0.1, 1.0), label("b1", "b", 0.2, None), partition=1),
            message(3, label("a2", "a", 0.3, 0.0), partition=0),
            message(11, label("b2", "b", 0.4, 0.25), partition=1),
        ]
    )
    assert batch.dead_letters == []
    assert list(batch.subjects) == ["a", "b"]
    a, b = batch.subjects["a"], batch.subjects["b"]
    assert a.digests.tolist() == event_digests(["a1", "a2"]).tolist()
    assert b.digests.tolist() == event_digests(["b1", "b2"]).tolist()
    assert (a.partitions.tolist(), a.offsets.tolist()) == ([1, 0], [10, 3])
    assert (b.partitions.tolist(), b.offsets.tolist()) == ([1, 1], [10, 11])
    assert a.ts.tolist() == [NOW, NOW]
    assert a.columns.s.tolist() == [0.1, 0.3] and a.columns.y.tolist() == [1.0, 0.0]
    assert b.columns.s.tolist() == [0.2, 0.4]
    assert math.isnan(b.columns.y[0]) and b.columns.y[1] == 0.25


def test_decode_of_one_stream_keeps_every_row() -> None:
    batch = LabelHandler(POLICY).decode(
        [message(0, label("x", y=None)), message(1, label("y"), label("z", s=0.9), partition=2)]
    )
    [events] = batch.subjects.values()
    assert events.digests.tolist() == event_digests(["x", "y", "z"]).tolist()
    assert len(events) == 3
    assert events.partitions.tolist() == [0, 2, 2] and events.offsets.tolist() == [0, 1, 1]
    assert events.columns.s.tolist() == [0.4, 0.4, 0.9]
    assert np.isnan(events.columns.y).tolist() == [True, False, False]


def test_decode_dead_letters_bad_messages_and_keeps_the_rest() -> None:
    batch = LabelHandler(POLICY).decode(
        [
            RawMessage("labels", 0, 5, b"not json"),
            message(6, label("ok"), {**label("bad"), "s": "x"}),
            RawMessage("labels", 0, 7, None),
        ]
    )
    assert batch.subjects["p"].digests.tolist() == event_digests(["ok"]).tolist()
    assert [(d.offset, d.error.split(":", 1)[0]) for d in batch.dead_letters] == [
        (5, "JSONDecodeError"),
        (6, "EventValidationError"),
        (7, "EventValidationError"),
    ]
    assert "`$[1].s`" in batch.dead_letters[1].error


def test_decode_of_only_bad_messages_has_no_subjects() -> None:
    batch = LabelHandler(POLICY).decode([RawMessage("labels", 0, 5, b"[1]")])
    assert batch.subjects == {} and len(batch.dead_letters) == 1


# --- update -------------------------------------------------------------------------------


def test_update_counts_every_score_and_only_labeled_residuals() -> None:
    handler = LabelHandler(POLICY)
    state = fold(
        handler,
        fresh_state(handler),
        message(0, label("a", s=0.2, y=0.5), label("b", s=0.6, y=None), label("c", s=0.4, y=0.1)),
    )
    assert state.n == 3 and state.scores.n == 3 and state.score_sketch.n == 3
    assert state.scores.mean == pytest.approx(0.4)
    assert state.residuals.n == 2
    assert state.residuals.all_time.mean == pytest.approx(((0.5 - 0.2) + (0.1 - 0.4)) / 2)


def test_update_of_scores_only_leaves_the_residuals_alone() -> None:
    handler = LabelHandler(POLICY)
    state = fold(handler, fresh_state(handler), message(0, label("a", y=None), label("b", y=None)))
    assert state.n == 2 and state.residuals.n == 0


def test_residuals_are_taken_against_the_active_calibrator() -> None:
    handler = LabelHandler(POLICY)
    calibrator = fitted()
    state = fold(handler, fresh_state(handler, calibrator), message(0, label("a", s=0.3, y=0.9)))
    expected = 0.9 - float(calibrator.model.predict([0.3])[0])
    assert state.residuals.all_time.mean == pytest.approx(expected)
    assert expected != pytest.approx(0.9 - 0.3, abs=1e-3)


# --- load / dump --------------------------------------------------------------------------


def test_a_new_stream_starts_empty_under_the_identity_with_the_policy() -> None:
    policy = replace(
        POLICY, residual_drift=ResidualDriftPolicy(alpha=0.01, change_alpha=0.002, min_labeled=50)
    )
    state = LabelModel(policy).load("p", EMPTY)
    assert state.calibrator.version == 0 and state.calibrator.kind == "identity"
    assert state.n == 0 and state.residuals.n == 0 and state.score_sketch.n == 0
    # The interval spends what the change detector leaves of the gate's alpha.
    assert (state.residuals.alpha, state.residuals.min_n) == (pytest.approx(0.008), 50)
    assert state.residuals.all_time.method == "empirical_bernstein_cs"


def encoded(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def test_load_and_dump_round_trip_exactly(late_shift: tuple[LabelHandler, LabelState]) -> None:
    handler, state = late_shift
    model = handler.model
    dumped = model.dump(state)
    # No late-label half ever came: no join, no join field (tests of _late_labels).
    assert list(dumped) == [fields.STATE, fields.RESIDUAL_HISTORY]
    stored = {**EMPTY, **{name: encoded(value) for name, value in dumped.items()}}
    restored = model.load("p", stored)
    assert model.dump(restored) == dumped
    assert restored.to_state() == state.to_state()
    assert model.evaluate("p", restored, NOW).verdicts == model.evaluate("p", state, NOW).verdicts


def test_the_calibrator_record_round_trips() -> None:
    calibrator = fitted(version=7)
    again = ActiveCalibrator.from_fields(calibrator.record(), b"7")
    assert again.version == 7 and again.kind == "isotonic"
    assert again.model.to_state() == calibrator.model.to_state()
    assert again.baseline_scores is not None and calibrator.baseline_scores is not None
    assert again.baseline_scores.to_state() == calibrator.baseline_scores.to_state()
    assert again.record() == calibrator.record()


def test_a_new_version_starts_its_interval_from_the_fit_s_residual_variance() -> None:
    """The calibrator's out-of-fold mean squared residual is the prior variance of the
    new version's residual interval (all-time and restarted alike); a record written
    before it was kept, or the identity, starts without one."""
    handler = LabelHandler(POLICY)
    base = fitted()
    calibrator = ActiveCalibrator(3, base.model, base.baseline_scores, 0.0025)
    assert ActiveCalibrator.from_fields(calibrator.record(), b"3").residual_variance == 0.0025
    residuals = fresh_state(handler, calibrator).residuals
    assert residuals.prior_variance == 0.0025
    assert residuals.all_time.prior_variance == 0.0025
    assert fresh_state(handler, base).residuals.all_time.prior_variance is None
    assert fresh_state(handler).residuals.all_time.prior_variance is None


def test_no_calibrator_record_is_the_identity() -> None:
    calibrator = ActiveCalibrator.from_fields(None, None)
    assert calibrator.version == 0 and isinstance(calibrator.model, IdentityCalibrator)
    assert calibrator.baseline_scores is None
    assert ActiveCalibrator.from_fields(calibrator.record(), "0").kind == "identity"


# --- evaluate / view ----------------------------------------------------------------------


def test_evaluate_gives_residual_drift_always_and_score_drift_with_a_baseline() -> None:
    handler = LabelHandler(POLICY)
    plain = fold(handler, fresh_state(handler), message(0, label("a")))
    assert [v.gate for v in handler.model.evaluate("p", plain, NOW).verdicts] == ["residual_drift"]
    calibrated = fold(handler, fresh_state(handler, fitted(3)), message(0, label("a")))
    verdicts = handler.model.evaluate("p", calibrated, NOW).verdicts
    assert [v.gate for v in verdicts] == ["residual_drift", "score_drift"]
    assert {v.subject for v in verdicts} == {"p"}
    assert {v.evidence["calibrator_version"] for v in verdicts} == {3}


def test_the_view_of_a_quiet_stream_uses_the_all_time_interval() -> None:
    rng = np.random.default_rng(5)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    s = rng.uniform(size=500)
    fold(handler, state, labels(s, s + rng.normal(0, 0.1, 500), 0), message(1, label("u", y=None)))
    view = to_builtins(handler.model.view("p", state, handler.model.evaluate("p", state, NOW)))
    assert (view["n"], view["labeled_n"], view["residual_n"]) == (501, 500, 500)
    assert view["interval"] == "all_time" and view["verdict"] == "PASS"
    assert view["residual_mean"] == view["all_time"]["residual_mean"]
    assert view["ci_low"] < 0 < view["ci_high"]
    assert view["since_change"] is None and view["changes_detected"] == 0
    assert view["calibrator"] == {"kind": "identity", "version": 0}
    assert view["score_mean"] == pytest.approx(state.scores.mean)
    assert view["score_ks"] is None and view["score_verdict"] is None
    orjson.dumps(view)  # stored as JSON


def test_the_view_of_an_empty_stream_has_no_numbers() -> None:
    model = LabelModel(POLICY)
    state = model.load("p", EMPTY)
    view = to_builtins(model.view("p", state, model.evaluate("p", state, NOW)))
    assert view["verdict"] == "INCONCLUSIVE"
    assert view["residual_mean"] is None and view["all_time"]["residual_mean"] is None
    assert view["ci_low"] is None and view["ci_high"] is None and view["score_mean"] is None
    orjson.dumps(view)


def test_a_late_shift_is_reported_on_the_interval_since_the_change(
    late_shift: tuple[LabelHandler, LabelState],
) -> None:
    handler, state = late_shift
    view = to_builtins(handler.model.view("p", state, handler.model.evaluate("p", state, NOW)))
    assert view["interval"] == "since_change" and view["verdict"] == "FAIL"
    assert view["changes_detected"] == 1
    since = view["since_change"]
    assert 20_000 < since["since_labeled_n"] < 20_600
    assert view["residual_mean"] == since["residual_mean"] == pytest.approx(0.08, abs=0.02)
    assert (view["ci_low"], view["ci_high"]) == (since["ci_low"], since["ci_high"])
    assert view["residual_n"] == since["n"] < view["labeled_n"] == 20_600
    assert abs(view["all_time"]["residual_mean"]) < 0.01  # diluted by the quiet past


def test_right_after_an_alarm_the_view_shows_the_change_and_its_empty_interval() -> None:
    rng = np.random.default_rng(7)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler)
    for batch in range(10):
        s = rng.uniform(size=1000)
        fold(handler, state, labels(s, s + rng.normal(0, 0.1, 1000), batch))
    batch = 10
    while state.residuals.changes == 0:  # a bias of 0.1 (1 sd), 5 labels a batch
        s = rng.uniform(size=5)
        fold(handler, state, labels(s, s + rng.normal(0.1, 0.1, 5), batch))
        batch += 1
    view = to_builtins(handler.model.view("p", state, handler.model.evaluate("p", state, NOW)))
    assert (view["verdict"], view["reason"]) == ("WARN", "change_detected")
    assert view["interval"] == "since_change" and view["changes_detected"] == 1
    since = view["since_change"]
    assert since["since_labeled_n"] == state.residuals.change_at > 10_000
    assert view["residual_n"] == since["n"] < 5
    assert since["change_shift"] == pytest.approx(0.04, rel=0.05)  # 0.4 sd of ~0.1
    orjson.dumps(view)


def test_the_view_shows_the_score_drift_with_a_baseline() -> None:
    rng = np.random.default_rng(6)
    handler = LabelHandler(POLICY)
    state = fresh_state(handler, fitted(2))
    s = rng.uniform(0.5, 1.0, 1000)
    fold(handler, state, labels(s, s, 0))
    judgement = handler.model.evaluate("p", state, NOW)
    verdicts = judgement.verdicts
    view = to_builtins(handler.model.view("p", state, judgement))
    assert view["score_verdict"] == verdicts[1].verdict == "FAIL"
    assert view["score_ks"] == verdicts[1].evidence["estimate"] == pytest.approx(0.5, abs=0.06)
    assert view["calibrator"] == {"kind": "isotonic", "version": 2}


def test_a_state_from_before_exact_intervals_restarts_its_interval_and_says_so(
    late_shift: tuple[LabelHandler, LabelState],
) -> None:
    """A stored residual state without bounds (written before the empirical-Bernstein
    interval) cannot be rebuilt from its moments: it starts afresh, and the first verdict
    says why it is undecided; the state stored after it has bounds, and says nothing."""
    handler, state = late_shift
    model = handler.model
    document = orjson.loads(model.dump(state)[fields.STATE])
    for name in ("all_time", "since_change"):
        if document["residuals"][name] is not None:
            document["residuals"][name].pop("bounded")
    old = model.load("p", {**EMPTY, fields.STATE: orjson.dumps(document)})
    assert old.restarted and old.residuals.n == 0 and old.n == state.n  # scores are kept
    assert old.residuals.all_time.method == "empirical_bernstein_cs"
    [residual] = [v for v in model.evaluate("p", old, NOW).verdicts if v.gate == "residual_drift"]
    assert (residual.verdict, residual.reason) == ("INCONCLUSIVE", "interval_restarted")
    again = model.load("p", {**EMPTY, fields.STATE: model.dump(old)[fields.STATE]})
    assert not again.restarted
    [residual] = [v for v in model.evaluate("p", again, NOW).verdicts if v.gate == "residual_drift"]
    assert residual.reason == "insufficient_data"
