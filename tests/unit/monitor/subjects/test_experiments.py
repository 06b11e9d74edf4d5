from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from estimators import (
    CoMoments,
    Moments,
    QuantileSketch,
    SampleRatioSequence,
    benjamini_hochberg,
)
from monitor import Policy
from monitor.config import AgentPolicy, CanaryPolicy, ExperimentPolicy
from monitor.events._decisions import Decision, to_builtins
from monitor.gates import Verdict, decision_record, should_publish
from monitor.pipeline import Judgement, RawMessage
from monitor.pipeline._dedupe import event_digests
from monitor.store import _keys as fields
from monitor.subjects import CanaryHandler, TelemetryHandler
from monitor.subjects import _telemetry as telemetry_module
from monitor.subjects._experiment_model import _one_rollback
from monitor.subjects._experiments import (
    HISTORY,
    CanaryEvent,
    ExperimentModel,
    ExperimentState,
    Lifecycle,
    VariantStats,
    recommendation,
)

POLICY = Policy()
NOW = 1_795_341_600.0


# --- helpers --------------------------------------------------------------------------------------


def telemetry(
    event_id: str,
    variant: str = "control",
    *,
    subject: str = "agent",
    outcome: float | bool | None = 0.8,
    pre: float | None = None,
    segment: str | None = None,
    toxic: bool | None = False,
    pii: bool | None = False,
    latency: float | None = 400.0,
    cost: float | None = None,
    secondary: dict[str, float] | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "ts": NOW,
        "experiment_id": subject,
        "unit_id": f"u-{event_id}",
        "variant": variant,
    }
    if outcome is not None:
        event["primary_outcome"] = outcome
    guardrails = {"toxicity": toxic, "pii": pii, "latency_ms": latency, "unit_cost": cost}
    guardrails = {k: v for k, v in guardrails.items() if v is not None}
    if guardrails:
        event["guardrails"] = guardrails
    covariates = {"pre_period": pre, "segment": segment}
    covariates = {k: v for k, v in covariates.items() if v is not None}
    if covariates:
        event["covariates"] = covariates
    if secondary is not None:
        event["sec_outcomes"] = secondary
    if environment is not None:
        event["environment"] = environment
    return event


def canary_event(
    action: str,
    percent: float | None = None,
    *,
    bundle: str = "v2",
    ts: float = NOW,
    event_id: str | None = None,
    agent: str = "agent",
    actor: str | None = None,
    rationale: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id or f"{action}-{bundle}-{percent}-{ts}",
        "ts": ts,
        "agent": agent,
        "bundle_id": bundle,
        "action": action,
    }
    optional = {"canary_percent": percent, "actor": actor, "rationale": rationale}
    return event | {key: value for key, value in optional.items() if value is not None}


def message(topic: str, offset: int, *events: dict[str, Any], partition: int = 0) -> RawMessage:
    value = orjson.dumps(events[0] if len(events) == 1 else list(events))
    return RawMessage(topic, partition, offset, value)


def fold(
    handler: TelemetryHandler,
    state: ExperimentState,
    events: list[dict[str, Any]],
    now: float = NOW,
    subject: str = "agent",
) -> None:
    batch = handler.decode([message("telemetry", 0, *events)])
    assert batch.dead_letters == []
    assert list(batch.subjects) == [subject]
    assert handler.update(subject, state, batch.subjects[subject], now) == []


def step(
    handler: CanaryHandler, state: ExperimentState, *events: dict[str, Any], now: float = NOW
) -> list[dict[str, Any]]:
    batch = handler.decode([message("canary", i, event) for i, event in enumerate(events)])
    assert batch.dead_letters == []
    audit: list[dict[str, Any]] = []
    for subject, subject_events in batch.subjects.items():
        audit += handler.update(subject, state, subject_events, now)
    return audit


def deployed(percent: float = 10, bundle: str = "v2", now: float = NOW) -> ExperimentState:
    state = ExperimentState()
    step(CanaryHandler(POLICY), state, canary_event("deploy", percent, bundle=bundle), now=now)
    return state


def arm(n: int, quality: float, seed: int, pre: bool = False, toxic: int = 0) -> VariantStats:
    """A variant's statistics built directly: ``n`` quality scores (with the pre-period
    covariate when ``pre``), latencies and toxicity."""
    rng = np.random.default_rng(seed)
    covariate = rng.normal(0.8, 0.1, n)
    outcome = quality + 0.8 * (covariate - 0.8) + rng.normal(0, 0.05, n)
    latency = rng.lognormal(6.0, 0.3, n)
    return VariantStats(
        n=n,
        toxicity_n=n,
        toxic=toxic,
        pii_n=n,
        pii=0,
        latency=QuantileSketch().update(latency),
        latency_moments=Moments().update(latency),
        primary=Moments().update(outcome),
        primary_pre=CoMoments().update(covariate, outcome) if pre else CoMoments(),
    )


def canary_state(
    canary: VariantStats | None,
    control: VariantStats | None,
    phase: str = "monitoring",
    percent: float = 10.0,
) -> ExperimentState:
    lifecycle = Lifecycle("v2", phase, percent, NOW - 3600, NOW - 3600, last_data_at=NOW)
    variants = {k: v for k, v in (("canary", canary), ("control", control)) if v is not None}
    return ExperimentState(variants=variants, lifecycle=lifecycle, stage=1)


def by_gate(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.gate: v for v in verdicts}


def publish(
    model: ExperimentModel,
    subject: str,
    state: ExperimentState,
    judgement: Judgement,
    published: dict[str, tuple[str, str]],
    now: float = NOW,
) -> list[Decision]:
    """What the runner does after an evaluation: a decision for each verdict that changed
    or escalated its action, then ``settle`` in the same write."""
    decisions = []
    for verdict in judgement.verdicts:
        last_verdict, last_action = published.get(verdict.gate, (None, "none"))
        if should_publish(
            last_verdict, verdict.verdict, last_action=last_action, action=verdict.action
        ):
            decisions.append(decision_record(verdict, now))
            published[verdict.gate] = (verdict.verdict, verdict.action)
    model.settle(subject, state, judgement, decisions)
    return decisions


# --- decoding -------------------------------------------------------------------------------------


def test_telemetry_decodes_with_its_defaults_grouped_by_experiment() -> None:
    minimal = {
        "event_id": "e1",
        "ts": "2026-11-22T10:00:00Z",
        "experiment_id": "exp",
        "unit_id": "u1",
        "variant": "b",
    }
    batch = TelemetryHandler(POLICY).decode(
        [
            message("telemetry", 4, minimal, telemetry("e2", "canary", outcome=True)),
            message("telemetry", 5, telemetry("e3", environment="staging", subject="exp")),
        ]
    )
    assert batch.dead_letters == []
    assert list(batch.subjects) == ["exp", "agent"]
    exp = batch.subjects["exp"].columns
    assert [exp.variant.names[c] for c in exp.variant.codes.tolist()] == ["b", "control"]
    assert exp.unit_id.tolist() == ["u1", "u-e3"]
    assert exp.staging.tolist() == [False, True]  # the default environment is prod
    # Not given: NaN (the minimal event has no outcome, guardrails or covariates).
    assert np.isnan(exp.outcome[0]) and np.isnan(exp.latency_ms[0])
    assert np.isnan(exp.toxicity[0]) and np.isnan(exp.pre_period[0])
    assert exp.segment.codes.tolist() == [-1, -1] and exp.secondary == {}
    assert batch.subjects["exp"].ts.tolist() == [1_795_341_600.0, NOW]
    assert batch.subjects["exp"].offsets.tolist() == [4, 5]
    agent = batch.subjects["agent"].columns
    assert agent.outcome.tolist() == [1.0]  # true
    assert agent.latency_ms.tolist() == [400.0] and agent.toxicity.tolist() == [0.0]


