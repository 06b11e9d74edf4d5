"""OTLP decoding: the protobuf view and OTLP/JSON read what opentelemetry-proto's own
messages hold, spans and evaluation results become the events the handlers fold, and
what carries nothing driftgate reads is counted by reason."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from monitor.config import EvaluationMapping, ModelPrice, OtlpPolicy, Policy
from monitor.pipeline import RawMessage
from monitor.subjects import OtlpLogHandler, OtlpSpanHandler
from monitor.subjects._late_labels import response_digests
from monitor.subjects._otlp import telemetry_events
from monitor.subjects._otlp_wire import spans

from .test_labels import EMPTY, NOW

POLICY = Policy(
    otlp=OtlpPolicy(
        prices={"m": ModelPrice(input_per_million=1.0, output_per_million=2.0)},
        evaluations={
            "judge": EvaluationMapping(role="score", stream="policy:s"),
            "review": EvaluationMapping(role="pair", stream="policy:s", label_values={"ok": 1.0}),
            "oracle": EvaluationMapping(role="label", stream="policy:s"),
        },
    )
)


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _traces() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([_kv("driftgate.experiment_id", "exp")])
    spans = resource_spans.scope_spans.add().spans
    for i, (attributes, error) in enumerate(
        [
            ({"gen_ai.operation.name": "chat", "driftgate.variant": "a",
              "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 1000,
              "gen_ai.usage.output_tokens": 500, "user.id": "u1"}, False),
            ({"gen_ai.operation.name": "chat", "driftgate.variant": "b",
              "deployment.environment.name": "staging"}, True),
            ({"http.request.method": "GET"}, False),
            ({"gen_ai.operation.name": "chat"}, False),
        ]
    ):  # fmt: skip
        span = spans.add(
            trace_id=bytes([i + 1]) * 16,
            span_id=bytes([i + 1]) * 8,
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_000_000_000_000 + 250_000_000,
        )
        span.attributes.extend(_kv(k, v) for k, v in attributes.items())
        if error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    return request


def _otlp_json(request: Any) -> bytes:
    """OTLP/JSON as the Collector writes it: proto3 JSON with hex trace and span ids."""
    document = MessageToDict(request)

    def hexed(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexed(value)
        elif isinstance(node, list):
            for item in node:
                hexed(item)

    hexed(document)
    return orjson.dumps(document)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_genai_spans_become_telemetry_and_the_rest_is_counted(encoding: str) -> None:
    request = _traces()
    value = request.SerializeToString() if encoding == "otlp_proto" else _otlp_json(request)
    batch = OtlpSpanHandler(POLICY).decode([RawMessage("t", 2, 9, value)])
    assert batch.dead_letters == []
    assert {(i.reason, i.count, i.partition, i.offset) for i in batch.ignored} == {
        ("not_genai", 1, 2, 9),
        ("no_variant", 1, 2, 9),
    }
    [events] = batch.subjects.values()
    columns = events.columns
    assert columns.variant.values() == ["a", "b"]
    assert columns.staging.tolist() == [False, True]
    assert columns.latency_ms[0] == 250.0 and columns.outcome.tolist() == [1.0, 0.0]
    # The events behind the columns: what each span becomes.
    wire, value_of = spans(value)
    first, second = telemetry_events(wire, value_of, POLICY.otlp, Counter())
    assert first.event_id == "01" * 16 + "01" * 8
    assert (first.variant, first.unit_id, first.environment) == ("a", "u1", "prod")
    assert first.guardrails.latency_ms == 250.0
    assert first.guardrails.unit_cost == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert first.primary_outcome == 1.0 and second.primary_outcome == 0.0
    assert (second.unit_id, second.environment) == ("02" * 16, "staging")
    assert second.guardrails.unit_cost is None  # no model, no price
    assert events.ts.tolist() == [1_700_000_000.25] * 2


def _logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    evaluation = "gen_ai.evaluation.result"
    for name, attributes in [
        (evaluation, {"gen_ai.evaluation.name": "judge", "gen_ai.evaluation.score.value": 0.7,
                      "gen_ai.response.id": "r1"}),
        (evaluation, {"gen_ai.evaluation.name": "review", "gen_ai.evaluation.score.value": 0.6,
                      "gen_ai.evaluation.score.label": "ok"}),
        (evaluation, {"gen_ai.evaluation.name": "oracle", "gen_ai.evaluation.score.value": 1.0,
                      "gen_ai.response.id": "r1"}),
        (evaluation, {"gen_ai.evaluation.name": "unknown", "gen_ai.evaluation.score.value": 1.0}),
        (evaluation, {"gen_ai.evaluation.name": "judge", "gen_ai.response.id": "r2"}),
        ("app.started", {}),
    ]:  # fmt: skip
        record = records.add(
            time_unix_nano=1_700_000_000_000_000_000,
            event_name=name,
            trace_id=b"\x0a" * 16,
            span_id=b"\x0b" * 8,
        )
        record.attributes.extend(_kv(k, v) for k, v in attributes.items())
    return request


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_evaluation_results_become_scores_and_pairs_by_the_policy(encoding: str) -> None:
    request = _logs()
    value = request.SerializeToString() if encoding == "otlp_proto" else _otlp_json(request)
    batch = OtlpLogHandler(POLICY).decode([RawMessage("t", 0, 3, value)])
    assert batch.dead_letters == []
    assert {i.reason: i.count for i in batch.ignored} == {
        "evaluation_not_mapped": 1,
        "no_score": 1,
        "not_evaluation": 1,
    }
    events = batch.subjects["policy:s"]
    columns = events.columns
    nan = float("nan")
    # A score only (waits for its label), a pair, and the oracle's label alone (late half).
    np.testing.assert_array_equal(columns.s, [0.7, 0.6, nan])
    np.testing.assert_array_equal(columns.y, [nan, 1.0, 1.0])
    # The evaluated response: its id, else the span the record is parented to.
    expected = response_digests(["r1", "0a" * 16 + ":" + "0b" * 8, "r1"])
    assert columns.responses.tolist() == expected.tolist()


def test_the_oracles_label_completes_the_judges_score_of_the_same_response() -> None:
    handler = OtlpLogHandler(POLICY)
    batch = handler.decode([RawMessage("t", 0, 3, _logs().SerializeToString())])
    events = batch.subjects["policy:s"]
    state = handler.model.load("policy:s", dict(EMPTY))
    handler.update("policy:s", state, events, NOW)
    assert state.join is not None
    # r1's score and r1's label are one pair; the review's pair needed no join.
    assert (state.join.joined, state.join.waiting) == (1, 0)


@pytest.mark.parametrize("handler", [OtlpSpanHandler, OtlpLogHandler])
@pytest.mark.parametrize(
    "value", [b"\xff\xff\xff", b'{"not": "otlp"}', b'{"resourceSpans": [{"scopeSpans": 3}]}']
)
def test_a_message_that_is_no_export_request_is_dead_lettered_whole(
    handler: Any, value: bytes
) -> None:
    batch = handler(POLICY).decode([RawMessage("t", 1, 4, value)])
    [letter] = batch.dead_letters
    assert (letter.payload, letter.partition, letter.offset) == (value, 1, 4)
    assert letter.error.startswith("OtlpDecodeError: not an OTLP Export")
    assert batch.subjects == {} and batch.ignored == []
