"""The label streams' slice: the ``labels`` topic, residual, score and covariate drift."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET

from ..events._views import StreamStatus
from ..presentation._status import stream_lines
from ._label_metrics import stream_metrics
from ._label_policy import check_label_policy
from ._registry import REGISTRY, SubjectKind
from ._status import StreamsStatus

if TYPE_CHECKING:
    from ..config import Policy
    from ..pipeline import Handler
    from ..presentation._memo import Memo
    from ..store import Snapshot

__all__ = ["LABELS"]


def _handler(policy: Policy) -> Handler:
    from ..subjects._labels import LabelHandler

    return LabelHandler(policy)


def _status(snapshot: Snapshot, now: float | None) -> StreamsStatus:
    """``streams``: each stream's view, with its late-label join and retired versions."""
    streams = {}
    for name, view in snapshot.section("stream").items():
        row = msgspec.convert(view, StreamStatus)
        row.late_labels = snapshot.joins.get(name, UNSET)
        row.history = snapshot.history.get(name, UNSET)
        streams[name] = row
    return StreamsStatus(streams)


def _status_lines(section: StreamsStatus) -> list[str]:
    return [
        line
        for name, row in section.streams.items()
        for line in stream_lines(name, msgspec.to_builtins(row))
    ]


def _report(
    memo: Memo, snapshot: Snapshot, name: str, entries: list[dict[str, Any]], now: float
) -> None:
    from ..presentation._report import stream_section

    stream_section(memo, snapshot, name, snapshot.section("stream")[name], entries)


def _commands(commands: Any) -> None:
    from ..cli._labels import add_commands

    add_commands(commands)


LABELS = REGISTRY.register(
    SubjectKind(
        name="labels",
        kinds=("stream",),
        handlers={"labels": _handler},
        check_policy=check_label_policy,
        gate_parts={"covariate_drift": "covariate"},
        status=_status,
        status_lines=_status_lines,
        metrics=stream_metrics,
        report=_report,
        report_nouns=("stream",),
        commands=_commands,
    )
)
