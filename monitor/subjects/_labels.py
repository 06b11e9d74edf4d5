"""Label events ``(S, Y)``: residuals of a stream's calibrator, and its score distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import orjson

from estimators import (
    BinnedResiduals,
    CoMoments,
    EventRate,
    Moments,
    QuantileSketch,
    RestartingMeanSequence,
    labels_to_exclude_zero,
    online_label_plan,
    online_value_estimate,
    severity_band,
)

from ..config import Policy
from ..events import _views as views
from ..events._decisions import Decision
from ..events._structs import LabelEvent
from ..gates import Verdict, finite_or_none, residual_drift_gate, score_drift_gate
from ..gates._score_drift import BASELINE_WINDOW_PER_MIN_N, baseline_may_advance
from ..pipeline import DecodedBatch, Judgement, PendingWrites, RawMessage, SubjectEvents
from ..store import _keys as fields
from ..store._keys import SubjectKeys
from ._calibrator_inputs import (
    calibrator_inputs,
)
from ._covariates import (
    CovariateDrift,
    covariate_gate_keys,
    covariate_names,
)
from ._decode import MessageDecoder
from ._label_state import (
    ActiveCalibrator,
    LabelColumns,
    LabelState,
    _label_columns,
    _rows_of,
    _sketch_or_none,
    _table_label_columns,
)
from ._late_labels import LateLabelJoin
from ._residual_history import ResidualHistory, fold_by_minute, verdict_point
from ._subgroups import SubgroupResiduals, subgroup_gate_keys

__all__ = ["ActiveCalibrator", "LabelEvent", "LabelHandler", "LabelModel", "LabelState"]


class LabelModel:
    """Label streams: what is kept, how it is judged and shown."""

    kind: str = "stream"
    gates: tuple[str, ...] = ("residual_drift", "score_drift")
    stored_fields: tuple[str, ...] = (
        fields.STATE,
        fields.CALIBRATOR,
        fields.CALIBRATOR_VERSION,
        fields.JOIN,
        fields.RESIDUAL_HISTORY,
    )
    tick_seconds: float | None = None
    # The group verdicts' record keys, from the stored state (their published records).
    gates_of = staticmethod(subgroup_gate_keys)

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.gates = (*LabelModel.gates, *covariate_gate_keys(policy))

    def new_residuals(self, calibrator: ActiveCalibrator) -> RestartingMeanSequence:
        residual = self.policy.residual_drift
        low, high = residual.label_range
        return RestartingMeanSequence(
            residual.alpha - residual.change_alpha,  # the gate's alpha is the total
            residual.target_time,
            residual.min_labeled,
            residual.change_alpha,
            residual.change_horizon,
            prior_variance=calibrator.residual_variance,
            bounds=(low - high, high - low),
            unbounded_min_n=max(residual.min_labeled, residual.min_labeled_unbounded),
        )

    def load(self, subject: str, stored: Mapping[str, bytes | None]) -> LabelState:
        calibrator = ActiveCalibrator.from_fields(
            stored[fields.CALIBRATOR], stored[fields.CALIBRATOR_VERSION]
        )
        raw = stored[fields.STATE]
        bins = BinnedResiduals.deciles_of(calibrator.baseline_scores)
        # A join field only once the stream had a half (a state from before has one always).
        joined = stored.get(fields.JOIN)
        window = self.policy.labels.join_window_seconds
        join = LateLabelJoin.from_state(window, orjson.loads(joined)) if joined else None
        history = ResidualHistory.from_field(stored.get(fields.RESIDUAL_HISTORY))
        document = orjson.loads(raw) if raw else {}
        mark = join.watermark if join else document.get("watermark")
        watermark = -math.inf if mark is None else float(mark)
        if not raw:
            return LabelState(
                calibrator,
                self.new_residuals(calibrator),
                QuantileSketch(self.policy.score_drift.relative_accuracy),
                residuals_by_bin=bins,
                join=join,
                watermark=watermark,
                history=history,
            )
        residuals = RestartingMeanSequence.from_state(document["residuals"])
        # A state written before exact intervals has no bounds: its interval cannot be
        # rebuilt from moments, so it starts afresh, and its next verdict says so.
        restarted = residuals.bounds is None
        state = LabelState(
            calibrator,
            self.new_residuals(calibrator) if restarted else residuals,
            QuantileSketch.from_state(document["score_sketch"]),
            Moments.from_state(document["scores"]),
            int(document["n"]),
            residuals_by_bin=bins,
            join=join,
            watermark=watermark,
            history=history,
            restarted=restarted,
        )
        # A state written before these statistics existed starts them from here on.
        if "predictions" in document:
            state.predictions = Moments.from_state(document["predictions"])
            state.labeled_pairs = CoMoments.from_state(document["labeled_pairs"])
            state.residuals_by_bin = BinnedResiduals.from_state(document["residuals_by_bin"])
            state.label_rate = EventRate.from_state(document["label_rate"])
        state.score_baseline = _sketch_or_none(document.get("score_baseline"))
        state.previous_scores = _sketch_or_none(document.get("previous_scores"))
        state.covariates = CovariateDrift.from_state(document.get("covariates"))
        state.subgroups = SubgroupResiduals.from_state(document.get("subgroups"))
        return state

    def dump(self, state: LabelState) -> dict[str, bytes | str]:
        dumped: dict[str, bytes | str] = {fields.STATE: orjson.dumps(state.to_state())}
        if state.join is not None:
            dumped[fields.JOIN] = orjson.dumps(state.join.to_state())
        span = state.history.span_field()
        if span is not None:
            dumped[fields.RESIDUAL_HISTORY] = span
        return dumped

    def ring_records(self, keys: SubjectKeys, state: LabelState) -> list[tuple[str, int, bytes]]:
        """The residual history's new points, for the ring (written with :meth:`dump`)."""
        return [(keys.residual_history, at, record) for at, record in state.history.take_records()]

    # The late-label join's halves, in buckets beside the state (pipeline.KeepsPending).

    def pending_buckets(self, state: LabelState) -> list[int]:
        return [] if state.join is None else sorted(state.join.buckets)

    def restore_pending(self, state: LabelState, blobs: Mapping[int, bytes | None]) -> None:
        if state.join is not None:
            state.join.restore(blobs)

    def drain_pending(self, state: LabelState) -> PendingWrites:
        return PendingWrites() if state.join is None else state.join.drain()

    def evaluate(self, subject: str, state: LabelState, now: float) -> Judgement:
        version = state.calibrator.version
        verdicts = [
            residual_drift_gate(
                subject, state.residuals, self.policy.residual_drift, version, state.restarted
            )
        ]
        baseline = state.baseline
        if baseline is not None:
            verdicts.append(
                score_drift_gate(
                    subject,
                    state.recent_scores(),
                    baseline,
                    self.policy.score_drift,
                    version,
                )
            )
        verdicts += state.covariates.evaluate(subject, self.policy.covariate_drift, version)
        verdicts += state.subgroups.evaluate(subject, self.policy.residual_drift, version)
        return Judgement(verdicts)

    def settle(
        self,
        subject: str,
        state: LabelState,
        judgement: Judgement,
        decisions: Sequence[Decision],
    ) -> bool:
        return False  # a stream's decisions change nothing of its statistics

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        return False  # only labels move a stream's verdicts

    def view(self, subject: str, state: LabelState, judgement: Judgement) -> views.StreamView:
        """The stream's row of ``driftgate status``: the interval the verdict uses on top,
        the all-time and restarted intervals beside it."""
        verdicts = judgement.verdicts
        residual = next(v for v in verdicts if v.gate == "residual_drift")
        score = next((v for v in verdicts if v.gate == "score_drift"), None)
        evidence = residual.evidence
        return views.StreamView(
            n=state.n,
            labeled_n=state.residuals.n,
            residual_n=evidence["n"],
            residual_mean=evidence["estimate"],
            ci_low=evidence["ci_low"],
            ci_high=evidence["ci_high"],
            # The restarted interval's evidence says where it started.
            interval="since_change" if "since_labeled_n" in evidence else "all_time",
            verdict=residual.verdict,
            reason=residual.reason,
            next_step=evidence.get("next_step"),
            calibrator=views.CalibratorRef(
                kind=state.calibrator.kind, version=state.calibrator.version
            ),
            all_time=_interval_view(state.residuals.all_time),
            since_change=(
                None
                if state.residuals.since_change is None
                else views.SinceChangeView(
                    since_labeled_n=state.residuals.change_at,
                    change_shift=state.residuals.alarm_shift,
                    **msgspec.structs.asdict(_interval_view(state.residuals.since_change)),
                )
            ),
            changes_detected=state.residuals.changes,
            score_mean=state.scores.mean if state.scores.n else None,
            score_ks=score.evidence["estimate"] if score else None,
            score_verdict=score.verdict if score else None,
            score_band=_score_band(score),
            value=self._value_view(state),
            residuals_by_decile=state.residuals_by_bin.rows(),
            until_decided=self._until_decided(state, residual),
            label_plan=self._plan_view(state),
            covariates=state.covariates.view(verdicts),
            groups=SubgroupResiduals.view(verdicts),
        )

    def _value_view(self, state: LabelState) -> views.ValueView:
        """The augmented value estimate: mean ``f(S)`` over every scored event plus the
        mean labeled residual, with its anytime-valid interval."""
        policy = self.policy.residual_drift
        pairs = state.labeled_pairs
        value = online_value_estimate(
            state.predictions,
            # The labeled residuals counted since the predictions were (the same after a
            # state written before they were kept): the labeled are a subset of the scored.
            pairs.y_moments(),
            pairs.cov if pairs.n > 1 else 0.0,
            policy.alpha,
            policy.target_time,
            policy.min_labeled,
        )
        return views.ValueView(
            estimate=finite_or_none(value.estimate),
            ci_low=finite_or_none(value.interval.low),
            ci_high=finite_or_none(value.interval.high),
            plug_in=finite_or_none(value.plug_in),
            residual_correction=finite_or_none(value.residual_correction),
            standard_error=finite_or_none(value.standard_error),
            n_scored=value.n_scored,
            n_labeled=value.n_labeled,
        )

    def _until_decided(self, state: LabelState, residual: Verdict) -> views.UntilDecided:
        """How far the residual gate is from a decision, in labels and (at the recent
        label rate) in seconds. WARN and FAIL have decided; INCONCLUSIVE waits for
        ``min_labeled``; PASS waits for as many labels as would make its interval exclude
        0 if the mean residual stayed where it is (``None``: not in any useful time), by
        the normal-mixture interval of the same alpha (the empirical-Bernstein interval
        the gate uses on bounded labels is not a closed form; near its target time they
        are of a width)."""
        policy = self.policy.residual_drift
        sequence = state.residuals.all_time  # PASS and INCONCLUSIVE use the all-time one
        labels: int | None
        if residual.verdict in ("WARN", "FAIL"):
            status, labels = "decided", 0
        elif sequence.n < max(policy.min_labeled, sequence.decides_from):
            status = "collecting"
            labels = max(policy.min_labeled, sequence.decides_from) - sequence.n
        else:
            status = "watching"
            labels = labels_to_exclude_zero(
                sequence.mean,
                math.sqrt(sequence.variance),  # the interval's own, with its prior
                sequence.n,
                sequence.alpha,  # the interval's share of the gate's alpha
                policy.target_time,
                policy.min_labeled,
            )
        return views.UntilDecided(
            status=status,
            labels=labels,
            seconds=None if not labels else state.label_rate.seconds_for(labels),
            label_rate_per_second=state.label_rate.per_second,
        )

    def _plan_view(self, state: LabelState) -> views.LabelPlanView | None:
        """``driftgate plan`` re-estimated from the stream's own variances: the MDE now,
        and the labels the gate's bias threshold (as the target MDE) needs."""
        policy = self.policy.residual_drift
        if policy.bias_threshold <= 0:  # no bias to detect: nothing to plan for
            return None
        plan = online_label_plan(
            state.predictions,
            state.labeled_pairs.y_moments(),
            policy.bias_threshold,
            policy.alpha,
        )
        if plan is None:
            return None
        return views.LabelPlanView(
            target_mde=plan.target_mde,
            current_mde=finite_or_none(plan.current_mde),
            labels_needed=plan.labels_needed,
            more_labels=plan.more_labels,
            sigma2_eval=plan.sigma2_eval,
            sigma2_cal=plan.sigma2_cal,
        )


