"""How an experiment or an agent is judged and shown: guardrails, the split test and the
canary gate over its :class:`~monitor.subjects._experiment_state.ExperimentState`.

A deploy or a promotion starts a new stage: the allocation changed, so the comparison and
the sample-ratio test start afresh. The sample-ratio test of a stage (and of a resume)
starts with its first canary-variant event: controllers route traffic to a canary an
interval or two after they deploy it, and the control-only traffic in between is no
mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import orjson

from estimators import DifferenceInterval, benjamini_hochberg, mean_difference_sequence

from ..config import AgentPolicy, GuardrailPolicy, Policy
from ..events._decisions import Decision
from ..events._views import AgentRow, ExperimentRow, ExperimentView
from ..gates import SEVERITY, Verdict, finite_or_none
from ..gates._canary import CanaryFacts, Comparison, canary_gate, compare
from ..gates._guardrails import (
    GuardrailReading,
    guardrail_alpha,
    guardrail_gate,
    read_guardrails,
)
from ..gates._srm import srm_gate
from ..pipeline import Judgement
from ..store import _keys as fields
from ._experiment_analysis import analyse
from ._experiment_state import ExperimentState, VariantStats

__all__ = [
    "ACTIVE_PHASES",
    "SRM_MIN_N",
    "ExperimentJudgement",
    "ExperimentModel",
    "recommendation",
]

SRM_MIN_N = 100
# A canary in these phases takes its share of the traffic and is judged against control.
ACTIVE_PHASES = ("monitoring", "paused")


@dataclass(frozen=True)
class ExperimentJudgement(Judgement):
    """Everything one evaluation found: the verdicts, and what the view shows beside them."""

    readings: dict[str, list[GuardrailReading]]
    """The judged variants' guardrails (the view reads every variant's)."""
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

    def judge(self, subject: str, state: ExperimentState, now: float) -> ExperimentJudgement:
        policy = self.policy.for_agent(subject)
        lifecycle = state.lifecycle
        judged = self.judged_variants(subject, state)
        alpha = guardrail_alpha(policy.guardrails, len(judged))
        # Only the judged variants decide: control's readings are read for the view.
        readings = {
            name: self.readings(state.variants[name], policy.guardrails, alpha)
            for name in judged
            if name in state.variants
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
        return ExperimentJudgement(
            verdicts, readings, comparison, compared.quality if lifecycle else None
        )

    @staticmethod
    def readings(
        stats: VariantStats, policy: GuardrailPolicy, alpha: float
    ) -> list[GuardrailReading]:
        """:func:`read_guardrails` of a variant, read again only when its statistics moved.

        A variant's statistics change only by folding events into them, which counts
        them in ``n``: the same ``n`` (and policy and alpha) is the same reading. A look
        after an event of one variant reads no other variant's guardrails again."""
        key = (stats.n, policy, alpha)
        if stats.memo is None or stats.memo[0] != key:
            stats.memo = (key, read_guardrails(stats, policy, alpha))
        return stats.memo[1]

    def all_readings(
        self, subject: str, state: ExperimentState
    ) -> dict[str, list[GuardrailReading]]:
        """Every variant's readings, at the alpha its judged ones are judged at."""
        policy = self.policy.for_agent(subject).guardrails
        alpha = guardrail_alpha(policy, len(self.judged_variants(subject, state)))
        return {name: self.readings(stats, policy, alpha) for name, stats in state.variants.items()}

    def evaluate(self, subject: str, state: ExperimentState, now: float) -> ExperimentJudgement:
        return self.judge(subject, state, now)

    def settle(
        self,
        subject: str,
        state: ExperimentState,
        judgement: Judgement,
        decisions: Sequence[Decision],
    ) -> bool:
        """Record what published decisions did to the lifecycle (in the same write): the
        first rollback decision of a bundle rolls it back, so no second one follows, and
        settles it: the verdicts of the evaluation that announced it (``judgement``),
        none asking for a rollback any more, stand from then on, so no gate flips (and
        publishes) again for a bundle whose traffic is gone. Returns whether the state
        changed."""
        lifecycle = state.lifecycle
        if lifecycle is None or lifecycle.settled is not None:
            return False
        for decision in decisions:
            if decision.action != "rollback" or decision.bundle_id != lifecycle.bundle_id:
                continue
            previous = lifecycle.rollback or {}
            lifecycle.phase = "rolled_back"
            lifecycle.rollback = {
                **previous,  # a manual rollback's actor and rationale stay
                "decision_id": decision.decision_id,
                "reason": previous.get("reason") or decision.reason,
                "gate": decision.gate,
                "ts": decision.ts,
                "by": previous.get("by", "driftgate"),
            }
            # Standing, the verdicts ask for no second rollback.
            lifecycle.settled = [asdict(v) for v in _one_rollback(judgement.verdicts, True)]
            return True
        return False

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        """Time alone can change an active canary's verdict (stale data, a stall)."""
        agent = view.get("agent")
        return isinstance(agent, dict) and agent.get("phase") in ACTIVE_PHASES

    def view(self, subject: str, state: ExperimentState, judgement: Judgement) -> ExperimentView:
        """The experiment's and the agent's rows of ``driftgate status``, after
        ``judgement`` (this state's last evaluation; given only its verdicts, the view
        compares the canary with control itself)."""
        verdicts = judgement.verdicts
        judged = judgement if isinstance(judgement, ExperimentJudgement) else None
        readings = self.all_readings(subject, state)
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
                    judged.quality
                    if judged
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
        experiment = ExperimentRow(
            control=control,
            variants=variants,
            srm_p_value=state.srm.p_value if state.srm else None,
            verdict=by_gate["guardrail"].verdict if "guardrail" in by_gate else None,
            srm_verdict=by_gate["srm"].verdict if "srm" in by_gate else None,
            # What the split test counts (units or events), and whether it froze at its cap.
            srm_counted=state.split.counted if state.split else None,
            srm_capped=state.split.full if state.split else False,
            stage=state.stage,
            analysis=analyse(
                subject,
                state,
                self.policy.for_experiment(subject),
                control,
                verdicts,
                policy.canary.target_time,
            ),
        )
        lifecycle = state.lifecycle
        if lifecycle is None:
            return ExperimentView(experiment=experiment, agent=None)
        # The worst verdict; of equals, the one that asks for something, the canary's
        # first (a promotable agent says promotion_ready, not within_guardrails).
        worst = max(
            verdicts,
            key=lambda v: (SEVERITY[v.verdict], v.action != "none", v.gate == "canary"),
        )
        agent = AgentRow(
            agent=subject,
            bundle_id=lifecycle.bundle_id,
            phase=lifecycle.phase,
            canary_percent=lifecycle.canary_percent,
            deployed_at=lifecycle.deployed_at,
            verdict=worst.verdict,
            reason=worst.reason,
            recommendation=recommendation(lifecycle.phase, verdicts),
            comparison=judged.comparison if judged else None,
            rollback=lifecycle.rollback,
            history=lifecycle.history,
        )
        return ExperimentView(experiment=experiment, agent=agent)


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
