"""The input topics' events as ``msgspec`` Structs, and the field types they are made of.

One definition serves the worker's decoders (``monitor.subjects``), the JSON Schemas
(``driftgate schema``) and the emitter (``monitor.emit``), so a producer is refused exactly
what the worker would dead-letter. This module imports nothing but msgspec: an application
that only emits events does not load the worker (numpy, scipy, Faust).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "JSON_SCHEMA_RULES",
    "MAX_MAGNITUDE",
    "CanaryEvent",
    "Finite",
    "Guardrails",
    "LabelEvent",
    "NonEmpty",
    "NonNegative",
    "TelemetryCovariates",
    "TelemetryEvent",
    "Timestamp",
]

# JSON has no NaN; an overflowing literal such as 1e400 decodes to inf: keep it out. A
# finite number whose square overflows (|x| > 1.3e154) would turn a subject's moments to
# NaN for good, so numbers are bounded well inside: |x| <= 1e100.
MAX_MAGNITUDE = 1e100
Finite = Annotated[float, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_MAGNITUDE)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# RFC 3339 with an offset, or Unix seconds.
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)] | Finite


class LabelEvent(msgspec.Struct, frozen=True, gc=False):
    """One ``(S, Y)`` observation of ``driftgate.labels`` (``y`` null: score only).

    With ``response_id``, the halves of a pair may come apart: a score with ``y`` null
    waits for its oracle label, an event with ``y`` and no ``s`` (the label) completes
    it (docs/events.md, "Late oracle labels"). Only such a label may leave out ``s``.
    """

    event_id: NonEmpty
    ts: Timestamp
    stream: NonEmpty
    s: Finite | None = None
    y: Finite | None = None
    covariates: dict[str, Any] | None = None
    response_id: NonEmpty | None = None

    def __post_init__(self) -> None:
        if self.s is None and (self.y is None or self.response_id is None):
            # Worded as msgspec words a missing field, placed as it places one.
            raise ValueError(
                "Object missing required field `s` (only an oracle label, with `y` and "
                "`response_id`, goes without) - at `$.s`"
            )


JSON_SCHEMA_RULES: dict[str, dict[str, Any]] = {
    # LabelEvent.__post_init__, as JSON Schema (msgspec cannot generate it from a check).
    "LabelEvent": {
        "anyOf": [
            {"required": ["s"], "properties": {"s": {"type": "number"}}},
            {
                "required": ["y", "response_id"],
                "properties": {"y": {"type": "number"}, "response_id": {"type": "string"}},
            },
        ]
    }
}
"""Rules of an event that its Struct's fields do not state, added to its JSON Schema."""


class Guardrails(msgspec.Struct, frozen=True, gc=False):
    toxicity: bool | None = None
    pii: bool | None = None
    latency_ms: NonNegative | None = None
    unit_cost: NonNegative | None = None


class TelemetryCovariates(msgspec.Struct, frozen=True, gc=False):
    pre_period: Finite | None = None
    segment: str | None = None


class TelemetryEvent(msgspec.Struct, frozen=True, gc=False):
    """An observation of an experiment's unit (``driftgate.telemetry``)."""

    event_id: NonEmpty
    ts: Timestamp
    experiment_id: NonEmpty
    unit_id: NonEmpty
    variant: NonEmpty
    primary_outcome: Finite | bool | None = None
    sec_outcomes: dict[str, Finite] | None = None
    guardrails: Guardrails | None = None
    covariates: TelemetryCovariates | None = None
    environment: Literal["prod", "staging"] = "prod"


class CanaryEvent(msgspec.Struct, frozen=True, gc=False):
    """A lifecycle step of an agent's bundle (``driftgate.canary``)."""

    event_id: NonEmpty
    ts: Timestamp
    agent: NonEmpty
    bundle_id: NonEmpty
    action: Literal["deploy", "promote", "rollback", "pause", "resume"]
    canary_percent: Finite | None = None
    actor: str | None = None
    rationale: str | None = None

    def __post_init__(self) -> None:
        if self.action in ("deploy", "promote") and self.canary_percent is None:
            raise ValueError(f"canary_percent is required for {self.action}")
        if self.canary_percent is not None and not 0 <= self.canary_percent <= 100:
            raise ValueError(f"canary_percent must be in 0..100, got {self.canary_percent}")