@pytest.mark.parametrize(
    ("change", "what", "where"),
    [
        ({"guardrails": {"pii": "yes"}}, "Expected `bool | null`, got `str`", ".guardrails.pii"),
        (
            {"guardrails": {"toxicity": 1}},
            "Expected `bool | null`, got `int`",
            ".guardrails.toxicity",
        ),
        ({"guardrails": {"latency_ms": -1.0}}, "Expected `float` >= 0.0", ".guardrails.latency_ms"),
        ({"environment": "dev"}, "Invalid enum value 'dev'", ".environment"),
        ({"variant": ""}, "Expected `str` of length >= 1", ".variant"),
        ({"primary_outcome": "good"}, "Expected `bool | float | null`", ".primary_outcome"),
        ({"sec_outcomes": {"clicks": "x"}}, "Expected `float`, got `str`", ".sec_outcomes[...]"),
        ({"unit_id": None}, "Expected `str`, got `null`", ".unit_id"),
        ({"ts": "yesterday"}, "Invalid RFC3339 encoded datetime", ".ts"),
    ],
)
def test_bad_telemetry_is_dead_lettered_with_where_it_went_wrong(
    change: dict[str, Any], what: str, where: str
) -> None:
    good, bad = telemetry("ok"), {**telemetry("bad"), **change}
    batch = TelemetryHandler(POLICY).decode([message("telemetry", 9, good, bad, partition=2)])
    [letter] = batch.dead_letters
    assert letter.error.startswith(f"EventValidationError: {what}")
    assert letter.error.endswith(f" - at `$[1]{where}`")
    assert orjson.loads(letter.payload) == bad
    assert (letter.partition, letter.offset) == (2, 9)
    kept = batch.subjects["agent"]
    assert len(kept) == 1 and kept.digests.tolist() == event_digests(["ok"]).tolist()
    # Alone in its message, the event is named from the top.
    alone = TelemetryHandler(POLICY).decode([message("telemetry", 10, bad)])
    [letter] = alone.dead_letters
    assert letter.error.endswith(f" - at `${where}`") and alone.subjects == {}


def test_canary_events_decode_with_their_defaults() -> None:
    batch = CanaryHandler(POLICY).decode(
        [
            message("canary", 0, canary_event("deploy", 10, actor="ci")),
            message("canary", 1, canary_event("pause"), canary_event("rollback", agent="other")),
        ]
    )
    assert batch.dead_letters == []
    deploy, pause = batch.subjects["agent"].columns.events
    assert deploy.canary_percent == 10.0 and isinstance(deploy.canary_percent, float)
    assert (deploy.actor, deploy.rationale) == ("ci", None)
    assert (pause.action, pause.canary_percent, pause.actor) == ("pause", None, None)
    [rollback] = batch.subjects["other"].columns.events
    assert rollback.action == "rollback"
    assert isinstance(rollback, CanaryEvent)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (canary_event("deploy"), "canary_percent is required for deploy"),
        (canary_event("promote"), "canary_percent is required for promote"),
        (canary_event("deploy", 150), "canary_percent must be in 0..100, got 150"),
        (canary_event("promote", -5), "canary_percent must be in 0..100, got -5"),
        (canary_event("rollback", 101), "canary_percent must be in 0..100"),
        (canary_event("explode", 10), "Invalid enum value 'explode' - at `$.action`"),
        ({**canary_event("deploy", 10), "bundle_id": ""}, "`$.bundle_id`"),
        ({**canary_event("deploy", 10), "canary_percent": "ten"}, "`$.canary_percent`"),
    ],
)
def test_bad_canary_events_are_dead_lettered_with_a_clear_error(
    event: dict[str, Any], error: str
) -> None:
    batch = CanaryHandler(POLICY).decode([message("canary", 3, event)])
    [letter] = batch.dead_letters
    assert letter.error.startswith("EventValidationError: ")
    assert error in letter.error
    assert orjson.loads(letter.payload) == event
    assert batch.subjects == {}


# --- TelemetryHandler.update ----------------------------------------------------------------------


def test_update_folds_each_variants_production_telemetry() -> None:
    handler, state = TelemetryHandler(POLICY), ExperimentState()
    events = [
        telemetry("c1", "control", outcome=0.7, pre=0.6, segment="en", latency=300.0, cost=0.01),
        telemetry("c2", "control", outcome=0.9, pre=0.8, segment="de", toxic=True),
        telemetry("c3", "control", outcome=None, pii=None, latency=None, secondary={"clicks": 2}),
        telemetry("k1", "canary", outcome=True, pre=None, segment="en", pii=True, latency=500.0),
        telemetry("k2", "canary", outcome=0.5, pre=0.4, toxic=None, secondary={"clicks": 1.0}),
    ]
    fold(handler, state, events)
    control, canary = state.variants["control"], state.variants["canary"]
    assert (control.n, canary.n) == (3, 2)
    assert (control.toxicity_n, control.toxic, canary.toxicity_n, canary.toxic) == (3, 1, 1, 0)
    assert (control.pii_n, control.pii, canary.pii_n, canary.pii) == (2, 0, 2, 1)
    assert (control.latency.n, control.latency_moments.n) == (2, 2)
    assert control.latency_moments.mean == pytest.approx(350.0)
    assert (control.cost.n, control.cost.mean) == (1, 0.01)
    assert (control.primary.n, control.primary.mean) == (2, pytest.approx(0.8))
    assert (canary.primary.n, canary.primary.mean) == (2, pytest.approx(0.75))  # True is 1.0
    # The covariate pairs only the outcomes that carry it.
    assert (control.primary_pre.n, canary.primary_pre.n) == (2, 1)
    assert canary.primary_pre.mean_x == pytest.approx(0.4)
    assert {k: m.n for k, m in control.segments.items()} == {"en": 1, "de": 1}
    assert list(canary.segments) == ["en"] and canary.segments["en"].mean == 1.0
    assert control.secondary["clicks"].mean == 2.0 and canary.secondary["clicks"].n == 1
    assert state.staging == {}
    assert state.lifecycle is None


def test_staging_is_counted_and_never_judged() -> None:
    handler, state = TelemetryHandler(POLICY), ExperimentState()
    staging = [
        telemetry(f"s{i}", "b", toxic=True, pii=True, environment="staging", subject="exp")
        for i in range(300)
    ]
    fold(handler, state, [*staging, telemetry("p1", "control", subject="exp")], subject="exp")
    assert state.staging == {"b": 300}
    assert list(state.variants) == ["control"]
    verdicts = by_gate(handler.model.evaluate("exp", state, NOW).verdicts)
    assert verdicts["guardrail"].verdict == "INCONCLUSIVE"
    view = to_builtins(handler.model.view("exp", state, Judgement(list(verdicts.values()))))
    assert view["experiment"]["variants"]["b"] == {"n": 0, "staging_n": 300, "guardrails": {}}
    assert view["experiment"]["variants"]["control"]["staging_n"] == 0


def test_last_data_at_moves_only_with_production_canary_data() -> None:
    handler, state = TelemetryHandler(POLICY), deployed(now=NOW - 100)
    assert state.lifecycle is not None and state.lifecycle.last_data_at is None
    fold(handler, state, [telemetry("c1", "control")], now=NOW - 50)
    fold(handler, state, [telemetry("s1", "canary", environment="staging")], now=NOW - 40)
    fold(handler, state, [telemetry("x1", "shadow")], now=NOW - 30)
    assert state.lifecycle.last_data_at is None
    fold(handler, state, [telemetry("k1", "canary"), telemetry("c2", "control")], now=NOW - 20)
    assert state.lifecycle.last_data_at == NOW - 20
    fold(handler, state, [telemetry("c3", "control")], now=NOW)
    assert state.lifecycle.last_data_at == NOW - 20
    # A custom canary variant name.
    custom = Policy(agents={"agent": AgentPolicy(canary=CanaryPolicy(canary_variant="green"))})
    handler, state = TelemetryHandler(custom), deployed()
    fold(handler, state, [telemetry("k1", "canary")], now=NOW + 1)
    assert state.lifecycle is not None and state.lifecycle.last_data_at is None
    fold(handler, state, [telemetry("g1", "green")], now=NOW + 2)
    assert state.lifecycle.last_data_at == NOW + 2


