"""Columnar envelopes through a real worker: counted in status, a bad one dead-lettered whole."""

from __future__ import annotations

import orjson
import pytest

from .conftest import Deployment, encode

pytestmark = pytest.mark.integration


def test_columnar_labels_and_telemetry_reach_status_and_a_bad_one_is_dead_lettered(
    deployment: Deployment,
) -> None:
    deployment.start_worker()
    n = 500
    labels = {
        "stream": "policy:columnar",
        "columns": {
            "event_id": [f"c{i}" for i in range(n)],
            "ts": [1.7e9 + i for i in range(n)],
            "s": [(i % 10) / 10 for i in range(n)],
            "y": [None if i % 2 else (i % 10) / 10 for i in range(n)],  # every other labeled
        },
    }
    bad = {
        "stream": "policy:columnar",
        "columns": {"event_id": ["x1", "x2"], "ts": [1.7e9, 1.7e9], "s": [0.5], "y": [1, 0]},
    }
    telemetry = {
        "experiment_id": "exp-columnar",
        "columns": {
            "event_id": [f"t{i}" for i in range(n)],
            "ts": [1.7e9 + i for i in range(n)],
            "unit_id": [f"u{i}" for i in range(n)],
            "variant": ["control" if i % 2 else "treatment" for i in range(n)],
            "primary_outcome": [i % 3 == 0 for i in range(n)],
            "guardrails.latency_ms": [100.0 + i for i in range(n)],
        },
    }
    deployment.produce("labels", [encode(labels), encode(bad)], [b"policy:columnar"] * 2)
    deployment.produce("telemetry", [encode(telemetry)], [b"exp-columnar"])

    deployment.wait_for_count("labels", "ok", n)
    deployment.wait_for_count("labels", "dlq", 1)
    deployment.wait_for_count("telemetry", "ok", n)
    status = deployment.status()
    stream = status["streams"]["policy:columnar"]
    assert (stream["n"], stream["labeled_n"]) == (n, n // 2)
    variants = status["experiments"]["exp-columnar"]["variants"]
    assert variants["treatment"]["n"] == variants["control"]["n"] == n // 2
    assert variants["treatment"]["guardrails"]["latency_p95_ms"]["n"] == n // 2

    [letter] = deployment.consume_all("dlq", expected=1)
    assert letter.value == encode(bad)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["driftgate-error"] == (
        "EventValidationError: columns differ in length: `event_id` has 2 rows, `s` has 1 - at "
        "`$.columns.s`"
    )
    assert headers["driftgate-source-topic"] == deployment.topic("labels")
    assert orjson.loads(letter.value)["columns"]["s"] == [0.5]
