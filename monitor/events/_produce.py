"""What ``driftgate produce`` checks before it sends anything: every line of the file
decoded as the worker will decode it (the topic's handler), within the broker's message
limit, keyed by its subject."""

from __future__ import annotations

from pathlib import Path

from ..runtime._kafka import MAX_MESSAGE_BYTES

__all__ = ["MAX_KEY_BYTES", "MAX_PRODUCE_FILE_BYTES", "checked_messages"]

# `driftgate produce` holds the whole file (it sends nothing unless every line is good).
MAX_PRODUCE_FILE_BYTES = 256 * 1024 * 1024
# A message's key is its subject's name, cut to this.
MAX_KEY_BYTES = 1024


def checked_messages(path: str, topic: str, kind: str) -> list[tuple[bytes | None, bytes]]:
    """Every line of ``path`` as ``(key, value)``, checked as the worker will check it
    (its handler's decoder: the topic's event schema) and against the broker's message
    limit; one bad line raises :class:`InputError` naming it (and how many more there
    are). The key is the line's subject, so that one subject stays on one partition."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from ..config import Policy
    from ..pipeline import RawMessage
    from ..subjects import HANDLERS
    from ..workflows._pairs import InputError

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
    decoded = HANDLERS[kind](Policy()).decode(candidates)
    for dead in decoded.dead_letters:
        problems.setdefault(dead.offset, dead.error)
    keys: dict[int, bytes] = {}
    for subject, events in decoded.subjects.items():
        for number in events.offsets.tolist():
            keys.setdefault(number, subject.encode()[:MAX_KEY_BYTES])
    for message in candidates:
        if message.offset not in keys and message.offset not in problems:
            problems[message.offset] = "no events (an empty array)"
    if problems:
        first = min(problems)
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        raise InputError(f"{path}:{first}: {problems[first]}{more}; nothing was sent")
    if not candidates:
        raise InputError(f"{path}: no events (an empty file)")
    return [(keys[m.offset], m.value) for m in candidates if m.value is not None]