def test_the_canary_split_is_tested_against_its_percent() -> None:
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    batch = [telemetry(f"k{i}", "canary") for i in range(10)]
    batch += [telemetry(f"c{i}", "control") for i in range(90)]
    batch += [telemetry(f"x{i}", "shadow") for i in range(7)]  # not declared: not counted
    batch += [telemetry(f"s{i}", "canary", environment="staging") for i in range(5)]
    fold(handler, state, batch)
    assert state.srm is not None
    assert state.srm_variants == ["canary", "control"]
    assert state.srm.expected == pytest.approx([0.1, 0.9])
    assert state.srm.counts == [10, 90]
    fold(handler, state, [telemetry("k99", "canary"), telemetry("c99", "control")])
    assert state.srm.counts == [11, 91]


def test_a_broken_canary_split_holds() -> None:
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    for batch in range(4):
        events = [telemetry(f"k{batch}-{i}", "canary") for i in range(150)]
        events += [telemetry(f"c{batch}-{i}", "control") for i in range(350)]
        fold(handler, state, events)
    srm = by_gate(handler.model.evaluate("agent", state, NOW).verdicts)["srm"]
    assert (srm.verdict, srm.action, srm.reason) == ("HOLD", "hold", "srm")
    assert srm.evidence["counts"] == {"canary": 600, "control": 1400}


def test_a_rolled_back_canary_has_no_split_to_test() -> None:
    """The controller moves the canary's traffic back: control alone is no mismatch."""
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    events = [telemetry(f"k{i}", "canary") for i in range(20)]
    fold(handler, state, events + [telemetry(f"c{i}", "control") for i in range(180)])
    step(CanaryHandler(POLICY), state, canary_event("rollback"))
    fold(handler, state, [telemetry(f"after{i}", "control") for i in range(2000)])
    assert state.srm is not None and state.srm.counts == [20, 180]
    srm = by_gate(handler.model.evaluate("agent", state, NOW).verdicts)["srm"]
    assert (srm.verdict, srm.reason) == ("PASS", "not_applicable")


def test_an_experiment_is_tested_against_its_declared_allocation() -> None:
    allocation = {"a": 0.25, "b": 0.75}
    policy = Policy(
        experiments={"exp": ExperimentPolicy(allocation=allocation, control_variant="a")}
    )
    handler, state = TelemetryHandler(policy), ExperimentState()
    events = [telemetry(f"a{i}", "a", subject="exp") for i in range(3)]
    events += [telemetry(f"c{i}", "c", subject="exp") for i in range(4)]
    events += [telemetry(f"a{i}", "a", subject="exp") for i in range(3, 5)]
    fold(handler, state, events, subject="exp")
    assert state.srm is not None and state.srm_variants == ["a", "b"]
    # From the first event not of control ("a") on; the undeclared "c" is not tested.
    assert state.srm.expected == [0.25, 0.75] and state.srm.counts == [2, 0]


def test_an_undeclared_experiment_expects_equal_shares_of_the_variants_seen() -> None:
    handler, state = TelemetryHandler(POLICY), ExperimentState()
    fold(handler, state, [telemetry(f"a{i}", "a", subject="exp") for i in range(5)], subject="exp")
    assert state.srm is None  # one variant: nothing to test
    fold(handler, state, [telemetry(f"b{i}", "b", subject="exp") for i in range(3)], subject="exp")
    assert state.srm is not None and state.srm_variants == ["a", "b"]
    # Started afresh with what the stage holds.
    assert (state.srm.expected, state.srm.counts) == ([0.5, 0.5], [5, 3])
    fold(handler, state, [telemetry("a9", "a", subject="exp")], subject="exp")
    assert state.srm.counts == [6, 3]
    fold(handler, state, [telemetry("c0", "c", subject="exp")], subject="exp")
    assert state.srm_variants == ["a", "b", "c"]
    assert state.srm.expected == pytest.approx([1 / 3] * 3)
    assert state.srm.counts == [6, 3, 1]


def test_a_new_stage_restarts_the_comparison_and_the_split_test() -> None:
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    state = deployed(percent=10)
    fold(telemetry_handler, state, [telemetry("k1", "canary"), telemetry("c1", "control")])
    assert state.srm is not None and state.stage == 1
    step(canary_handler, state, canary_event("promote", 50, ts=NOW + 1), now=NOW + 10)
    assert (state.variants, state.srm, state.srm_variants, state.stage) == ({}, None, [], 2)
    late = [telemetry("k2", "canary"), telemetry("c2", "control")]  # of before the promote
    fold(telemetry_handler, state, late)
    assert (state.split, state.srm) == (None, None)
    fold(telemetry_handler, state, [{**e, "ts": NOW + 2} for e in late])  # at or after it
    assert state.srm is not None
    assert (state.srm.expected, state.srm.counts) == ([0.5, 0.5], [1, 1])
    assert {name: stats.n for name, stats in state.variants.items()} == {"canary": 2, "control": 2}


def test_telemetry_read_before_its_deploy_is_kept_and_rolls_the_canary_back() -> None:
    """Topics are read independently: a canary's first telemetry (event time after the
    deploy) can be folded before the deploy is applied. It belongs to the deployment: the
    breach found in it, which only alerted while no canary was live, escalates to a
    rollback once the deploy lands (the same FAIL verdict, a new action: published)."""
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    model, state = ExperimentModel(POLICY), ExperimentState()
    early = [{**telemetry(f"k{i}", "canary", toxic=i % 5 == 0), "ts": NOW + 5} for i in range(400)]
    early += [{**telemetry(f"c{i}", "control"), "ts": NOW + 5} for i in range(3600)]
    fold(telemetry_handler, state, early)
    published: dict[str, tuple[str, str]] = {}
    before = publish(model, "agent", state, model.evaluate("agent", state, NOW + 6), published)
    assert ("guardrail", "FAIL", "alert") in [(d.gate, d.verdict, d.action) for d in before]
    step(canary_handler, state, canary_event("deploy", 10, ts=NOW), now=NOW + 7)
    assert {name: stats.n for name, stats in state.variants.items()} == {
        "canary": 400,
        "control": 3600,
    }
    assert (state.srm, state.stage) == (None, 1)  # the split test restarts: shares changed
    after = publish(model, "agent", state, model.evaluate("agent", state, NOW + 8), published)
    rollbacks = [(d.gate, d.verdict, d.bundle_id) for d in after if d.action == "rollback"]
    assert rollbacks == [("guardrail", "FAIL", "v2")]
    assert state.lifecycle is not None and state.lifecycle.phase == "rolled_back"


def test_telemetry_from_before_a_stage_is_dropped_with_it() -> None:
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    state = ExperimentState()
    fold(telemetry_handler, state, [{**telemetry("k1", "canary"), "ts": NOW - 1}])
    fold(telemetry_handler, state, [{**telemetry("k2", "canary"), "ts": NOW + 5}])
    fold(telemetry_handler, state, [{**telemetry("k0", "canary", environment="staging"), "ts": 0}])
    assert state.stage_first_ts == NOW - 1  # staging events are not the stage's
    step(canary_handler, state, canary_event("deploy", 10, ts=NOW), now=NOW + 7)
    assert (state.variants, state.stage_first_ts) == ({}, None)
    fold(telemetry_handler, state, [{**telemetry("k3", "canary"), "ts": NOW + 9}])
    assert state.stage_first_ts == NOW + 9


# --- the split test of a stage --------------------------------------------------------------------


def split_batch(prefix: str, canary: int, control: int, ts: float = NOW) -> list[dict[str, Any]]:
    """``canary`` and ``control`` units, one event each, shuffled as a router would, but
    for the first: a canary's (so that a batch that starts the test counts whole)."""
    events = [telemetry(f"{prefix}k{i}", "canary") for i in range(canary)]
    events += [telemetry(f"{prefix}c{i}", "control") for i in range(control)]
    order = np.random.default_rng(len(prefix) + canary).permutation(range(1, len(events)))
    return [{**events[i], "ts": ts} for i in [0, *order.tolist()]]


