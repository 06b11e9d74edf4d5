"""Covariate drift of label streams: from the events' ``covariates`` to decisions."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config import CovariateDriftPolicy, Policy
from monitor.events._decisions import to_builtins
from monitor.pipeline import RawMessage
from monitor.pipeline._judge import judge_subject
from monitor.store import _keys as fields
from monitor.subjects._labels import LabelHandler, LabelState

EMPTY = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}
DOMAINS = np.array(["legal", "code", "math", "chat"])
BASE_SHARES = [0.1, 0.4, 0.3, 0.2]
POLICY = Policy(
    covariate_drift=CovariateDriftPolicy(
        covariates=("domain", "difficulty", "response_length"), baseline_n=2000
    )
)


def rows(offset: int, covariates: list[dict[str, Any]]) -> RawMessage:
    events = [
        {"event_id": f"{offset}-{i}", "ts": 1.7e9, "stream": "p", "s": 0.5, "covariates": c}
        for i, c in enumerate(covariates)
    ]
    return RawMessage("labels", 0, offset, orjson.dumps(events))


def columnar(offset: int, covariates: list[dict[str, Any]]) -> RawMessage:
    n = len(covariates)
    columns: dict[str, list[Any]] = {
        "event_id": [f"{offset}-{i}" for i in range(n)],
        "ts": [1.7e9] * n,
        "s": [0.5] * n,
    }
    for name in ("domain", "difficulty", "response_length"):
        columns[f"covariates.{name}"] = [c.get(name) for c in covariates]
    document = {"stream": "p", "columns": columns}
    return RawMessage("labels", 0, offset, orjson.dumps(document))


def draws(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, Any]]:
    """Covariates; ``shift`` moves difficulty by a KS distance of ``shift`` (uniform)."""
    domains = rng.choice(DOMAINS, n, p=BASE_SHARES)
    difficulty = rng.uniform(shift, 1 + shift, n)
    length = rng.integers(50, 2000, n)
    return [
        {"domain": str(d), "difficulty": float(x), "response_length": int(k)}
        for d, x, k in zip(domains, difficulty, length, strict=True)
    ]


def fold(handler: LabelHandler, state: LabelState, *messages: RawMessage) -> LabelState:
    for events in handler.decode(messages).subjects.values():
        handler.update("p", state, events, 0.0)
    return state


def test_rows_and_columnar_envelopes_give_the_same_state_however_batched() -> None:
    rng = np.random.default_rng(1)
    values = draws(rng, 3000)
    values[7] = {"domain": "legal"}  # a covariate left out is not counted
    values[8] = {**values[8], "difficulty": "hard"}  # a string for a number: ignored
    handler = LabelHandler(POLICY)
    whole = fold(handler, handler.model.load("p", EMPTY), rows(0, values))
    pieces = handler.model.load("p", EMPTY)
    for start in range(0, 3000, 700):
        chunk = values[start : start + 700]
        fold(handler, pieces, (columnar if start % 1400 else rows)(start, chunk))
    assert pieces.covariates == whole.covariates  # sketches compare by content
    tracks = whole.covariates.tracks
    assert {n: t.kind for n, t in tracks.items()} == {
        "domain": "categorical",
        "difficulty": "numeric",
        "response_length": "numeric",
    }
    difficulty = tracks["difficulty"]
    assert (difficulty.baseline.n, difficulty.live.n, difficulty.ignored) == (2000, 998, 1)
    assert tracks["domain"].baseline.n + tracks["domain"].live.n == 3000
    loaded = handler.model.load("p", {**EMPTY, fields.STATE: orjson.dumps(whole.to_state())})
    assert loaded.covariates == whole.covariates


def test_undeclared_covariates_are_not_read() -> None:
    handler = LabelHandler(Policy())
    state = fold(
        handler, handler.model.load("p", EMPTY), rows(0, draws(np.random.default_rng(2), 50))
    )
    assert state.covariates.tracks == {}
    assert handler.model.gates == ("residual_drift", "score_drift")


def run(shift: float, seed: int, batches: int = 40, size: int = 1000) -> list[dict[str, Any]]:
    """The covariate drift decisions of a stream whose difficulty moves by ``shift`` after
    the baseline (the other covariates stay)."""
    rng = np.random.default_rng(seed)
    handler = LabelHandler(POLICY)
    state = handler.model.load("p", EMPTY)
    published: dict[str, dict[str, Any]] = {}
    decisions = []
    for batch in range(batches):
        values = draws(rng, size, shift if batch * size >= 2000 else 0.0)
        fold(handler, state, rows(batch, values))
        judged = judge_subject(handler.model, "p", state, published, 0.0)
        published = judged.published
        decisions += [to_builtins(d) for d in judged.decisions if d.gate == "covariate_drift"]
    return decisions


def test_a_shift_of_ks_025_gets_a_moderate_band_decision_and_the_others_none() -> None:
    decisions = run(0.25, seed=3)
    assert [(d["verdict"], d["reason"], d["evidence"]["covariate"]) for d in decisions] == [
        ("WARN", "covariate_drift_moderate", "difficulty")
    ]
    (decision,) = decisions
    assert decision["evidence"]["band"] == "moderate" and decision["subject"] == "p"
    assert decision["evidence"]["estimate"] == pytest.approx(0.25, abs=0.02)


def test_no_decision_on_unshifted_covariates_over_paths() -> None:
    """Under the null, 25 paths of 20,000 events judged after every batch of 500: no
    covariate (numeric or categorical) ever leaves the minor band, none is even
    significant (bench/covariate_drift_validity.py measures the rate on more paths)."""
    decisions = [d for seed in range(25) for d in run(0.0, seed=100 + seed, batches=40, size=500)]
    assert decisions == []


def test_each_covariate_has_its_own_published_record_and_decision_ids() -> None:
    handler = LabelHandler(POLICY)
    assert handler.model.gates == (
        "residual_drift",
        "score_drift",
        "covariate_drift/domain",
        "covariate_drift/difficulty",
        "covariate_drift/response_length",
    )
    rng = np.random.default_rng(4)
    state = handler.model.load("p", EMPTY)
    fold(handler, state, rows(0, draws(rng, 2000)))
    moved = [
        {"domain": "legal", "difficulty": 2.0 + x["difficulty"], "response_length": 5000}
        for x in draws(rng, 20_000)
    ]
    fold(handler, state, rows(1, moved))
    judged = judge_subject(handler.model, "p", state, {}, 0.0)
    covariate = [to_builtins(d) for d in judged.decisions if d.gate == "covariate_drift"]
    assert sorted(d["evidence"]["covariate"] for d in covariate) == [
        "difficulty",
        "domain",
        "response_length",
    ]
    assert {d["verdict"] for d in covariate} == {"FAIL"}
    assert len({d["decision_id"] for d in covariate}) == 3
    assert set(judged.published) >= set(handler.model.gates[2:])
    view = to_builtins(handler.model.view("p", state, judged.judgement))["covariates"]
    assert view["domain"]["band"] == "severe" and view["domain"]["shares"]["legal"] == 1.0
    assert view["domain"]["baseline_shares"]["code"] == pytest.approx(0.4, abs=0.03)
