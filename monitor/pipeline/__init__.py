"""The fenced batch runner that every subject plugs into, and what it is made of."""

from ._errors import (
    PermanentError,
    TransientError,
    is_transient,
    permanent_failure,
    retry_transient,
)
from ._runner import BatchRunner, TopicNames
from ._types import (
    BatchResult,
    DeadLetter,
    DecodedBatch,
    Handler,
    RawMessage,
    SubjectEvents,
    SubjectModel,
    lag_after,
)
from ._write import WriteScript

__all__ = [
    "BatchResult",
    "BatchRunner",
    "DeadLetter",
    "DecodedBatch",
    "Handler",
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