def srm_of(handler: TelemetryHandler, state: ExperimentState) -> Verdict:
    return by_gate(handler.model.evaluate("agent", state, NOW).verdicts)["srm"]


def test_control_alone_before_the_canary_is_routed_is_no_mismatch() -> None:
    """Issue 18's repro: a deploy at 10%, 170 control-only events (the controller routes
    the canary an interval later), then a true 10% split: no HOLD. Counted from the
    deploy, as before, the 170 events hold the test for ever."""
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    fold(handler, state, [telemetry(f"early{i}", "control") for i in range(170)])
    assert (state.split, state.srm) == (None, None)
    srm = srm_of(handler, state)
    assert (srm.verdict, srm.reason, srm.evidence["counted"]) == (
        "INCONCLUSIVE",
        "insufficient_data",
        None,
    )
    for batch in range(10):
        fold(handler, state, split_batch(f"b{batch}-", 20, 180))
    srm = srm_of(handler, state)
    assert (srm.verdict, srm.reason) == ("PASS", "no_mismatch")
    assert srm.evidence["counts"] == {"canary": 200, "control": 1800}
    assert (srm.evidence["counted"], srm.evidence["capped"]) == ("units", False)
    assert srm.evidence["expected"] == {"canary": 0.1, "control": 0.9}
    from_the_deploy = SampleRatioSequence([0.1, 0.9]).update([0, 170])
    for _ in range(10):
        from_the_deploy.update([20, 180])
    assert from_the_deploy.rejects(POLICY.canary.srm_alpha)


def test_the_first_canary_event_starts_the_test_inside_its_batch() -> None:
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    events = [telemetry(f"c{i}", "control") for i in range(5)]
    events += [{**telemetry("k0", "canary"), "ts": NOW + 3}]
    events += [telemetry(f"c{i}", "control") for i in range(5, 8)]
    fold(handler, state, events)
    assert state.srm is not None and state.split is not None
    assert state.srm.counts == [1, 3] and state.split_started_at == NOW + 3


def test_the_split_counts_distinct_units_not_events() -> None:
    """50 canary users with one request each, 450 control users with four: 10% of the
    units (on plan), 2.7% of the events (a mismatch if events were counted)."""
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    events = [telemetry(f"k{i}", "canary") for i in range(50)]
    for repeat in range(4):
        events += [
            {**telemetry(f"c{i}-{repeat}", "control"), "unit_id": f"user{i}"} for i in range(450)
        ]
    fold(handler, state, events)
    srm = srm_of(handler, state)
    assert srm.evidence["counts"] == {"canary": 50, "control": 450}
    assert (srm.verdict, srm.evidence["counted"]) == ("PASS", "units")
    assert SampleRatioSequence([0.1, 0.9]).update([50, 1800]).rejects(POLICY.canary.srm_alpha)
    view = to_builtins(
        handler.model.view("agent", state, handler.model.evaluate("agent", state, NOW))
    )
    assert (view["experiment"]["srm_counted"], view["experiment"]["srm_capped"]) == ("units", False)


def test_the_split_test_freezes_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry_module, "SRM_MAX_UNITS", 100)
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    fold(handler, state, split_batch("a", 15, 135))
    assert state.split is not None and state.split.full and state.srm is not None
    frozen = (state.srm.counts, state.srm.max_log_e_value)
    assert sum(frozen[0]) == 100
    fold(handler, state, split_batch("b", 150, 150))  # a mismatch the frozen test ignores
    assert (state.srm.counts, state.srm.max_log_e_value) == frozen
    srm = srm_of(handler, state)
    assert (srm.evidence["capped"], srm.evidence["cap"], srm.evidence["n"]) == (True, 100, 100)
    view = to_builtins(
        handler.model.view("agent", state, handler.model.evaluate("agent", state, NOW))
    )
    assert view["experiment"]["srm_capped"] is True


def test_a_resume_starts_a_new_split_test() -> None:
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    state = deployed(percent=10)
    fold(telemetry_handler, state, split_batch("a", 30, 70))  # broken while it ran
    assert srm_of(telemetry_handler, state).verdict == "HOLD"
    step(canary_handler, state, canary_event("pause", ts=NOW + 5))
    step(canary_handler, state, canary_event("resume", ts=NOW + 10))
    assert (state.split, state.srm, state.split_from, state.stage) == (None, None, NOW + 10, 1)
    assert state.variants["canary"].n == 30  # the comparison goes on: same stage
    fold(telemetry_handler, state, split_batch("late", 5, 5, ts=NOW + 9))  # from before it
    fold(telemetry_handler, state, [{**telemetry("c", "control"), "ts": NOW + 11}])
    assert state.split is None
    for batch in range(5):
        fold(telemetry_handler, state, split_batch(f"r{batch}", 10, 90, ts=NOW + 12))
    srm = srm_of(telemetry_handler, state)
    assert (srm.verdict, srm.evidence["counts"]) == ("PASS", {"canary": 50, "control": 450})
    assert state.split_started_at == NOW + 12


def test_canary_telemetry_before_its_deploy_waits_for_the_declared_percent() -> None:
    """The demo's HOLD: telemetry read before the deploy was tested against equal shares
    of the variants seen. Now it is counted, and tested once the deploy declares 10%."""
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    state = ExperimentState()
    fold(telemetry_handler, state, split_batch("early", 40, 360, ts=NOW + 5))
    assert state.srm is None and state.split is not None
    assert (srm_of(telemetry_handler, state).verdict, state.split.counts) == (
        "INCONCLUSIVE",
        {"canary": 40, "control": 360},
    )
    step(canary_handler, state, canary_event("deploy", 10, ts=NOW), now=NOW + 7)
    fold(telemetry_handler, state, split_batch("later", 10, 90, ts=NOW + 8))
    assert state.srm is not None and state.srm.expected == pytest.approx([0.1, 0.9])
    srm = srm_of(telemetry_handler, state)
    assert (srm.verdict, srm.evidence["counts"]) == ("PASS", {"canary": 50, "control": 450})


def test_an_agent_of_the_policy_has_no_split_before_its_deploy() -> None:
    policy = Policy(agents={"agent": AgentPolicy(canary=CanaryPolicy(canary_variant="green"))})
    handler, state = TelemetryHandler(policy), ExperimentState()
    fold(handler, state, [telemetry(f"c{i}", "control") for i in range(3)])
    fold(handler, state, [telemetry(f"b{i}", "blue") for i in range(3)])
    assert state.split is not None and state.srm is None


def test_a_state_from_before_the_split_counts_starts_its_test_again() -> None:
    """Its test counted events from the deploy (the HOLD that never cleared)."""
    handler, state = TelemetryHandler(POLICY), deployed(percent=10)
    fold(handler, state, split_batch("a", 10, 90))
    old = state.to_state()
    for key in ("split", "split_from", "split_started_at"):
        del old[key]
    loaded = ExperimentState.from_state(old)
    assert (loaded.srm, loaded.srm_variants, loaded.split) == (None, [], None)
    assert loaded.variants == state.variants and loaded.lifecycle == state.lifecycle


# --- CanaryHandler: the lifecycle -----------------------------------------------------------------


def test_deploy_starts_a_lifecycle_and_a_stage() -> None:
    handler, state = CanaryHandler(POLICY), ExperimentState(variants={"old": VariantStats(n=5)})
    audit = step(
        handler,
        state,
        canary_event("deploy", 10, ts=NOW - 60, actor="ci", rationale="new prompt"),
        now=NOW,
    )
    lifecycle = state.lifecycle
    assert lifecycle is not None
    assert (lifecycle.bundle_id, lifecycle.phase, lifecycle.canary_percent) == (
        "v2",
        "monitoring",
        10.0,
    )
    assert (lifecycle.deployed_at, lifecycle.stage_started_at) == (NOW - 60, NOW)
    assert (lifecycle.last_data_at, lifecycle.rollback) == (None, None)
    assert lifecycle.history == [
        {
            "action": "deploy",
            "ts": NOW - 60,
            "percent": 10.0,
            "actor": "ci",
            "rationale": "new prompt",
        }
    ]
    assert (state.variants, state.stage) == ({}, 1)
    assert audit == [
        {
            "kind": "canary",
            "ts": "2026-11-22T09:59:00Z",
            "subject": "agent",
            "agent": "agent",
            "bundle_id": "v2",
            "action": "deploy",
            "canary_percent": 10.0,
            "actor": "ci",
            "rationale": "new prompt",
            "event_id": f"deploy-v2-10-{NOW - 60}",
        }
    ]


