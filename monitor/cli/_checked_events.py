"""What ``driftgate produce`` checks before it sends anything: every line of the file
decoded as the worker will decode it (the topic's handler), within the broker's message
limit; the good file's events, in the file's order, for the emitter to send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config._settings import MAX_MESSAGE_BYTES
from ..emit._events import MAX_ENVELOPE_BYTES, MAX_KEY_BYTES, envelopes
from ..workflows._pairs import InputError

__all__ = ["MAX_PRODUCE_FILE_BYTES", "checked_events"]

# `driftgate produce` holds the whole file (it sends nothing unless every line is good).
MAX_PRODUCE_FILE_BYTES = 256 * 1024 * 1024


def checked_events(path: str, topic: str, kind: str) -> list[Any]:
    """Every event of ``path`` (a line holds an event, an envelope or a columnar envelope),
    checked as the worker will check it (its handler's decoder: the topic's event schema)
    and against the broker's message limit; one bad line raises :class:`InputError`
    naming it (and how many more there are)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from ..config import Policy
    from ..pipeline import RawMessage
    from ..slices import HANDLERS

    try:
        size = Path(path).stat().st_size
        if size > MAX_PRODUCE_FILE_BYTES:
            raise InputError(
                f"{path}: {size} bytes, over produce's limit of {MAX_PRODUCE_FILE_BYTES} "
                "(send larger volumes with a Kafka producer of your own)"
            )
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    problems: dict[int, str] = {}
    candidates: list[RawMessage] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        # As the producer counts a record, with room for the key (a subject name).
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(b"", line, []) + MAX_KEY_BYTES > (
            MAX_MESSAGE_BYTES
        ):
            problems[number] = (
                f"{len(line)} bytes, over the broker's message limit "
                f"({MAX_MESSAGE_BYTES} bytes with the record's overhead and key)"
            )
        else:
            candidates.append(RawMessage(topic, 0, number, line))
    handler = HANDLERS[kind](Policy())
    decoded = handler.decode(candidates)
    for dead in decoded.dead_letters:
        problems.setdefault(dead.offset, dead.error)
    good: set[int] = set()
    for subject_events in decoded.subjects.values():
        good.update(subject_events.offsets.tolist())
    for message in candidates:
        if message.offset not in good and message.offset not in problems:
            problems[message.offset] = "no events (an empty array)"
    events: list[Any] = []
    if not problems:
        decoder = handler.decoder  # type: ignore[attr-defined]
        for message in candidates:
            value = message.value or b""
            line_events = _events_of(decoder, value)
            events += line_events
            if len(value) > MAX_ENVELOPE_BYTES // 2:
                _check_sizes(line_events, message.offset, problems)
    if problems:
        first = min(problems)
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        raise InputError(f"{path}:{first}: {problems[first]}{more}; nothing was sent")
    if not events:
        raise InputError(f"{path}: no events (an empty file)")
    return events


def _events_of(decoder: Any, value: bytes) -> list[Any]:
    """A line's events as the Structs the emitter sends (the line was checked whole)."""
    from ..subjects._columnar import is_columnar

    document = decoder.columnar.probe(value) if is_columnar(value) else None
    if document is None:
        events, _ = decoder.decode(value)
        return list(events)
    return list(decoder.columnar.events(decoder.columnar.table(document)))


def _check_sizes(events: list[Any], number: int, problems: dict[int, str]) -> None:
    """An event that no envelope can hold (one near the message limit as a row may be
    over it as a column of one) is a bad line, not an event the emitter drops."""
    for index, event in enumerate(events):
        if not envelopes([event]):
            problems.setdefault(
                number,
                f"event {index} is over {MAX_ENVELOPE_BYTES} bytes as a columnar envelope "
                "(the broker's message limit less room for the key)",
            )
            return
