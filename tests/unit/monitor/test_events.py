from __future__ import annotations

import orjson
import pytest

from monitor import EventValidationError, decode_message, parse_label_event


def event(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {"event_id": "e", "ts": 1.0, "stream": "p", "s": 0.4, "y": 0.5}
    document.update(overrides)
    return document


def test_one_object_and_an_envelope() -> None:
    single = decode_message(orjson.dumps(event()), parse_label_event)
    assert [e.event_id for e in single.events] == ["e"] and not single.bad
    envelope = decode_message(
        orjson.dumps([event(event_id="a"), event(event_id="b")]), parse_label_event
    )
    assert [e.event_id for e in envelope.events] == ["a", "b"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "JSONDecodeError"),
        (b'{"event_id": "e", "ts": 1, "stream": "p", "s": NaN}', "JSONDecodeError"),
        (orjson.dumps(event(s="abc")), "field 's' must be a finite number, got 'abc'"),
        (orjson.dumps({"event_id": "e", "ts": 1, "stream": "p"}), "field 's' is required"),
        (orjson.dumps(event(s=True)), "field 's' must be a finite number"),
        (orjson.dumps(event(y="1")), "field 'y' must be a finite number"),
        (orjson.dumps(event(event_id="")), "field 'event_id' must be a non-empty string"),
        (orjson.dumps(event(ts="yesterday")), "not RFC 3339"),
        (orjson.dumps(event(ts="2026-11-22T10:00:00")), "needs a UTC offset"),
        (orjson.dumps(event(covariates=[1])), "field 'covariates' must be an object"),
        (b"42", "must be a JSON object or array"),
        (None, "message has no value"),
    ],
)
def test_bad_messages_are_dead_lettered_whole(raw: bytes | None, message: str) -> None:
    decoded = decode_message(raw, parse_label_event)
    assert not decoded.events
    [bad] = decoded.bad
    assert bad.payload == (raw or b"")
    assert message in bad.error
    assert bad.error.split(":", 1)[0] in {"JSONDecodeError", "EventValidationError"}


def test_envelope_keeps_good_elements_and_reencodes_bad_ones() -> None:
    raw = orjson.dumps([event(event_id="a"), event(event_id="b", s=None), 7, event(event_id="c")])
    decoded = decode_message(raw, parse_label_event)
    assert [e.event_id for e in decoded.events] == ["a", "c"]
    assert [b.payload for b in decoded.bad] == [orjson.dumps(event(event_id="b", s=None)), b"7"]
    assert "envelope element 2 must be an object" in decoded.bad[1].error


def test_timestamps_and_nulls() -> None:
    parsed = parse_label_event(event(ts="2026-11-22T10:00:00Z", y=None))
    assert parsed.ts == 1795341600.0 and parsed.y is None
    assert parse_label_event(event(ts="2026-11-22T11:00:00+01:00")).ts == 1795341600.0
    with pytest.raises(EventValidationError, match="finite"):
        parse_label_event(event(s=float("inf")))