def test_a_deploy_at_100_percent_is_promoted_at_once() -> None:
    state = deployed(percent=100)
    assert state.lifecycle is not None and state.lifecycle.phase == "promoted"


def test_promote_moves_up_the_ladder_with_a_new_stage() -> None:
    handler, state = CanaryHandler(POLICY), deployed(percent=10, now=NOW - 100)
    state.variants = {"canary": VariantStats(n=500), "control": VariantStats(n=4500)}
    assert state.lifecycle is not None
    state.lifecycle.last_data_at = NOW - 1
    step(handler, state, canary_event("promote", 50, ts=NOW), now=NOW)
    lifecycle = state.lifecycle
    assert (lifecycle.phase, lifecycle.canary_percent) == ("monitoring", 50.0)
    assert (lifecycle.stage_started_at, lifecycle.last_data_at) == (NOW, None)
    assert lifecycle.deployed_at == NOW  # the deploy's event time
    assert (state.variants, state.stage) == ({}, 2)
    step(handler, state, canary_event("promote", 100, ts=NOW + 5), now=NOW + 5)
    assert (lifecycle.phase, lifecycle.canary_percent, state.stage) == ("promoted", 100.0, 3)
    assert [h["action"] for h in lifecycle.history] == ["deploy", "promote", "promote"]
    assert [h["percent"] for h in lifecycle.history] == [10.0, 50.0, 100.0]


def test_promoting_another_bundle_starts_it() -> None:
    handler, state = CanaryHandler(POLICY), deployed(percent=10)
    step(handler, state, canary_event("promote", 50, bundle="v3", ts=NOW + 7), now=NOW + 9)
    lifecycle = state.lifecycle
    assert lifecycle is not None
    assert (lifecycle.bundle_id, lifecycle.phase, lifecycle.canary_percent) == (
        "v3",
        "monitoring",
        50.0,
    )
    assert (lifecycle.deployed_at, lifecycle.stage_started_at, state.stage) == (NOW + 7, NOW + 9, 2)
    assert [h["action"] for h in lifecycle.history] == ["promote"]


def test_a_manual_rollback_is_recorded_once() -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    step(handler, state, canary_event("rollback", ts=NOW + 60, actor="alice", rationale="odd"))
    lifecycle = state.lifecycle
    assert lifecycle is not None and lifecycle.phase == "rolled_back"
    assert lifecycle.rollback == {
        "decision_id": None,
        "reason": "manual_rollback",
        "by": "alice",
        "rationale": "odd",
        "ts": "2026-11-22T10:01:00Z",
    }
    audit = step(handler, state, canary_event("rollback", ts=NOW + 120, actor="bob"))
    assert lifecycle.rollback["by"] == "alice"
    assert len(lifecycle.history) == 2  # the second changed nothing: audited, with a note
    assert audit[0]["note"].startswith("ignored: bundle v2 was rolled back")
    # Without an actor: "manual".
    state = deployed()
    step(handler, state, canary_event("rollback"))
    assert state.lifecycle is not None and state.lifecycle.rollback is not None
    assert state.lifecycle.rollback["by"] == "manual"


def test_pause_and_resume() -> None:
    handler, state = CanaryHandler(POLICY), deployed(now=NOW - 100)
    lifecycle = state.lifecycle
    assert lifecycle is not None
    step(handler, state, canary_event("resume"), now=NOW - 90)  # not paused: nothing
    assert (lifecycle.phase, lifecycle.last_data_at) == ("monitoring", None)
    step(handler, state, canary_event("pause"), now=NOW - 80)
    assert lifecycle.phase == "paused"
    step(handler, state, canary_event("pause"), now=NOW - 70)
    assert lifecycle.phase == "paused"
    step(handler, state, canary_event("resume"), now=NOW)
    # The fail-safe clock starts again on resume.
    assert (lifecycle.phase, lifecycle.last_data_at) == ("monitoring", NOW)
    step(handler, state, canary_event("rollback"), canary_event("pause"), canary_event("resume"))
    assert lifecycle.phase == "rolled_back"


def test_events_about_another_bundle_are_ignored_but_audited() -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    before = orjson.dumps(state.to_state())
    events = [
        canary_event(action, percent, bundle="v1")
        for action, percent in (("rollback", None), ("pause", None), ("resume", None))
    ]
    audit = step(handler, state, *events)
    assert orjson.dumps(state.to_state()) == before
    assert [(a["action"], a["bundle_id"]) for a in audit] == [
        ("rollback", "v1"),
        ("pause", "v1"),
        ("resume", "v1"),
    ]
    # No lifecycle at all: everything but deploy and promote is ignored.
    empty = ExperimentState()
    assert len(step(handler, empty, canary_event("rollback"), canary_event("pause"))) == 2
    assert empty.lifecycle is None and empty.stage == 0


def test_the_history_keeps_the_latest_actions() -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    for i in range(HISTORY + 5):
        step(handler, state, canary_event("pause" if i % 2 == 0 else "resume", ts=NOW + i))
    assert state.lifecycle is not None
    assert len(state.lifecycle.history) == HISTORY
    assert state.lifecycle.history[-1]["ts"] == NOW + HISTORY + 4


REFUSED = "ignored: bundle v2 was rolled back; deploy a new bundle_id to try again"


@pytest.mark.parametrize(
    ("action", "percent"),
    [("promote", 50), ("promote", 100), ("resume", None), ("pause", None), ("rollback", None)],
)
def test_a_rolled_back_bundle_is_never_reopened(action: str, percent: float | None) -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    step(handler, state, canary_event("rollback", actor="alice"))
    before = orjson.dumps(state.to_state())
    audit = step(handler, state, canary_event(action, percent, ts=NOW + 60))
    assert orjson.dumps(state.to_state()) == before  # not in the history either
    assert [(a["action"], a["bundle_id"], a["note"]) for a in audit] == [(action, "v2", REFUSED)]


def test_a_new_bundle_starts_afresh_and_no_rolled_back_one_comes_back() -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    step(handler, state, canary_event("rollback"))
    # Deployed again under its own id (a controller that did not look): refused too.
    assert step(handler, state, canary_event("deploy", 10))[0]["note"] == REFUSED
    step(handler, state, canary_event("deploy", 10, bundle="v3", ts=NOW + 60))
    lifecycle = state.lifecycle
    assert lifecycle is not None
    assert (lifecycle.bundle_id, lifecycle.phase, lifecycle.rollback, state.stage) == (
        "v3",
        "monitoring",
        None,
        2,
    )
    assert lifecycle.rolled_back_bundles == ["v2"]
    for action in ("deploy", "promote"):  # an old bundle named again: it stays rolled back
        audit = step(handler, state, canary_event(action, 50, ts=NOW + 120))
        assert audit[0]["note"] == REFUSED
        assert (state.lifecycle.bundle_id, state.stage) == ("v3", 2)
    step(handler, state, canary_event("promote", 50, bundle="v3", ts=NOW + 180))
    assert (lifecycle.canary_percent, lifecycle.phase, state.stage) == (50.0, "monitoring", 3)
    # The list is bounded: the latest HISTORY rolled-back bundles.
    for i in range(HISTORY + 3):
        step(handler, state, canary_event("deploy", 10, bundle=f"b{i}"))
        step(handler, state, canary_event("rollback", bundle=f"b{i}"))
    step(handler, state, canary_event("deploy", 10, bundle="last"))
    assert state.lifecycle.rolled_back_bundles == [f"b{i}" for i in range(3, HISTORY + 3)]


