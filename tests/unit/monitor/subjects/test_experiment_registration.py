"""Pre-registration (locked with the first event, a change a deviation once), the policy's
checks of it, the analysis and its recommendation, and the memo of an experiment without
a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor import Policy
from monitor.config import ConfigError, ExperimentPolicy, load_policy
from monitor.events._decisions import to_builtins
from monitor.gates import Verdict
from monitor.pipeline import RawMessage
from monitor.presentation._report import build_memo
from monitor.runtime._demo import DEMO_EXPERIMENT, DEMO_EXPERIMENT_POLICY, ab_telemetry
from monitor.slices import REGISTRY
from monitor.store import Snapshot
from monitor.subjects._experiment_analysis import analyse, recommend
from monitor.subjects._experiments import ExperimentState, TelemetryHandler
from monitor.subjects._registration import locked_policy

NOW = 1_795_341_600.0
PLAN = ExperimentPolicy(**DEMO_EXPERIMENT_POLICY)


def fold(
    handler: TelemetryHandler, state: ExperimentState, envelopes: int, seed: int = 0, at: float = 0
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    audit = []
    for k in range(envelopes):
        value = orjson.dumps(ab_telemetry(rng, f"s{seed}", k * 50, NOW + at + k))
        batch = handler.decode([RawMessage("telemetry", 0, k, value)])
        events = batch.subjects[DEMO_EXPERIMENT]
        audit += handler.update(DEMO_EXPERIMENT, state, events, NOW + at + k)
    return audit


def handler_with(plan: ExperimentPolicy | None) -> TelemetryHandler:
    return TelemetryHandler(Policy(experiments={DEMO_EXPERIMENT: plan} if plan else {}))


def test_the_plan_locks_with_the_first_event_and_a_change_is_one_deviation() -> None:
    state = ExperimentState()
    audit = fold(handler_with(PLAN), state, 3)
    assert [entry["kind"] for entry in audit] == ["registration"]
    assert state.registered_at == NOW and state.registration == PLAN.registration()
    changed = ExperimentPolicy(**{**DEMO_EXPERIMENT_POLICY, "mde": 0.03, "power": 0.9})
    audit = fold(handler_with(changed), state, 3, seed=1, at=10)
    (deviation,) = audit
    assert deviation["kind"] == "deviation"
    assert deviation["changes"] == {"mde": [0.05, 0.03], "power": [0.8, 0.9]}
    assert fold(handler_with(changed), state, 2, seed=2, at=20) == []  # recorded once
    assert fold(handler_with(PLAN), state, 1, seed=3, at=30) == []  # back to the plan
    assert locked_policy(state, changed) == PLAN  # the memo keeps the locked plan
    assert len(state.deviations) == 1
    # Exact across a restart: the lock, what was seen and the deviations round-trip.
    again = ExperimentState.from_state(orjson.loads(orjson.dumps(state.to_state())))
    assert (again.registration, again.deviations) == (state.registration, state.deviations)


def test_a_plan_declared_after_the_first_event_is_a_deviation() -> None:
    state = ExperimentState()
    assert fold(handler_with(None), state, 2) == []
    audit = fold(handler_with(PLAN), state, 1, seed=1, at=100)
    assert [entry["kind"] for entry in audit] == ["deviation"]
    assert "registered after the experiment's first event" in audit[0]["note"]
    assert state.registered_at == NOW + 100


def write(tmp_path: Path, experiment: dict[str, Any]) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(orjson.dumps({"experiments": {"e": experiment}}).decode())
    return str(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"power": 0.7}, "experiments.e.power must be at least 0.8"),
        ({"baseline": 0.0}, "experiments.e.baseline must be control's expected rate"),
        ({"outcome_type": "count"}, "experiments.e.outcome_type must be one of"),
        ({"outcome_type": "continuous"}, "experiments.e.baseline_sd must be positive"),
        ({"mde": 0}, "experiments.e.mde must be positive to pre-register"),
        ({"cuped_r2": 1.0}, "experiments.e.cuped_r2 must be in [0, 1)"),
        ({"start": "March"}, "experiments.e.start must be a date"),
    ],
)
def test_a_bad_pre_registration_is_refused_naming_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        load_policy(write(tmp_path, {**DEMO_EXPERIMENT_POLICY, **changes}))


def test_an_unquoted_yaml_date_is_a_planned_date(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("experiments:\n  e:\n    start: 2026-03-01\n    end: 2026-03-15\n")
    experiment = load_policy(str(path)).experiments["e"]
    assert (experiment.start, experiment.end, experiment.registered) == (
        "2026-03-01",
        "2026-03-15",
        False,
    )


def analysis(envelopes: int, plan: ExperimentPolicy, guardrail: str) -> dict[str, Any]:
    state = ExperimentState()
    fold(handler_with(plan), state, envelopes)
    verdicts = [
        Verdict("guardrail", DEMO_EXPERIMENT, guardrail, "none", "r", {}),
        Verdict("srm", DEMO_EXPERIMENT, "PASS", "none", "r", {}),
    ]
    result = analyse(DEMO_EXPERIMENT, state, plan, "control", verdicts, 2000.0)
    assert result is not None
    return result


def test_a_breached_guardrail_holds_whatever_the_effect() -> None:
    result = analysis(200, PLAN, "FAIL")
    assert result["variants"]["treatment"]["difference"]["ci_low"] > 0
    assert result["recommendation"]["decision"] == "hold"
    assert "guardrail" in result["recommendation"]["reasons"][0]


def test_an_effect_surely_below_the_mde_iterates() -> None:
    # Registered for a 20-point MDE, the demo's 7 points are surely below it.
    plan = ExperimentPolicy(**{**DEMO_EXPERIMENT_POLICY, "mde": 0.2, "non_inferiority_margin": 0})
    result = dict(analysis(200, plan, "PASS"))
    treatment = result["variants"]["treatment"]
    treatment["difference"] = {**treatment["difference"], "ci_low": -0.01}  # not yet better
    assert treatment["difference"]["ci_high"] < 0.2
    assert recommend(result, plan)["decision"] == "iterate"


def test_the_memo_of_an_experiment_without_a_plan_says_so() -> None:
    plain = ExperimentPolicy(allocation={"control": 0.5, "treatment": 0.5})
    state = ExperimentState()
    handler = handler_with(plain)
    fold(handler, state, 20)
    judgement = handler.model.evaluate(DEMO_EXPERIMENT, state, NOW + 30)
    view = to_builtins(handler.model.view(DEMO_EXPERIMENT, state, judgement))
    assert view["experiment"]["analysis"]["registered"] is False
    memo = build_memo(
        Snapshot(views={"experiment": {DEMO_EXPERIMENT: view}}), [], DEMO_EXPERIMENT, REGISTRY, NOW
    ).markdown()
    assert "Not pre-registered" in memo and "Pre-registered: no" in memo
    assert "Effect sizes" in memo and "Recommendation:" in memo
