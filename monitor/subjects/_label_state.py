"""A label stream's state and a batch's columns: the active calibrator, the statistics
kept per stream, and label events as arrays (row events and columnar envelopes)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from estimators import (
    BinnedResiduals,
    Calibrator,
    CoMoments,
    EventRate,
    IdentityCalibrator,
    Moments,
    QuantileSketch,
    RestartingMeanSequence,
    calibrator_from_state,
)

from ..events._structs import LabelEvent
from ._calibrator_inputs import concat_objects, objects_of_events, objects_of_table
from ._columnar import ColumnarError, Table
from ._covariates import CovariateDrift, covariates_of_events, covariates_of_table
from ._late_labels import (
    NO_PAIRS,
    JoinedPairs,
    LateLabelJoin,
    advance_watermark,
    has_halves,
    response_digests,
)
from ._residual_history import ResidualHistory
from ._subgroups import SubgroupResiduals

__all__ = ["ActiveCalibrator", "LabelColumns", "LabelState"]


@dataclass(frozen=True)
class ActiveCalibrator:
    """A stream's calibrator with its version; version 0 is the identity.

    ``baseline_scores`` sketches the scores it was fitted on: the reference of the score
    drift gate (none for the identity). ``residual_variance`` is the mean squared
    out-of-fold residual of its fit: the variance the residual interval starts from
    (its prior) until the stream's own labels tell theirs.
    """

    version: int
    model: Calibrator
    baseline_scores: QuantileSketch | None = None
    residual_variance: float | None = None

    @classmethod
    def from_fields(
        cls, record: bytes | str | None, version: bytes | str | None
    ) -> ActiveCalibrator:
        if not record:
            return cls(0, IdentityCalibrator())
        document = orjson.loads(record)
        baseline = document.get("baseline_scores")
        variance = document.get("residual_variance")  # absent before it was kept
        return cls(
            int(version or 0),
            calibrator_from_state(document["model"]),
            QuantileSketch.from_state(baseline) if baseline else None,
            float(variance) if variance is not None else None,
        )

    def record(self) -> bytes:
        """The stored record (the version is a field of its own, set by the store)."""
        document: dict[str, Any] = {"model": self.model.to_state()}
        if self.baseline_scores is not None:
            document["baseline_scores"] = self.baseline_scores.to_state()
        if self.residual_variance is not None:
            document["residual_variance"] = self.residual_variance
        return orjson.dumps(document)

    @property
    def kind(self) -> str:
        return self.model.kind


@dataclass
class LabelState:
    """Statistics of one stream under its active calibrator version.

    ``residuals`` holds the all-time interval and the one restarted after a change alarm;
    ``scores`` describes every ``s``, labeled or not; ``n`` counts every scored event.
    Score drift: ``score_sketch`` holds the scores since the baseline last moved and
    ``previous_scores`` the window before them (together, the recent scores the gate
    judges); ``score_baseline`` is the baseline once it moved or was set with
    ``driftgate baseline`` (until then, the calibrator's fitting scores). For the
    augmented value estimate: ``predictions``, the moments of ``f(S)`` over every scored
    event, and ``labeled_pairs``, ``(f(S), Y - f(S))`` of the labeled ones (their
    covariance). ``residuals_by_bin`` holds the residuals by score decile of the
    calibrator's baseline, ``label_rate`` the recent labels per second. All of it starts
    afresh with a new calibrator version (its state is deleted).
    """

    calibrator: ActiveCalibrator
    residuals: RestartingMeanSequence
    score_sketch: QuantileSketch
    scores: Moments = field(default_factory=Moments)
    n: int = 0
    predictions: Moments = field(default_factory=Moments)
    labeled_pairs: CoMoments = field(default_factory=CoMoments)
    residuals_by_bin: BinnedResiduals = field(
        default_factory=lambda: BinnedResiduals.deciles_of(None)
    )
    label_rate: EventRate = field(default_factory=EventRate)
    score_baseline: QuantileSketch | None = None
    previous_scores: QuantileSketch | None = None
    join: LateLabelJoin | None = None
    """Halves of late-labeled pairs waiting (kept apart from the statistics: a new
    calibrator version starts those afresh, not what waits); created at the stream's
    first half, so a stream that never sends one has none (:meth:`offer`)."""
    watermark: float = -math.inf
    """The newest plausible event time, which the join's starts from when it is created
    (the join's own once it exists)."""
    history: ResidualHistory = field(default_factory=ResidualHistory)
    covariates: CovariateDrift = field(default_factory=CovariateDrift)
    subgroups: SubgroupResiduals = field(default_factory=SubgroupResiduals)
    """The residuals by subgroup (``residual_drift.group_by``)."""
    restarted: bool = False
    """The residual interval was started afresh on load (a state written before exact
    intervals): its first verdict says so. Not stored: one evaluation sees it."""

    @property
    def baseline(self) -> QuantileSketch | None:
        """The score drift gate's reference (``None``: the identity, and none was set)."""
        if self.score_baseline is not None:
            return self.score_baseline
        return self.calibrator.baseline_scores

    def recent_scores(self) -> QuantileSketch:
        """The scores the gate judges: the window before the last move and those since."""
        if self.previous_scores is None:
            return self.score_sketch
        return self.previous_scores + self.score_sketch

    def set_baseline(self, baseline: QuantileSketch) -> None:
        """Make ``baseline`` the reference; the recent scores start afresh against it."""
        self.score_baseline = baseline
        self.previous_scores = None
        self.score_sketch = QuantileSketch(self.score_sketch.relative_accuracy)

    def offer(
        self, columns: LabelColumns, ts: np.ndarray, now: float, window: float
    ) -> JoinedPairs:
        """The batch's late-label halves to the join, which the first half creates
        (:meth:`LateLabelJoin.starting_at` the watermark so far); the pairs it completed."""
        if self.join is None:
            if not has_halves(columns.responses, columns.s, columns.y):
                self.watermark = advance_watermark(self.watermark, ts, now)
                return NO_PAIRS
            self.join = LateLabelJoin.starting_at(window, self.watermark)
        pairs = self.join.offer(columns.responses, ts, columns.s, columns.y, now)
        self.watermark = self.join.watermark
        return pairs

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.calibrator.version,
            "n": self.n,
            "residuals": self.residuals.to_state(),
            "score_sketch": self.score_sketch.to_state(),
            "scores": self.scores.to_state(),
            "predictions": self.predictions.to_state(),
            "labeled_pairs": self.labeled_pairs.to_state(),
            "residuals_by_bin": self.residuals_by_bin.to_state(),
            "label_rate": self.label_rate.to_state(),
            "score_baseline": _sketch_state(self.score_baseline),
            "previous_scores": _sketch_state(self.previous_scores),
            "covariates": self.covariates.to_state(),
            "subgroups": self.subgroups.to_state(),
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
        }


def _sketch_state(sketch: QuantileSketch | None) -> dict[str, Any] | None:
    return None if sketch is None else sketch.to_state()


def _sketch_or_none(state: dict[str, Any] | None) -> QuantileSketch | None:
    return None if state is None else QuantileSketch.from_state(state)


@dataclass(frozen=True, slots=True)
class LabelColumns:
    s: np.ndarray
    """NaN where the event carries no score (the label half of a late-labeled pair)."""
    y: np.ndarray
    """NaN where the event carries no label."""
    responses: np.ndarray
    """Digests of the response ids (``_late_labels.response_digests``), 0 for none."""
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    """The policy's covariates (``monitor.subjects._covariates``)."""
    covariate_objects: np.ndarray | None = None
    """Each event's whole ``covariates`` object, for a calibrator that reads covariates
    (``monitor.subjects._calibrator_inputs``); None: no event gave any."""

    def take(self, rows: np.ndarray | slice) -> LabelColumns:
        objects = self.covariate_objects
        return LabelColumns(
            self.s[rows],
            self.y[rows],
            self.responses[rows],
            {k: v[rows] for k, v in self.covariates.items()},
            None if objects is None else objects[rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[LabelColumns]) -> LabelColumns:
        return cls(
            np.concatenate([p.s for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.responses for p in parts]),
            {k: np.concatenate([p.covariates[k] for p in parts]) for k in parts[0].covariates},
            concat_objects([p.covariate_objects for p in parts], [p.s.size for p in parts]),
        )


def _rows_of(covariates: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in covariates.items()}


_get_s = attrgetter("s")
_get_y = attrgetter("y")
_get_response = attrgetter("response_id")


def _label_columns(events: list[LabelEvent], covariates: Sequence[str] = ()) -> LabelColumns:
    n = len(events)
    responses = list(map(_get_response, events))
    return LabelColumns(
        np.fromiter(map(_get_s, events), np.float64, n),  # None -> NaN
        np.fromiter(map(_get_y, events), np.float64, n),
        response_digests(responses) if any(responses) else np.zeros(n, np.uint64),
        covariates_of_events(events, covariates),
        objects_of_events(events),
    )


def _table_label_columns(table: Table, covariates: Sequence[str] = ()) -> LabelColumns:
    """A columnar envelope's scores and labels, straight from its decoded arrays; a row
    without a score must be an oracle label (``y`` and ``response_id``), as
    :class:`LabelEvent` checks of a row event."""
    s, y = table.floats("s"), table.floats("y")
    responses = (
        response_digests(table.values("response_id"))
        if table.has("response_id")
        else np.zeros(table.n, np.uint64)
    )
    unscored = np.isnan(s)
    if unscored.any():
        bad = np.flatnonzero(unscored & (np.isnan(y) | (responses == 0)))
        if bad.size:
            raise ColumnarError(
                "EventValidationError: Object missing required field `s` (only an oracle "
                f"label, with `y` and `response_id`, goes without) - at `$.columns.s[{bad[0]}]`"
            )
    return LabelColumns(
        s, y, responses, covariates_of_table(table, covariates), objects_of_table(table)
    )