def test_an_event_about_another_bundle_says_which_one_runs() -> None:
    handler, state = CanaryHandler(POLICY), deployed()
    audit = step(handler, state, canary_event("pause", bundle="v1"))
    assert audit[0]["note"] == "ignored: the agent runs bundle v2"
    audit = step(handler, ExperimentState(), canary_event("resume"))
    assert audit[0]["note"] == "ignored: the agent runs no bundle"
    # A step that changed the lifecycle has no note.
    assert "note" not in step(handler, state, canary_event("pause"))[0]


def test_a_settled_bundle_publishes_nothing_more_whatever_its_telemetry() -> None:
    """The reported churn: after the rollback, the split test and the guardrail flipped
    (srm HOLD then PASS, guardrail FAIL alert, INCONCLUSIVE, FAIL rollback)."""
    telemetry_handler, model = TelemetryHandler(POLICY), ExperimentModel(POLICY)
    state = canary_state(arm(1000, 0.80, 1, toxic=40), arm(9000, 0.80, 2))
    published: dict[str, tuple[str, str]] = {}
    decisions = publish(model, "agent", state, model.evaluate("agent", state, NOW), published)
    assert [(d.gate, d.action) for d in decisions] == [("guardrail", "rollback")]
    # What follows: control only (a broken split), then a clean canary, then silence.
    later = [
        [telemetry(f"c{i}") for i in range(3000)],
        [telemetry(f"k{i}", "canary") for i in range(5000)],
    ]
    for batch, now in zip([*later, []], (NOW + 10, NOW + 20, NOW + 7200), strict=True):
        if batch:
            fold(telemetry_handler, state, batch, now)
        verdicts = model.evaluate("agent", state, now).verdicts
        assert publish(model, "agent", state, Judgement(verdicts), published) == []
        assert all(v.action != "rollback" for v in verdicts)
    # The same after a reload (another worker, a restart).
    reloaded = model.load("agent", model.dump(state))
    assert (
        model.evaluate("agent", reloaded, NOW + 7300).verdicts
        == model.evaluate("agent", state, NOW).verdicts
    )


def test_a_manual_rollback_settles_too() -> None:
    telemetry_handler, model, handler = (
        TelemetryHandler(POLICY),
        ExperimentModel(POLICY),
        CanaryHandler(POLICY),
    )
    state = canary_state(arm(600, 0.8, 1), arm(5400, 0.8, 2))
    step(handler, state, canary_event("rollback", actor="alice"))
    published: dict[str, tuple[str, str]] = {}
    decisions = publish(model, "agent", state, model.evaluate("agent", state, NOW), published)
    assert [(d.gate, d.reason) for d in decisions] == [("canary", "manual_rollback")]
    assert state.lifecycle is not None and state.lifecycle.settled is not None
    fold(telemetry_handler, state, [telemetry(f"x{i}", "canary", toxic=True) for i in range(500)])
    assert publish(model, "agent", state, model.evaluate("agent", state, NOW + 5), published) == []


def test_a_lifecycle_stored_before_settling_existed_loads() -> None:
    stored = Lifecycle("v2", "rolled_back", 10.0, NOW, NOW).to_state()
    del stored["settled"], stored["rolled_back_bundles"]
    lifecycle = Lifecycle.from_state(stored)
    assert (lifecycle.settled, lifecycle.rolled_back_bundles) == (None, [])
    assert lifecycle.refuses("v2") and not lifecycle.refuses("v3")


# --- ExperimentModel: judging ---------------------------------------------------------------------


def test_two_gates_wanting_a_rollback_give_one_and_settle_ends_them() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(1000, 0.72, 1, toxic=40), arm(9000, 0.80, 2))
    first = by_gate(model.evaluate("agent", state, NOW).verdicts)
    assert (first["guardrail"].verdict, first["guardrail"].action) == ("FAIL", "rollback")
    assert first["guardrail"].reason == "toxicity_rate"
    canary = first["canary"]
    assert (canary.verdict, canary.action, canary.reason) == ("FAIL", "none", "quality_regression")
    published: dict[str, tuple[str, str]] = {}
    decisions = publish(model, "agent", state, Judgement(list(first.values())), published)
    assert [d.action for d in decisions].count("rollback") == 1
    lifecycle = state.lifecycle
    assert lifecycle is not None and lifecycle.phase == "rolled_back"
    rollback = next(d for d in decisions if d.action == "rollback")
    assert lifecycle.rollback == {
        "decision_id": rollback.decision_id,
        "reason": "toxicity_rate",
        "gate": "guardrail",
        "ts": rollback.ts,
        "by": "driftgate",
    }
    # Settled: the verdicts that announced the rollback stand (stale, stalled: unchanged).
    assert lifecycle.settled is not None
    for later in (NOW + 1, NOW + 7200, NOW + 400 * 3600):
        verdicts = model.evaluate("agent", state, later).verdicts
        assert verdicts == _one_rollback(list(first.values()), True)
        assert [(v.verdict, v.action) for v in verdicts] == [
            ("FAIL", "none"),
            ("INCONCLUSIVE", "none"),  # srm: no split counted here
            ("FAIL", "none"),
        ]
        assert publish(model, "agent", state, Judgement(verdicts), published) == []
    assert recommendation(lifecycle.phase, verdicts) == "rollback"


def test_a_regression_alone_rolls_back_through_the_canary_gate() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(1000, 0.72, 1), arm(9000, 0.80, 2))
    verdicts = model.evaluate("agent", state, NOW).verdicts
    assert [v.gate for v in verdicts] == ["guardrail", "srm", "canary"]
    assert [v.action for v in verdicts].count("rollback") == 1
    assert by_gate(verdicts)["canary"].action == "rollback"
    decisions = publish(model, "agent", state, Judgement(verdicts), {})
    assert state.lifecycle is not None and state.lifecycle.rollback is not None
    assert state.lifecycle.rollback["reason"] == "quality_regression"
    assert state.lifecycle.rollback["gate"] == "canary"
    assert any(d.bundle_id == "v2" and d.action == "rollback" for d in decisions)
    assert all(v.action != "rollback" for v in model.evaluate("agent", state, NOW + 1).verdicts)


def test_a_manual_rollback_is_announced_once_and_keeps_its_reason() -> None:
    model, handler = ExperimentModel(POLICY), CanaryHandler(POLICY)
    state = canary_state(arm(600, 0.8, 1), arm(5400, 0.8, 2))
    step(handler, state, canary_event("rollback", actor="alice"))
    canary = by_gate(model.evaluate("agent", state, NOW).verdicts)["canary"]
    assert (canary.verdict, canary.action, canary.reason) == ("FAIL", "rollback", "manual_rollback")
    publish(model, "agent", state, model.evaluate("agent", state, NOW), {})
    assert state.lifecycle is not None and state.lifecycle.rollback is not None
    assert state.lifecycle.rollback["reason"] == "manual_rollback"
    assert state.lifecycle.rollback["by"] == "alice"
    assert state.lifecycle.rollback["decision_id"] is not None
    canary = by_gate(model.evaluate("agent", state, NOW).verdicts)["canary"]
    assert (canary.verdict, canary.action, canary.reason) == ("FAIL", "none", "manual_rollback")


def test_settle_records_only_a_rollback_of_the_current_bundle() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(None, None)
    judgement = model.evaluate("agent", state, NOW)
    decision = Decision(
        "d", "2026-11-22T10:00:00Z", "canary", "agent", "FAIL", "rollback", "r", {}, bundle_id="v1"
    )
    assert model.settle("agent", state, judgement, [decision]) is False
    other = msgspec.structs.replace(decision, bundle_id="v2", action="alert")
    assert model.settle("agent", state, judgement, [other]) is False
    assert state.lifecycle is not None and state.lifecycle.phase == "monitoring"
    current = msgspec.structs.replace(decision, bundle_id="v2")
    assert model.settle("agent", state, judgement, [current]) is True
    assert state.lifecycle.phase == "rolled_back"
    assert state.lifecycle.rollback is not None and state.lifecycle.rollback["decision_id"] == "d"
    assert model.settle("exp", ExperimentState(), judgement, [current]) is False


