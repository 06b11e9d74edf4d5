"""The worker under a two-stage calibrator: each label event's residual uses its own
covariates (row events and columnar envelopes alike); an event without one uses the
calibrator's declared default."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from estimators import TwoStageCalibrator
from monitor import Policy
from monitor.pipeline import RawMessage
from monitor.store import _keys as fields
from monitor.subjects._labels import ActiveCalibrator, LabelHandler, LabelState

NOW = 1_795_341_600.0


@pytest.fixture(scope="module")
def calibrator() -> ActiveCalibrator:
    rng = np.random.default_rng(7)
    s, difficulty = rng.uniform(size=3000), rng.uniform(size=3000)
    domain = np.array(["legal", "code"], object)[rng.integers(0, 2, 3000)]
    y = np.clip(s - 0.4 * (difficulty - 0.5) - 0.1 * (domain == "legal"), 0, 1)
    model = TwoStageCalibrator().fit(
        s, y, {"difficulty": difficulty.astype(object), "domain": domain}
    )
    return ActiveCalibrator(2, model)


def state_of(handler: LabelHandler, calibrator: ActiveCalibrator) -> LabelState:
    stored = {
        fields.STATE: None,
        fields.CALIBRATOR: calibrator.record(),
        fields.CALIBRATOR_VERSION: b"2",
    }
    return handler.model.load("p", stored)


def fold(calibrator: ActiveCalibrator, *values: object) -> LabelState:
    handler = LabelHandler(Policy())
    state = state_of(handler, calibrator)
    messages = [RawMessage("labels", 0, i, orjson.dumps(v)) for i, v in enumerate(values)]
    batch = handler.decode(messages)
    assert not batch.dead_letters
    for events in batch.subjects.values():
        handler.update("p", state, events, NOW)
    return state


def expected_mean(calibrator: ActiveCalibrator, rows: list[tuple]) -> float:
    s = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    covariates = {
        "difficulty": np.array([r[2] for r in rows], object),
        "domain": np.array([r[3] for r in rows], object),
    }
    return float(calibrator.model.residuals(s, y, covariates).mean())


ROWS = [(0.3, 0.5, 0.9, "legal"), (0.6, 0.4, 0.1, "code"), (0.8, 0.9, 0.5, "legal")]


def event(i: int, s: float, y: float, covariates: dict | None) -> dict:
    document = {"event_id": f"e{i}", "ts": NOW, "stream": "p", "s": s, "y": y}
    if covariates is not None:
        document["covariates"] = covariates
    return document


def test_each_row_event_is_predicted_with_its_own_covariates(
    calibrator: ActiveCalibrator,
) -> None:
    events = [event(i, s, y, {"difficulty": d, "domain": m}) for i, (s, y, d, m) in enumerate(ROWS)]
    state = fold(calibrator, events)
    assert state.residuals.n == 3
    assert state.residuals.all_time.mean == pytest.approx(expected_mean(calibrator, ROWS))
    assert state.calibrator.kind == "two_stage"


def test_a_columnar_envelope_gives_the_same_residuals(calibrator: ActiveCalibrator) -> None:
    dotted = {
        "stream": "p",
        "columns": {
            "event_id": ["e0", "e1", "e2"],
            "ts": [NOW] * 3,
            "s": [r[0] for r in ROWS],
            "y": [r[1] for r in ROWS],
            "covariates.difficulty": [r[2] for r in ROWS],
            "covariates.domain": [r[3] for r in ROWS],
        },
    }
    whole = {
        "stream": "p",
        "columns": {
            "event_id": ["e0", "e1", "e2"],
            "ts": [NOW] * 3,
            "s": [r[0] for r in ROWS],
            "y": [r[1] for r in ROWS],
            "covariates": [{"difficulty": r[2], "domain": r[3]} for r in ROWS],
        },
    }
    expected = expected_mean(calibrator, ROWS)
    for document in (dotted, whole):
        state = fold(calibrator, document)
        assert state.residuals.all_time.mean == pytest.approx(expected)


def test_an_event_without_a_covariate_uses_the_declared_default(
    calibrator: ActiveCalibrator,
) -> None:
    model = calibrator.model
    assert isinstance(model, TwoStageCalibrator)
    median = next(e.default for e in model.encodings if e.name == "difficulty")
    without = fold(calibrator, [event(0, 0.4, 0.6, {"domain": "code"})])
    with_default = fold(calibrator, [event(0, 0.4, 0.6, {"domain": "code", "difficulty": median})])
    assert without.residuals.all_time.mean == pytest.approx(with_default.residuals.all_time.mean)
    # No covariates at all, in a row event and in a columnar envelope: every default.
    bare = fold(calibrator, [event(0, 0.4, 0.6, None)])
    columnar = fold(
        calibrator,
        {"stream": "p", "columns": {"event_id": ["e0"], "ts": [NOW], "s": [0.4], "y": [0.6]}},
    )
    assert bare.residuals.all_time.mean == pytest.approx(columnar.residuals.all_time.mean)
    assert bare.residuals.all_time.mean == pytest.approx(
        0.6 - float(model.predict([0.4], {}).item())
    )


def test_a_late_labeled_pair_uses_the_covariates_of_the_half_that_completes_it(
    calibrator: ActiveCalibrator,
) -> None:
    score = event(0, 0.3, None, {"difficulty": 0.2, "domain": "code"})  # type: ignore[arg-type]
    score["response_id"] = "r1"
    answer = {"event_id": "e1", "ts": NOW, "stream": "p", "y": 0.5, "response_id": "r1"}
    answer["covariates"] = {"difficulty": 0.9, "domain": "legal"}
    state = fold(calibrator, [score], [answer])
    assert state.residuals.n == 1
    assert state.residuals.all_time.mean == pytest.approx(
        expected_mean(calibrator, [(0.3, 0.5, 0.9, "legal")])
    )
