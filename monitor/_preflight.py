"""Start-up checks: are Kafka and Redis there, and do the topics exist?"""

from __future__ import annotations

import contextlib

import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ._config import Settings

__all__ = ["TOPIC_NAMES", "ServiceUnavailable", "check_redis", "ensure_topics"]

TOPIC_NAMES = ("labels", "telemetry", "canary", "decisions", "dlq")


class ServiceUnavailable(RuntimeError):
    """Kafka or Redis cannot be reached: exit status 1, naming which and where."""


def check_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis unreachable at {url}: {exc}") from exc
    finally:
        client.close()


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract's topics that are missing; returns the ones created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(name) for name in TOPIC_NAMES]
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