def test_one_rollback_keeps_the_first_and_none_once_announced() -> None:
    def verdict(gate: str, action: str) -> Verdict:
        return Verdict(gate, "s", "FAIL", action, "r", {})

    verdicts = [
        verdict("guardrail", "rollback"),
        verdict("srm", "hold"),
        verdict("canary", "rollback"),
    ]
    assert [v.action for v in _one_rollback(verdicts, False)] == ["rollback", "hold", "none"]
    assert [v.action for v in _one_rollback(verdicts, True)] == ["none", "hold", "none"]
    assert [v.action for v in verdicts] == ["rollback", "hold", "rollback"]  # not modified
    alone = [verdict("guardrail", "alert"), verdict("canary", "rollback")]
    assert [v.action for v in _one_rollback(alone, False)] == ["alert", "rollback"]


def test_an_active_canary_without_data_goes_stale() -> None:
    model = ExperimentModel(POLICY)
    state = deployed(now=NOW)
    assert (
        by_gate(model.evaluate("agent", state, NOW + 10).verdicts)["canary"].reason
        == "insufficient_data"
    )
    assert by_gate(model.evaluate("agent", state, NOW + 900).verdicts)["canary"].verdict == "HOLD"
    late = by_gate(model.evaluate("agent", state, NOW + 3600).verdicts)["canary"]
    assert (late.verdict, late.action, late.reason) == ("FAIL", "rollback", "stale_data")


def test_promotion_and_the_next_step_of_the_ladder() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(6000, 0.8, 1), arm(54_000, 0.8, 2))
    state.srm = None  # no split test yet: no promotion
    assert by_gate(model.evaluate("agent", state, NOW).verdicts)["canary"].action == "none"
    handler = TelemetryHandler(POLICY)
    # Control alone until the controller routes the canary its share: not counted.
    fold(handler, state, [telemetry(f"c{i}", "control") for i in range(900)])
    assert state.srm is None
    events = [telemetry(f"k{i}", "canary") for i in range(100)]
    events += [telemetry(f"c{i}", "control") for i in range(900, 1800)]
    fold(handler, state, events)
    # The quality outcomes are in [0, 1]: judged pair by pair from the stage's folded
    # telemetry on (the arms built by hand above carry no pairs), and 100 pairs of a
    # canary 0.04 above 95% of control do not show it yet.
    assert state.quality_pairs is not None and state.quality_pairs.n_pairs == 100
    assert by_gate(model.evaluate("agent", state, NOW).verdicts)["canary"].action == "none"
    events = [telemetry(f"k{i}", "canary") for i in range(100, 400)]
    events += [telemetry(f"c{i}", "control") for i in range(1800, 4500)]
    fold(handler, state, events)
    verdicts = by_gate(model.evaluate("agent", state, NOW).verdicts)
    assert verdicts["guardrail"].verdict == "PASS" and verdicts["srm"].verdict == "PASS"
    canary = verdicts["canary"]
    assert (canary.verdict, canary.action, canary.reason) == ("PASS", "promote", "promotion_ready")
    assert canary.evidence["method"] == "empirical_bernstein_pairs"
    assert canary.evidence["comparison"]["quality"]["n_canary"] == 400
    assert canary.evidence["next_percent"] == 50
    assert recommendation("monitoring", list(verdicts.values())) == "promote"
    # Of the verdicts equally good, the agent shows the one that asks for something.
    agent = to_builtins(model.view("agent", state, Judgement(list(verdicts.values()))))["agent"]
    assert (agent["verdict"], agent["reason"], agent["recommendation"]) == (
        "PASS",
        "promotion_ready",
        "promote",
    )


def test_a_fully_promoted_agent_has_no_split_to_test() -> None:
    model, handler = ExperimentModel(POLICY), TelemetryHandler(POLICY)
    state = deployed(percent=100)
    fold(handler, state, [telemetry(f"k{i}", "canary") for i in range(200)])
    assert state.srm is None
    verdicts = by_gate(model.evaluate("agent", state, NOW + 7200).verdicts)
    assert (verdicts["srm"].verdict, verdicts["srm"].reason) == ("PASS", "not_applicable")
    assert (verdicts["canary"].verdict, verdicts["canary"].reason) == ("PASS", "promoted")
    assert recommendation("promoted", list(verdicts.values())) == "monitor"
    # An experiment without a split yet is only waiting for one.
    experiment = by_gate(model.evaluate("exp", ExperimentState(), NOW).verdicts)
    assert (experiment["srm"].verdict, experiment["srm"].reason) == (
        "INCONCLUSIVE",
        "insufficient_data",
    )


def test_a_paused_canary_holds_and_its_stale_clock_stops() -> None:
    model, handler = ExperimentModel(POLICY), CanaryHandler(POLICY)
    state = deployed(now=NOW)
    step(handler, state, canary_event("pause"), now=NOW + 10)
    for later in (NOW + 900, NOW + 3600, NOW + 86_400):
        canary = by_gate(model.evaluate("agent", state, later).verdicts)["canary"]
        assert (canary.verdict, canary.action, canary.reason) == ("HOLD", "hold", "paused")
    step(handler, state, canary_event("resume"), now=NOW + 86_400)
    resumed = by_gate(model.evaluate("agent", state, NOW + 86_410).verdicts)["canary"]
    assert resumed.reason == "insufficient_data"  # the clock starts again on resume
    late = by_gate(model.evaluate("agent", state, NOW + 86_400 + 3600).verdicts)["canary"]
    assert (late.verdict, late.action, late.reason) == ("FAIL", "rollback", "stale_data")


@pytest.mark.parametrize(
    ("view", "tick"),
    [
        ({"agent": {"phase": "monitoring"}}, True),
        ({"agent": {"phase": "paused"}}, True),
        ({"agent": {"phase": "rolled_back"}}, False),
        ({"agent": {"phase": "promoted"}}, False),
        ({"agent": None, "experiment": {}}, False),
        ({}, False),
    ],
)
def test_needs_tick_for_an_active_canary_only(view: dict[str, Any], tick: bool) -> None:
    assert ExperimentModel(POLICY).needs_tick(view) is tick


def v(gate: str, verdict: str, action: str = "none") -> Verdict:
    return Verdict(gate, "agent", verdict, action, "r", {})


@pytest.mark.parametrize(
    ("phase", "verdicts", "expected"),
    [
        ("rolled_back", [v("canary", "FAIL")], "rollback"),
        (
            "monitoring",
            [v("guardrail", "FAIL", "rollback"), v("canary", "PASS", "promote")],
            "rollback",
        ),
        ("monitoring", [v("guardrail", "FAIL", "alert"), v("canary", "INCONCLUSIVE")], "monitor"),
        ("paused", [v("canary", "PASS", "promote")], "hold"),
        ("monitoring", [v("srm", "HOLD", "hold"), v("canary", "PASS", "promote")], "hold"),
        ("monitoring", [v("canary", "PASS", "promote")], "promote"),
        ("monitoring", [v("guardrail", "PASS", "promote")], "monitor"),  # only the canary gate
        ("monitoring", [v("canary", "WARN", "alert")], "monitor"),
        ("promoted", [v("canary", "PASS")], "monitor"),
        ("monitoring", [], "monitor"),
    ],
)
def test_recommendation(phase: str, verdicts: list[Verdict], expected: str) -> None:
    assert recommendation(phase, verdicts) == expected


# --- ExperimentModel: the view --------------------------------------------------------------------


