"""The emitter's checks and envelopes, without Kafka: what it sends is what the worker reads."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config import Policy
from monitor.emit import EventValidationError
from monitor.emit._events import (
    canary_event,
    envelope,
    envelopes,
    label_event,
    late_label_event,
    telemetry_event,
)
from monitor.emit._sender import _Batches
from monitor.pipeline import RawMessage
from monitor.slices import HANDLERS
from monitor.subjects._late_labels import LateLabelJoin, response_digests
from monitor.subjects._telemetry import TelemetryColumns

ROOT = Path(__file__).resolve().parents[3]


def decoded(kind: str, payloads: list[bytes]) -> Any:
    messages = [RawMessage("t", 0, i, p) for i, p in enumerate(payloads)]
    return HANDLERS[kind](Policy()).decode(messages)


def test_the_emitter_imports_no_worker_code() -> None:
    code = (
        "import sys, monitor.emit; "
        "print(sorted(m for m in ('faust', 'numpy', 'scipy', 'monitor.subjects', "
        "'monitor.pipeline', 'estimators') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (
            lambda: label_event("p", float("nan")),
            "LabelEvent: Expected `float` >= -1e+100 - at `$.s`",
        ),
        (lambda: label_event("p", 0.5, y=1e300), "- at `$.y`"),
        (lambda: label_event("", 0.5), "Expected `str` of length >= 1 - at `$.stream`"),
        (lambda: label_event("p", "0.5"), "Expected `float | null`, got `str` - at `$.s`"),  # type: ignore[arg-type]
        (
            lambda: telemetry_event("e", "u", "canary", guardrails={"latency_ms": -3}),
            "Expected `float` >= 0.0 - at `$.guardrails.latency_ms`",
        ),
        (lambda: telemetry_event("e", "u", "v", environment="dev"), "- at `$.environment`"),  # type: ignore[arg-type]
        (lambda: canary_event("a", "b", "deploy"), "canary_percent is required for deploy"),
        (lambda: late_label_event("p", "", 1.0), "length >= 1 - at `$.response_id`"),
        (lambda: late_label_event("p", "r1", None), "needs its `y` - at `$.y`"),  # type: ignore[arg-type]
        (lambda: late_label_event("p", "r1", float("inf")), "- at `$.y`"),
        (lambda: label_event("p", None, 1.0), "only an oracle label, with `y` and `response_id`"),
        (lambda: label_event("p", None, response_id="r1"), "missing required field `s`"),
        (lambda: canary_event("a", "b", "promote", canary_percent=120), "must be in 0..100"),
    ],
)
def test_a_bad_event_raises_at_the_call_naming_the_field(make: Any, error: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        make()
    assert error in str(caught.value)


def test_numpy_scalars_and_datetimes_are_taken() -> None:
    event = label_event("p", np.float32(0.5), y=np.int64(1), ts=datetime(2024, 1, 15, tzinfo=UTC))
    assert (event.s, event.y, event.ts) == (0.5, 1.0, datetime(2024, 1, 15, tzinfo=UTC))  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)  # type: ignore[attr-defined]


def test_label_envelopes_decode_to_the_events_sent() -> None:
    events = [label_event("p", i / 10, y=None if i % 2 else 1.0, ts=100.0 + i) for i in range(5)]
    document = envelope(events)
    assert document["stream"] == "p" and "stream" not in document["columns"]
    assert "covariates" not in document["columns"]  # absent from every event
    batch = decoded("labels", [orjson.dumps(document)])
    assert not batch.dead_letters
    rows = batch.subjects["p"]
    assert rows.columns.s.tolist() == [e.s for e in events]
    np.testing.assert_array_equal(rows.columns.y, [1.0, np.nan, 1.0, np.nan, 1.0])
    assert rows.ts.tolist() == [100.0 + i for i in range(5)]


def test_telemetry_and_canary_envelopes_decode_to_equal_events() -> None:
    telemetry = [
        telemetry_event("x", "u1", "canary", primary_outcome=True, guardrails={"latency_ms": 3}),
        telemetry_event("x", "u2", "control", sec_outcomes={"clicks": 2}, environment="staging"),
        telemetry_event("x", "u3", "control", covariates={"segment": "a", "pre_period": 0.5}),
    ]
    batch = decoded("telemetry", [msgspec_encode(envelope(telemetry))])
    expected = TelemetryColumns.from_events(telemetry)  # type: ignore[arg-type]
    assert batch.subjects["x"].columns.same_rows(expected)
    canary = [
        canary_event("a", "b1", "deploy", canary_percent=10, actor="ops"),
        canary_event("a", "b1", "rollback", rationale="toxic"),
    ]
    assert decoded("canary", [msgspec_encode(envelope(canary))]).subjects["a"].columns.events == (
        canary
    )


def msgspec_encode(document: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(document)


def test_a_lone_event_is_a_column_of_one() -> None:
    document = envelope([label_event("p", 0.5, event_id="only")])
    assert document["columns"] == {"event_id": ["only"]}
    assert not decoded("labels", [msgspec_encode(document)]).dead_letters


def test_envelopes_over_the_message_limit_are_split() -> None:
    events = [  # about 2.4 MB, every covariate its own (an equal one would go once)
        label_event("p", 0.5, covariates={"text": f"{i}" + "x" * 20_000}) for i in range(120)
    ]
    parts = envelopes(events)
    assert len(parts) > 2 and sum(count for _, count in parts) == 120
    assert all(len(payload) < 1_048_576 for payload, _ in parts)
    huge = label_event("p", 0.5, covariates={"text": "x" * 1_100_000})
    assert envelopes([huge]) == []  # the sender counts it as dropped


def test_batches_go_when_full_or_lingering_and_drops_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = _Batches(batch_size=3, linger=3600.0, max_buffered=5)
    key = ("driftgate.labels", "p")
    assert [batches.add(key, label_event("p", 0.1)) for _ in range(3)] == [False, False, True]
    batches.add(("driftgate.labels", "q"), label_event("q", 0.1))
    [(taken_key, taken)] = batches.due()  # q lingers: an hour to go
    assert taken_key == key and len(taken) == 3 and batches.buffered == 4
    assert len(batches.due(everything=True)) == 1
    batches.add(key, label_event("p", 0.1))
    assert batches.full()
    batches.done(3)
    assert (batches.sent, batches.buffered, batches.full()) == (3, 2, False)
    with caplog.at_level(logging.WARNING, "monitor.emit"):
        batches.done(2, ConnectionError("broker gone"), "sending to driftgate.labels")
    assert (batches.dropped, batches.buffered) == (2, 0)
    assert (
        "dropped 2 events (2 in all): sending to driftgate.labels: ConnectionError" in caplog.text
    )


def test_the_documented_columnar_examples_decode_without_a_dead_letter() -> None:
    text = (ROOT / "docs" / "events.md").read_text()
    examples = re.findall(r"<!-- columnar: (\w+) -->\n```json\n(.*?)\n```", text, re.DOTALL)
    assert {kind for kind, _ in examples} == {"labels", "telemetry"}
    for kind, example in examples:
        batch = decoded(kind, [example.encode()])
        assert not batch.dead_letters and sum(map(len, batch.subjects.values())) >= 2


def test_late_halves_in_envelopes_are_the_pairs_the_worker_joins() -> None:
    """Scores that wait for their labels, then the labels alone (an envelope without an
    `s` column at all): the worker's decoder and join make the pairs of them."""
    scores = [
        label_event("p", 0.1 * i, response_id=f"r{i}", ts=100.0 + i, event_id=f"s{i}")
        for i in range(3)
    ]
    labels = [late_label_event("p", f"r{i}", float(i == 2), ts=4000.0 + i) for i in (2, 0)]
    first, second = envelope(scores), envelope(labels)
    assert first["columns"]["response_id"] == ["r0", "r1", "r2"] and "y" not in first["columns"]
    assert "s" not in second["columns"] and second["columns"]["y"] == [1.0, 0.0]
    batch = decoded("labels", [msgspec_encode(first), msgspec_encode(second)])
    assert not batch.dead_letters
    rows = batch.subjects["p"]
    ids = ["r0", "r1", "r2", "r2", "r0"]
    np.testing.assert_array_equal(rows.columns.responses, response_digests(ids))
    join = LateLabelJoin(window=7 * 86400.0)
    pairs = join.offer(rows.columns.responses, rows.ts, rows.columns.s, rows.columns.y, now=5000.0)
    assert (pairs.s.tolist(), pairs.y.tolist(), pairs.ts.tolist()) == (
        [0.2, 0.0],
        [1.0, 0.0],
        [102.0, 100.0],
    )
    assert (join.joined, join.waiting) == (2, 1)
