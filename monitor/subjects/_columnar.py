"""Columnar envelopes: one message holds a subject's events as arrays, one per field.

``{"stream": "policy:a", "columns": {"event_id": ["e1", "e2"], "ts": [1.7e9, 1.7e9],
"s": [0.7, 0.4], "y": [1, null]}}``: a nested field goes by its dotted name
(``"guardrails.latency_ms"``), and a field at the top level beside ``"columns"`` applies to
every row. Each column is decoded and validated by msgspec in one C pass, as a list of the
very type the event's Struct declares for that field (the ``Finite`` bounds included), so
a columnar message is refused exactly where its events, sent one by one, would be; a
handler that reads numbers gets numpy arrays without an event object per row.

A malformed columnar message (lengths that differ, a wrong type, a non-finite number, a
required field missing) is refused whole, with an error that names the field and row
(``$.columns.s[3]``): the producer sent the rows as one, and one letter says what to fix.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np

__all__ = ["COLUMNS", "ColumnarDecoder", "ColumnarError", "Table", "element_types", "is_columnar"]

E = TypeVar("E")

COLUMNS = "columns"
_MARK = b'"columns"'
_Fields = dict[str, msgspec.Raw]


class ColumnarError(ValueError):
    """A columnar message refused whole; ``str()`` is the dead letter's error."""


def is_columnar(value: bytes) -> bool:
    """Whether ``value`` may be a columnar envelope (an object naming ``columns``): a cheap
    look before any parse, so that row messages pay nothing for the columnar format."""
    return _MARK in value and value.lstrip()[:1] == b"{"


def _located(exc: msgspec.DecodeError, where: str) -> str:
    """msgspec's message with its place (``$[3]``) put under ``where`` (``$.columns.s``)."""
    kind = "EventValidationError" if isinstance(exc, msgspec.ValidationError) else "JSONDecodeError"
    message = str(exc)
    if "`$" in message:
        return f"{kind}: {message.replace('`$', f'`{where}', 1)}"
    return f"{kind}: {message} - at `{where}`"


def _nullable(kind: Any) -> Any:
    return kind | None


def element_types(event_type: type[Any]) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """Per field name (dotted for a nested Struct's field) the type of one value; per
    dict-valued field the type of its entries (any dotted key under it); the required
    fields. All read off the event's Struct, the single definition of the format."""
    hints = typing.get_type_hints(event_type, include_extras=True)
    exact: dict[str, Any] = {}
    prefixes: dict[str, Any] = {}
    required = {f.name for f in msgspec.structs.fields(event_type) if f.required}
    for name, kind in hints.items():
        exact[name] = kind
        inner = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        if len(inner) != 1:
            continue
        nested = inner[0]
        if isinstance(nested, type) and issubclass(nested, msgspec.Struct):
            for child, child_kind in typing.get_type_hints(nested, include_extras=True).items():
                exact[f"{name}.{child}"] = _nullable(child_kind)
        elif typing.get_origin(nested) is dict:
            prefixes[name] = _nullable(typing.get_args(nested)[1])
    return exact, prefixes, required


@dataclass
class Table:
    """One columnar message's rows: ``columns`` (Python lists as msgspec decoded them,
    all of length ``n``) and ``constants`` (top-level fields, one value for every row)."""

    n: int
    columns: dict[str, list[Any]]
    constants: dict[str, Any]

    def has(self, name: str) -> bool:
        return name in self.columns or name in self.constants

    def values(self, name: str) -> list[Any]:
        """The field's value per row (``None`` where it is not given)."""
        column = self.columns.get(name)
        if column is not None:
            return column
        return [self.constants.get(name)] * self.n

    def floats(self, name: str) -> np.ndarray:
        """A number field as float64, NaN where it is null or absent (one C-level pass)."""
        column = self.columns.get(name)
        if column is not None:
            return np.array(column, dtype=np.float64)
        value = self.constants.get(name)
        return np.full(self.n, np.nan if value is None else float(value))

    def times(self, name: str = "ts") -> np.ndarray:
        """A timestamp field as Unix seconds (RFC 3339 strings were decoded to datetimes)."""
        values = self.values(name)
        try:
            return np.array(values, dtype=np.float64)
        except TypeError:  # some are datetimes: the rare slow path
            return np.array(
                [t.timestamp() if isinstance(t, datetime) else t for t in values],
                dtype=np.float64,
            )


