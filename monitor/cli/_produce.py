"""``driftgate produce`` and ``schema``: publish checked JSONL events to an input topic,
and print a topic's JSON Schema."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..presentation._format import plural
from ..runtime._kafka import client_options
from ..runtime._preflight import ServiceUnavailable, ensure_topics
from ._common import UsageError, load_settings, with_kafka

__all__ = ["cmd_produce", "cmd_schema"]


def _input_topic(settings: Settings, name: str) -> tuple[str, str]:
    """The input topic that ``--topic`` names, and its kind (whose events it holds): a
    short name (``labels``), a full one (``driftgate.labels``), or another deployment's
    (``staging.labels``)."""
    from ..slices import HANDLERS
    from ..slices._schemas import topic_kind

    kind = topic_kind(name, settings.topic_prefix)
    if kind is None:
        raise UsageError(
            f"--topic {name!r} is not an input topic: give {', '.join(HANDLERS)}, or a full "
            f"name that ends in one (such as {settings.topic('labels')}); produce sends only "
            "events it can check"
        )
    return (settings.topic(kind) if name == kind else name), kind


def cmd_produce(args: argparse.Namespace) -> int:
    from ..emit import AsyncEmitter
    from ._checked_events import checked_events

    settings = load_settings(args)
    topic, kind = _input_topic(settings, args.topic)
    events = checked_events(args.file, topic, kind)
    options = client_options(settings)
    bootstrap = options.pop("bootstrap_servers")
    # The emitter names a topic by prefix and kind: `topic` ends in its kind.
    prefix = topic[: len(topic) - len(kind)]

    async def send_all() -> AsyncEmitter:
        await ensure_topics(settings, [topic])
        emitter = AsyncEmitter(
            bootstrap,
            topic_prefix=prefix,
            max_buffered=max(len(events), 1_000),  # the file is in memory already
            **options,
        )
        async with emitter:
            for event in events:
                await emitter.send(event)
        return emitter

    emitter = with_kafka(settings, send_all(), f"producing to {topic}")
    if emitter.dropped:
        raise ServiceUnavailable(
            f"{emitter.dropped} of {len(events)} events did not reach {topic} (Kafka refused "
            f"them; {emitter.sent} did)"
        )
    print(
        f"produced {plural(emitter.sent, 'event')} in {plural(emitter.messages, 'message')} "
        f"to {topic}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of an input topic's messages: no service, no settings needed."""
    from ..slices import HANDLERS
    from ..slices._schemas import schema_text, topic_kind

    kind = topic_kind(args.topic)
    if kind is None:
        raise UsageError(
            f"unknown topic {args.topic!r}: the topics with a schema are "
            f"{', '.join(HANDLERS)} (or a full name that ends in one); the decision and "
            "dead-letter formats are in docs/events.md"
        )
    sys.stdout.write(schema_text(kind, columnar=args.columnar))
    return 0