def test_the_agent_view() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(600, 0.8, 1, pre=True), arm(5400, 0.8, 2, pre=True))
    state.staging = {"canary": 12}
    judgement = model.evaluate("agent", state, NOW)
    verdicts = judgement.verdicts
    view = to_builtins(model.view("agent", state, judgement))
    experiment = view["experiment"]
    assert experiment["control"] == "control" and experiment["stage"] == 1
    assert experiment["srm_p_value"] is None and experiment["srm_verdict"] == "INCONCLUSIVE"
    assert experiment["verdict"] == by_gate(verdicts)["guardrail"].verdict
    canary, control = experiment["variants"]["canary"], experiment["variants"]["control"]
    assert (canary["n"], canary["staging_n"], control["n"]) == (600, 12, 5400)
    assert set(canary["guardrails"]) == {
        "pii_rate",
        "toxicity_rate",
        "latency_p95_ms",
        "primary_outcome_mean",
    }
    assert canary["guardrails"]["pii_rate"]["status"] == "pass"
    assert "vs_control" not in control and "secondary" not in control
    versus = canary["vs_control"]
    assert versus["method"] == "asymptotic_cs_cuped"
    assert versus["cuped_theta"] == pytest.approx(0.8, abs=0.1)
    assert versus["variance_reduction"] > 0.5
    assert versus["ci_low"] < versus["estimate"] < versus["ci_high"]
    assert canary["secondary"] == {}
    agent = view["agent"]
    assert {k: agent[k] for k in ("agent", "bundle_id", "phase", "canary_percent")} == {
        "agent": "agent",
        "bundle_id": "v2",
        "phase": "monitoring",
        "canary_percent": 10.0,
    }
    assert agent["deployed_at"] == NOW - 3600
    assert (agent["verdict"], agent["recommendation"]) == ("INCONCLUSIVE", "monitor")
    assert agent["comparison"]["quality"]["method"] == "asymptotic_cs_cuped"
    assert (agent["rollback"], agent["history"]) == (None, [])
    orjson.dumps(view)  # what the runner writes


def test_vs_control_without_the_covariate_everywhere_is_unadjusted() -> None:
    model = ExperimentModel(POLICY)
    canary = arm(600, 0.8, 1, pre=True)
    canary.primary.update([0.8])  # one outcome without its covariate
    state = canary_state(canary, arm(5400, 0.8, 2, pre=True))
    view = to_builtins(model.view("agent", state, model.evaluate("agent", state, NOW)))
    versus = view["experiment"]["variants"]["canary"]["vs_control"]
    assert versus["method"] == "asymptotic_cs" and versus["cuped_theta"] is None
    assert view["agent"]["comparison"]["quality"]["method"] == "asymptotic_cs"
    empty = canary_state(VariantStats(), arm(100, 0.8, 2))
    view = to_builtins(model.view("agent", empty, model.evaluate("agent", empty, NOW)))
    assert view["experiment"]["variants"]["canary"]["vs_control"] == {
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "method": None,
    }


def test_the_worst_verdict_and_its_reason_lead_the_agent_view() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(1000, 0.72, 1), arm(9000, 0.80, 2))
    agent = to_builtins(model.view("agent", state, model.evaluate("agent", state, NOW)))["agent"]
    assert (agent["verdict"], agent["reason"], agent["recommendation"]) == (
        "FAIL",
        "quality_regression",
        "rollback",
    )


def test_view_given_only_verdicts_still_shows_the_readings() -> None:
    model = ExperimentModel(POLICY)
    state = canary_state(arm(600, 0.8, 1), arm(5400, 0.8, 2))
    verdicts = model.evaluate("agent", state, NOW).verdicts
    view = to_builtins(model.view("agent", state, Judgement(verdicts)))
    assert set(view["experiment"]["variants"]["canary"]["guardrails"]) >= {"toxicity_rate"}
    assert view["agent"]["comparison"] is None


def ab_state(seed: int = 5) -> ExperimentState:
    """An A/B test: control, b (a real effect on clicks), c (none)."""
    rng = np.random.default_rng(seed)

    def variant(clicks: float) -> VariantStats:
        return VariantStats(
            n=4000,
            primary=Moments().update(rng.normal(0.5, 0.1, 4000)),
            secondary={
                "clicks": Moments().update(rng.normal(clicks, 1.0, 4000)),
                "dwell": Moments().update(rng.normal(10.0, 2.0, 4000)),
            },
        )

    return ExperimentState(variants={"control": variant(1.0), "b": variant(1.5), "c": variant(1.0)})


def test_the_experiment_view_of_an_ab_test() -> None:
    model = ExperimentModel(POLICY)
    state = ab_state()
    judgement = model.evaluate("exp", state, NOW)
    assert [v.gate for v in judgement.verdicts] == ["guardrail", "srm"]
    view = to_builtins(model.view("exp", state, judgement))
    assert view["agent"] is None
    variants = view["experiment"]["variants"]
    assert set(variants) == {"control", "b", "c"}
    b = variants["b"]
    assert b["vs_control"]["method"] == "asymptotic_cs"
    assert set(b["secondary"]) == {"clicks", "dwell"}
    clicks = b["secondary"]["clicks"]
    assert clicks["ci_low"] < 0.5 < clicks["ci_high"]
    assert clicks["p_value"] < 1e-6
    assert variants["c"]["secondary"]["dwell"]["p_value"] > 0.05
    assert all(
        {"estimate", "ci_low", "ci_high", "p_value", "q_value", "discovery"} <= set(cell)
        for name in ("b", "c")
        for cell in variants[name]["secondary"].values()
    )


def test_secondary_outcomes_carry_benjamini_hochberg_q_values() -> None:
    model = ExperimentModel(POLICY)
    state = ab_state()
    variants = to_builtins(model.view("exp", state, model.evaluate("exp", state, NOW)))[
        "experiment"
    ]["variants"]
    cells = [
        variants[name]["secondary"][outcome]
        for name in ("b", "c")
        for outcome in ("clicks", "dwell")
    ]
    adjusted, rejected = benjamini_hochberg(np.array([cell["p_value"] for cell in cells]), 0.05)
    assert [cell["q_value"] for cell in cells] == pytest.approx(adjusted.tolist())
    assert [cell["discovery"] for cell in cells] == rejected.tolist()
    assert [cell["discovery"] for cell in cells] == [True, False, False, False]


# --- the state's round trip -----------------------------------------------------------------------


def test_the_state_round_trips_exactly_through_dump_and_load() -> None:
    telemetry_handler, canary_handler = TelemetryHandler(POLICY), CanaryHandler(POLICY)
    model = telemetry_handler.model
    state = deployed(percent=10)
    rng = np.random.default_rng(8)
    events = [
        telemetry(
            f"e{i}",
            "canary" if i % 10 == 0 else "control",
            outcome=float(rng.normal(0.8, 0.1)),
            pre=float(rng.normal(0.7, 0.1)) if i % 3 else None,
            segment=("en", "de")[i % 2],
            toxic=bool(i % 97 == 0),
            latency=float(rng.lognormal(6.0, 0.4)),
            cost=float(rng.uniform(0.001, 0.01)),
            secondary={"clicks": float(rng.poisson(2))},
            environment="staging" if i % 50 == 7 else None,
        )
        for i in range(600)
    ]
    fold(telemetry_handler, state, events)
    step(canary_handler, state, canary_event("pause", actor="ops"), canary_event("resume"))
    fold(telemetry_handler, state, [{**e, "event_id": f"again-{e['event_id']}"} for e in events])
    step(canary_handler, state, canary_event("rollback", actor="alice", rationale="why"))
    assert state.split is not None and state.split.remembered == 588  # 600 less 12 staging
    dumped = model.dump(state)
    assert set(dumped) == {fields.STATE}
    raw = dumped[fields.STATE]
    assert isinstance(raw, bytes)
    loaded = model.load("agent", {fields.STATE: raw})
    assert model.dump(loaded) == dumped
    assert loaded.to_state() == state.to_state()
    assert loaded.srm == state.srm and loaded.lifecycle == state.lifecycle
    assert loaded.split == state.split and loaded.split_started_at == NOW
    assert loaded.variants["canary"].latency == state.variants["canary"].latency
    assert loaded.variants["control"].primary_pre == state.variants["control"].primary_pre
    assert (
        model.evaluate("agent", loaded, NOW).verdicts
        == model.evaluate("agent", state, NOW).verdicts
    )
    assert model.load("agent", {fields.STATE: None}) == ExperimentState()
