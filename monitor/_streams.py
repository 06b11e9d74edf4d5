"""What is kept per label stream and calibrator version, and how it is read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from estimators import (
    IdentityCalibrator,
    IsotonicCalibrator,
    MeanShiftDetector,
    Moments,
    NormalMixtureSequence,
    QuantileSketch,
    calibrator_from_state,
)

from ._config import Policy, ResidualDriftPolicy

__all__ = ["ActiveCalibrator", "StreamState"]


@dataclass(frozen=True)
class ActiveCalibrator:
    """A stream's calibrator with its version; version 0 is the identity.

    ``baseline_scores`` sketches the scores the calibrator was fitted on: the reference
    of the score drift gate (none for the identity).
    """

    version: int
    model: IsotonicCalibrator | IdentityCalibrator
    baseline_scores: QuantileSketch | None = None

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> ActiveCalibrator:
        if not raw:
            return cls(0, IdentityCalibrator())
        document = orjson.loads(raw)
        baseline = document.get("baseline_scores")
        return cls(
            int(document["version"]),
            calibrator_from_state(document["model"]),
            QuantileSketch.from_state(baseline) if baseline else None,
        )

    def to_json(self) -> bytes:
        document: dict[str, Any] = {"version": self.version, "model": self.model.to_state()}
        if self.baseline_scores is not None:
            document["baseline_scores"] = self.baseline_scores.to_state()
        return orjson.dumps(document)

    @property
    def kind(self) -> str:
        return self.model.kind


def _new_interval(policy: ResidualDriftPolicy) -> NormalMixtureSequence:
    return NormalMixtureSequence(policy.alpha, policy.target_time, policy.min_labeled)


@dataclass
class StreamState:
    """Statistics of one stream under one calibrator version.

    * ``residuals``: the anytime-valid interval over every label of the version;
    * ``detector``: a change detector on the same residuals. When it alarms, ``recent``
      starts a fresh interval from the next label on, so that a shift that begins after a
      long calibrated past is judged on its own data instead of being diluted (the alarm
      time is a stopping time, so the restarted interval stays valid). One restart per
      calibrator version: a detector still anchored at 0 would alarm again and again on
      a persisting shift and keep the new interval from ever filling; the remedy for a
      detected change is a new calibrator, which starts everything afresh;
    * ``scores`` / ``score_sketch``: moments and a quantile sketch of every ``s``, labeled
      or not, for the score drift gate; ``n`` counts every scored event.
    """

    version: int
    residuals: NormalMixtureSequence
    detector: MeanShiftDetector
    score_sketch: QuantileSketch
    scores: Moments = field(default_factory=Moments)
    recent: NormalMixtureSequence | None = None
    changes: int = 0
    last_change_at: int | None = None
    n: int = 0

    @classmethod
    def empty(cls, version: int, policy: Policy) -> StreamState:
        residual = policy.residual_drift
        return cls(
            version,
            _new_interval(residual),
            MeanShiftDetector(residual.change_alpha, residual.change_horizon),
            QuantileSketch(policy.score_drift.relative_accuracy),
        )

    def update(
        self, scores: np.ndarray, residuals: np.ndarray, policy: ResidualDriftPolicy
    ) -> None:
        """Fold in one batch: every score, and the residuals of the labeled events."""
        self.n += scores.size
        self.scores.update(scores)
        self.score_sketch.update(scores)
        if residuals.size == 0:
            return
        self.residuals.update(residuals)
        if self.recent is not None:
            self.recent.update(residuals)
            return
        seen_before = self.detector.n
        self.detector.update(residuals)
        if self.detector.alarm_time is not None:
            after_alarm = residuals[self.detector.alarm_time - seen_before :]
            self.changes = 1
            self.last_change_at = self.residuals.n - after_alarm.size
            self.recent = _new_interval(policy).update(after_alarm)

    @classmethod
    def from_json(cls, raw: bytes | str) -> StreamState:
        document = orjson.loads(raw)
        recent = document.get("recent")
        return cls(
            version=int(document["version"]),
            residuals=NormalMixtureSequence.from_state(document["residuals"]),
            detector=MeanShiftDetector.from_state(document["detector"]),
            score_sketch=QuantileSketch.from_state(document["score_sketch"]),
            scores=Moments.from_state(document["scores"]),
            recent=NormalMixtureSequence.from_state(recent) if recent else None,
            changes=int(document["changes"]),
            last_change_at=document["last_change_at"],
            n=int(document["n"]),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "n": self.n,
            "residuals": self.residuals.to_state(),
            "detector": self.detector.to_state(),
            "score_sketch": self.score_sketch.to_state(),
            "scores": self.scores.to_state(),
            "recent": self.recent.to_state() if self.recent else None,
            "changes": self.changes,
            "last_change_at": self.last_change_at,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_state()).decode()

    @property
    def labeled_n(self) -> int:
        return self.residuals.n
