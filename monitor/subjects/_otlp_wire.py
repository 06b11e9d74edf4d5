"""OTLP export requests as the OpenTelemetry Collector's Kafka exporter writes them.

One message holds one ``ExportTraceServiceRequest`` or ``ExportLogsServiceRequest``, in
``otlp_proto`` (protobuf bytes, the exporter's default) or ``otlp_json`` (OTLP/JSON:
lowerCamelCase keys, trace and span ids in hex); the encoding is told by the first byte
(a JSON object starts with ``{``, which no export request's protobuf bytes do).

Only what driftgate reads is decoded. For protobuf, the messages of ``opentelemetry-proto``
(the field numbers, taken from its descriptors) are read through a *view*: the same wire
format, but each ``repeated KeyValue attributes`` field declared as ``map<string, bytes>``
(a map entry is a ``{key = 1, value = 2}`` message, which is what a ``KeyValue`` is), so
upb parses every span in C into a hash map keyed by attribute name, and a span's few
attributes of interest are looked up, not walked: about three times the spans per second
of walking the generated classes' attribute lists (bench/otlp.py). Each looked-up value
is an ``AnyValue``'s bytes, decoded here (:func:`proto_value`); fields the view leaves out
(events, links, scopes) are skipped by the parser.

For JSON, msgspec decodes the request into Structs in one C pass; an attribute list
becomes a dict of ``AnyValue`` Structs (:func:`json_value`).

Both yield the same :class:`WireSpan` and :class:`WireRecord` tuples, whose ``attributes``
and ``resource`` answer ``.get(name)`` with an encoded value for ``value_of``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "OtlpDecodeError",
    "WireRecord",
    "WireSpan",
    "json_value",
    "log_records",
    "proto_value",
    "spans",
]

STATUS_CODE_ERROR = trace_pb2.Status.STATUS_CODE_ERROR


class OtlpDecodeError(ValueError):
    """A message that is no export request of the topic's signal (dead-lettered whole)."""


class WireSpan(NamedTuple):
    resource: Any
    """The resource's attributes: ``.get(name)`` gives an encoded value or None."""
    attributes: Any
    trace_id: str
    """Hex, as in OTLP/JSON; empty when the span has none."""
    span_id: str
    start_ns: int
    end_ns: int
    error: bool
    """The span's status is ``STATUS_CODE_ERROR``."""


class WireRecord(NamedTuple):
    resource: Any
    attributes: Any
    event_name: str
    time_ns: int
    """``time_unix_nano``, else ``observed_time_unix_nano`` (0 when neither is set)."""
    trace_id: str
    span_id: str


# --- otlp_proto ---------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "driftgate.otlp_view"


