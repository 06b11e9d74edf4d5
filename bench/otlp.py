"""OTLP spans per second, side by side with the telemetry handler on equivalent events.

    python bench/otlp.py [--spans 200000] [--per-message 500] [--rounds 3]
                         [--no-worker] [--out bench/results/otlp]

The same GenAI calls (one experiment, two variants, latency, token usage, a model with a
price, 5% errors) are written three ways: OTLP ``ExportTraceServiceRequest`` protobuf
(``otlp_proto``, as the Collector's Kafka exporter writes it), OTLP/JSON (``otlp_json``)
and driftgate's own telemetry events in JSON envelopes of the same size. Two measures:

* handler: decode and fold (``handler.decode`` + ``handler.update``), in this process, no
  Kafka and no Redis; ``--rounds`` alternating rounds, the median per format, and for
  OTLP the part of the time spent in decoding;
* worker: a real worker (``python -m monitor worker``) drains each topic end to end
  (Kafka -> decode -> statistics -> Redis -> gates), once per format; the rate from its
  first applied batch to the last.

Writes otlp.json and otlp.md to ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from _harness import (
    ROOT,
    Services,
    free_port,
    machine_summary,
    markdown_table,
    produce,
    spawn,
    wait_until,
)
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from monitor.config import ModelPrice, OtlpPolicy, Policy
from monitor.pipeline import RawMessage
from monitor.store import KeyLayout, ReadModel
from monitor.subjects import OtlpSpanHandler, TelemetryHandler

EXPERIMENT = "support-bot"
POLICY_YAML = (
    "otlp:\n  prices:\n    gpt-4o-mini: {input_per_million: 0.15, output_per_million: 0.6}\n"
)
POLICY = Policy(otlp=OtlpPolicy(prices={"gpt-4o-mini": ModelPrice(0.15, 0.6)}))
FORMATS = ("telemetry", "otlp_proto", "otlp_json")
TOPICS = {"telemetry": "telemetry", "otlp_proto": "otlp.spans", "otlp_json": "otlp.spans"}


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def calls(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "canary": rng.random(n) < 0.1,
        "latency_ns": rng.gamma(4.0, 80e6, n).astype(np.int64),
        "input": rng.integers(50, 400, n),
        "output": rng.integers(20, 300, n),
        "error": rng.random(n) < 0.05,
        "user": rng.integers(0, 5000, n),
    }


def otlp_request(c: dict[str, np.ndarray], rows: range, seed: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [_kv("service.name", EXPERIMENT), _kv("driftgate.experiment_id", EXPERIMENT)]
    )
    spans = resource_spans.scope_spans.add().spans
    for i in rows:
        start = 1_700_000_000_000_000_000 + i * 1_000_000
        span = spans.add(
            trace_id=(seed * 10**9 + i).to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name="chat gpt-4o-mini",
            start_time_unix_nano=start,
            end_time_unix_nano=start + int(c["latency_ns"][i]),
        )
        span.attributes.extend(
            [
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.provider.name", "openai"),
                _kv("gen_ai.request.model", "gpt-4o-mini"),
                _kv("gen_ai.response.id", f"chatcmpl-{seed}-{i}"),
                _kv("gen_ai.usage.input_tokens", int(c["input"][i])),
                _kv("gen_ai.usage.output_tokens", int(c["output"][i])),
                _kv("driftgate.variant", "canary" if c["canary"][i] else "control"),
                _kv("user.id", f"user-{c['user'][i]}"),
                _kv("server.address", "api.openai.com"),
            ]
        )
        if c["error"][i]:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR))
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    document = MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        for scope in resource_spans["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def telemetry_envelope(c: dict[str, np.ndarray], rows: range, seed: int) -> bytes:
    """The same calls as driftgate telemetry events (what the OTLP handler produces)."""
    price_in, price_out = 0.15, 0.6
    return orjson.dumps(
        [
            {
                "event_id": f"{seed}-{i}",
                "ts": 1.7e9 + i / 1000,
                "experiment_id": EXPERIMENT,
                "unit_id": f"user-{c['user'][i]}",
                "variant": "canary" if c["canary"][i] else "control",
                "primary_outcome": 0.0 if c["error"][i] else 1.0,
                "guardrails": {
                    "latency_ms": float(c["latency_ns"][i]) / 1e6,
                    "unit_cost": (int(c["input"][i]) * price_in + int(c["output"][i]) * price_out)
                    / 1e6,
                },
            }
            for i in rows
        ]
    )


def messages(spans: int, per_message: int, seed: int) -> dict[str, list[bytes]]:
    c = calls(spans, seed)
    out: dict[str, list[bytes]] = {name: [] for name in FORMATS}
    for start in range(0, spans, per_message):
        rows = range(start, min(start + per_message, spans))
        request = otlp_request(c, rows, seed)
        out["otlp_proto"].append(request.SerializeToString())
        out["otlp_json"].append(otlp_json(request))
        out["telemetry"].append(telemetry_envelope(c, rows, seed))
    return out


def handler_rate(name: str, values: list[bytes], spans: int) -> tuple[float, float]:
    """Spans per second through decode + update, and the share of decoding."""
    handler = TelemetryHandler(POLICY) if name == "telemetry" else OtlpSpanHandler(POLICY)
    raw = [RawMessage("t", 0, offset, value) for offset, value in enumerate(values)]
    started = time.perf_counter()
    batch = handler.decode(raw)
    decoded = time.perf_counter()
    for subject, events in batch.subjects.items():
        state = handler.model.load(subject, {"state": None})
        handler.update(subject, state, events, time.time())
    took = time.perf_counter() - started
    assert sum(len(e) for e in batch.subjects.values()) == spans, name
    return spans / took, (decoded - started) / took


def worker_rate(
    services: Services, name: str, values: list[bytes], spans: int, work: Path
) -> float:
    """A fresh worker drains the format's topic under a prefix of its own."""
    prefix = f"b{name.replace('_', '')}{int(time.time())}."
    topic = f"{prefix}{TOPICS[name]}"
    produce(services.bootstrap, topic, [(EXPERIMENT.encode(), value) for value in values])
    policy = work / "policy.yaml"
    policy.write_text(POLICY_YAML)
    env = dict(
        os.environ,
        DRIFTGATE_KAFKA_BOOTSTRAP=services.bootstrap,
        DRIFTGATE_REDIS_URL=services.redis_url,
        DRIFTGATE_TOPIC_PREFIX=prefix,
        DRIFTGATE_REDIS_PREFIX=f"{prefix}:",
        DRIFTGATE_METRICS_PORT=str(free_port()),
        DRIFTGATE_CONFIG=str(policy),
    )
    process = spawn(
        [sys.executable, "-m", "monitor", "worker", "--loglevel", "warn"], env, work / f"{name}.log"
    )
    model = ReadModel(services.redis, KeyLayout(f"{prefix}:"))
    count = lambda: model.snapshot().events.get((topic, "ok"), 0)  # noqa: E731
    try:
        first = wait_until(count, 300, "first batch", every=0.05)
        started = time.monotonic()
        wait_until(lambda: count() >= spans, 600, f"{spans} spans", every=0.05)
        return (spans - first) / (time.monotonic() - started)
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "otlp")
    args = parser.parse_args()
    began = time.monotonic()
    data = messages(args.spans, args.per_message, seed=1)
    handler: dict[str, list[float]] = {name: [] for name in FORMATS}
    decode_share: dict[str, list[float]] = {name: [] for name in FORMATS}
    for round_ in range(args.rounds):
        order = FORMATS if round_ % 2 == 0 else FORMATS[::-1]
        for name in order:
            rate, share = handler_rate(name, data[name], args.spans)
            handler[name].append(rate)
            decode_share[name].append(share)
    workers: dict[str, float] = {}
    if not args.no_worker:
        services = Services()
        try:
            for name in FORMATS:
                workers[name] = worker_rate(
                    services, name, data[name], args.spans, services.workdir
                )
        finally:
            services.close()
    rows = [
        [
            name,
            f"{len(data[name][0]) / args.per_message:.0f}",
            statistics.median(handler[name]),
            min(handler[name]),
            max(handler[name]),
            f"{statistics.median(decode_share[name]):.0%}",
            workers.get(name, float("nan")),
        ]
        for name in FORMATS
    ]
    table = markdown_table(
        [
            "format",
            "bytes/span",
            "handler spans/s (median)",
            "min",
            "max",
            "decode share",
            "worker spans/s",
        ],
        rows,
    )
    text = (
        f"Machine: {machine_summary()}\n"
        f"{args.spans:,} GenAI calls in messages of {args.per_message}; handler: "
        f"{args.rounds} alternating rounds (decode + update in process, no Kafka or Redis); "
        f"worker: one real worker per format, Kafka to Redis; took "
        f"{time.monotonic() - began:.0f} s.\n\n{table}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "otlp.md").write_text(text)
    (args.out / "otlp.json").write_text(
        json.dumps({"handler": handler, "decode_share": decode_share, "worker": workers}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
