"""Redis's exceptions sorted by what to do about them, for the retry loop
(``pipeline._errors``), which may not import redis: wait and retry, or stop and say what
to fix."""

from __future__ import annotations

import redis.exceptions as redis_errors

from ._client import STORE_ERRORS

__all__ = ["is_redis_error", "redis_refusal_hint", "redis_transient"]

# A Redis that refuses us (credentials, ACLs, memory) or a script it rejects will not
# change its mind on retry; a lost connection, a loading replica or a failover will pass.
_PERMANENT = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.NoPermissionError,
    redis_errors.OutOfMemoryError,
    redis_errors.DataError,
)
_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.SlotNotCoveredError,
)


def redis_transient(exc: BaseException) -> bool | None:
    """Whether waiting and trying again may succeed, for an exception Redis (or its
    client) raised that tells; ``None`` when ``exc`` says nothing of that kind.

    >>> redis_transient(redis_errors.BusyLoadingError("loading"))
    True
    >>> redis_transient(redis_errors.NoPermissionError("NOPERM")), redis_transient(KeyError())
    (False, None)
    """
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("BUSY"):
        return True  # a long script runs: Redis answers BUSY to everyone else until it ends
    if isinstance(exc, redis_errors.RedisClusterException):
        # No node reachable (a cluster restarting) is raised as this bare class, with the
        # connection error as its cause; the rest of the class are misuses of the client.
        return isinstance(exc.__cause__, _TRANSIENT) or "cannot be connected" in str(exc)
    return None


def redis_refusal_hint(exc: BaseException) -> str:
    """What to check when Redis refuses us with ``exc``.

    >>> redis_refusal_hint(redis_errors.OutOfMemoryError("OOM"))
    "the server's maxmemory setting"
    """
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return "the server's maxmemory setting"
    if isinstance(exc, _PERMANENT):
        return "the credentials and ACL permissions in DRIFTGATE_REDIS_URL"
    return "DRIFTGATE_REDIS_URL and DRIFTGATE_REDIS_PREFIX"


def is_redis_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from Redis or its client (standalone or cluster)."""
    return isinstance(exc, STORE_ERRORS)
