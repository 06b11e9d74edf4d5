"""Columnar envelopes: decoded like the same events sent as rows, refused whole by field."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config import Policy
from monitor.pipeline import DecodedBatch, RawMessage
from monitor.subjects import CanaryHandler, LabelHandler, TelemetryHandler
from monitor.subjects._columnar import is_columnar
from monitor.subjects._telemetry import TelemetryColumns

LABELS = LabelHandler(Policy())
TELEMETRY = TelemetryHandler(Policy())
CANARY = CanaryHandler(Policy())


def messages(*values: Any) -> list[RawMessage]:
    return [
        RawMessage("t", 0, offset, v if isinstance(v, bytes) else orjson.dumps(v))
        for offset, v in enumerate(values)
    ]


def labels_columnar(**overrides: Any) -> dict[str, Any]:
    columns = {"event_id": ["e1", "e2", "e3"], "ts": [1.0, 2.0, 3.0], "s": [0.7, 0.4, 0.1]}
    columns["y"] = [1, None, 0.5]
    document: dict[str, Any] = {"stream": "policy:a", "columns": columns}
    document.update(overrides)
    return document


def rows_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    columns = document["columns"]
    constants = {k: v for k, v in document.items() if k != "columns"}
    n = len(next(iter(columns.values())))
    return [{**constants, **{k: v[i] for k, v in columns.items()}} for i in range(n)]


def same(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.subjects.keys() == b.subjects.keys()
    for name, left in a.subjects.items():
        right = b.subjects[name]
        for field in ("digests", "ts", "partitions"):
            np.testing.assert_array_equal(getattr(left, field), getattr(right, field))
        if hasattr(left.columns, "s"):
            np.testing.assert_array_equal(left.columns.s, right.columns.s)
            np.testing.assert_array_equal(left.columns.y, right.columns.y)
        elif isinstance(left.columns, TelemetryColumns):
            assert left.columns.same_rows(right.columns)
        else:
            assert left.columns.events == right.columns.events


def test_only_an_object_naming_columns_is_looked_at() -> None:
    assert is_columnar(b' {"columns": {}}')
    assert not is_columnar(b'[{"columns": 1}]') and not is_columnar(b'{"s": 1}')


def test_labels_columnar_decode_as_the_same_rows() -> None:
    document = labels_columnar()
    columnar = LABELS.decode(messages(document))
    rows = LABELS.decode(messages(rows_of(document)))
    assert not columnar.dead_letters and len(columnar.subjects["policy:a"]) == 3
    same(columnar, rows)
    assert np.isnan(columnar.subjects["policy:a"].columns.y[1])


def test_per_row_subjects_rfc3339_times_and_top_level_fields() -> None:
    document = {
        "s": 0.5,
        "columns": {
            "event_id": ["a", "b", "c"],
            "ts": ["2024-01-15T14:03:07Z", 2.0, 3.0],
            "stream": ["x", "y", "x"],
        },
    }
    batch = LABELS.decode(messages(document))
    assert not batch.dead_letters
    same(batch, LABELS.decode(messages(rows_of(document))))
    assert batch.subjects["x"].ts.tolist() == [1705327387.0, 3.0]
    assert batch.subjects["x"].columns.s.tolist() == [0.5, 0.5]


def test_rows_and_columnar_messages_keep_offset_order() -> None:
    one = labels_columnar()
    row = {"event_id": "r", "ts": 9.0, "stream": "policy:a", "s": 0.9, "y": 0}
    batch = LABELS.decode(messages(row, one, row | {"event_id": "r2"}))
    events = batch.subjects["policy:a"]
    assert events.offsets.tolist() == [0, 1, 1, 1, 2]
    assert events.columns.s.tolist() == [0.9, 0.7, 0.4, 0.1, 0.9]
    same(batch, LABELS.decode(messages(row, *rows_of(one), row | {"event_id": "r2"})))


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (
            labels_columnar(columns={"event_id": ["a", "b"], "ts": [1, 2], "s": [0.1]}),
            "columns differ in length: `event_id` has 2 rows, `s` has 1 - at `$.columns.s`",
        ),
        (
            labels_columnar(columns={"event_id": ["a"], "ts": [1], "s": ["high"]}),
            "Expected `float | null`, got `str` - at `$.columns.s[0]`",
        ),
        (
            b'{"stream": "p", "columns": {"event_id": ["a", "b"], "ts": [1, 2], "s": [0, 1e400]}}',
            "- at `$.columns.s[1]`",
        ),
        (
            labels_columnar(columns={"event_id": ["a"], "ts": [1], "s": [1e101]}),
            "Expected `float` <= 1e+100 - at `$.columns.s[0]`",
        ),
        (
            labels_columnar(columns={"event_id": ["a"], "ts": [1], "s": [0.1], "y": [True]}),
            "- at `$.columns.y[0]`",
        ),
        (labels_columnar(s=0.3), "`s` is both a column and a top-level field - at `$.s`"),
        (labels_columnar(stream=""), "Expected `str` of length >= 1 - at `$.stream`"),
        (
            labels_columnar(columns={"event_id": ["a"], "ts": [1]}),
            "Object missing required field `s` (only an oracle label, with `y` and "
            "`response_id`, goes without) - at `$.columns.s[0]`",
        ),
        (labels_columnar(columns=[1]), "Expected `object`, got `array` - at `$.columns`"),
        (labels_columnar(columns={"other": [1]}), "holds no column of the event"),
        (labels_columnar(columns={"event_id": "a", "ts": [1], "s": [1]}), "`$.columns.event_id`"),
    ],
)
def test_a_malformed_columnar_message_is_refused_whole_naming_the_field(
    document: Any, error: str
) -> None:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    good = labels_columnar()
    batch = LABELS.decode(messages(good, raw, good | {"stream": "policy:b"}))
    [letter] = batch.dead_letters
    assert letter.payload == raw and letter.offset == 1
    assert letter.error.startswith("EventValidationError: ") and error in letter.error
    assert sorted(batch.subjects) == ["policy:a", "policy:b"]  # the good ones go on


def test_unknown_columns_are_ignored_as_unknown_fields_are() -> None:
    document = labels_columnar()
    document["columns"]["note"] = ["x"]  # not even of the right length: not a field
    batch = LABELS.decode(messages(document))
    assert not batch.dead_letters and len(batch.subjects["policy:a"]) == 3


def test_telemetry_dotted_fields_build_the_same_events_as_rows() -> None:
    document = {
        "experiment_id": "exp",
        "variant": "canary",
        "columns": {
            "event_id": ["a", "b"],
            "ts": [1.0, 2.0],
            "unit_id": ["u1", "u2"],
            "primary_outcome": [True, 0.25],
            "guardrails.latency_ms": [410.0, None],
            "guardrails.toxicity": [False, None],
            "covariates.segment": [None, "enterprise"],
            "sec_outcomes.clicks": [2, None],
            "environment": ["prod", "staging"],
        },
    }
    batch = TELEMETRY.decode(messages(document))
    assert not batch.dead_letters
    rows = [
        {"event_id": "a", "ts": 1.0, "experiment_id": "exp", "unit_id": "u1", "variant": "canary",
         "primary_outcome": True, "guardrails": {"latency_ms": 410.0, "toxicity": False},
         "sec_outcomes": {"clicks": 2}},
        {"event_id": "b", "ts": 2.0, "experiment_id": "exp", "unit_id": "u2", "variant": "canary",
         "primary_outcome": 0.25, "covariates": {"segment": "enterprise"},
         "environment": "staging"},
    ]  # fmt: skip
    same(batch, TELEMETRY.decode(messages(rows)))


def test_telemetry_nested_field_types_are_checked() -> None:
    document = {
        "experiment_id": "exp",
        "variant": "canary",
        "columns": {
            "event_id": ["a"],
            "ts": [1.0],
            "unit_id": ["u1"],
            "guardrails.latency_ms": [-1],
        },
    }
    [letter] = TELEMETRY.decode(messages(document)).dead_letters
    assert "Expected `float` >= 0.0 - at `$.columns.guardrails.latency_ms[0]`" in letter.error


def test_canary_rules_of_the_struct_hold_and_name_the_row() -> None:
    document = {
        "agent": "a",
        "bundle_id": "b1",
        "columns": {
            "event_id": ["d", "p"],
            "ts": [1, 2],
            "action": ["deploy", "promote"],
            "canary_percent": [10, None],
        },
    }
    [letter] = CANARY.decode(messages(document)).dead_letters
    assert letter.error == (
        "EventValidationError: canary_percent is required for promote - at row 1 of `$.columns`"
    )
    document["columns"]["canary_percent"] = [10, 50]
    batch = CANARY.decode(messages(document))
    assert [e.action for e in batch.subjects["a"].columns.events] == ["deploy", "promote"]
