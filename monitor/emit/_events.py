"""The emitter's events and envelopes: built with the worker's own Structs (checked at the
call) and packed into the columnar envelopes the handlers read. Part of :mod:`monitor.emit`."""

from __future__ import annotations

import numbers
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from ..events._structs import CanaryEvent, LabelEvent, TelemetryEvent
from ..runtime._kafka import MAX_MESSAGE_BYTES

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_KEY_BYTES",
    "TOPICS",
    "EventValidationError",
    "canary_event",
    "envelope",
    "envelopes",
    "label_event",
    "late_label_event",
    "telemetry_event",
]

# Per event Struct: its topic (after the prefix) and the field that names its subject.
TOPICS: dict[type[msgspec.Struct], tuple[str, str]] = {
    LabelEvent: ("labels", "stream"),
    TelemetryEvent: ("telemetry", "experiment_id"),
    CanaryEvent: ("canary", "agent"),
}
# An envelope leaves room below the broker's limit for the record's key and overhead.
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES - 16_384
# A message's key is its subject's name, cut to this (within that room; the cut names
# still keep one subject on one partition).
MAX_KEY_BYTES = 1024
Timestamp = datetime | float | None


class EventValidationError(ValueError):
    """An event the worker would refuse; the message names the field (``$.s``)."""


# Raised to applications as monitor.emit.EventValidationError, its public home.
EventValidationError.__module__ = "monitor.emit"


# --- events -----------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """numpy's and other numeric scalars as float, so msgspec judges the value, not its
    class (a bool stays a bool: it is no number here, but may be an outcome)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _event(kind: type[msgspec.Struct], fields: dict[str, Any]) -> msgspec.Struct:
    fields = {name: value for name, value in fields.items() if value is not None}
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("ts", time.time())
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise EventValidationError(f"{kind.__name__}: {exc}") from None


def label_event(
    stream: str,
    s: float | None,
    y: float | None = None,
    *,
    response_id: str | None = None,
    event_id: str | None = None,
    ts: Timestamp = None,
    covariates: Mapping[str, Any] | None = None,
) -> msgspec.Struct:
    """A checked label event: a score ``s`` with its oracle label ``y``, or either half of
    a late-labeled pair, joined by the worker on ``response_id`` (``y`` None: a score
    that waits for its label; ``s`` None: the label, which needs ``y`` and
    ``response_id``)."""
    return _event(
        LabelEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "stream": stream,
            "s": _number(s),
            "y": _number(y),
            "covariates": None if covariates is None else dict(covariates),
            "response_id": response_id,
        },
    )


def late_label_event(
    stream: str,
    response_id: str,
    y: float,
    *,
    event_id: str | None = None,
    ts: Timestamp = None,
) -> msgspec.Struct:
    """A checked oracle label alone, for the score sent earlier on ``stream`` with the same
    ``response_id`` (or before it: a label waits for its score as long)."""
    if y is None:  # else the Struct's complaint would be about the absent score
        raise EventValidationError("LabelEvent: an oracle label needs its `y` - at `$.y`")
    return label_event(stream, None, y, response_id=response_id, event_id=event_id, ts=ts)


def telemetry_event(
    experiment_id: str,
    unit_id: str,
    variant: str,
    *,
    primary_outcome: float | bool | None = None,
    sec_outcomes: Mapping[str, float] | None = None,
    guardrails: Mapping[str, Any] | None = None,
    covariates: Mapping[str, Any] | None = None,
    environment: Literal["prod", "staging"] = "prod",
    event_id: str | None = None,
    ts: Timestamp = None,
) -> msgspec.Struct:
    """A checked telemetry event; ``guardrails`` and ``covariates`` take the fields of
    docs/events.md (``latency_ms``, ``toxicity``, ...; ``pre_period``, ``segment``)."""

    def numbers_of(mapping: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if mapping is None else {k: _number(v) for k, v in mapping.items()}

    return _event(
        TelemetryEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "experiment_id": experiment_id,
            "unit_id": unit_id,
            "variant": variant,
            "primary_outcome": _number(primary_outcome),
            "sec_outcomes": numbers_of(sec_outcomes),
            "guardrails": numbers_of(guardrails),
            "covariates": numbers_of(covariates),
            "environment": environment,
        },
    )


def canary_event(
    agent: str,
    bundle_id: str,
    action: Literal["deploy", "promote", "rollback", "pause", "resume"],
    *,
    canary_percent: float | None = None,
    actor: str | None = None,
    rationale: str | None = None,
    event_id: str | None = None,
    ts: Timestamp = None,
) -> msgspec.Struct:
    """A checked canary event (``canary_percent`` is required to deploy and promote)."""
    return _event(
        CanaryEvent,
        {
            "event_id": event_id,
            "ts": _number(ts),
            "agent": agent,
            "bundle_id": bundle_id,
            "action": action,
            "canary_percent": _number(canary_percent),
            "actor": actor,
            "rationale": rationale,
        },
    )


# --- envelopes --------------------------------------------------------------------------


def _same(values: list[Any]) -> bool:
    first = values[0]
    return all(type(v) is type(first) and v == first for v in values)


def envelope(events: list[msgspec.Struct]) -> dict[str, Any]:
    """The columnar envelope of one subject's events (as a JSON-able document).

    A nested Struct's fields go as dotted columns, a field absent from every event is left
    out, and one equal in every event (the subject, ``environment``, ...) goes once at the
    top level; ``event_id`` stays a column, so a lone event is a column of one.
    """
    kind = type(events[0])
    document: dict[str, Any] = {}
    columns: dict[str, list[Any]] = {}
    for name in kind.__struct_fields__:
        values = [getattr(event, name) for event in events]
        nested = next((v for v in values if isinstance(v, msgspec.Struct)), None)
        if nested is not None:
            for child in type(nested).__struct_fields__:
                columns[f"{name}.{child}"] = [
                    None if v is None else getattr(v, child) for v in values
                ]
        else:
            columns[name] = values
    for name, values in list(columns.items()):
        if all(v is None for v in values):
            del columns[name]
        elif name != "event_id" and _same(values):
            document[name] = values[0]
            del columns[name]
    document["columns"] = columns
    return document


def envelopes(events: list[msgspec.Struct]) -> list[tuple[bytes, int]]:
    """The events as encoded envelopes within the broker's message limit, with how many
    events each holds (halved until each fits; one event alone that does not is left
    out, for the caller to count as dropped)."""
    payload = msgspec.json.encode(envelope(events))
    if len(payload) <= MAX_ENVELOPE_BYTES:
        return [(payload, len(events))]
    if len(events) == 1:
        return []
    half = len(events) // 2
    return envelopes(events[:half]) + envelopes(events[half:])
