"""The JSON Schema (draft 2020-12) of each input topic's messages, from the decoders' Structs.

The worker decodes every message with its handler's :class:`~monitor.subjects.MessageDecoder`
(msgspec), so the schema is generated from the same ``msgspec.Struct`` and cannot drift from
what is accepted. ``docs/schemas/TOPIC.json`` holds the generated text (a test keeps it
equal); ``driftgate schema TOPIC`` prints it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ..config import Policy
from ..subjects import HANDLERS
from ..subjects._decode import MessageDecoder
from ._structs import JSON_SCHEMA_RULES

__all__ = ["DIALECT", "event_type", "message_schema", "schema_text", "topic_kind"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def topic_kind(name: str, prefix: str | None = None) -> str | None:
    """The input topic ``name`` stands for: a short name (``labels``), a full one
    (``driftgate.labels``, or ``prefix`` + the short name), or another deployment's
    (``staging.labels``); None when it names none."""
    for kind in HANDLERS:
        if name in (kind, f"{prefix}{kind}") or name.endswith(f".{kind}"):
            return kind
    return None


def event_type(kind: str) -> type[Any]:
    """The Struct that the handler of topic ``kind`` decodes each event into."""
    decoder = getattr(HANDLERS[kind](Policy()), "decoder", None)
    if not isinstance(decoder, MessageDecoder):
        raise TypeError(f"the {kind} handler decodes with no MessageDecoder: it has no schema")
    return decoder.event_type


def message_schema(kind: str) -> dict[str, Any]:
    """One message value of topic ``kind``: an event object, or an array of them (an
    envelope), as :class:`~monitor.subjects.MessageDecoder` reads it."""
    event = event_type(kind)
    generated = msgspec.json.schema(event | list[event])  # type: ignore[valid-type]
    for name, rules in JSON_SCHEMA_RULES.items():
        if name in generated.get("$defs", {}):
            generated["$defs"][name].update(rules)
    return {
        "$schema": DIALECT,
        "title": f"driftgate {kind} message",
        "description": (
            f"A message value of the {kind} topic (driftgate.{kind} by default): one "
            f"{event.__name__} object, or a JSON array of them. Generated from the decoder's "
            "msgspec Struct (driftgate schema); docs/events.md describes every field."
        ),
        **generated,
    }


def schema_text(kind: str) -> str:
    """The schema as ``driftgate schema`` prints it and ``docs/schemas/`` keeps it."""
    return orjson.dumps(message_schema(kind), option=orjson.OPT_INDENT_2).decode() + "\n"
