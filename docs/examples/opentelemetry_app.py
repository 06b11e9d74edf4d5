"""An LLM application instrumented with the OpenTelemetry SDK, feeding driftgate.

Every answer is a GenAI span (``gen_ai.*`` attributes: model, token usage; its duration
is the latency); a judge's score of it is a ``gen_ai.evaluation.result`` event, emitted
inside the span (so parented to it) and carrying ``gen_ai.response.id``. The resource
names the experiment (``driftgate.experiment_id``); each span its variant.

In production the SDK exports over OTLP to a Collector, whose Kafka exporter writes to
``driftgate.otlp.spans`` and ``driftgate.otlp.logs`` (docs/opentelemetry.md). Here a small
in-process exporter does the Collector's part: it encodes each batch with the OTLP
exporter's own encoders into one ``ExportTraceServiceRequest`` /
``ExportLogsServiceRequest`` (``otlp_proto``) and produces it to the topic. The
integration test (tests/integration/test_opentelemetry.py) runs this file.

    python docs/examples/opentelemetry_app.py BOOTSTRAP [TOPIC_PREFIX]
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class KafkaTopic:
    """A Kafka producer on a thread of its own, for the SDK's (synchronous) exporters."""

    def __init__(self, bootstrap: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.producer: AIOKafkaProducer = self._run(self._start(bootstrap))

    @staticmethod
    async def _start(bootstrap: str) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)  # on the thread's loop
        await producer.start()
        return producer

    def _run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def send(self, topic: str, value: bytes) -> None:
        self._run(self.producer.send_and_wait(topic, value))

    def close(self) -> None:
        self._run(self.producer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class OtlpSpansToKafka(SpanExporter):
    """Each export: one ExportTraceServiceRequest, as the Collector's Kafka exporter."""

    def __init__(self, kafka: KafkaTopic, topic: str) -> None:
        self.kafka, self.topic = kafka, topic

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.kafka.send(self.topic, encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS


class OtlpLogsToKafka(LogRecordExporter):
    """Each export: one ExportLogsServiceRequest."""

    def __init__(self, kafka: KafkaTopic, topic: str) -> None:
        self.kafka, self.topic = kafka, topic

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.kafka.send(self.topic, encode_logs(batch).SerializeToString())
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # each export was sent and acknowledged

    def shutdown(self) -> None:
        pass


def run_app(
    bootstrap: str,
    prefix: str = "driftgate.",
    requests: int = 400,
    canary_share: float = 0.5,
    seed: int = 7,
    before_close: Callable[[Any, Any], None] | None = None,
) -> None:
    """Serve ``requests`` questions; each answer is a span and a judge's evaluation."""
    rng = random.Random(seed)
    kafka = KafkaTopic(bootstrap)
    resource = Resource.create(
        {"service.name": "support-bot", "driftgate.experiment_id": "support-bot"}
    )
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(SimpleSpanProcessor(OtlpSpansToKafka(kafka, f"{prefix}otlp.spans")))
    logging = LoggerProvider(resource=resource)
    logging.add_log_record_processor(
        SimpleLogRecordProcessor(OtlpLogsToKafka(kafka, f"{prefix}otlp.logs"))
    )
    tracer = tracing.get_tracer("support-bot")
    events = logging.get_logger("support-bot")
    for i in range(requests):
        variant = "canary" if rng.random() < canary_share else "control"
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "driftgate.variant": variant,
                "user.id": f"user-{i % 97}",
            },
        ) as span:
            response_id = f"chatcmpl-{seed}-{i}"  # the model's answer would come back here
            span.set_attribute("gen_ai.response.id", response_id)
            span.set_attribute("gen_ai.usage.input_tokens", rng.randint(50, 400))
            span.set_attribute("gen_ai.usage.output_tokens", rng.randint(20, 300))
            relevance = min(1.0, max(0.0, rng.gauss(0.75, 0.15)))
            events.emit(
                event_name="gen_ai.evaluation.result",
                attributes={
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": relevance,
                    "gen_ai.response.id": response_id,
                },
            )
    if before_close is not None:
        before_close(tracer, events)
    tracing.shutdown()
    logging.shutdown()
    kafka.close()


if __name__ == "__main__":
    run_app(sys.argv[1], *sys.argv[2:3])