class _ViewBuilder:
    """Declares view messages whose field numbers are read off the official descriptors."""

    def __init__(self) -> None:
        self.file = descriptor_pb2.FileDescriptorProto(
            name="driftgate/otlp_view.proto", package=_PACKAGE, syntax="proto3"
        )

    def message(self, name: str, official: Descriptor, fields: dict[str, Any]) -> None:
        """``fields``: official field name -> ``"bytes"``, ``"fixed64"``, ``"string"``,
        ``"attributes"`` (a map of raw ``AnyValue`` bytes) or a view message's name."""
        message = self.file.message_type.add(name=name)
        for field_name, kind in fields.items():
            official_field = official.fields_by_name[field_name]
            # The view must keep each field's wire type: bytes may stand for a message.
            wire = {"bytes": (_F.TYPE_BYTES, _F.TYPE_MESSAGE), "attributes": (_F.TYPE_MESSAGE,)}
            assert official_field.type in wire.get(
                kind, (getattr(_F, f"TYPE_{kind.upper()}", 0), _F.TYPE_MESSAGE)
            ), field_name
            field = message.field.add(
                name=field_name,
                number=official_field.number,
                label=_F.LABEL_REPEATED if official_field.is_repeated else _F.LABEL_OPTIONAL,
            )
            if kind == "attributes":
                entry = message.nested_type.add(name="AttributesEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{name}.AttributesEntry"
            elif kind in ("bytes", "fixed64", "string"):
                field.type = getattr(_F, f"TYPE_{kind.upper()}")
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"

    def classes(self, *names: str) -> list[Any]:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(self.file)
        return [
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in names
        ]


def _views() -> tuple[Any, Any]:
    build = _ViewBuilder()
    build.message("Resource", resource_pb2.Resource.DESCRIPTOR, {"attributes": "attributes"})
    span = trace_pb2.Span.DESCRIPTOR
    build.message(
        "Span",
        span,
        {
            "trace_id": "bytes",
            "span_id": "bytes",
            "start_time_unix_nano": "fixed64",
            "end_time_unix_nano": "fixed64",
            "attributes": "attributes",
            "status": "bytes",  # a Status message, read by _status_is_error
        },
    )
    build.message("ScopeSpans", trace_pb2.ScopeSpans.DESCRIPTOR, {"spans": "Span"})
    build.message(
        "ResourceSpans",
        trace_pb2.ResourceSpans.DESCRIPTOR,
        {"resource": "Resource", "scope_spans": "ScopeSpans"},
    )
    build.message(
        "Traces",
        trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR,
        {"resource_spans": "ResourceSpans"},
    )
    build.message(
        "LogRecord",
        logs_pb2.LogRecord.DESCRIPTOR,
        {
            "time_unix_nano": "fixed64",
            "observed_time_unix_nano": "fixed64",
            "attributes": "attributes",
            "trace_id": "bytes",
            "span_id": "bytes",
            "event_name": "string",
        },
    )
    build.message("ScopeLogs", logs_pb2.ScopeLogs.DESCRIPTOR, {"log_records": "LogRecord"})
    build.message(
        "ResourceLogs",
        logs_pb2.ResourceLogs.DESCRIPTOR,
        {"resource": "Resource", "scope_logs": "ScopeLogs"},
    )
    build.message(
        "Logs",
        logs_service_pb2.ExportLogsServiceRequest.DESCRIPTOR,
        {"resource_logs": "ResourceLogs"},
    )
    traces_view, logs_view = build.classes("Traces", "Logs")
    return traces_view, logs_view


_TracesView, _LogsView = _views()

# AnyValue's wire tags (one byte each: its field numbers are below 16).
_ANY = common_pb2.AnyValue.DESCRIPTOR.fields_by_name
_STRING = _ANY["string_value"].number << 3 | 2
_BOOL = _ANY["bool_value"].number << 3 | 0
_INT = _ANY["int_value"].number << 3 | 0
_DOUBLE = _ANY["double_value"].number << 3 | 1
_STATUS_CODE = trace_pb2.Status.DESCRIPTOR.fields_by_name["code"].number << 3 | 0
_unpack_double = struct.Struct("<d").unpack_from


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(raw):
            raise OtlpDecodeError("truncated varint in an attribute value")
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def proto_value(raw: bytes | None) -> str | bool | int | float | None:
    """An ``AnyValue``'s bytes as a Python value: a string, bool, int or float; None for
    an absent attribute, an empty value, and the kinds driftgate does not read (arrays,
    key-value lists, bytes)."""
    if not raw:
        return None
    tag = raw[0]
    if tag == _STRING:
        size, at = _varint(raw, 1)
        if at + size > len(raw):
            raise OtlpDecodeError("truncated string in an attribute value")
        return raw[at : at + size].decode()
    if tag == _INT:
        value, _ = _varint(raw, 1)
        return value - (1 << 64) if value >= 1 << 63 else value
    if tag == _DOUBLE:
        if len(raw) < 9:
            raise OtlpDecodeError("truncated double in an attribute value")
        return float(_unpack_double(raw, 1)[0])
    if tag == _BOOL:
        return bool(_varint(raw, 1)[0])
    return None


def _status_is_error(raw: bytes) -> bool:
    """Whether a ``Status`` message's code is ERROR (its message, field 2, is skipped)."""
    at = 0
    code = 0
    while at < len(raw):
        tag, at = _varint(raw, at)
        if tag == _STATUS_CODE:
            code, at = _varint(raw, at)
        elif tag & 7 == 2:
            size, at = _varint(raw, at)
            at += size
        elif tag & 7 == 0:
            _, at = _varint(raw, at)
        else:
            raise OtlpDecodeError(f"unexpected wire type {tag & 7} in a span status")
    return code == STATUS_CODE_ERROR


def _parse(view: Any, value: bytes, what: str) -> Any:
    try:
        return view.FromString(value)
    except DecodeError as exc:
        raise OtlpDecodeError(f"not an OTLP {what} (otlp_proto): {exc}") from None


def _proto_spans(value: bytes) -> Iterator[WireSpan]:
    request = _parse(_TracesView, value, "ExportTraceServiceRequest")
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource.attributes
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                status = span.status
                yield WireSpan(
                    resource,
                    span.attributes,
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    bool(status) and _status_is_error(status),
                )


def _proto_records(value: bytes) -> Iterator[WireRecord]:
    request = _parse(_LogsView, value, "ExportLogsServiceRequest")
    for resource_logs in request.resource_logs:
        resource = resource_logs.resource.attributes
        for scope in resource_logs.scope_logs:
            for record in scope.log_records:
                yield WireRecord(
                    resource,
                    record.attributes,
                    record.event_name,
                    record.time_unix_nano or record.observed_time_unix_nano,
                    record.trace_id.hex(),
                    record.span_id.hex(),
                )


# --- otlp_json ----------------------------------------------------------------------------

_Number = int | str  # OTLP/JSON writes 64-bit integers as strings; numbers are accepted too


class _AnyValue(msgspec.Struct, rename="camel", gc=False):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: _Number | None = None
    double_value: float | str | None = None  # "NaN", "Infinity": proto3 JSON's spelling


class _KeyValue(msgspec.Struct, gc=False):
    key: str
    value: _AnyValue | None = None


class _Resource(msgspec.Struct, gc=False):
    attributes: list[_KeyValue] = []


class _Status(msgspec.Struct, gc=False):
    code: int | str = 0


class _Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    start_time_unix_nano: _Number = 0
    end_time_unix_nano: _Number = 0
    attributes: list[_KeyValue] = []
    status: _Status | None = None


class _ScopeSpans(msgspec.Struct, gc=False):
    spans: list[_Span] = []


class _ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []


class _Traces(msgspec.Struct, rename="camel", gc=False):
    resource_spans: list[_ResourceSpans]  # required: a JSON object without it is not ours


class _LogRecord(msgspec.Struct, rename="camel", gc=False):
    time_unix_nano: _Number = 0
    observed_time_unix_nano: _Number = 0
    attributes: list[_KeyValue] = []
    trace_id: str = ""
    span_id: str = ""
    event_name: str = ""


class _ScopeLogs(msgspec.Struct, rename="camel", gc=False):
    log_records: list[_LogRecord] = []


class _ResourceLogs(msgspec.Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_logs: list[_ScopeLogs] = []


class _Logs(msgspec.Struct, rename="camel", gc=False):
    resource_logs: list[_ResourceLogs]


_traces_json = msgspec.json.Decoder(_Traces)
_logs_json = msgspec.json.Decoder(_Logs)
_ERROR_NAMES = (STATUS_CODE_ERROR, "STATUS_CODE_ERROR", str(STATUS_CODE_ERROR))
_NO_ATTRIBUTES: dict[str, _AnyValue | None] = {}


def json_value(value: _AnyValue | None) -> str | bool | int | float | None:
    """An OTLP/JSON ``AnyValue`` as a Python value (see :func:`proto_value`)."""
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.int_value is not None:
        return _integer(value.int_value, "intValue")
    if value.double_value is not None:
        try:
            return float(value.double_value)
        except ValueError:
            raise OtlpDecodeError(f"doubleValue {value.double_value!r} is no number") from None
    return value.bool_value


def _integer(number: int | str, where: str) -> int:
    try:
        return int(number)
    except ValueError:
        raise OtlpDecodeError(f"{where} {number!r} is no integer") from None


def _attributes(pairs: list[_KeyValue]) -> dict[str, _AnyValue | None]:
    return {pair.key: pair.value for pair in pairs} if pairs else _NO_ATTRIBUTES


def _json(decoder: msgspec.json.Decoder[Any], value: bytes, what: str) -> Any:
    try:
        return decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise OtlpDecodeError(f"not an OTLP {what} (otlp_json): {exc}") from None


def _json_spans(value: bytes) -> Iterator[WireSpan]:
    request: _Traces = _json(_traces_json, value, "ExportTraceServiceRequest")
    for resource_spans in request.resource_spans:
        resource = _attributes(
            resource_spans.resource.attributes if resource_spans.resource else []
        )
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                yield WireSpan(
                    resource,
                    _attributes(span.attributes),
                    span.trace_id.lower(),
                    span.span_id.lower(),
                    _integer(span.start_time_unix_nano, "startTimeUnixNano"),
                    _integer(span.end_time_unix_nano, "endTimeUnixNano"),
                    span.status is not None and span.status.code in _ERROR_NAMES,
                )


def _json_records(value: bytes) -> Iterator[WireRecord]:
    request: _Logs = _json(_logs_json, value, "ExportLogsServiceRequest")
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes if resource_logs.resource else [])
        for scope in resource_logs.scope_logs:
            for record in scope.log_records:
                time_ns = _integer(record.time_unix_nano, "timeUnixNano") or _integer(
                    record.observed_time_unix_nano, "observedTimeUnixNano"
                )
                yield WireRecord(
                    resource,
                    _attributes(record.attributes),
                    record.event_name,
                    time_ns,
                    record.trace_id.lower(),
                    record.span_id.lower(),
                )


# --- either -------------------------------------------------------------------------------

ValueOf = Callable[[Any], "str | bool | int | float | None"]


def _is_json(value: bytes) -> bool:
    return value.lstrip()[:1] == b"{"


def spans(value: bytes) -> tuple[list[WireSpan], ValueOf]:
    """The spans of one message and the function that decodes their attribute values;
    raises :class:`OtlpDecodeError` for a message that is no export request."""
    if _is_json(value):
        return list(_json_spans(value)), json_value
    return list(_proto_spans(value)), proto_value


def log_records(value: bytes) -> tuple[list[WireRecord], ValueOf]:
    """The log records of one message (see :func:`spans`)."""
    if _is_json(value):
        return list(_json_records(value)), json_value
    return list(_proto_records(value)), proto_value


def finite(number: Any) -> float | None:
    """``number`` as a finite float, or None (a string, a bool, NaN, an infinity)."""
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    number = float(number)
    return number if math.isfinite(number) else None
