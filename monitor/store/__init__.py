"""Redis: the key layout and its encodings, clients, and the read model."""

from ._client import (
    STORE_ERRORS,
    AsyncClient,
    SyncClient,
    connect,
    connect_async,
    is_cluster,
    redact,
)
from ._keys import KeyLayout
from ._read_model import ReadModel, Snapshot

__all__ = [
    "STORE_ERRORS",
    "AsyncClient",
    "KeyLayout",
    "ReadModel",
    "Snapshot",
    "SyncClient",
    "connect",
    "connect_async",
    "is_cluster",
    "redact",
]
