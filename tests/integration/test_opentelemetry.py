"""An application instrumented with the OpenTelemetry SDK feeds a stream and an experiment
through the OTLP topics of a real broker, into a real worker and Redis; what carries
nothing driftgate reads is counted and skipped, what is no OTLP at all dead-lettered."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Deployment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 300
REVIEWED = 40

POLICY = """
otlp:
  prices:
    gpt-4o-mini: {input_per_million: 0.15, output_per_million: 0.60}
  evaluations:
    relevance: {role: score, stream: "policy:support-bot"}
    human_review: {role: pair, stream: "policy:support-bot",
                   label_values: {relevant: 1, irrelevant: 0}}
"""


def _example() -> Any:
    path = ROOT / "docs" / "examples" / "opentelemetry_app.py"
    spec = importlib.util.spec_from_file_location("opentelemetry_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _more_telemetry(tracer: Any, events: Any) -> None:
    """What an instrumented application also emits: spans of other operations, a GenAI
    span without a variant, other events, an evaluation no policy maps, and a reviewer's
    judgement of a judge's score in one record (a score+label pair)."""
    with tracer.start_as_current_span("GET /answer", attributes={"http.request.method": "GET"}):
        pass
    with tracer.start_as_current_span(
        "chat gpt-4o-mini", attributes={"gen_ai.operation.name": "chat"}
    ):
        pass
    events.emit(event_name="app.started", attributes={"pid": 1})
    events.emit(
        event_name="gen_ai.evaluation.result",
        attributes={
            "gen_ai.evaluation.name": "toxicity",
            "gen_ai.evaluation.score.value": 0.1,
            "gen_ai.response.id": "r-x",
        },
    )
    for i in range(REVIEWED):
        events.emit(
            event_name="gen_ai.evaluation.result",
            attributes={
                "gen_ai.evaluation.name": "human_review",
                "gen_ai.evaluation.score.value": 0.8,
                "gen_ai.evaluation.score.label": "relevant" if i % 4 else "irrelevant",
                "gen_ai.response.id": f"chatcmpl-7-{i}",
            },
        )


def _json_span() -> bytes:
    """One GenAI span in otlp_json, as the Collector writes it with encoding otlp_json."""
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {
                                "key": "driftgate.experiment_id",
                                "value": {"stringValue": "support-bot"},
                            }
                        ]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                    "spanId": "eee19b7ec3c1b174",
                                    "name": "chat gpt-4o-mini",
                                    "startTimeUnixNano": "1700000000000000000",
                                    "endTimeUnixNano": "1700000000250000000",
                                    "attributes": [
                                        {
                                            "key": "gen_ai.operation.name",
                                            "value": {"stringValue": "chat"},
                                        },
                                        {
                                            "key": "driftgate.variant",
                                            "value": {"stringValue": "control"},
                                        },
                                        {
                                            "key": "gen_ai.usage.input_tokens",
                                            "value": {"intValue": "100"},
                                        },
                                    ],
                                    "status": {"code": 2},
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )


def test_an_instrumented_app_feeds_a_stream_and_an_experiment(
    deployment: Deployment, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    deployment.start_worker(DRIFTGATE_CONFIG=str(policy))

    _example().run_app(
        deployment.kafka, deployment.prefix, requests=REQUESTS, before_close=_more_telemetry
    )
    deployment.produce("otlp.spans", [_json_span(), b"not an export request"])

    deployment.wait_for_count("otlp.spans", "ok", REQUESTS + 1)
    deployment.wait_for_count("otlp.spans", "dlq", 1)
    deployment.wait_for_count("otlp.logs", "ok", REQUESTS + REVIEWED)
    deployment.wait_for_count("otlp.spans", "ignored", 2)
    deployment.wait_for_count("otlp.logs", "ignored", 2)

    status = deployment.status()
    experiment = status["experiments"]["support-bot"]
    variants = experiment["variants"]
    assert variants["canary"]["n"] + variants["control"]["n"] == REQUESTS + 1
    assert min(variants["canary"]["n"], variants["control"]["n"]) > REQUESTS // 4
    canary = variants["canary"]["guardrails"]
    assert canary["latency_p95_ms"]["n"] == variants["canary"]["n"]
    # 50..400 input and 20..300 output tokens at 0.15 and 0.60 per million
    assert (
        50 * 0.15e-6 + 20 * 0.6e-6
        <= canary["unit_cost_mean"]["value"]
        <= 400 * 0.15e-6 + 300 * 0.6e-6
    )
    # Every SDK span ended OK; the otlp_json span (control) had status ERROR.
    assert canary["primary_outcome_mean"]["value"] == 1.0
    assert variants["control"]["guardrails"]["primary_outcome_mean"]["value"] < 1.0

    stream = status["streams"]["policy:support-bot"]
    assert (stream["n"], stream["labeled_n"]) == (REQUESTS + REVIEWED, REVIEWED)

    spans_topic, logs_topic = deployment.topic("otlp.spans"), deployment.topic("otlp.logs")
    assert status["ignored"] == {
        logs_topic: {"evaluation_not_mapped": 1, "not_evaluation": 1},
        spans_topic: {"no_variant": 1, "not_genai": 1},
    }
    text = deployment.cli("status")
    assert f"{spans_topic}: 2 records skipped (no_variant 1, not_genai 1)" in text.stdout

    [letter] = deployment.consume_all("dlq", expected=1)
    assert letter.value == b"not an export request"
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["driftgate-error"].startswith("OtlpDecodeError: not an OTLP")
    assert headers["driftgate-source-topic"] == spans_topic
