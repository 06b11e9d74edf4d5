"""Typed decoding with validation in one pass (msgspec), shared by every input topic.

A message value is one JSON event object or a JSON array of them (an envelope). A
message that decodes whole costs one C call; otherwise the envelope's elements are
decoded one by one, so that only the bad ones go to the dead-letter topic (as their own
JSON bytes) with an error that names the place, e.g. ``$[50].s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np

from ..events._structs import Finite, NonEmpty, NonNegative, Timestamp
from ..pipeline import DeadLetter, DecodedBatch, RawMessage, SubjectEvents
from ..pipeline._dedupe import event_digests
from ._columnar import ColumnarDecoder, ColumnarError, Table, is_columnar

__all__ = [
    "EventRows",
    "Finite",
    "MessageDecoder",
    "NonEmpty",
    "NonNegative",
    "Timestamp",
    "event_times",
    "split_by_subject",
]

E = TypeVar("E")


def _error(exc: msgspec.DecodeError, index: int | None = None) -> str:
    kind = "EventValidationError" if isinstance(exc, msgspec.ValidationError) else "JSONDecodeError"
    message = str(exc)
    if index is not None:
        # msgspec names the place ("- at `$.s`") except at an element's top level.
        if "`$" in message:
            message = message.replace("`$", f"`$[{index}]", 1)
        else:
            message = f"{message} - at `$[{index}]`"
    return f"{kind}: {message}"


class MessageDecoder(Generic[E]):
    """Decodes message values into events of one ``msgspec.Struct`` type."""

    def __init__(self, event_type: type[E]) -> None:
        self.event_type = event_type  # what the topic's schema is generated from
        self._message = msgspec.json.Decoder(event_type | list[event_type])  # type: ignore[valid-type]
        self._event = msgspec.json.Decoder(event_type)
        self._elements = msgspec.json.Decoder(list[msgspec.Raw])
        self.columnar = ColumnarDecoder(event_type)

    def decode(self, value: bytes | None) -> tuple[list[E], list[tuple[bytes, str]]]:
        """Valid events, and ``(payload, error)`` for each bad part."""
        if value is None:
            return [], [(b"", "EventValidationError: message has no value")]
        try:
            document = self._message.decode(value)
        except msgspec.DecodeError:
            pass  # look closer below
        else:
            return (document if isinstance(document, list) else [document]), []
        try:
            elements = self._elements.decode(value)
        except msgspec.DecodeError:
            # Not an array: one bad event object, or not JSON at all.
            return [], [(bytes(value), _error(self._why(value)))]
        events: list[E] = []
        bad: list[tuple[bytes, str]] = []
        for index, element in enumerate(elements):
            try:
                events.append(self._event.decode(element))
            except msgspec.DecodeError as exc:
                bad.append((bytes(element), _error(exc, index)))
        return events, bad

    def _why(self, value: bytes) -> msgspec.DecodeError:
        try:
            msgspec.json.decode(value)  # not JSON at all, or a truncated envelope?
        except msgspec.ValidationError:
            pass  # JSON, but not ours (a number out of range): the event says where
        except msgspec.DecodeError as exc:
            return exc
        try:
            self._event.decode(value)
        except msgspec.DecodeError as exc:
            return exc
        return msgspec.ValidationError("value is neither an event nor an array of events")

    def decode_batch(
        self, messages: Sequence[RawMessage]
    ) -> tuple[list[E], np.ndarray, np.ndarray, list[DeadLetter]]:
        """Every message's events in offset order, their partitions and offsets, and the
        dead letters."""
        events: list[E] = []
        counts: list[int] = []
        dead: list[DeadLetter] = []
        for message in messages:
            decoded, bad = self.decode(message.value)
            events += decoded
            counts.append(len(decoded))
            for payload, error in bad:
                dead.append(DeadLetter(payload, error, message.partition, message.offset))
        partitions = np.repeat(np.fromiter((m.partition for m in messages), np.int64), counts)
        offsets = np.repeat(np.fromiter((m.offset for m in messages), np.int64), counts)
        return events, partitions, offsets, dead

    def decode_subjects(
        self,
        messages: Sequence[RawMessage],
        subject: str,
        columns_of: Callable[[list[E]], Any],
        table_columns: Callable[[Table], Any] | None = None,
    ) -> DecodedBatch:
        """The batch's events grouped by their ``subject`` field, with ``columns_of`` (an
        object with ``take(rows)`` and ``concat(parts)``) holding what each handler's
        update reads; and the dead letters.

        A columnar envelope becomes its handler's columns by ``table_columns`` (numpy
        straight from the decoded arrays), or, without it, through its events. Runs of
        row messages and columnar messages are joined in offset order.
        """
        get_subject = attrgetter(subject)
        blocks: list[_Block] = []
        dead: list[DeadLetter] = []
        run: list[RawMessage] = []
        for message in messages:
            document = self._columnar_document(message.value)
            if document is None:
                run.append(message)
                continue
            if run:
                blocks.append(self._row_block(run, get_subject, columns_of, dead))
                run = []
            try:
                blocks.append(
                    self._table_block(message, document, subject, columns_of, table_columns)
                )
            except ColumnarError as exc:  # refused whole, naming the field
                dead.append(
                    DeadLetter(
                        bytes(message.value or b""), str(exc), message.partition, message.offset
                    )
                )
        if run:
            blocks.append(self._row_block(run, get_subject, columns_of, dead))
        batch = DecodedBatch(dead_letters=dead)  # in message order, as they were met
        blocks = [block for block in blocks if block.ids]
        if blocks:
            whole = blocks[0] if len(blocks) == 1 else _Block.concat(blocks)
            batch.subjects = split_by_subject(
                whole.subjects, whole.ids, whole.ts, whole.partitions, whole.offsets, whole.columns
            )
        return batch

    def _columnar_document(self, value: bytes | None) -> dict[str, msgspec.Raw] | None:
        if value is None or not is_columnar(value):
            return None
        return self.columnar.probe(value)

    def _row_block(
        self,
        run: Sequence[RawMessage],
        get_subject: Callable[[E], str],
        columns_of: Callable[[list[E]], Any],
        dead: list[DeadLetter],
    ) -> _Block:
        events, partitions, offsets, bad = self.decode_batch(run)
        dead += bad
        return _Block(
            list(map(get_subject, events)),
            list(map(_get_id, events)),
            event_times(events),
            partitions,
            offsets,
            columns_of(events) if events else None,
        )

    def _table_block(
        self,
        message: RawMessage,
        document: dict[str, msgspec.Raw],
        subject: str,
        columns_of: Callable[[list[E]], Any],
        table_columns: Callable[[Table], Any] | None,
    ) -> _Block:
        table = self.columnar.table(document)
        n = table.n
        return _Block(
            table.values(subject),
            table.values("event_id"),
            table.times(),
            np.full(n, message.partition, np.int64),
            np.full(n, message.offset, np.int64),
            table_columns(table) if table_columns else columns_of(self.columnar.events(table)),
        )


@dataclass
class _Block:
    """A run of a batch's events in offset order, before they are split by subject."""

    subjects: list[str]
    ids: list[str]
    ts: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    columns: Any

    @classmethod
    def concat(cls, blocks: Sequence[_Block]) -> _Block:
        columns = [b.columns for b in blocks]
        return cls(
            [s for b in blocks for s in b.subjects],
            [i for b in blocks for i in b.ids],
            np.concatenate([b.ts for b in blocks]),
            np.concatenate([b.partitions for b in blocks]),
            np.concatenate([b.offsets for b in blocks]),
            type(columns[0]).concat(columns),
        )


