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
    "LabelColumns",
    "LabelEvent",
    "decode_label_message",
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


@dataclass(frozen=True, slots=True)
class LabelColumns:
    """The valid label events of one message, column by column (``y`` is None if absent).

    Plain lists: a batch turns the columns of all its messages into numpy arrays at once,
    which matters when every message carries a single event.
    """

    event_ids: list[str]
    streams: list[str]
    s: list[float]
    y: list[float | None]
    ts: list[float]

    def __len__(self) -> int:
        return len(self.event_ids)

    @classmethod
    def from_events(cls, events: list[LabelEvent]) -> LabelColumns:
        return cls(
            [e.event_id for e in events],
            [e.stream for e in events],
            [e.s for e in events],
            [e.y for e in events],
            [e.ts for e in events],
        )


# Exact types: bool is an int subclass and never a number here.
_NUMBER_TYPES = frozenset((int, float))
_OPTIONAL_NUMBER_TYPES = frozenset((int, float, type(None)))
_OPTIONAL_OBJECT_TYPES = frozenset((dict, type(None)))
_STRING_TYPES = frozenset((str,))


def _fast_columns(elements: list[Any]) -> LabelColumns | None:
    """Columns of a message whose every element is plainly valid, or None to look closer.

    Whole columns are checked at once (types and finiteness with ``map`` in C), which is
    what lets a worker keep up with 100-event envelopes; anything unusual
    (an RFC 3339 ``ts``, a bad field) takes the per-element path with its exact errors.
    """
    if not set(map(type, elements)) <= {dict}:
        return None
    ids = [e.get("event_id") for e in elements]
    streams = [e.get("stream") for e in elements]
    s = [e.get("s") for e in elements]
    y = [e.get("y") for e in elements]
    ts = [e.get("ts") for e in elements]
    # set(map(type, ...)) runs in C: a few nanoseconds an element.
    if not (
        set(map(type, ids)) <= _STRING_TYPES
        and all(ids)
        and set(map(type, streams)) <= _STRING_TYPES
        and all(streams)
        and set(map(type, s)) <= _NUMBER_TYPES
        and set(map(type, ts)) <= _NUMBER_TYPES
        and set(map(type, y)) <= _OPTIONAL_NUMBER_TYPES
        and {type(e.get("covariates")) for e in elements} <= _OPTIONAL_OBJECT_TYPES
    ):
        return None
    if not (all(map(math.isfinite, s)) and all(map(math.isfinite, ts))):
        return None
    if not all(v is None or math.isfinite(v) for v in y):
        return None
    return LabelColumns(ids, streams, s, y, ts)


def decode_label_message(raw: bytes | None) -> tuple[LabelColumns, list[BadElement]]:
    """:func:`decode_message` for label events, returning columns; same results, faster."""
    if raw is not None:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict | list):
            columns = _fast_columns([document] if isinstance(document, dict) else document)
            if columns is not None:
                return columns, []
    decoded = decode_message(raw, parse_label_event)
    return LabelColumns.from_events(decoded.events), decoded.bad
