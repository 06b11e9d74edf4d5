"""An experiment's or agent's stored state: each variant's statistics and the lifecycle.

What :class:`~monitor.subjects._experiment_model.ExperimentModel` keeps per
``experiment_id`` (for a canary, its ``agent``), as mergeable statistics and plain
records that round-trip through JSON (``to_state`` / ``from_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from estimators import (
    CoMoments,
    Moments,
    PairedDifferenceSequence,
    QuantileSketch,
    SampleRatioSequence,
    SplitCounts,
)

__all__ = ["HISTORY", "ExperimentState", "Lifecycle", "VariantStats"]

HISTORY = 20  # lifecycle actions kept in the state (the audit log keeps them all)


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
    memo: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)
    """What was last read off these statistics, with what it was read for (not stored:
    see :meth:`ExperimentModel.readings`)."""

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
    first_ts: float | None = None
    """The earliest and latest event times of production telemetry ever folded."""
    last_ts: float | None = None
    registration: dict[str, Any] | None = None
    """An A/B experiment's pre-registration as locked with its first production event
    (the policy's section, see :mod:`._registration`)."""
    registered_at: float | None = None
    policy_seen: dict[str, Any] | None = None
    """The policy's section as last seen: a change is recorded as a deviation once."""
    deviations: list[dict[str, Any]] = field(default_factory=list)

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
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "registration": self.registration,
            "registered_at": self.registered_at,
            "policy_seen": self.policy_seen,
            "deviations": self.deviations,
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
            # Absent in states written before pre-registration: locked with the next event.
            first_ts=state.get("first_ts"),
            last_ts=state.get("last_ts"),
            registration=state.get("registration"),
            registered_at=state.get("registered_at"),
            policy_seen=state.get("policy_seen"),
            deviations=list(state.get("deviations") or []),
        )
