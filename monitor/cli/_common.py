"""What every command uses: its settings, a Redis client, the read model, a bounded
call to Kafka, and the error that is exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from ..config import Settings
from ..presentation._format import json_text
from ..runtime._preflight import ServiceUnavailable, check_redis
from ..slices import REGISTRY
from ..store import KeyLayout, ReadModel, SyncClient, connect

__all__ = [
    "KAFKA_WAIT_SECONDS",
    "UsageError",
    "load_settings",
    "metrics_url",
    "open_read_model",
    "print_json",
    "print_outcome",
    "quiet_kafka_client",
    "redis_client",
    "with_kafka",
]

T = TypeVar("T")

# How long a command waits for Kafka to answer before it gives up, naming it.
KAFKA_WAIT_SECONDS = 12.0


class UsageError(ValueError):
    """Bad usage: exit status 2."""


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings of the variables and the flags, the policy file among them read and
    checked for every command (a missing ``DRIFTGATE_CONFIG`` is exit 2 for ``status`` as
    for the worker, not a setting silently ignored), after the subject kinds of
    ``DRIFTGATE_SUBJECTS`` registered (their sections are keys of the file)."""
    settings = Settings.from_env(
        kafka_bootstrap=getattr(args, "kafka_bootstrap", None),
        redis_url=getattr(args, "redis_url", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        config_path=getattr(args, "config", None),
        topic_prefix=getattr(args, "topic_prefix", None),
    )
    REGISTRY.load(settings.subject_modules)
    settings.policy  # noqa: B018 - reads and checks DRIFTGATE_CONFIG
    return settings


def redis_client(settings: Settings) -> SyncClient:
    """A client for the configured Redis (a cluster client for a cluster), checked."""
    return connect(settings.redis_url, check_redis(settings.redis_url))


def open_read_model(settings: Settings) -> ReadModel:
    return ReadModel(redis_client(settings), KeyLayout(settings.redis_prefix))


def print_json(document: Any) -> None:
    sys.stdout.write(json_text(document) + "\n")


def print_outcome(outcome: Any, as_json: bool) -> None:
    """A workflow's outcome: its ``to_dict()`` for ``--json``, else its ``lines()``."""
    if as_json:
        print_json(outcome.to_dict())
    else:
        print("\n".join(outcome.lines()))


def metrics_url(settings: Settings) -> str:
    host = settings.metrics_host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.metrics_port}/metrics"


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """The Kafka client's log lines off for a while (a command says what failed in one
    line of its own; the worker's log has them back once Faust runs)."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


def _kafka_reason(exc: BaseException) -> str:
    """An error named once: aiokafka's messages begin with their class's name
    (``KafkaConnectionError: KafkaConnectionError: ...``)."""
    name = type(exc).__name__
    text = str(exc).removeprefix(f"{name}: ")  # aiokafka's errors start with their name
    if text in ("", name):
        return f"{name} (no broker answered there)"
    return f"{name}: {text}"


def with_kafka(settings: Settings, work: Awaitable[T], what: str) -> T:
    """Run ``work`` (which talks to Kafka); an answer that does not come within
    :data:`KAFKA_WAIT_SECONDS`, or a refusal, is a failure that names Kafka."""
    from aiokafka.errors import KafkaError

    async def bounded() -> T:
        return await asyncio.wait_for(work, KAFKA_WAIT_SECONDS)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} did not answer within "
            f"{KAFKA_WAIT_SECONDS:.0f} s ({what}; check DRIFTGATE_KAFKA_BOOTSTRAP)"
        ) from None
    except KeyError as exc:  # how aiokafka ends a SCRAM exchange the broker refused
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} refused the SASL "
            f"{settings.kafka_sasl_mechanism or 'PLAIN'} credentials of user "
            f"{settings.kafka_sasl_username!r} ({what}; check DRIFTGATE_KAFKA_SASL_USERNAME "
            "and DRIFTGATE_KAFKA_SASL_PASSWORD)"
        ) from exc
    except (KafkaError, OSError, ValueError) as exc:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} failed ({what}): {_kafka_reason(exc)} "
            "(check DRIFTGATE_KAFKA_BOOTSTRAP and the DRIFTGATE_KAFKA_* security settings)"
        ) from exc
