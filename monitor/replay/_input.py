"""Reading replay files: JSONL (gzip too) of the input topics' own messages.

Each line is one message as a producer would send it (an event object or an envelope),
checked by the decoder the worker uses for its topic, so a file ``produce`` accepts is
one ``replay`` accepts, and a bad line is refused the same way: ``FILE:LINE`` and the
problem, nothing run. A line's topic is the one ``--topic`` names or, without it, the one
its fields say (``stream``: labels, ``experiment_id``: telemetry, ``agent``: canary).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ..config import CovariateDriftPolicy, Policy
from ..pipeline import RawMessage, SubjectEvents
from ..slices import HANDLERS
from ..subjects._covariates import covariate_names
from ..workflows._calibration import InputError, Progress

__all__ = ["EventGroup", "EventLog", "infer_topic", "read_events"]

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_PROGRESS_EVERY_LINES = 65_536


class _Probe(msgspec.Struct):
    """The fields that tell the topics apart (every other field is skipped unread)."""

    stream: Any = None
    experiment_id: Any = None
    agent: Any = None


_PROBE = msgspec.json.Decoder(_Probe | list[_Probe])
# The field that names the subject on each topic: also what tells a line's topic.
SUBJECT_FIELDS = {"stream": "labels", "experiment_id": "telemetry", "agent": "canary"}


@dataclass
class EventGroup:
    """The events of one subject on one topic, in replay order (event time, or the files'
    order with ``--no-sort``)."""

    topic: str
    subject: str
    events: SubjectEvents
    """``partitions`` holds the file's index, ``offsets`` the line number."""


@dataclass
class EventLog:
    """Every event of the replay's files, checked, grouped and ordered."""

    paths: list[str]
    groups: list[EventGroup]
    unsorted: int
    """Events that came before an earlier event of their subject and topic in the files."""
    sorted: bool

    @property
    def size(self) -> int:
        return sum(len(group.events) for group in self.groups)


def infer_topic(line: bytes) -> str | None:
    """The topic whose subject field the line's (first) event carries; None if none."""
    try:
        probe = _PROBE.decode(line)
    except msgspec.DecodeError:
        return None
    first = probe[0] if isinstance(probe, list) and probe else probe
    if isinstance(first, list):
        return None
    for name, topic in SUBJECT_FIELDS.items():
        if getattr(first, name) is not None:
            return topic
    return None


def _lines(path: str) -> list[bytes]:
    try:
        content = Path(path).read_bytes()
        if content.startswith(_GZIP_MAGIC):
            content = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return content.removeprefix(_UTF8_BOM).splitlines()


def read_events(
    paths: Sequence[str],
    topic: str | None = None,
    *,
    sort: bool = True,
    progress: Progress | None = None,
    policies: Sequence[Policy] = (),
) -> EventLog:
    """Read, check and group every event of ``paths``; ordered by event time unless
    ``sort`` is false. Raises :class:`InputError` naming the first bad line. The label
    events keep every covariate one of ``policies`` reads (drift, subgroups)."""
    by_topic: dict[str, list[RawMessage]] = {kind: [] for kind in HANDLERS}
    problems: dict[tuple[int, int], str] = {}
    for index, path in enumerate(paths):
        lines = _lines(path)
        for number, line in enumerate(lines, start=1):
            if progress is not None and number % _PROGRESS_EVERY_LINES == 0:
                progress.show(f"reading {path}: {number:,} of {len(lines):,} lines")
            if not line.strip():
                continue
            kind = topic or infer_topic(line)
            if kind is None:
                problems[(index, number)] = (
                    "no topic: the line names no stream (labels), experiment_id (telemetry) "
                    "or agent (canary); give --topic, or check the line"
                )
                continue
            by_topic[kind].append(RawMessage(kind, index, number, line))
    groups: list[EventGroup] = []
    names = dict.fromkeys(name for p in policies for name in covariate_names(p))
    policy = Policy(covariate_drift=CovariateDriftPolicy(covariates=tuple(names)))
    for kind, messages in by_topic.items():
        if not messages:
            continue
        decoded = HANDLERS[kind](policy).decode(messages)
        for dead in decoded.dead_letters:
            problems.setdefault((dead.partition, dead.offset), dead.error)
        for where in _without_events(messages, decoded.subjects.values()):
            problems.setdefault(where, "no events (an empty array)")
        groups += [EventGroup(kind, name, events) for name, events in decoded.subjects.items()]
    if progress is not None:
        progress.close()
    if problems:
        (index, number), problem = min(problems.items())
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        raise InputError(f"{paths[index]}:{number}: {problem}{more}; nothing was replayed")
    if not groups:
        raise InputError(f"{', '.join(paths)}: no events (empty files)")
    unsorted = 0
    for group in groups:
        ts = group.events.ts
        behind = int((ts[1:] < np.maximum.accumulate(ts)[:-1]).sum())
        unsorted += behind
        if sort and behind:
            group.events = group.events.take(_event_time_order(group.events))
    return EventLog(list(paths), groups, unsorted, sort)


def _without_events(
    messages: Sequence[RawMessage], decoded: Iterable[SubjectEvents]
) -> list[tuple[int, int]]:
    """``(file, line)`` of the messages none of whose events were decoded (one numpy
    membership test, not a set of a million pairs)."""
    parts = list(decoded)
    lines = np.fromiter((m.offset for m in messages), np.int64, len(messages))
    files = np.fromiter((m.partition for m in messages), np.int64, len(messages))
    stride = int(lines.max(initial=0)) + 1
    if parts:
        seen = np.concatenate([e.partitions * stride + e.offsets for e in parts])
        empty = ~np.isin(files * stride + lines, seen)
    else:
        empty = np.ones(len(messages), dtype=bool)
    return list(zip(files[empty].tolist(), lines[empty].tolist(), strict=True))


def _event_time_order(events: SubjectEvents) -> np.ndarray:
    """Rows by event time; ties keep the files' order (file, line, place in the line)."""
    return np.lexsort((np.arange(len(events)), events.offsets, events.partitions, events.ts))
