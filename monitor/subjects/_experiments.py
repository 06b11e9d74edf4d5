"""Experiments and canaries: telemetry per variant, and the lifecycle of an agent's bundles.

One subject per ``experiment_id`` (for a canary, its ``agent``): telemetry events
(``driftgate.telemetry``) feed each variant's statistics, canary events
(``driftgate.canary``) move the agent's lifecycle, and both are judged together, so
that a guardrail breach is always judged with the bundle and percent it happened under.
A deploy or a promotion starts a new stage: the allocation changed, so the comparison and
the sample-ratio test start afresh. The sample-ratio test of a stage (and of a resume)
starts with its first canary-variant event: controllers route traffic to a canary an
interval or two after they deploy it, and the control-only traffic in between is no
mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from estimators import (
    CoMoments,
    DifferenceInterval,
    Moments,
    PairedDifferenceSequence,
    QuantileSketch,
    SampleRatioSequence,
    SplitCounts,
    benjamini_hochberg,
    mean_difference_sequence,
)

from ..config import AgentPolicy, Policy
from ..events._structs import CanaryEvent, Guardrails, TelemetryEvent
from ..gates import SEVERITY, Verdict, finite_or_none, rfc3339
from ..gates._canary import CanaryFacts, Comparison, canary_gate, compare
from ..gates._guardrails import (
    GuardrailReading,
    guardrail_alpha,
    guardrail_gate,
    read_guardrails,
)
from ..gates._srm import srm_gate
from ..pipeline import DecodedBatch, RawMessage, SubjectEvents
from ..pipeline._dedupe import event_digests
from ..store import _keys as fields
from ._decode import EventRows, MessageDecoder

__all__ = [
    "CanaryEvent",
    "CanaryHandler",
    "ExperimentModel",
    "ExperimentState",
    "Guardrails",
    "Lifecycle",
    "TelemetryEvent",
    "TelemetryHandler",
    "VariantStats",
]

HISTORY = 20  # lifecycle actions kept in the state (the audit log keeps them all)
SRM_MIN_N = 100
# Distinct (variant, unit) pairs a stage's split test remembers (8 bytes each) before it
# freezes: enough to tell a 9% canary from a declared 10% (about 25,000 units).
SRM_MAX_UNITS = 50_000
# A canary in these phases takes its share of the traffic and is judged against control.
ACTIVE_PHASES = ("monitoring", "paused")


# --- state ------------------------------------------------------------------------------


@dataclass
class VariantStats:
    """One variant's production telemetry of the current stage, as mergeable statistics."""

    n: int = 0
    toxicity_n: int = 0
    toxic: int = 0
    pii_n: int = 0
    pii: int = 0
    latency: QuantileSketch = field(default_factory=QuantileSketch)
    latency_moments: Moments = field(default_factory=Moments)
    # Of log(1 + latency_ms): the geometric mean, robust to a heavy tail.
    log_latency: Moments = field(default_factory=Moments)
    cost: Moments = field(default_factory=Moments)
    primary: Moments = field(default_factory=Moments)
    # The outcome with the pre-period covariate, for CUPED (events that carry both).
    primary_pre: CoMoments = field(default_factory=CoMoments)
    segments: dict[str, Moments] = field(default_factory=dict)
    secondary: dict[str, Moments] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "toxicity": [self.toxicity_n, self.toxic],
            "pii": [self.pii_n, self.pii],
            "latency": self.latency.to_state(),
            "latency_moments": self.latency_moments.to_state(),
            "log_latency": self.log_latency.to_state(),
            "cost": self.cost.to_state(),
            "primary": self.primary.to_state(),
            "primary_pre": self.primary_pre.to_state(),
            "segments": {k: v.to_state() for k, v in self.segments.items()},
            "secondary": {k: v.to_state() for k, v in self.secondary.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> VariantStats:
        return cls(
            n=int(state["n"]),
            toxicity_n=int(state["toxicity"][0]),
            toxic=int(state["toxicity"][1]),
            pii_n=int(state["pii"][0]),
            pii=int(state["pii"][1]),
            latency=QuantileSketch.from_state(state["latency"]),
            latency_moments=Moments.from_state(state["latency_moments"]),
            log_latency=Moments.from_state(state["log_latency"]),
            cost=Moments.from_state(state["cost"]),
            primary=Moments.from_state(state["primary"]),
            primary_pre=CoMoments.from_state(state["primary_pre"]),
            segments={k: Moments.from_state(v) for k, v in state["segments"].items()},
            secondary={k: Moments.from_state(v) for k, v in state["secondary"].items()},
        )


@dataclass
class Lifecycle:
    """An agent's current bundle: where it is on the ladder and what happened to it."""

    bundle_id: str
    phase: str  # monitoring | paused | promoted | rolled_back
    canary_percent: float
    deployed_at: float  # event time of the deploy
    stage_started_at: float  # when this worker saw the stage begin (wall clock)
    last_data_at: float | None = None  # wall clock of the last canary telemetry
    rollback: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    settled: list[dict[str, Any]] | None = None
    """Once its rollback is announced, the gates' verdicts of that evaluation: they stand
    for the bundle from then on, so that it gets no decision after its rollback."""
    rolled_back_bundles: list[str] = field(default_factory=list)
    """The agent's earlier bundles that were rolled back (the latest :data:`HISTORY`):
    none of them is deployed or promoted again, so each is rolled back at most once."""

    def to_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Lifecycle:
        return cls(**state)  # fields added later have defaults: older states load

    def refuses(self, bundle_id: str) -> bool:
        """Whether ``bundle_id`` was rolled back on this agent: it is never reopened."""
        current = bundle_id == self.bundle_id and self.phase == "rolled_back"
        return current or bundle_id in self.rolled_back_bundles

    def retired(self) -> list[str]:
        """The rolled-back bundles a successor carries on, this one included if it was."""
        mine = [self.bundle_id] if self.phase == "rolled_back" else []
        return [*self.rolled_back_bundles, *mine][-HISTORY:]


@dataclass
class ExperimentState:
    variants: dict[str, VariantStats] = field(default_factory=dict)
    staging: dict[str, int] = field(default_factory=dict)
    lifecycle: Lifecycle | None = None
    srm: SampleRatioSequence | None = None
    srm_variants: list[str] = field(default_factory=list)
    stage: int = 0
    stage_first_ts: float | None = None
    """The earliest event time of the production telemetry folded into this stage."""
    quality_pairs: PairedDifferenceSequence | None = None
    """The canary's quality against control's over this stage, pair by pair (the canary
    gate's comparison of bounded outcomes)."""
    split: SplitCounts | None = None
    """The split test's distinct units per variant, from its first non-control event."""
    split_from: float | None = None
    """The event time from which an event may start the split test (the stage's start)."""
    split_started_at: float | None = None
    """The event time of the event that started the split test."""

    def new_stage(self, starts_at: float | None = None) -> None:
        """The allocation changed at event time ``starts_at``: compare afresh.

        Topics are read independently, so a deployment's first telemetry can be folded
        before its ``deploy`` is applied. When no event of the stage so far is earlier
        than the new stage's start (a stage runs from its event's time on), it all
        belongs to the new stage and is kept, with the units its split test counted (a
        breach found in it still rolls the canary back); otherwise it is dropped. The
        split test, whose expected shares changed, starts again in either case, from
        the counts kept."""
        keep = (
            starts_at is not None
            and self.stage_first_ts is not None
            and self.stage_first_ts >= starts_at
        )
        if not keep:
            self.variants, self.stage_first_ts = {}, None
            self.split, self.split_started_at = None, None
        self.srm, self.srm_variants = None, []
        self.quality_pairs = None  # the split that sizes its blocks changed
        self.split_from = starts_at
        self.stage += 1

    def restart_split(self, starts_at: float) -> None:
        """A new split test from the first canary event at or after ``starts_at`` (a
        resume: the controller may have moved the traffic while the canary was paused)."""
        self.split, self.split_started_at, self.split_from = None, None, starts_at
        self.srm, self.srm_variants = None, []

    def to_state(self) -> dict[str, Any]:
        return {
            "variants": {k: v.to_state() for k, v in self.variants.items()},
            "staging": self.staging,
            "lifecycle": self.lifecycle.to_state() if self.lifecycle else None,
            "srm": self.srm.to_state() if self.srm else None,
            "srm_variants": self.srm_variants,
            "stage": self.stage,
            "stage_first_ts": self.stage_first_ts,
            "quality_pairs": self.quality_pairs.to_state() if self.quality_pairs else None,
            "split": self.split.to_state() if self.split else None,
            "split_from": self.split_from,
            "split_started_at": self.split_started_at,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ExperimentState:
        # A state from before the split counts (no "split" key) counted events from the
        # stage's start, the HOLD that never cleared: its test starts again with the next
        # canary event.
        split = state.get("split")
        counted = "split" in state
        return cls(
            variants={k: VariantStats.from_state(v) for k, v in state["variants"].items()},
            staging={k: int(v) for k, v in state["staging"].items()},
            lifecycle=Lifecycle.from_state(state["lifecycle"]) if state["lifecycle"] else None,
            srm=SampleRatioSequence.from_state(state["srm"]) if state["srm"] and counted else None,
            srm_variants=list(state["srm_variants"]) if counted else [],
            stage=int(state["stage"]),
            stage_first_ts=state.get("stage_first_ts"),  # absent in states before it was kept
            # Absent in states written before pairs: the comparison pairs from now on.
            quality_pairs=PairedDifferenceSequence.from_state(state["quality_pairs"])
            if state.get("quality_pairs")
            else None,
            split=SplitCounts.from_state(split) if split else None,
            split_from=state.get("split_from"),
            split_started_at=state.get("split_started_at"),
        )


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Everything one evaluation found: the verdicts, and what the view shows beside them."""

    verdicts: list[Verdict]
    readings: dict[str, list[GuardrailReading]]
    comparison: dict[str, Any] | None
    quality: DifferenceInterval | None = None
    """The canary gate's quality comparison: also the canary's "vs control" in status."""


class ExperimentModel:
    """What is kept per experiment or agent, how it is judged, and how it is shown."""

    kind: str = "experiment"
    gates: tuple[str, ...] = ("guardrail", "srm", "canary")
    stored_fields: tuple[str, ...] = (fields.STATE,)
    # Stale data and stalls are judged on the clock, between batches.
    tick_seconds: float | None = 10.0

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # The last judgement of each state object, for the view written with it.
        self._judged: dict[int, Judgement] = {}

    def load(self, subject: str, stored: Mapping[str, bytes | None]) -> ExperimentState:
        raw = stored[fields.STATE]
        return ExperimentState.from_state(orjson.loads(raw)) if raw else ExperimentState()

    def dump(self, state: ExperimentState) -> dict[str, bytes | str]:
        return {fields.STATE: orjson.dumps(state.to_state())}

    def control(self, subject: str, state: ExperimentState) -> str:
        if state.lifecycle is not None:
            return self.policy.for_agent(subject).canary.control_variant
        return self.policy.for_experiment(subject).control_variant

    def judged_variants(self, subject: str, state: ExperimentState) -> list[str]:
        """Whose guardrails decide: the canary's, or every A/B variant but control."""
        if state.lifecycle is not None:
            return [self.policy.for_agent(subject).canary.canary_variant]
        control = self.control(subject, state)
        return [name for name in state.variants if name != control]

    def expected_split(self, subject: str, state: ExperimentState) -> dict[str, float] | None:
        """The declared share of each variant: the canary's percent while it is active
        (after a rollback or a full promotion no split is declared); an experiment's
        allocation; else equal shares of the variants seen (two at least).

        A canary's telemetry can be folded before its deploy is applied (the topics are
        read independently): an undeclared subject that has canary-variant traffic, or an
        agent of the policy, waits for its deploy to declare the split, rather than
        testing the canary's 10% against equal shares."""
        if state.lifecycle is not None:
            if state.lifecycle.phase not in ACTIVE_PHASES:
                return None
            canary = self.policy.for_agent(subject).canary
            share = state.lifecycle.canary_percent / 100
            if not 0 < share < 1:
                return None
            return {canary.control_variant: 1 - share, canary.canary_variant: share}
        declared = self.policy.for_experiment(subject).allocation
        if declared:
            return dict(declared)
        canary_variant = self.policy.for_agent(subject).canary.canary_variant
        if subject in self.policy.agents or canary_variant in state.variants:
            return None
        seen = sorted(state.variants)
        return {name: 1 / len(seen) for name in seen} if len(seen) >= 2 else None

    def judge(self, subject: str, state: ExperimentState, now: float) -> Judgement:
        policy = self.policy.for_agent(subject)
        lifecycle = state.lifecycle
        judged = self.judged_variants(subject, state)
        alpha = guardrail_alpha(policy.guardrails, len(judged))
        readings = {
            name: read_guardrails(stats, policy.guardrails, alpha)
            for name, stats in state.variants.items()
        }
        context: dict[str, Any] = {}
        if lifecycle is not None:
            context = {"bundle_id": lifecycle.bundle_id, "canary_percent": lifecycle.canary_percent}
        active = lifecycle is not None and lifecycle.phase in ACTIVE_PHASES
        guardrail = guardrail_gate(
            subject,
            {name: readings.get(name, []) for name in judged},
            policy.guardrails,
            policy.guardrails.action if active else "alert",
            context,
        )
        degenerate = lifecycle is not None and self.expected_split(subject, state) is None
        srm = srm_gate(
            subject,
            state.srm,
            state.srm_variants,
            policy.canary.srm_alpha,
            SRM_MIN_N,
            applicable=not degenerate,
            split=state.split,
        )
        verdicts = [guardrail, srm]
        comparison = None
        compared = Comparison(None, None)
        if lifecycle is not None:
            canary_stats = state.variants.get(policy.canary.canary_variant)
            control_stats = state.variants.get(policy.canary.control_variant)
            compared = compare(canary_stats, control_stats, policy.canary, state.quality_pairs)
            comparison = compared.to_dict()
            ladder = [step for step in policy.canary.ladder if step > lifecycle.canary_percent]
            last_data = lifecycle.last_data_at or lifecycle.stage_started_at
            facts = CanaryFacts(
                bundle_id=lifecycle.bundle_id,
                phase=lifecycle.phase,
                canary_percent=lifecycle.canary_percent,
                hours_running=max(0.0, (now - lifecycle.deployed_at) / 3600),
                seconds_without_data=max(0.0, now - last_data),
                rollback_reason=(lifecycle.rollback or {}).get("reason"),
                rollback_published=bool((lifecycle.rollback or {}).get("decision_id")),
                next_percent=ladder[0] if ladder else None,
            )
            enough = all(
                stats is not None and stats.n >= policy.canary.min_n
                for stats in (canary_stats, control_stats)
            )
            verdicts.append(
                canary_gate(
                    subject,
                    facts,
                    compared,
                    guardrail.verdict == "PASS",
                    srm.verdict == "PASS",
                    enough,
                    policy.canary,
                )
            )
            verdicts = _one_rollback(verdicts, facts.rollback_published)
            if lifecycle.settled is not None:  # rolled back and announced: judged no more
                verdicts = [Verdict(**record) for record in lifecycle.settled]
        return Judgement(verdicts, readings, comparison, compared.quality if lifecycle else None)

    def evaluate(self, subject: str, state: ExperimentState, now: float) -> list[Verdict]:
        judgement = self.judge(subject, state, now)
        self._judged = {id(state): judgement}
        return judgement.verdicts

    def settle(
        self, subject: str, state: ExperimentState, decisions: Sequence[Mapping[str, Any]]
    ) -> bool:
        """Record what published decisions did to the lifecycle (in the same write): the
        first rollback decision of a bundle rolls it back, so no second one follows, and
        settles it: the verdicts of the evaluation that announced it (this model's last),
        none asking for a rollback any more, stand from then on, so no gate flips (and
        publishes) again for a bundle whose traffic is gone. Returns whether the state
        changed."""
        lifecycle = state.lifecycle
        if lifecycle is None or lifecycle.settled is not None:
            return False
        for decision in decisions:
            if decision["action"] != "rollback" or decision.get("bundle_id") != lifecycle.bundle_id:
                continue
            previous = lifecycle.rollback or {}
            lifecycle.phase = "rolled_back"
            lifecycle.rollback = {
                **previous,  # a manual rollback's actor and rationale stay
                "decision_id": decision["decision_id"],
                "reason": previous.get("reason") or decision["reason"],
                "gate": decision["gate"],
                "ts": decision["ts"],
                "by": previous.get("by", "driftgate"),
            }
            judged = self._judged.get(id(state))
            if judged is not None:  # standing, the verdicts ask for no second rollback
                lifecycle.settled = [asdict(v) for v in _one_rollback(judged.verdicts, True)]
            return True
        return False

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        """Time alone can change an active canary's verdict (stale data, a stall)."""
        agent = view.get("agent")
        return isinstance(agent, dict) and agent.get("phase") in ACTIVE_PHASES

    def view(
        self, subject: str, state: ExperimentState, verdicts: Sequence[Verdict]
    ) -> dict[str, Any]:
        """The experiment's and the agent's rows of ``driftgate status``."""
        judgement = self._judged.get(id(state))
        readings = judgement.readings if judgement else self.judge(subject, state, 0.0).readings
        policy = self.policy.for_agent(subject)
        control = self.control(subject, state)
        control_stats = state.variants.get(control)
        variants: dict[str, Any] = {}
        for name, stats in sorted(state.variants.items()):
            row: dict[str, Any] = {
                "n": stats.n,
                "staging_n": state.staging.get(name, 0),
                "guardrails": {r.guardrail: r.to_dict() for r in readings.get(name, [])},
            }
            if state.lifecycle is not None and name == policy.canary.canary_variant:
                # The very quantity the canary gate judges (canary - ratio x control).
                row["vs_control"] = _versus_row(
                    judgement.quality
                    if judgement
                    else compare(stats, control_stats, policy.canary, state.quality_pairs).quality
                )
                row["secondary"] = _secondary(stats, control_stats, policy) if control_stats else {}
            elif name != control and control_stats is not None:
                row["vs_control"] = _versus(stats, control_stats, policy)
                row["secondary"] = _secondary(stats, control_stats, policy)
            variants[name] = row
        for name, count in state.staging.items():
            variants.setdefault(name, {"n": 0, "staging_n": count, "guardrails": {}})
        _adjust_secondary(variants, self.policy.for_experiment(subject).secondary_q)
        by_gate = {v.gate: v for v in verdicts}
        experiment = {
            "control": control,
            "variants": variants,
            "srm_p_value": state.srm.p_value if state.srm else None,
            "verdict": by_gate["guardrail"].verdict if "guardrail" in by_gate else None,
            "srm_verdict": by_gate["srm"].verdict if "srm" in by_gate else None,
            # What the split test counts (units or events), and whether it froze at its cap.
            "srm_counted": state.split.counted if state.split else None,
            "srm_capped": state.split.full if state.split else False,
            "stage": state.stage,
        }
        view: dict[str, Any] = {"experiment": experiment, "agent": None}
        lifecycle = state.lifecycle
        if lifecycle is not None:
            # The worst verdict; of equals, the one that asks for something, the canary's
            # first (a promotable agent says promotion_ready, not within_guardrails).
            worst = max(
                verdicts,
                key=lambda v: (SEVERITY[v.verdict], v.action != "none", v.gate == "canary"),
            )
            view["agent"] = {
                "agent": subject,
                "bundle_id": lifecycle.bundle_id,
                "phase": lifecycle.phase,
                "canary_percent": lifecycle.canary_percent,
                "deployed_at": lifecycle.deployed_at,
                "verdict": worst.verdict,
                "reason": worst.reason,
                "recommendation": recommendation(lifecycle.phase, verdicts),
                "comparison": judgement.comparison if judgement else None,
                "rollback": lifecycle.rollback,
                "history": lifecycle.history,
            }
        return view


def recommendation(phase: str, verdicts: Sequence[Verdict]) -> str:
    """The runbook's promote, monitor, hold or rollback."""
    if phase == "rolled_back" or any(
        v.verdict == "FAIL" and v.action == "rollback" for v in verdicts
    ):
        return "rollback"
    if phase == "paused" or any(v.verdict == "HOLD" for v in verdicts):
        return "hold"
    if any(v.gate == "canary" and v.action == "promote" for v in verdicts):
        return "promote"
    return "monitor"


def _one_rollback(verdicts: list[Verdict], already: bool) -> list[Verdict]:
    """At most one rollback decision per bundle: none once one was announced, and of
    several wanting it at once, only the first (guardrails before the canary gate)."""
    kept = []
    taken = already
    for verdict in verdicts:
        if verdict.action == "rollback":
            if taken:
                verdict = replace(verdict, action="none")
            taken = True
        kept.append(verdict)
    return kept


def _versus(stats: VariantStats, control: VariantStats, policy: AgentPolicy) -> dict[str, Any]:
    """The difference of the primary outcome to control (CUPED-adjusted when it can be)."""
    if not (stats.primary.n and control.primary.n):
        return _versus_row(None)
    adjust = stats.primary_pre.n == stats.primary.n and control.primary_pre.n == control.primary.n
    return _versus_row(
        mean_difference_sequence(
            stats.primary_pre if adjust else stats.primary,
            control.primary_pre if adjust else control.primary,
            alpha=policy.canary.alpha,
            target_time=policy.canary.target_time,
            adjust=adjust,
        )
    )


def _versus_row(difference: DifferenceInterval | None) -> dict[str, Any]:
    """A variant's row against control: ``estimate`` of ``mean - ratio x control mean``."""
    if difference is None:
        return {"estimate": None, "ci_low": None, "ci_high": None, "method": None}
    return {
        "estimate": finite_or_none(difference.estimate),
        "ci_low": finite_or_none(difference.low),
        "ci_high": finite_or_none(difference.high),
        "method": difference.method,
        "ratio": difference.ratio,
        "cuped_theta": difference.theta,
        "variance_reduction": difference.variance_reduction,
    }


def _secondary(stats: VariantStats, control: VariantStats, policy: AgentPolicy) -> dict[str, Any]:
    """Each secondary outcome's difference to control and its anytime-valid p-value."""
    rows = {}
    for name, moments in sorted(stats.secondary.items()):
        other = control.secondary.get(name)
        if other is None or not (moments.n and other.n):
            continue
        difference = mean_difference_sequence(
            moments, other, alpha=policy.canary.alpha, target_time=policy.canary.target_time
        )
        rows[name] = {
            "estimate": finite_or_none(difference.estimate),
            "ci_low": finite_or_none(difference.low),
            "ci_high": finite_or_none(difference.high),
            "p_value": difference.p_value,
        }
    return rows


def _adjust_secondary(variants: dict[str, Any], q: float) -> None:
    """Benjamini-Hochberg over every secondary outcome of every variant."""
    cells = [cell for row in variants.values() for cell in row.get("secondary", {}).values()]
    if not cells:
        return
    adjusted, rejected = benjamini_hochberg(np.array([cell["p_value"] for cell in cells]), q)
    for cell, flag, q_value in zip(cells, rejected.tolist(), adjusted.tolist(), strict=True):
        cell["q_value"] = q_value
        cell["discovery"] = bool(flag)


# --- the handlers ---------------------------------------------------------------------------


def _as_float(value: float | bool | None) -> float:
    return math.nan if value is None else float(value)


class TelemetryHandler:
    """``driftgate.telemetry``: each variant's guardrails and outcomes, per experiment."""

    topic: str = "telemetry"

    def __init__(self, policy: Policy) -> None:
        self.model = ExperimentModel(policy)
        self.decoder = MessageDecoder(TelemetryEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, "experiment_id", EventRows)

    def update(
        self, subject: str, state: ExperimentState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Fold one batch into each variant's statistics (production events only)."""
        by_variant: dict[str, list[TelemetryEvent]] = {}
        production: list[tuple[TelemetryEvent, float]] = []  # in offset order
        first = math.inf
        for event, ts in zip(events.columns.events, events.ts.tolist(), strict=True):
            if event.environment == "staging":  # counted and shown, never judged
                state.staging[event.variant] = state.staging.get(event.variant, 0) + 1
            else:
                by_variant.setdefault(event.variant, []).append(event)
                production.append((event, ts))
                first = min(first, ts)
        for variant, rows in by_variant.items():
            _fold(state.variants.setdefault(variant, VariantStats()), rows)
        if by_variant and (state.stage_first_ts is None or first < state.stage_first_ts):
            state.stage_first_ts = first
        lifecycle = state.lifecycle
        canary = self.model.policy.for_agent(subject).canary.canary_variant
        if lifecycle is not None and by_variant.get(canary):
            lifecycle.last_data_at = now
        added = self._count_units(subject, state, production)
        self._test_split(subject, state, added)
        self._pair_quality(subject, state, by_variant)
        return []

    def _pair_quality(
        self,
        subject: str,
        state: ExperimentState,
        by_variant: Mapping[str, list[TelemetryEvent]],
    ) -> None:
        """The active canary's and control's quality outcomes, in arrival order, into the
        stage's pairs (started with the stage's first telemetry; a policy whose ratio or
        bounds changed starts them afresh)."""
        expected = self.model.expected_split(subject, state)
        if state.lifecycle is None or expected is None:
            return
        canary = self.model.policy.for_agent(subject).canary
        low, high = canary.quality_range
        design = (expected[canary.canary_variant], 1 - canary.quality_drop_max, low, high)
        pairs = state.quality_pairs
        if pairs is None or (pairs.treatment_share, pairs.ratio, pairs.low, pairs.high) != design:
            pairs = state.quality_pairs = PairedDifferenceSequence(
                *design[:2], canary.alpha, low, high, canary.target_time
            )
        pairs.update(
            _outcomes(by_variant.get(canary.canary_variant, ())),
            _outcomes(by_variant.get(canary.control_variant, ())),
        )

    def _count_units(
        self, subject: str, state: ExperimentState, production: list[tuple[TelemetryEvent, float]]
    ) -> dict[str, int]:
        """Count the batch's distinct units per variant into the stage's split counts.

        The counts start with the stage's first event of a variant other than control
        (its canary traffic) at or after the stage's start: before a controller routes
        traffic to the canary, control alone is all there is, and no mismatch. That
        first event is a stopping time and the mixture's first factor is 1 whatever it
        is, so starting there keeps the test's level."""
        if state.split is None:
            control = self.model.control(subject, state)
            since = -math.inf if state.split_from is None else state.split_from
            start = next(
                (
                    i
                    for i, (event, ts) in enumerate(production)
                    if event.variant != control and ts >= since
                ),
                None,
            )
            if start is None:
                return {}
            state.split = SplitCounts(SRM_MAX_UNITS)
            state.split_started_at = production[start][1]
            production = production[start:]
        variants = [event.variant for event, _ in production]
        pairs = [f"{event.variant}\x1f{event.unit_id}" for event, _ in production]
        return state.split.update(variants, event_digests(pairs))

    def _test_split(self, subject: str, state: ExperimentState, added: Mapping[str, int]) -> None:
        """Feed the sample-ratio test the units added, of the declared variants only."""
        expected = self.model.expected_split(subject, state)
        if expected is None or state.split is None:
            return
        names = sorted(expected)
        if state.srm is None or state.srm_variants != names:
            # A new stage, or new variants: the test starts with what the stage counted.
            state.srm = SampleRatioSequence([expected[name] for name in names])
            state.srm_variants = names
            counts = [state.split.counts.get(name, 0) for name in names]
        else:
            counts = [added.get(name, 0) for name in names]
        state.srm.update(counts)


def _outcomes(events: Sequence[TelemetryEvent]) -> np.ndarray:
    """The primary outcomes the events carry, in their order."""
    return np.array(
        [float(e.primary_outcome) for e in events if e.primary_outcome is not None],
        dtype=np.float64,
    )


def _fold(stats: VariantStats, events: list[TelemetryEvent]) -> None:
    """One variant's events of one batch into its statistics (vectorized per field)."""
    stats.n += len(events)
    guardrails = [e.guardrails for e in events if e.guardrails is not None]
    toxicity = [g.toxicity for g in guardrails if g.toxicity is not None]
    stats.toxicity_n += len(toxicity)
    stats.toxic += sum(toxicity)
    pii = [g.pii for g in guardrails if g.pii is not None]
    stats.pii_n += len(pii)
    stats.pii += sum(pii)
    latency = np.array([g.latency_ms for g in guardrails if g.latency_ms is not None])
    if latency.size:
        stats.latency.update(latency)
        stats.latency_moments.update(latency)
        stats.log_latency.update(np.log1p(latency))
    cost = np.array([g.unit_cost for g in guardrails if g.unit_cost is not None])
    if cost.size:
        stats.cost.update(cost)
    with_outcome = [e for e in events if e.primary_outcome is not None]
    if with_outcome:
        outcome = np.array([_as_float(e.primary_outcome) for e in with_outcome])
        stats.primary.update(outcome)
        pre = np.array(
            [_as_float(e.covariates.pre_period if e.covariates else None) for e in with_outcome]
        )
        paired = ~np.isnan(pre)
        if paired.any():
            stats.primary_pre.update(pre[paired], outcome[paired])
        segments: dict[str, list[float]] = {}
        for event, value in zip(with_outcome, outcome.tolist(), strict=True):
            if event.covariates is not None and event.covariates.segment is not None:
                segments.setdefault(event.covariates.segment, []).append(value)
        for segment, values in segments.items():
            stats.segments.setdefault(segment, Moments()).update(values)
    secondary: dict[str, list[float]] = {}
    for event in events:
        for name, value in (event.sec_outcomes or {}).items():
            secondary.setdefault(name, []).append(value)
    for name, values in secondary.items():
        stats.secondary.setdefault(name, Moments()).update(values)


class CanaryHandler:
    """``driftgate.canary``: deploy, promote, roll back, pause and resume an agent's bundle."""

    topic: str = "canary"

    def __init__(self, policy: Policy) -> None:
        self.model = ExperimentModel(policy)
        self.decoder = MessageDecoder(CanaryEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, "agent", EventRows)

    def update(
        self, subject: str, state: ExperimentState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Each action in order; returns the audit log's entries for them."""
        audit = []
        for event, ts in zip(events.columns.events, events.ts.tolist(), strict=True):
            note = _step(state, event, ts, now)
            entry = {
                "kind": "canary",
                "ts": rfc3339(ts),
                "subject": event.agent,
                "agent": event.agent,
                "bundle_id": event.bundle_id,
                "action": event.action,
                "canary_percent": event.canary_percent,
                "actor": event.actor,
                "rationale": event.rationale,
                "event_id": event.event_id,
            }
            audit.append(entry if note is None else {**entry, "note": note})
        return audit


def _step(state: ExperimentState, event: CanaryEvent, ts: float, now: float) -> str | None:
    """One lifecycle transition (``ts``: the event's time, ``now``: the worker's clock).

    Returns why the event changed nothing, for its audit log entry: it names a bundle the
    agent does not run, or one that was rolled back. A rolled-back bundle is settled: it
    is not promoted, resumed, paused, deployed or rolled back again (a new bundle is
    deployed instead), so it is rolled back once, by construction."""
    lifecycle = state.lifecycle
    if lifecycle is not None and lifecycle.refuses(event.bundle_id):
        return (
            f"ignored: bundle {event.bundle_id} was rolled back; "
            "deploy a new bundle_id to try again"
        )
    same_bundle = lifecycle is not None and lifecycle.bundle_id == event.bundle_id
    record = {
        "action": event.action,
        "ts": ts,
        "percent": event.canary_percent,
        "actor": event.actor,
        "rationale": event.rationale,
    }
    if event.action == "deploy" or (event.action == "promote" and not same_bundle):
        state.lifecycle = Lifecycle(
            event.bundle_id,
            "promoted" if event.canary_percent == 100 else "monitoring",
            float(event.canary_percent or 0),
            deployed_at=ts,
            stage_started_at=now,
            rolled_back_bundles=lifecycle.retired() if lifecycle is not None else [],
        )
        lifecycle = state.lifecycle
        state.new_stage(ts)
    elif lifecycle is None or not same_bundle:
        running = "no bundle" if lifecycle is None else f"bundle {lifecycle.bundle_id}"
        return f"ignored: the agent runs {running}"
    elif event.action == "promote":
        lifecycle.canary_percent = float(event.canary_percent or lifecycle.canary_percent)
        lifecycle.phase = "promoted" if lifecycle.canary_percent >= 100 else "monitoring"
        lifecycle.stage_started_at, lifecycle.last_data_at = now, None
        state.new_stage(ts)
    elif event.action == "rollback":
        lifecycle.phase = "rolled_back"
        lifecycle.rollback = {
            "decision_id": None,
            "reason": "manual_rollback",
            "by": event.actor or "manual",
            "rationale": event.rationale,
            "ts": rfc3339(ts),
        }
    elif event.action == "pause" and lifecycle.phase == "monitoring":
        lifecycle.phase = "paused"
    elif event.action == "resume" and lifecycle.phase == "paused":
        lifecycle.phase = "monitoring"
        lifecycle.last_data_at = now  # the fail-safe clock starts again on resume
        state.restart_split(ts)
    lifecycle.history = [*lifecycle.history, record][-HISTORY:]
    return None
