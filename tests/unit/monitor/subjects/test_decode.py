from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from monitor.pipeline import DeadLetter, RawMessage
from monitor.pipeline._dedupe import event_digests
from monitor.subjects._decode import MessageDecoder, event_times, split_by_subject
from monitor.subjects._labels import LabelEvent

DECODER = MessageDecoder(LabelEvent)


def event(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {"event_id": "e", "ts": 1.0, "stream": "p", "s": 0.4, "y": 0.5}
    document.update(overrides)
    return document


def missing(name: str) -> dict[str, object]:
    document = event()
    del document[name]
    return document


def test_one_object_and_an_envelope() -> None:
    events, bad = DECODER.decode(orjson.dumps(event()))
    assert events == [LabelEvent("e", 1.0, "p", 0.4, 0.5)] and bad == []
    events, bad = DECODER.decode(orjson.dumps([event(event_id="a"), event(event_id="b")]))
    assert [e.event_id for e in events] == ["a", "b"] and bad == []


def test_an_empty_envelope_holds_nothing() -> None:
    assert DECODER.decode(b"[]") == ([], [])


def test_optional_fields_and_integers() -> None:
    [decoded], _ = DECODER.decode(orjson.dumps({"event_id": "e", "ts": 5, "stream": "p", "s": 1}))
    assert (decoded.ts, decoded.s, decoded.y, decoded.covariates) == (5.0, 1.0, None, None)
    [decoded], _ = DECODER.decode(orjson.dumps(event(y=None, covariates={"region": "eu"})))
    assert decoded.y is None and decoded.covariates == {"region": "eu"}


@pytest.mark.parametrize(
    ("raw", "kind", "message"),
    [
        (b"{not json", "JSONDecodeError", "JSON is malformed"),
        (
            b'{"event_id": "e", "ts": 1, "stream": "p", "s": NaN}',
            "JSONDecodeError",
            "JSON is malformed: invalid character",
        ),
        (
            b'{"event_id": "e", "ts": 1, "stream": "p", "s": 1e400}',
            "EventValidationError",
            "- at `$.s`",
        ),
        (
            orjson.dumps(event(s="abc")),
            "EventValidationError",
            "Expected `float | null`, got `str` - at `$.s`",
        ),
        (orjson.dumps(missing("s")), "EventValidationError", "missing required field `s`"),
        (orjson.dumps(event(s=True)), "EventValidationError", "got `bool` - at `$.s`"),
        (orjson.dumps(event(y="1")), "EventValidationError", "got `str` - at `$.y`"),
        (orjson.dumps(event(event_id="")), "EventValidationError", "length >= 1 - at `$.event_id`"),
        (orjson.dumps(event(stream="")), "EventValidationError", "length >= 1 - at `$.stream`"),
        (
            orjson.dumps(event(ts="yesterday")),
            "EventValidationError",
            "RFC3339 encoded datetime - at `$.ts`",
        ),
        (
            orjson.dumps(event(ts="2026-11-22T10:00:00")),
            "EventValidationError",
            "with a timezone component - at `$.ts`",
        ),
        (
            orjson.dumps(event(covariates=[1])),
            "EventValidationError",
            "got `array` - at `$.covariates`",
        ),
        (b"42", "EventValidationError", "Expected `object`, got `int`"),
        (b"null", "EventValidationError", "Expected `object`, got `null`"),
        (b"", "JSONDecodeError", "truncated"),
        (None, "EventValidationError", "message has no value"),
    ],
)
def test_a_bad_message_is_dead_lettered_whole(raw: bytes | None, kind: str, message: str) -> None:
    events, bad = DECODER.decode(raw)
    assert events == []
    [(payload, error)] = bad
    assert payload == (raw or b"")
    assert error.startswith(f"{kind}: ")
    assert message in error


def test_an_envelope_keeps_its_good_elements_and_dead_letters_the_bad_ones() -> None:
    bad_one = event(event_id="b", s=None)
    raw = orjson.dumps(
        [event(event_id="a"), bad_one, event(event_id="c", s="x"), event(event_id="d")]
    )
    events, bad = DECODER.decode(raw)
    assert [e.event_id for e in events] == ["a", "d"]
    assert [payload for payload, _ in bad] == [
        orjson.dumps(bad_one),
        orjson.dumps(event(event_id="c", s="x")),
    ]
    assert bad[0][1] == (
        "EventValidationError: Object missing required field `s` (only an oracle label, "
        "with `y` and `response_id`, goes without) - at `$[1].s`"
    )
    assert bad[1][1] == "EventValidationError: Expected `float | null`, got `str` - at `$[2].s`"


def test_a_bad_element_keeps_its_own_bytes() -> None:
    raw = b'[ {"event_id":"a","ts":1,"stream":"p","s":0.1},\n  {"event_id" : "b", "s" : "x"} ]'
    events, bad = DECODER.decode(raw)
    assert [e.event_id for e in events] == ["a"]
    assert [payload for payload, _ in bad] == [b'{"event_id" : "b", "s" : "x"}']


def test_every_bad_element_of_an_envelope_is_named_by_its_index() -> None:
    raw = orjson.dumps([event(event_id="a"), missing("s"), 7, None])
    _, bad = DECODER.decode(raw)
    assert bad == [
        (
            orjson.dumps(missing("s")),
            "EventValidationError: Object missing required field `s` (only an oracle label, "
            "with `y` and `response_id`, goes without) - at `$[1].s`",
        ),
        (b"7", "EventValidationError: Expected `object`, got `int` - at `$[2]`"),
        (b"null", "EventValidationError: Expected `object`, got `null` - at `$[3]`"),
    ]


def test_a_malformed_envelope_is_a_json_decode_error() -> None:
    raw = orjson.dumps([event(event_id="a"), event(event_id="b")])[:-3]
    events, [(payload, error)] = DECODER.decode(raw)
    assert events == [] and payload == raw
    assert error.startswith("JSONDecodeError: ")


def test_rfc3339_timestamps_become_unix_seconds() -> None:
    raw = orjson.dumps(
        [
            event(ts="2026-11-22T10:00:00Z", y=None),
            event(ts="2026-11-22T11:00:00+01:00"),
            event(ts="2026-11-22T09:59:59.5-00:00"),
            event(ts=1795341600.25),
        ]
    )
    events, bad = DECODER.decode(raw)
    assert bad == [] and events[0].y is None
    assert event_times(events).tolist() == [1795341600.0, 1795341600.0, 1795341599.5, 1795341600.25]


def test_event_times_of_numbers_only() -> None:
    events, _ = DECODER.decode(orjson.dumps([event(ts=1), event(ts=2.5)]))
    times = event_times(events)
    assert times.dtype == np.float64 and times.tolist() == [1.0, 2.5]
    assert event_times([]).size == 0


def test_a_decoded_timestamp_is_timezone_aware() -> None:
    [decoded], _ = DECODER.decode(orjson.dumps(event(ts="2026-11-22T11:00:00+01:00")))
    assert decoded.ts == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_decode_batch_keeps_offset_order_and_where_each_event_came_from() -> None:
    messages = [
        RawMessage("labels", 2, 10, orjson.dumps([event(event_id="a"), event(event_id="b")])),
        RawMessage("labels", 0, 4, b"{oops"),
        RawMessage("labels", 0, 5, orjson.dumps(event(event_id="c"))),
        RawMessage("labels", 1, 7, orjson.dumps([event(event_id="d"), event(s="x")])),
    ]
    events, partitions, offsets, dead = DECODER.decode_batch(messages)
    assert [e.event_id for e in events] == ["a", "b", "c", "d"]
    assert partitions.tolist() == [2, 2, 0, 1]
    assert offsets.tolist() == [10, 10, 5, 7]
    assert [(d.partition, d.offset) for d in dead] == [(0, 4), (1, 7)]
    assert dead[0].payload == b"{oops" and dead[0].error.startswith("JSONDecodeError")
    assert dead[1] == DeadLetter(
        orjson.dumps(event(s="x")),
        "EventValidationError: Expected `float | null`, got `str` - at `$[1].s`",
        1,
        7,
    )


def test_decode_batch_of_nothing() -> None:
    events, partitions, offsets, dead = DECODER.decode_batch([])
    assert events == [] and dead == [] and partitions.size == offsets.size == 0


class RowColumn:
    """A handler column: the row numbers themselves."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def take(self, rows: np.ndarray | slice) -> RowColumn:
        return RowColumn(self.values[rows])


def test_split_by_subject_keeps_offset_order_and_moves_every_column_together() -> None:
    assert split_by_subject([], [], *(np.empty(0),) * 3, None) == {}
    rows = np.arange(5)
    columns = RowColumn(rows)
    groups = split_by_subject(
        ["a", "b", "a", "c", "b"],
        ["i0", "i1", "i2", "i3", "i4"],
        rows * 10.0,
        rows % 2,
        rows + 100,
        columns,
    )
    assert list(groups) == ["a", "b", "c"]
    a = groups["a"]
    assert a.digests.tolist() == event_digests(["i0", "i2"]).tolist()
    assert (a.ts.tolist(), a.partitions.tolist(), a.offsets.tolist()) == (
        [0.0, 20.0],
        [0, 0],
        [100, 102],
    )
    assert a.columns.values.tolist() == [0, 2]
    assert groups["b"].columns.values.tolist() == [1, 4]
    single = split_by_subject(["x", "x"], ["i", "j"], rows[:2] * 1.0, rows[:2], rows[:2], columns)
    assert list(single) == ["x"] and single["x"].columns is columns  # nothing reordered
