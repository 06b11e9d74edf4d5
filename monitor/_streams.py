"""What is kept per label stream and calibrator version, and how it is read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from estimators import (
    IdentityCalibrator,
    IsotonicCalibrator,
    Moments,
    NormalMixtureSequence,
    calibrator_from_state,
)

from ._config import ResidualDriftPolicy

__all__ = ["ActiveCalibrator", "StreamState"]


@dataclass(frozen=True)
class ActiveCalibrator:
    """A stream's calibrator with its version; version 0 is the identity."""

    version: int
    model: IsotonicCalibrator | IdentityCalibrator

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> ActiveCalibrator:
        if not raw:
            return cls(0, IdentityCalibrator())
        document = orjson.loads(raw)
        return cls(int(document["version"]), calibrator_from_state(document["model"]))

    def to_json(self) -> bytes:
        return orjson.dumps({"version": self.version, "model": self.model.to_state()})

    @property
    def kind(self) -> str:
        return self.model.kind


@dataclass
class StreamState:
    """Mergeable statistics of one stream under one calibrator version.

    ``n`` counts every scored event (labeled or not); the residual sequence holds
    the labeled ones; ``scores`` keeps the moments of ``s`` for the score-drift gate.
    """

    version: int
    residuals: NormalMixtureSequence
    scores: Moments = field(default_factory=Moments)
    n: int = 0

    @classmethod
    def empty(cls, version: int, policy: ResidualDriftPolicy) -> StreamState:
        sequence = NormalMixtureSequence(policy.alpha, policy.target_time, policy.min_labeled)
        return cls(version, sequence)

    @classmethod
    def from_json(cls, raw: bytes | str) -> StreamState:
        document = orjson.loads(raw)
        return cls(
            version=int(document["version"]),
            residuals=NormalMixtureSequence.from_state(document["residuals"]),
            scores=Moments.from_state(document["scores"]),
            n=int(document["n"]),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "n": self.n,
            "residuals": self.residuals.to_state(),
            "scores": self.scores.to_state(),
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_state()).decode()

    @property
    def labeled_n(self) -> int:
        return self.residuals.n
