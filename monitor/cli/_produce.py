"""``driftgate produce`` and ``schema``: publish checked JSONL events to an input topic,
and print a topic's JSON Schema."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..config import Settings
from ..presentation._format import plural
from ..runtime._kafka import MAX_MESSAGE_BYTES, client_options
from ..runtime._preflight import ensure_topics
from ._common import KAFKA_WAIT_SECONDS, UsageError, load_settings, with_kafka

__all__ = ["cmd_produce", "cmd_schema"]


def _input_topic(settings: Settings, name: str) -> tuple[str, str]:
    """The input topic that ``--topic`` names, and its kind (whose events it holds): a
    short name (``labels``), a full one (``driftgate.labels``), or another deployment's
    (``staging.labels``)."""
    from ..events._schemas import topic_kind
    from ..subjects import HANDLERS

    kind = topic_kind(name, settings.topic_prefix)
    if kind is None:
        raise UsageError(
            f"--topic {name!r} is not an input topic: give {', '.join(HANDLERS)}, or a full "
            f"name that ends in one (such as {settings.topic('labels')}); produce sends only "
            "events it can check"
        )
    return (settings.topic(kind) if name == kind else name), kind


def cmd_produce(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from ..events._produce import checked_messages

    settings = load_settings(args)
    topic, kind = _input_topic(settings, args.topic)
    messages = checked_messages(args.file, topic, kind)

    async def connect() -> AIOKafkaProducer:
        await ensure_topics(settings, [topic])
        producer = AIOKafkaProducer(
            **client_options(settings),
            linger_ms=5,
            acks="all",
            request_timeout_ms=10_000,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def send_all() -> None:
        producer = await asyncio.wait_for(connect(), KAFKA_WAIT_SECONDS)
        try:
            pending = [await producer.send(topic, value, key=key) for key, value in messages]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    with_kafka(settings, send_all(), f"producing to {topic}")
    print(f"produced {plural(len(messages), 'message')} to {topic}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of an input topic's messages: no service, no settings needed."""
    from ..events._schemas import schema_text, topic_kind
    from ..subjects import HANDLERS

    kind = topic_kind(args.topic)
    if kind is None:
        raise UsageError(
            f"unknown topic {args.topic!r}: the topics with a schema are "
            f"{', '.join(HANDLERS)} (or a full name that ends in one); the decision and "
            "dead-letter formats are in docs/events.md"
        )
    sys.stdout.write(schema_text(kind))
    return 0
