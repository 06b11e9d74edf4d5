"""The fenced batch runner that every subject plugs into, and what it is made of."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store._write import WriteScript
from ._errors import (
    PermanentError,
    TransientError,
    is_transient,
    permanent_failure,
    retry_transient,
)
from ._types import (
    BatchResult,
    DeadLetter,
    DecodedBatch,
    Handler,
    Ignored,
    Judgement,
    KeepsPending,
    PendingWrites,
    RawMessage,
    SubjectEvents,
    SubjectModel,
    lag_after,
)

if TYPE_CHECKING:
    from ._runner import BatchRunner, TopicNames

__all__ = [
    "BatchResult",
    "BatchRunner",
    "DeadLetter",
    "DecodedBatch",
    "Handler",
    "Ignored",
    "Judgement",
    "KeepsPending",
    "PendingWrites",
    "PermanentError",
    "RawMessage",
    "SubjectEvents",
    "SubjectModel",
    "TopicNames",
    "TransientError",
    "WriteScript",
    "is_transient",
    "lag_after",
    "permanent_failure",
    "retry_transient",
]


def __getattr__(name: str) -> Any:
    # The runner imports the gates and with them scipy (over a second): only what runs
    # batches waits for it, not the command line, which needs the errors.
    if name in ("BatchRunner", "TopicNames"):
        from . import _runner

        value = getattr(_runner, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
