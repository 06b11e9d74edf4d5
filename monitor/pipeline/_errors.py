"""Errors sorted by what to do about them: wait and retry, or stop and say what to fix."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import errors as kafka_errors

from ..store._errors import is_redis_error, redis_refusal_hint, redis_transient

__all__ = [
    "PermanentError",
    "TransientError",
    "is_transient",
    "kafka_failure",
    "permanent_failure",
    "redis_failure",
    "retry_transient",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(RuntimeError):
    """A condition expected to pass (a busy subject, a service restarting): retry."""


class PermanentError(RuntimeError):
    """Retrying cannot help: the worker stops with exit status 1 and this message, which
    names the service and the setting to check."""


# aiokafka marks most passing conditions ``retriable``; these few it does not, though a
# broker restart or a pause produces them.
_KAFKA_TRANSIENT = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.NodeNotReadyError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may succeed."""
    if isinstance(exc, TransientError):
        return True
    redis_says = redis_transient(exc)  # store sorts Redis's exceptions
    if redis_says is not None:
        return redis_says
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(exc.retriable) or isinstance(exc, _KAFKA_TRANSIENT)
    return isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError))


def redis_failure(exc: BaseException, where: str) -> PermanentError:
    """The message for a Redis that refuses us: which, why, and what to check."""
    hint = redis_refusal_hint(exc)
    return PermanentError(f"Redis at {where} refused: {type(exc).__name__}: {exc} (check {hint})")


def kafka_failure(exc: BaseException, where: str) -> PermanentError:
    """The message for a Kafka that refuses us."""
    if isinstance(
        exc,
        (
            kafka_errors.TopicAuthorizationFailedError,
            kafka_errors.ClusterAuthorizationFailedError,
            kafka_errors.AuthenticationFailedError,
            kafka_errors.SaslAuthenticationFailed,
        ),
    ):
        hint = "DRIFTGATE_KAFKA_SECURITY_PROTOCOL, the SASL settings and the topic ACLs"
    elif isinstance(exc, kafka_errors.RecordTooLargeError | kafka_errors.MessageSizeTooLargeError):
        hint = "the broker's message.max.bytes"
    else:
        hint = "DRIFTGATE_KAFKA_BOOTSTRAP and DRIFTGATE_TOPIC_PREFIX"
    return PermanentError(f"Kafka at {where} refused: {type(exc).__name__}: {exc} (check {hint})")


def permanent_failure(exc: BaseException, redis_at: str, kafka_at: str) -> PermanentError:
    """:func:`redis_failure` or :func:`kafka_failure`, by where ``exc`` came from."""
    if isinstance(exc, PermanentError):
        return exc
    if is_redis_error(exc):
        return redis_failure(exc, redis_at)
    if isinstance(exc, kafka_errors.KafkaError):
        return kafka_failure(exc, kafka_at)
    return PermanentError(f"{type(exc).__name__}: {exc}")


async def retry_transient(
    action: Callable[[], Awaitable[T]],
    what: str,
    on_permanent: Callable[[BaseException], PermanentError],
    first_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """Run ``action`` until it succeeds, waiting out transient failures with capped,
    jittered exponential backoff; a permanent failure becomes a :class:`PermanentError`.

    Nothing is skipped: the caller acknowledges its input only after this returns.
    """
    delay = first_delay
    while True:
        try:
            return await action()
        except PermanentError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise on_permanent(exc) from exc
            log.warning(
                "%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay
            )
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, max_delay)
