"""Label events ``(S, Y)``: residuals of a stream's calibrator, and its score distribution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import orjson

from estimators import (
    IdentityCalibrator,
    IsotonicCalibrator,
    Moments,
    QuantileSketch,
    RestartingMeanSequence,
    calibrator_from_state,
)

from .._config import Policy
from ..gates import Verdict, finite_or_none, residual_drift_gate, score_drift_gate
from ..pipeline import DecodedBatch, RawMessage, SubjectEvents
from ..store import _keys as fields
from ._decode import (
    Finite,
    MessageDecoder,
    NonEmpty,
    Timestamp,
)

__all__ = ["ActiveCalibrator", "LabelEvent", "LabelHandler", "LabelModel", "LabelState"]


class LabelEvent(msgspec.Struct, frozen=True, gc=False):
    """One ``(S, Y)`` observation of ``driftgate.labels`` (``y`` null: score only)."""

    event_id: NonEmpty
    ts: Timestamp
    stream: NonEmpty
    s: Finite
    y: Finite | None = None
    covariates: dict[str, Any] | None = None


@dataclass(frozen=True)
class ActiveCalibrator:
    """A stream's calibrator with its version; version 0 is the identity.

    ``baseline_scores`` sketches the scores it was fitted on: the reference of the score
    drift gate (none for the identity).
    """

    version: int
    model: IsotonicCalibrator | IdentityCalibrator
    baseline_scores: QuantileSketch | None = None

    @classmethod
    def from_fields(
        cls, record: bytes | str | None, version: bytes | str | None
    ) -> ActiveCalibrator:
        if not record:
            return cls(0, IdentityCalibrator())
        document = orjson.loads(record)
        baseline = document.get("baseline_scores")
        return cls(
            int(version or 0),
            calibrator_from_state(document["model"]),
            QuantileSketch.from_state(baseline) if baseline else None,
        )

    def record(self) -> bytes:
        """The stored record (the version is a field of its own, set by the store)."""
        document: dict[str, Any] = {"model": self.model.to_state()}
        if self.baseline_scores is not None:
            document["baseline_scores"] = self.baseline_scores.to_state()
        return orjson.dumps(document)

    @property
    def kind(self) -> str:
        return self.model.kind


@dataclass
class LabelState:
    """Statistics of one stream under its active calibrator version.

    ``residuals`` holds the all-time interval and the one restarted after a change alarm;
    ``score_sketch`` / ``scores`` describe every ``s``, labeled or not; ``n`` counts every
    scored event.
    """

    calibrator: ActiveCalibrator
    residuals: RestartingMeanSequence
    score_sketch: QuantileSketch
    scores: Moments = field(default_factory=Moments)
    n: int = 0

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.calibrator.version,
            "n": self.n,
            "residuals": self.residuals.to_state(),
            "score_sketch": self.score_sketch.to_state(),
            "scores": self.scores.to_state(),
        }


@dataclass(frozen=True, slots=True)
class LabelColumns:
    s: np.ndarray
    y: np.ndarray
    """NaN where the event carries no label."""

    def take(self, rows: np.ndarray | slice) -> LabelColumns:
        return LabelColumns(self.s[rows], self.y[rows])


class LabelModel:
    """Label streams: what is kept, how it is judged and shown."""

    kind: str = "stream"
    gates: tuple[str, ...] = ("residual_drift", "score_drift")
    stored_fields: tuple[str, ...] = (fields.STATE, fields.CALIBRATOR, fields.CALIBRATOR_VERSION)
    tick_seconds: float | None = None

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def new_residuals(self) -> RestartingMeanSequence:
        residual = self.policy.residual_drift
        return RestartingMeanSequence(
            residual.alpha,
            residual.target_time,
            residual.min_labeled,
            residual.change_alpha,
            residual.change_horizon,
        )

    def load(self, subject: str, stored: Mapping[str, bytes | None]) -> LabelState:
        calibrator = ActiveCalibrator.from_fields(
            stored[fields.CALIBRATOR], stored[fields.CALIBRATOR_VERSION]
        )
        raw = stored[fields.STATE]
        if not raw:
            return LabelState(
                calibrator,
                self.new_residuals(),
                QuantileSketch(self.policy.score_drift.relative_accuracy),
            )
        document = orjson.loads(raw)
        return LabelState(
            calibrator,
            RestartingMeanSequence.from_state(document["residuals"]),
            QuantileSketch.from_state(document["score_sketch"]),
            Moments.from_state(document["scores"]),
            int(document["n"]),
        )

    def dump(self, state: LabelState) -> dict[str, bytes | str]:
        return {fields.STATE: orjson.dumps(state.to_state())}

    def evaluate(self, subject: str, state: LabelState, now: float) -> list[Verdict]:
        version = state.calibrator.version
        verdicts = [
            residual_drift_gate(subject, state.residuals, self.policy.residual_drift, version)
        ]
        if state.calibrator.baseline_scores is not None:
            verdicts.append(
                score_drift_gate(
                    subject,
                    state.score_sketch,
                    state.calibrator.baseline_scores,
                    self.policy.score_drift,
                    version,
                )
            )
        return verdicts

    def settle(
        self, subject: str, state: LabelState, decisions: Sequence[Mapping[str, Any]]
    ) -> bool:
        return False  # a stream's decisions change nothing of its statistics

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        return False  # only labels move a stream's verdicts

    def view(self, subject: str, state: LabelState, verdicts: Sequence[Verdict]) -> dict[str, Any]:
        """The stream's row of ``driftgate status``: the interval the verdict uses on top,
        the all-time and restarted intervals beside it."""
        residual = next(v for v in verdicts if v.gate == "residual_drift")
        score = next((v for v in verdicts if v.gate == "score_drift"), None)
        evidence = residual.evidence
        return {
            "n": state.n,
            "labeled_n": state.residuals.n,
            "residual_n": evidence["n"],
            "residual_mean": evidence["estimate"],
            "ci_low": evidence["ci_low"],
            "ci_high": evidence["ci_high"],
            "interval": "all_time" if evidence["method"] == "normal_mixture_cs" else "since_change",
            "verdict": residual.verdict,
            "reason": residual.reason,
            "calibrator": {"kind": state.calibrator.kind, "version": state.calibrator.version},
            "all_time": _interval_view(state.residuals.all_time),
            "since_change": (
                None
                if state.residuals.since_change is None
                else {
                    "since_labeled_n": state.residuals.change_at,
                    "change_shift": state.residuals.alarm_shift,
                    **_interval_view(state.residuals.since_change),
                }
            ),
            "changes_detected": state.residuals.changes,
            "score_mean": state.scores.mean if state.scores.n else None,
            "score_ks": score.evidence["estimate"] if score else None,
            "score_verdict": score.verdict if score else None,
        }


def _interval_view(sequence: Any) -> dict[str, Any]:
    interval = sequence.interval
    return {
        "n": sequence.n,
        "residual_mean": finite_or_none(interval.estimate) if sequence.n else None,
        "ci_low": finite_or_none(interval.low),
        "ci_high": finite_or_none(interval.high),
    }


_get_stream = attrgetter("stream")
_get_s = attrgetter("s")
_get_y = attrgetter("y")


def _label_columns(events: list[LabelEvent]) -> LabelColumns:
    n = len(events)
    return LabelColumns(
        np.fromiter(map(_get_s, events), np.float64, n),
        np.fromiter(map(_get_y, events), np.float64, n),  # None -> NaN
    )


class LabelHandler:
    """``driftgate.labels``: decode, group by stream, residuals into the statistics."""

    topic: str = "labels"

    def __init__(self, policy: Policy) -> None:
        self.model = LabelModel(policy)
        self.decoder = MessageDecoder(LabelEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(messages, _get_stream, _label_columns)

    def update(
        self, subject: str, state: LabelState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Fold in one batch: every score, and the residuals of the labeled events."""
        columns: LabelColumns = events.columns
        labeled = ~np.isnan(columns.y)
        state.n += columns.s.size
        state.scores.update(columns.s)
        state.score_sketch.update(columns.s)
        if labeled.any():
            residuals = state.calibrator.model.residuals(columns.s[labeled], columns.y[labeled])
            state.residuals.update(residuals)
        return []
