"""Decoding and validation of input messages: pure, no Kafka or Redis."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

__all__ = [
    "BadElement",
    "Decoded",
    "EventValidationError",
    "LabelEvent",
    "decode_message",
    "parse_label_event",
]

EventT = TypeVar("EventT")


class EventValidationError(ValueError):
    """An event that parses as JSON but breaks the contract."""


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """One ``(S, Y)`` observation from ``driftgate.labels``."""

    event_id: str
    ts: float
    stream: str
    s: float
    y: float | None
    covariates: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BadElement:
    """Input that goes to the dead-letter topic: the bytes to send and why."""

    payload: bytes
    error: str


@dataclass(frozen=True, slots=True)
class Decoded(Generic[EventT]):
    events: list[EventT]
    bad: list[BadElement]


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def decode_message(raw: bytes | None, parse: Callable[[Any], EventT]) -> Decoded[EventT]:
    """Split one message value into valid events and dead-letter elements.

    A value is one JSON object or a JSON array of objects (an envelope). Bytes that do
    not parse go to the dead-letter topic whole; in an envelope only the bad elements
    do (re-encoded as JSON) and the good ones are kept.
    """
    if raw is None:
        return Decoded([], [BadElement(b"", "EventValidationError: message has no value")])
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Decoded([], [BadElement(bytes(raw), _error_text(exc))])
    if isinstance(document, dict):
        try:
            return Decoded([parse(document)], [])
        except EventValidationError as exc:
            return Decoded([], [BadElement(bytes(raw), _error_text(exc))])
    if not isinstance(document, list):
        error = EventValidationError(
            f"value must be a JSON object or array, got {type(document).__name__}"
        )
        return Decoded([], [BadElement(bytes(raw), _error_text(error))])
    events: list[EventT] = []
    bad: list[BadElement] = []
    for index, element in enumerate(document):
        try:
            if not isinstance(element, dict):
                raise EventValidationError(
                    f"envelope element {index} must be an object, got {type(element).__name__}"
                )
            events.append(parse(element))
        except EventValidationError as exc:
            bad.append(BadElement(orjson.dumps(element), _error_text(exc)))
    return Decoded(events, bad)


def require_string(document: Mapping[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise EventValidationError(f"field {field!r} must be a non-empty string, got {value!r}")
    return value


def require_number(document: Mapping[str, Any], field: str, *, nullable: bool = False) -> float:
    if field not in document:
        raise EventValidationError(f"field {field!r} is required")
    return _finite(document[field], field, nullable=nullable)


def _finite(value: Any, field: str, *, nullable: bool) -> Any:
    if value is None and nullable:
        return None
    # bool is an int in Python but never a score or a label here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventValidationError(f"field {field!r} must be a finite number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise EventValidationError(f"field {field!r} must be finite, got {value!r}")
    return number


def parse_timestamp(document: Mapping[str, Any]) -> float:
    """``ts`` as Unix seconds, from an RFC 3339 string or a number."""
    value = document.get("ts")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise EventValidationError(f"field 'ts' is not RFC 3339: {value!r}") from exc
        if parsed.tzinfo is None:
            raise EventValidationError(f"field 'ts' needs a UTC offset: {value!r}")
        return parsed.timestamp()
    if value is None:
        raise EventValidationError("field 'ts' is required")
    return _finite(value, "ts", nullable=False)


def optional_object(document: Mapping[str, Any], field: str) -> Mapping[str, Any] | None:
    value = document.get(field)
    if value is not None and not isinstance(value, dict):
        raise EventValidationError(f"field {field!r} must be an object, got {value!r}")
    return value


def parse_label_event(document: Mapping[str, Any]) -> LabelEvent:
    """Validate one label event against the contract.

    >>> parse_label_event({"event_id": "e1", "ts": 0, "stream": "p", "s": 0.5, "y": None}).y
    >>> parse_label_event({"event_id": "e1", "ts": 0, "stream": "p", "s": "abc"})
    Traceback (most recent call last):
    ...
    monitor._events.EventValidationError: field 's' must be a finite number, got 'abc'
    """
    return LabelEvent(
        event_id=require_string(document, "event_id"),
        ts=parse_timestamp(document),
        stream=require_string(document, "stream"),
        s=require_number(document, "s"),
        y=_finite(document.get("y"), "y", nullable=True),
        covariates=optional_object(document, "covariates"),
    )
