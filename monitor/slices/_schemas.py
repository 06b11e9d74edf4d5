"""The JSON Schema (draft 2020-12) of each input topic's messages, from the decoders' Structs.

The worker decodes every message with its handler's :class:`~monitor.subjects.MessageDecoder`
(msgspec), so the schema is generated from the same ``msgspec.Struct`` and cannot drift from
what is accepted. ``docs/schemas/TOPIC.json`` holds the generated text (a test keeps it
equal); ``driftgate schema TOPIC`` prints it. A columnar envelope has a schema of its own,
``docs/schemas/TOPIC.columnar.json`` (``driftgate schema TOPIC --columnar``), made from the
element type of each column that the columnar decoder reads off the same Struct.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ..config import Policy
from ..events._structs import JSON_SCHEMA_RULES
from ..subjects._columnar import COLUMNS, element_types
from ..subjects._decode import MessageDecoder
from . import HANDLERS

__all__ = [
    "DIALECT",
    "columnar_schema",
    "event_type",
    "message_schema",
    "schema_file",
    "schema_text",
    "topic_kind",
]

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


def columnar_schema(kind: str) -> dict[str, Any]:
    """One columnar envelope of topic ``kind`` (docs/events.md, "Columnar envelopes"), as
    :class:`~monitor.subjects._columnar.ColumnarDecoder` reads it: ``columns`` an object of
    arrays, one per field (a nested field by its dotted name), each element of the type
    the field has in a row event; a field at the top level holds one value for every row.

    What a schema cannot say is in the description: the arrays' equal length, a field
    given both ways, and the row rules of the Struct's own check (such as a label event's
    ``s`` or ``y`` with ``response_id``)."""
    event = event_type(kind)
    exact, prefixes, required = element_types(event)
    dotted = sorted(prefixes)
    kinds = [list[k] for k in exact.values()]  # type: ignore[valid-type]
    kinds += [list[prefixes[p]] for p in dotted]  # type: ignore[valid-type]
    kinds += list(exact.values()) + [prefixes[p] for p in dotted]
    generated, components = msgspec.json.schema_components(kinds)
    count = len(exact) + len(dotted)
    columns, values = generated[:count], generated[count:]
    names = list(exact)

    def pattern(prefix: str) -> str:
        return f"^{prefix}[.]"

    column_schema: dict[str, Any] = {
        "type": "object",
        "description": (
            "Equal-length arrays, one per field (row i of every array is the i-th event); "
            "null in a column is an absent value; a column the event does not know is ignored."
        ),
        "properties": dict(zip(names, columns[: len(names)], strict=True)),
    }
    top: dict[str, Any] = dict(zip(names, values[: len(names)], strict=True))
    if dotted:
        column_schema["patternProperties"] = {
            pattern(p): s for p, s in zip(dotted, columns[len(names) :], strict=True)
        }
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "title": f"driftgate {kind} columnar envelope",
        "description": (
            f"A columnar message value of the {kind} topic (driftgate.{kind} by default): one "
            f"object whose `{COLUMNS}` holds {event.__name__}'s fields as arrays, and whose "
            "other fields apply to every row. Also checked by the worker, beyond this "
            "schema: the arrays have one length; a field is a column or a top-level field, "
            f"not both; each row passes {event.__name__}'s own rules (docs/events.md). A "
            "message that breaks one goes to the dead-letter topic whole. Generated from the "
            "decoder's msgspec Struct (driftgate schema --columnar)."
        ),
        "type": "object",
        "properties": {COLUMNS: column_schema, **top},
        "required": [COLUMNS],
    }
    if dotted:
        schema["patternProperties"] = {
            pattern(p): s for p, s in zip(dotted, values[len(names) :], strict=True)
        }
    schema["allOf"] = [
        {"anyOf": [{"required": [name]}, {"properties": {COLUMNS: {"required": [name]}}}]}
        for name in sorted(required)
    ]
    if components:
        schema["$defs"] = components
    return schema


def schema_file(kind: str, columnar: bool = False) -> str:
    """The name of the schema's file in ``docs/schemas/``."""
    return f"{kind}.columnar.json" if columnar else f"{kind}.json"


def schema_text(kind: str, columnar: bool = False) -> str:
    """The schema as ``driftgate schema`` prints it and ``docs/schemas/`` keeps it."""
    schema = columnar_schema(kind) if columnar else message_schema(kind)
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode() + "\n"
