"""Start-up checks: are Kafka and Redis there, and do the topics exist?"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ..config import ConfigError, Settings
from ..slices import REGISTRY
from ..store import redact
from ._kafka import client_options

__all__ = ["ServiceUnavailable", "check_redis", "ensure_topics", "topic_names"]


def topic_names() -> tuple[str, ...]:
    """Every topic of a deployment (short names): each subject kind's input topics, in
    the order the kinds registered, then ``decisions`` and ``dlq``."""
    return REGISTRY.topics()


def __getattr__(name: str) -> Any:
    # TOPIC_NAMES, as it was a constant before the subject kinds registered their topics.
    if name == "TOPIC_NAMES":
        return topic_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ServiceUnavailable(RuntimeError):
    """Kafka or Redis cannot be reached: exit status 1, naming which and where."""


def check_redis(url: str) -> bool:
    """Redis answers at ``url``; returns whether it is a node of a Redis Cluster."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:
        raise ConfigError(f"DRIFTGATE_REDIS_URL {redact(url)!r} is not a Redis URL: {exc}") from exc
    try:
        client.ping()
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError as exc:
        if "DB index" not in str(exc):
            raise ServiceUnavailable(f"Redis at {redact(url)} refused: {exc}") from exc
        raise ConfigError(
            f"DRIFTGATE_REDIS_URL {redact(url)!r} names a database this Redis does not have "
            f"({exc}; its databases are 0..databases-1, 16 by default)"
        ) from exc
    except redis.AuthenticationError as exc:
        raise ServiceUnavailable(
            f"Redis at {redact(url)} refused the credentials: {exc} (check DRIFTGATE_REDIS_URL)"
        ) from exc
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis unreachable at {redact(url)}: {exc}") from exc
    finally:
        client.close()


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the topics that are missing (``names``, by default the contract's, with
    ``settings.partitions`` each); returns the ones created."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        security = settings.kafka_security_protocol
        hint = (
            f" (with DRIFTGATE_KAFKA_SECURITY_PROTOCOL={security}: check it and the "
            "DRIFTGATE_KAFKA_SASL_* and _SSL_* settings)"
            if security != "PLAINTEXT"
            else ""
        )
        raise ServiceUnavailable(
            f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}{hint}"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        wanted = names or [settings.topic(name) for name in topic_names()]
        missing = [name for name in wanted if name not in existing]
        if missing:
            # Another worker may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, settings.partitions, 1) for name in missing]
                )
        return missing
    finally:
        await admin.close()
