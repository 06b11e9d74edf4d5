from __future__ import annotations

import asyncio

import pytest
import redis.exceptions as redis_errors
from aiokafka import errors as kafka_errors

from monitor.pipeline._errors import (
    PermanentError,
    TransientError,
    is_transient,
    kafka_failure,
    permanent_failure,
    redis_failure,
    retry_transient,
)

TRANSIENT = [
    redis_errors.ConnectionError("Connection refused"),
    redis_errors.TimeoutError("Timeout reading from socket"),
    redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    redis_errors.ClusterDownError("The cluster is down"),
    redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),
    redis_errors.ReadOnlyError("You can't write against a read only replica."),
    kafka_errors.KafkaConnectionError("Unable to bootstrap from [('k', 9092)]"),
    kafka_errors.RequestTimedOutError(),
    kafka_errors.NotLeaderForPartitionError(),
    kafka_errors.KafkaTimeoutError(),
    kafka_errors.NodeNotReadyError(),
    TransientError("subject busy"),
    ConnectionResetError("reset by peer"),
    TimeoutError(),
]
PERMANENT = [
    redis_errors.AuthenticationError("invalid username-password pair"),
    redis_errors.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
    redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
    redis_errors.ResponseError("ERR Error running script"),
    kafka_errors.TopicAuthorizationFailedError(),
    kafka_errors.MessageSizeTooLargeError(),
    kafka_errors.UnsupportedVersionError(),
    ValueError("a bug"),
]


def name(exc: BaseException) -> str:
    return type(exc).__name__


@pytest.mark.parametrize("exc", TRANSIENT, ids=name)
def test_passing_conditions_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=name)
def test_refusals_are_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        (redis_errors.OutOfMemoryError("OOM command not allowed"), "maxmemory"),
        (redis_errors.AuthenticationError("invalid password"), "DRIFTGATE_REDIS_URL"),
        (redis_errors.NoPermissionError("NOPERM"), "ACL permissions in DRIFTGATE_REDIS_URL"),
        (redis_errors.ResponseError("WRONGTYPE"), "DRIFTGATE_REDIS_PREFIX"),
    ],
    ids=lambda value: name(value) if isinstance(value, BaseException) else value,
)
def test_a_redis_refusal_names_the_service_the_place_and_the_setting(
    exc: BaseException, hint: str
) -> None:
    message = str(redis_failure(exc, "redis://cache:6379/0"))
    assert message.startswith("Redis at redis://cache:6379/0 refused: ")
    assert name(exc) in message and str(exc) in message
    assert "(check " in message and hint in message


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        (kafka_errors.TopicAuthorizationFailedError(), "DRIFTGATE_KAFKA_SECURITY_PROTOCOL"),
        (kafka_errors.SaslAuthenticationFailed(), "SASL settings"),
        (kafka_errors.MessageSizeTooLargeError(), "message.max.bytes"),
        (kafka_errors.RecordTooLargeError(), "message.max.bytes"),
        (kafka_errors.UnsupportedVersionError(), "DRIFTGATE_KAFKA_BOOTSTRAP"),
    ],
    ids=lambda value: name(value) if isinstance(value, BaseException) else value,
)
def test_a_kafka_refusal_names_the_service_the_place_and_the_setting(
    exc: BaseException, hint: str
) -> None:
    message = str(kafka_failure(exc, "k1:9092"))
    assert message.startswith(f"Kafka at k1:9092 refused: {name(exc)}")
    assert "(check " in message and hint in message


def test_permanent_failure_sorts_by_where_the_error_came_from() -> None:
    def failure(exc: BaseException) -> str:
        return str(permanent_failure(exc, "redis://r", "k:9092"))

    assert failure(redis_errors.NoPermissionError("NOPERM")).startswith("Redis at redis://r")
    assert failure(kafka_errors.TopicAuthorizationFailedError()).startswith("Kafka at k:9092")
    assert failure(ValueError("odd")) == "ValueError: odd"
    already = PermanentError("as it was")
    assert permanent_failure(already, "redis://r", "k:9092") is already


class Flaky:
    """An action that fails with the given errors, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: object = "done") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def on_permanent(exc: BaseException) -> PermanentError:
    return permanent_failure(exc, "redis://r", "k:9092")


async def test_retry_waits_out_transient_failures_and_returns_the_result() -> None:
    action = Flaky(
        redis_errors.ConnectionError("refused"),
        kafka_errors.NodeNotReadyError(),
        redis_errors.BusyLoadingError("loading"),
        result=42,
    )
    assert await retry_transient(action, "write", on_permanent, first_delay=0.001) == 42
    assert action.calls == 4


async def test_retry_turns_a_permanent_failure_into_permanent_error_at_once() -> None:
    refusal = redis_errors.NoPermissionError("NOPERM")
    action = Flaky(refusal)
    with pytest.raises(PermanentError, match="ACL permissions") as raised:
        await retry_transient(action, "write", on_permanent, first_delay=0.001)
    assert action.calls == 1 and raised.value.__cause__ is refusal


async def test_retry_passes_a_permanent_error_through_unchanged() -> None:
    error = PermanentError("stop")
    with pytest.raises(PermanentError) as raised:
        await retry_transient(Flaky(error), "write", on_permanent, first_delay=0.001)
    assert raised.value is error


async def test_retry_backs_off_exponentially_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    action = Flaky(*[redis_errors.TimeoutError("t")] * 6)
    await retry_transient(action, "read", on_permanent, first_delay=1.0, max_delay=4.0)
    bases = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(base / 2 <= s <= base for s, base in zip(slept, bases, strict=True))


async def test_retry_does_not_swallow_cancellation() -> None:
    action = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry_transient(action, "write", on_permanent, first_delay=0.001)
    assert action.calls == 1