def _score_band(score: Verdict | None) -> str | None:
    """The score drift band of the gate's noise-guarded KS bound (``None`` while the gate
    cannot judge)."""
    if score is None or score.verdict == "INCONCLUSIVE" or score.evidence["ci_low"] is None:
        return None
    return severity_band(score.evidence["ci_low"])


def _interval_view(sequence: Any) -> views.IntervalView:
    interval = sequence.interval
    return views.IntervalView(
        n=sequence.n,
        residual_mean=finite_or_none(interval.estimate) if sequence.n else None,
        ci_low=finite_or_none(interval.low),
        ci_high=finite_or_none(interval.high),
    )


class LabelHandler:
    """``driftgate.labels``: decode, group by stream, residuals into the statistics."""

    topic: str = "labels"

    def __init__(self, policy: Policy) -> None:
        self.model = LabelModel(policy)
        self.decoder = MessageDecoder(LabelEvent)
        self.covariates = covariate_names(policy)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        names = self.covariates
        return self.decoder.decode_subjects(
            messages,
            "stream",
            lambda events: _label_columns(events, names),
            lambda table: _table_label_columns(table, names),
        )

    def _fold_scores(self, state: LabelState, scores: np.ndarray) -> None:
        """Scores into the recent window, the baseline moved at exact window boundaries.

        The baseline may move each time the recent window reaches a whole multiple of
        ``BASELINE_WINDOW_PER_MIN_N * min_n`` scores, wherever that falls in a batch, so
        the same events give the same state however they are batched (a replay after a
        crash or a rebalance must not judge other windows)."""
        window = BASELINE_WINDOW_PER_MIN_N * self.model.policy.score_drift.min_n
        while scores.size:
            sketch = state.score_sketch
            room = window - sketch.n % window
            if state.baseline is None or scores.size < room:
                sketch.update(scores)
                return
            sketch.update(scores[:room])
            scores = scores[room:]
            self._advance_baseline(state)

    def _advance_baseline(self, state: LabelState) -> None:
        """At a window boundary: if the recent scores show no significant drift, the
        window before becomes the baseline and the recent one the previous window (so the
        gate always judges at least a window of recent scores); a significant drift moves
        nothing, and the recent window grows to the next boundary."""
        baseline = state.baseline
        assert baseline is not None
        if not baseline_may_advance(state.recent_scores(), baseline, self.model.policy.score_drift):
            return
        if state.previous_scores is not None:
            state.score_baseline = state.previous_scores
        state.previous_scores = state.score_sketch
        state.score_sketch = QuantileSketch(state.score_sketch.relative_accuracy)

    def update(
        self, subject: str, state: LabelState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Fold in one batch: every score, and the residuals of the labeled events and of
        the pairs the late-label join completed (at the place of the half that completed
        each, with the score's event time)."""
        columns: LabelColumns = events.columns
        scored = ~np.isnan(columns.s)
        s = columns.s if scored.all() else columns.s[scored]
        labeled = scored & ~np.isnan(columns.y)
        model = state.calibrator.model
        objects = columns.covariate_objects
        predictions = model.predict(s, calibrator_inputs(model, objects, scored))
        state.n += s.size
        state.scores.update(s)
        self._fold_scores(state, s)
        state.predictions.update(predictions)
        window = self.model.policy.labels.join_window_seconds
        joined = state.offer(columns, events.ts, now, window)
        if len(joined):
            rows = np.concatenate([np.flatnonzero(labeled), joined.rows])
            order = np.argsort(rows, kind="stable")
            self._fold_labels(
                subject,
                state,
                np.concatenate([columns.s[labeled], joined.s])[order],
                np.concatenate([columns.y[labeled], joined.y])[order],
                np.concatenate([events.ts[labeled], joined.ts])[order],
                # A joined pair's covariates: those of the half that completed it.
                calibrator_inputs(
                    model, objects, np.concatenate([np.flatnonzero(labeled), joined.rows])[order]
                ),
                groups=_rows_of(columns.covariates, rows[order]),
            )
        elif labeled.all():
            self._fold_labels(
                subject,
                state,
                columns.s,
                columns.y,
                events.ts,
                calibrator_inputs(model, objects),
                predictions,
                groups=columns.covariates,
            )
        elif labeled.any():
            self._fold_labels(
                subject,
                state,
                columns.s[labeled],
                columns.y[labeled],
                events.ts[labeled],
                calibrator_inputs(model, objects, labeled),
                groups=_rows_of(columns.covariates, labeled),
            )
        # A response's covariates count once, with its score (a label alone is its late half).
        covariates = columns.covariates
        if not scored.all():
            covariates = {name: values[scored] for name, values in covariates.items()}
        state.covariates.update(covariates, self.model.policy.covariate_drift)
        return []

    def _fold_labels(
        self,
        subject: str,
        state: LabelState,
        s: np.ndarray,
        y: np.ndarray,
        ts: np.ndarray,
        covariates: dict[str, np.ndarray] | None,
        predictions: np.ndarray | None = None,
        groups: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Residuals of labeled pairs into the residual statistics, a minute of event time
        at a time (the residual history's points); ``covariates`` are those the calibrator
        reads, per pair; ``groups``: the pairs' covariates, for the residuals by subgroup
        (a late-labeled pair's: those of the half completing it)."""
        model = state.calibrator.model
        residuals = model.residuals(s, y, covariates)
        fold_by_minute(
            state.residuals,
            residuals,
            ts,
            state.history,
            lambda minute: verdict_point(
                subject,
                state.residuals,
                self.model.policy.residual_drift,
                state.calibrator.version,
                minute,
            ),
        )
        state.labeled_pairs.update(
            model.predict(s, covariates) if predictions is None else predictions, residuals
        )
        state.residuals_by_bin.update(s, residuals)
        state.label_rate.update(ts)
        # --- residuals by subgroup (residual_drift.group_by) ---
        state.subgroups.update(residuals, groups or {}, self.model.policy.residual_drift)