class ColumnarDecoder(Generic[E]):
    """Decodes columnar envelopes of one event Struct into :class:`Table`\\ s, and
    (for handlers that walk events) into the events themselves."""

    def __init__(self, event_type: type[E]) -> None:
        self.event_type = event_type
        self._exact, self._prefixes, self._required = element_types(event_type)
        self._top = msgspec.json.Decoder(_Fields)
        self._column_decoders: dict[str, msgspec.json.Decoder[Any] | None] = {}
        self._value_decoders: dict[str, msgspec.json.Decoder[Any] | None] = {}

    def _element_type(self, name: str) -> Any:
        kind = self._exact.get(name)
        if kind is None and "." in name:
            kind = self._prefixes.get(name.split(".", 1)[0])
        return kind

    def _decoder(
        self, cache: dict[str, Any], name: str, wrap: Callable[[Any], Any]
    ) -> msgspec.json.Decoder[Any] | None:
        if name not in cache:
            kind = self._element_type(name)
            # A field the event does not know is ignored, as in a row event.
            cache[name] = None if kind is None else msgspec.json.Decoder(wrap(kind))
        return cache[name]  # type: ignore[no-any-return]

    def probe(self, value: bytes) -> _Fields | None:
        """The message's top-level fields when it is a columnar envelope, else None."""
        try:
            document = self._top.decode(value)
        except msgspec.DecodeError:
            return None  # not an object of fields: the row decoder says what is wrong
        return document if COLUMNS in document else None

    def table(self, document: _Fields) -> Table:
        """The rows of a columnar envelope (its top-level fields, from :meth:`probe`);
        raises :class:`ColumnarError` naming the field."""
        raw_columns = document[COLUMNS]
        try:
            named = self._top.decode(raw_columns)
        except msgspec.DecodeError as exc:
            raise ColumnarError(_located(exc, f"$.{COLUMNS}")) from None
        columns: dict[str, list[Any]] = {}
        n: int | None = None
        first = ""
        for name, raw in named.items():
            decoder = self._decoder(self._column_decoders, name, lambda k: list[k])  # type: ignore[valid-type]
            if decoder is None:
                continue
            try:
                column = decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise ColumnarError(_located(exc, f"$.{COLUMNS}.{name}")) from None
            if n is None:
                n, first = len(column), name
            elif len(column) != n:
                raise ColumnarError(
                    f"EventValidationError: columns differ in length: `{first}` has {n} rows, "
                    f"`{name}` has {len(column)} - at `$.{COLUMNS}.{name}`"
                )
            columns[name] = column
        if n is None:
            raise ColumnarError(
                f"EventValidationError: `{COLUMNS}` holds no column of the event - at `$.{COLUMNS}`"
            )
        constants = self._constants(document, columns)
        for name in self._required:
            if name not in columns and name not in constants:
                raise ColumnarError(
                    f"EventValidationError: Object missing required field `{name}` - at "
                    f"`$.{COLUMNS}`"
                )
        return Table(n, columns, constants)

    def _constants(self, document: _Fields, columns: dict[str, list[Any]]) -> dict[str, Any]:
        constants: dict[str, Any] = {}
        for name, raw in document.items():
            if name == COLUMNS:
                continue
            decoder = self._decoder(self._value_decoders, name, lambda k: k)
            if decoder is None:
                continue
            if name in columns:
                raise ColumnarError(
                    f"EventValidationError: `{name}` is both a column and a top-level field "
                    f"- at `$.{name}`"
                )
            try:
                constants[name] = decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise ColumnarError(_located(exc, f"$.{name}")) from None
        return constants

    def events(self, table: Table) -> list[E]:
        """One event per row, for handlers that walk events; the values were validated
        column by column, and the Struct's own checks (``__post_init__``) run here."""
        names = [name for name in self._exact if "." not in name and table.has(name)]
        nested: dict[str, list[str]] = {}
        for name in list(table.columns) + list(table.constants):
            parent, _, child = name.partition(".")
            if child and parent not in table.columns and parent not in table.constants:
                nested.setdefault(parent, []).append(child)
        kinds = typing.get_type_hints(self.event_type)
        rows = zip(*(table.values(name) for name in names), strict=True) if names else []
        parts = {
            parent: [table.values(f"{parent}.{child}") for child in children]
            for parent, children in nested.items()
        }
        events: list[E] = []
        for index, row in enumerate(rows):
            fields = dict(zip(names, row, strict=True))
            for parent, children in nested.items():
                given = {
                    child: values[index]
                    for child, values in zip(children, parts[parent], strict=True)
                    if values[index] is not None
                }
                if given:
                    fields[parent] = self._assemble(kinds[parent], given)
            try:
                events.append(self.event_type(**fields))
            except (TypeError, ValueError) as exc:
                raise ColumnarError(
                    f"EventValidationError: {exc} - at row {index} of `$.{COLUMNS}`"
                ) from None
        return events

    @staticmethod
    def _assemble(kind: Any, given: dict[str, Any]) -> Any:
        """A nested value from its dotted parts: the Struct, or the dict of entries."""
        for option in typing.get_args(kind) or (kind,):
            if isinstance(option, type) and issubclass(option, msgspec.Struct):
                return option(**given)
        return given
