"""Kafka clients configured from the settings: security, and the outbox's producer."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError

from ..config import Settings
from ..config._settings import MAX_MESSAGE_BYTES

__all__ = [
    "MAX_MESSAGE_BYTES",
    "client_options",
    "faust_credentials",
    "send_events",
    "start_producer",
]

log = logging.getLogger(__name__)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of driftgate takes."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


def faust_credentials(settings: Settings) -> Any:
    """The same security settings for Faust's own consumer and producer (None: plaintext)."""
    import faust

    context = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


async def send_events(
    settings: Settings, topic: str, events: list[dict[str, Any]], key: str | None = None
) -> None:
    """Publish events (JSON, one a message) and wait until Kafka has them all."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    try:
        await producer.start()  # a failed start leaves it open ("Unclosed AIOKafkaProducer")
        for event in events:
            await producer.send_and_wait(
                topic, orjson.dumps(event), key=key.encode() if key else None
            )
    finally:
        await producer.stop()


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    """An idempotent producer (acks=all), so broker-side retries add no duplicates.

    A broker without idempotent producers (the embedded one: its InitProducerId fails)
    gets a plain acks=all producer and a warning: a retried send may then be written
    twice, with the same ``decision_id``.
    """
    common = {
        **client_options(settings),
        "acks": "all",
        "request_timeout_ms": 10_000,
        # Kafka's own default message.max.bytes: a larger dead letter is refused here,
        # with a message that says so, rather than by the broker after a wait.
        "max_request_size": MAX_MESSAGE_BYTES,
    }
    producer = AIOKafkaProducer(enable_idempotence=True, **common)
    try:
        await producer.start()
    except (UnknownError, UnsupportedVersionError) as exc:
        await producer.stop()
        log.warning(
            "Kafka at %s has no idempotent producers (%s); decisions and dead letters are "
            "sent with acks=all only: a retried send may appear twice, with the same "
            "decision_id",
            settings.kafka_bootstrap,
            type(exc).__name__,
        )
        producer = AIOKafkaProducer(**common)
        await producer.start()
    except KafkaError:
        await producer.stop()
        raise
    return producer