@dataclass
class EventRows(Generic[E]):
    """A subject's events kept whole, as the columns of handlers whose update walks them."""

    events: list[E]

    def take(self, rows: np.ndarray | slice) -> EventRows[E]:
        if isinstance(rows, slice):
            return EventRows(self.events[rows])
        return EventRows([self.events[i] for i in rows.tolist()])

    @classmethod
    def concat(cls, parts: Sequence[EventRows[E]]) -> EventRows[E]:
        return cls([event for part in parts for event in part.events])


_get_id = attrgetter("event_id")
_get_ts = attrgetter("ts")


def event_times(events: Sequence[Any]) -> np.ndarray:
    """``ts`` of each event as Unix seconds (RFC 3339 strings were decoded to datetimes)."""
    try:
        return np.fromiter(map(_get_ts, events), np.float64, len(events))
    except TypeError:  # some are datetimes: the rare slow path
        return np.array(
            [t.timestamp() if isinstance(t, datetime) else t for t in map(_get_ts, events)],
            dtype=np.float64,
        )


def split_by_subject(
    subjects: list[str],
    ids: list[str],
    ts: np.ndarray,
    partitions: np.ndarray,
    offsets: np.ndarray,
    columns: Any,
) -> dict[str, SubjectEvents]:
    """The events of each subject, in offset order.

    The ids are hashed once for the whole batch; the subjects are factorized in one
    C-level pass (each name's first row), every column is reordered once by a stable sort
    of those codes, and each subject gets a contiguous slice: no per-event Python work
    beyond the hashing and the factorization.
    """
    n = len(subjects)
    if n == 0:
        return {}
    whole = SubjectEvents(event_digests(ids), ts, partitions, offsets, columns)
    first: dict[str, int] = {}
    codes = np.fromiter(map(first.setdefault, subjects, range(n)), np.int64, n)
    if len(first) == 1:  # producers that key by subject: the common case
        return {subjects[0]: whole}
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.diff(codes[order], prepend=-1))
    ends = np.append(starts[1:], n)
    ordered = whole.take(order)
    return {
        subjects[order[start]]: ordered.take(slice(start, end))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
    }
