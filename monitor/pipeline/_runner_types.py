"""What the batch runner holds of a subject and plans for it, and why a plan starts over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ..events._decisions import Decision, Published
from ..store._keys import Fence
from ..store._write import SubjectWrite
from ._dedupe import DuplicateWindow

__all__ = ["MAX_ROUNDS", "TopicNames"]

StateT = TypeVar("StateT")

# Rounds of compare-and-set before a batch gives up as transient (subjects or ledgers that
# keep changing under this worker).
MAX_ROUNDS = 25


@dataclass(frozen=True)
class TopicNames:
    """Where outbox entries go."""

    decisions: str
    dlq: str


@dataclass
class _Subject(Generic[StateT]):
    """What the worker knows of a subject: as of revision ``rev`` in Redis."""

    rev: int | None
    state: StateT
    fences: dict[int, Fence | None]
    window: DuplicateWindow
    published: dict[str, Published]


class _StaleEpochs(Exception):
    """A fence from a newer log epoch than this worker knows: read the epochs again."""


class _LogRecreated(Exception):
    """A fence lies beyond the end of its log: the log was created anew."""

    def __init__(self, partition: int, epoch: int, fence: int) -> None:
        super().__init__(partition, epoch, fence)
        self.partition, self.epoch, self.fence = partition, epoch, fence


@dataclass
class _Plan(Generic[StateT]):
    name: str
    write: SubjectWrite | None
    after: _Subject[StateT]
    ok: int
    duplicate: int
    skipped: int
    decisions: list[Decision]
