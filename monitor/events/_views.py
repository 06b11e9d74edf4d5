"""The subjects' views, as ``msgspec`` Structs: what a model's ``view`` returns, the worker
stores beside the state and ``driftgate status`` shows (a stream's row; an experiment's
and its agent's); and an agent as the read side shows it (its row, how long its bundle
has run, its gates), or while the state cannot be read.

The fields are in the order of the stored JSON, which does not change (the read model,
dashboards and tests read it): :func:`monitor.events._decisions.encode` writes them.
What a field holds is documented in ``docs/`` (``status --json``); parts whose shape is
the estimators' own (a guardrail reading, a comparison, an analysis) stay mappings.

``status --json`` shows a stream's stored view as a :class:`StreamStatus`: the same
fields, those an older worker did not write yet left out.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from ._decisions import GateAnswer, GateDocument

__all__ = [
    "AgentRow",
    "AgentStatus",
    "AgentUnavailable",
    "CalibratorRef",
    "CovariateRow",
    "ExperimentRow",
    "ExperimentView",
    "IntervalView",
    "LabelPlanView",
    "SinceChangeView",
    "StreamHead",
    "StreamStatus",
    "StreamView",
    "UntilDecided",
    "ValueView",
]

Number = int | float


class CalibratorRef(msgspec.Struct, kw_only=True):
    kind: str
    version: int


class ValueView(msgspec.Struct, kw_only=True):
    """The augmented value estimate: mean ``f(S)`` over every scored event plus the mean
    labeled residual, with its anytime-valid interval."""

    estimate: Number | None
    ci_low: Number | None
    ci_high: Number | None
    plug_in: Number | None
    residual_correction: Number | None
    standard_error: Number | None
    n_scored: int
    n_labeled: int


class IntervalView(msgspec.Struct, kw_only=True):
    """An anytime-valid interval of the mean residual, and its labels."""

    n: int
    residual_mean: Number | None
    ci_low: Number | None
    ci_high: Number | None


class SinceChangeView(msgspec.Struct, kw_only=True):
    """The interval restarted after the change detector's alarm: after which label it
    starts, the shift the detector saw, then the interval."""

    since_labeled_n: int | None
    change_shift: Number | None
    n: int
    residual_mean: Number | None
    ci_low: Number | None
    ci_high: Number | None


class UntilDecided(msgspec.Struct, kw_only=True):
    """How far the residual gate is from a decision: ``status`` (``decided``,
    ``collecting`` or ``watching``), in labels and, at the recent label rate, seconds
    (``None``: not in any useful time, or no rate yet)."""

    status: str
    labels: int | None
    seconds: Number | None
    label_rate_per_second: Number | None


class LabelPlanView(msgspec.Struct, kw_only=True):
    """``driftgate plan`` re-estimated from the stream's own variances: the MDE now and
    the labels the bias threshold (as the target MDE) needs."""

    target_mde: Number
    current_mde: Number | None
    labels_needed: int | None
    more_labels: int | None
    sigma2_eval: Number
    sigma2_cal: Number


class CovariateRow(msgspec.Struct, kw_only=True):
    """One declared covariate's drift; a categorical one adds the shares of its baseline
    and of the values since."""

    kind: str
    n: int
    baseline_n: int
    distance: Number | None
    ci_low: Number | None
    ci_high: Number | None
    band: str | None
    verdict: str
    reason: str
    ignored: int
    baseline_shares: dict[str, Number] | UnsetType = UNSET
    shares: dict[str, Number] | UnsetType = UNSET


class StreamHead(msgspec.Struct, kw_only=True):
    """The first fields of a stream's row, which every worker wrote: its counts and the
    interval and verdict of the residual gate."""

    n: int
    labeled_n: int
    residual_n: int
    residual_mean: Number | None
    ci_low: Number | None
    ci_high: Number | None
    interval: str
    verdict: str
    reason: str


class StreamView(StreamHead, kw_only=True, omit_defaults=True):
    """A stream's row: the interval the residual verdict uses on top, the all-time and
    restarted intervals beside it, score drift, the value estimate, the label plan, the
    declared covariates' drift and (with ``residual_drift.group_by``) the subgroups."""

    next_step: str | None
    calibrator: CalibratorRef
    all_time: IntervalView
    since_change: SinceChangeView | None
    changes_detected: int
    score_mean: Number | None
    score_ks: Number | None
    score_verdict: str | None
    score_band: str | None
    value: ValueView
    residuals_by_decile: list[Any]
    until_decided: UntilDecided
    label_plan: LabelPlanView | None
    covariates: dict[str, CovariateRow]
    groups: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Per group (``covariate=value``) its residual verdict; left out when none is declared."""


class StreamStatus(StreamHead, kw_only=True, omit_defaults=True):
    """A stream's row of ``status --json``: its :class:`StreamView` as the worker stored
    it, with its late-label join and its retired versions. A view of an older worker lacks
    the figures added since (``next_step`` and those after ``calibrator``): they are left
    out, as is a field a newer worker adds."""

    next_step: str | UnsetType | None = UNSET
    calibrator: CalibratorRef
    all_time: IntervalView | UnsetType = UNSET
    since_change: SinceChangeView | UnsetType | None = UNSET
    changes_detected: int | UnsetType = UNSET
    score_mean: Number | UnsetType | None = UNSET
    score_ks: Number | UnsetType | None = UNSET
    score_verdict: str | UnsetType | None = UNSET
    score_band: str | UnsetType | None = UNSET
    value: ValueView | UnsetType = UNSET
    residuals_by_decile: list[Any] | UnsetType = UNSET
    until_decided: UntilDecided | UnsetType = UNSET
    label_plan: LabelPlanView | UnsetType | None = UNSET
    covariates: dict[str, CovariateRow] | UnsetType = UNSET
    groups: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    late_labels: dict[str, int] | UnsetType = UNSET
    """The late-label join's counts (``waiting``, ``joined``, ``expired``, ``repeated``),
    once the stream had a half of a late-labeled pair."""
    history: dict[str, dict[str, Any]] | UnsetType = UNSET
    """Retired calibrator version -> its view as stored (``status`` with history)."""


class ExperimentRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An experiment's row: each variant's guardrails and its comparison with control,
    the split test, and (an A/B experiment with data in both arms) its analysis."""

    control: str
    variants: dict[str, dict[str, Any]]
    srm_p_value: Number | None
    verdict: str | None
    srm_verdict: str | None
    srm_counted: str | None
    srm_capped: bool
    stage: int
    analysis: dict[str, Any] | None = None
    """``monitor.subjects._experiment_analysis.analyse``; left out when there is none."""


