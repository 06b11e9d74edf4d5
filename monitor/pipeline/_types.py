"""What flows through the batch runner, and what a subject plugs into it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import msgspec
import numpy as np

from ..events._decisions import Decision

if TYPE_CHECKING:  # the gates import scipy: not for the command line's sake
    from ..gates import Verdict

__all__ = [
    "BatchResult",
    "Columns",
    "DeadLetter",
    "DecodedBatch",
    "Handler",
    "Ignored",
    "Judgement",
    "KeepsPending",
    "PendingWrites",
    "RawMessage",
    "SubjectEvents",
    "SubjectModel",
    "lag_after",
]

StateT = TypeVar("StateT")
StateIn = TypeVar("StateIn", contravariant=True)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Kafka message as the agent received it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input for the dead-letter topic: the offending bytes, why, and where they came from."""

    payload: bytes
    error: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Ignored:
    """Records of one message that carry nothing driftgate reads (an OpenTelemetry span
    that is no GenAI call, say): counted by reason, exactly once, never dead-lettered."""

    reason: str
    count: int
    partition: int
    offset: int


class Columns(Protocol):
    """A handler's columns of one subject's events (numpy arrays, one row per event)."""

    def take(self, rows: np.ndarray | slice) -> Columns: ...


@dataclass(slots=True)
class SubjectEvents:
    """The valid events of one subject in one batch, in offset order, as columns.

    The runner reads ``digests`` (of the event ids: see ``pipeline._dedupe``), ``ts``,
    ``partitions`` and ``offsets`` (fences and duplicates); only the handler reads
    ``columns``.
    """

    digests: np.ndarray
    ts: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    columns: Any

    def __len__(self) -> int:
        return int(self.digests.size)

    def take(self, rows: np.ndarray | slice) -> SubjectEvents:
        return SubjectEvents(
            self.digests[rows],
            self.ts[rows],
            self.partitions[rows],
            self.offsets[rows],
            self.columns.take(rows),
        )


@dataclass(slots=True)
class DecodedBatch:
    subjects: dict[str, SubjectEvents] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


@dataclass(frozen=True)
class Judgement:
    """One evaluation of a subject: its gates' verdicts. A model whose view shows more of
    what the evaluation found (an experiment's comparison) returns a subclass, and its
    :meth:`SubjectModel.view` and :meth:`SubjectModel.settle` get it back."""

    verdicts: list[Verdict]


class SubjectModel(Protocol[StateT]):
    """What is kept per subject of one kind, and how it is judged (no I/O).

    The runner reads the fields named in ``stored_fields`` with the state hash's own, hands
    them to :meth:`load`, and writes back what :meth:`dump` returns, atomically with
    the subject's fences, duplicates and decisions.
    """

    kind: str
    gates: tuple[str, ...]
    stored_fields: tuple[str, ...]
    tick_seconds: float | None
    """How often time alone can change a verdict (``needs_tick``); None: never."""

    def load(self, subject: str, stored: Mapping[str, bytes | None]) -> StateT: ...

    def dump(self, state: StateT) -> dict[str, bytes | str]: ...

    def evaluate(self, subject: str, state: StateT, now: float) -> Judgement: ...

    def view(self, subject: str, state: StateT, judgement: Judgement) -> msgspec.Struct:
        """The subject's row of ``driftgate status``, after ``judgement`` (the state's
        last evaluation)."""
        ...

    def settle(
        self, subject: str, state: StateT, judgement: Judgement, decisions: Sequence[Decision]
    ) -> bool:
        """Record in the state what the decisions of ``judgement`` just published did (in
        the same write); whether the state changed."""
        ...

    def needs_tick(self, view: Mapping[str, Any]) -> bool:
        """Whether time alone can change this subject's verdicts (from its stored view)."""
        ...


@dataclass
class PendingWrites:
    """What a batch did to a subject's pending records (the late-label join's halves),
    for the same write as its state: bytes to append per time bucket, buckets to delete,
    and the deltas of the view's join counters."""

    appends: dict[int, bytes] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class KeepsPending(Protocol[StateIn]):
    """A model whose state keeps records beside its hash, in time buckets of their own
    (``SubjectKeys.pending_bucket``): the runner reads them with the state and writes
    what changed in the subject's atomic write."""

    def pending_buckets(self, state: StateIn) -> list[int]:
        """The buckets to read when the state is loaded."""
        ...

    def restore_pending(self, state: StateIn, blobs: Mapping[int, bytes | None]) -> None:
        """Rebuild the records from the buckets' contents."""
        ...

    def drain_pending(self, state: StateIn) -> PendingWrites:
        """What changed since the last drain (called once per write)."""
        ...


class Handler(Protocol[StateT]):
    """One input topic: decode and validate, group by subject, fold events into state."""

    topic: str

    @property
    def model(self) -> SubjectModel[StateT]: ...

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch: ...

    def update(
        self, subject: str, state: StateT, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Fold the events into the state; returns entries for the audit log."""
        ...


@dataclass
class BatchResult:
    """What one batch did (for logs, tests and the worker's own metrics)."""

    ok: int = 0
    duplicate: int = 0
    dlq: int = 0
    skipped: int = 0
    """Events below a fence: already applied by an earlier delivery."""
    ignored: int = 0
    """Records counted and skipped (see :class:`Ignored`)."""
    conflicts: int = 0
    decisions: list[Decision] = field(default_factory=list)
    outboxes: set[tuple[str, str]] = field(default_factory=set)
    """``(kind, subject)`` whose outbox got entries: drain them now."""


def lag_after(
    messages: Iterable[RawMessage], highwaters: Mapping[int, int | None]
) -> dict[int, int]:
    """Per partition of a batch: the log end the consumer saw (``highwaters``) minus the next
    offset to process after the batch; partitions whose end is not known are left out.

    Never below 0: the log end may come from a fetch older than the batch's last message.

    >>> batch = [RawMessage("t", 0, 7, b""), RawMessage("t", 0, 9, b""), RawMessage("t", 1, 3, b"")]
    >>> lag_after(batch, {0: 25, 1: None})
    {0: 15}
    >>> lag_after(batch, {0: 9, 1: 4})
    {0: 0, 1: 0}
    """
    following: dict[int, int] = {}
    for message in messages:
        following[message.partition] = max(following.get(message.partition, 0), message.offset + 1)
    return {
        partition: max(0, end - next_offset)
        for partition, next_offset in following.items()
        if (end := highwaters.get(partition)) is not None
    }