class AgentRow(msgspec.Struct, kw_only=True):
    """A canary's row: its bundle, phase and share, the worst of its gates and the
    runbook's recommendation."""

    agent: str
    bundle_id: str
    phase: str
    canary_percent: Number
    deployed_at: Number
    verdict: str
    reason: str
    recommendation: str
    # Later than the first workers' rows: a row stored without them still reads (an API
    # that cannot read an older agent's row would fail every controller's check of it).
    comparison: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ExperimentView(msgspec.Struct, kw_only=True):
    """An experiment's view; ``agent`` while it is a canary (it has a lifecycle)."""

    experiment: ExperimentRow
    agent: AgentRow | None


class AgentStatus(AgentRow, kw_only=True):
    """An agent: its row of the experiment's view (lifecycle, verdict, recommendation),
    the hours its bundle has run and every gate of it (with their kind in ``status``,
    ``GATE`` alone in the HTTP API)."""

    hours_running: float
    gates: list[GateAnswer]

    def answer(self) -> AgentStatus:
        """As ``GET /v1/agents/NAME`` answers it: each gate as ``GATE`` alone."""
        gates = [g.answer() if isinstance(g, GateDocument) else g for g in self.gates]
        return msgspec.structs.replace(self, gates=gates)


class AgentUnavailable(msgspec.Struct, kw_only=True):
    """An agent while the state cannot be read (the fail-safe of the HTTP API): HOLD,
    then FAIL at the agent's limit of such requests in a row."""

    agent: str
    bundle_id: None = None
    phase: None = None
    canary_percent: None = None
    hours_running: None = None
    verdict: str
    recommendation: str
    reason: str
    detail: str
    gates: list[GateAnswer] = msgspec.field(default_factory=list)
