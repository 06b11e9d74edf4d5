from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from monitor.store._keys import (
    KINDS,
    Fence,
    KeyLayout,
    OutboxEntry,
    SubjectKeys,
    decode_audit_entry,
    decode_seen_buckets,
    encode_audit_entry,
    encode_seen_buckets,
    known_kinds,
)

LAYOUT = KeyLayout()

HOSTILE_NAMES = [
    "model-a",
    "",
    "{",
    "}",
    "{}",
    "}{",
    "a}b{c",
    "{stream:other}",
    "%",
    "%7B",
    "%7D%25",
    "a:b:c",
    "seen:labels:12",
    "stream:x}:view",
    "модель/ランキング 🚀",
    "x" * 100_000,
    "{" * 1000 + "}" * 1000,
]


def all_keys(subject: SubjectKeys) -> list[str]:
    return [
        subject.state,
        subject.view,
        subject.outbox,
        subject.audit,
        subject.calibrators,
        subject.seen_bucket("labels", 0),
        subject.seen_bucket("labels", 478_512),
        subject.seen_bucket("other.topic-1", -3),
    ]


def slot(key: str) -> int:
    return key_slot(key.encode())


def to_redis_fields(pairs: list[bytes | str]) -> dict[bytes, bytes]:
    """The field-value pairs of an XADD as XRANGE returns them."""
    raw = [p.encode() if isinstance(p, str) else p for p in pairs]
    return dict(zip(raw[::2], raw[1::2], strict=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda name: repr(name[:20]))
def test_every_key_of_a_subject_shares_one_cluster_slot(kind: str, name: str) -> None:
    keys = all_keys(LAYOUT.subject(kind, name))
    assert len({slot(key) for key in keys}) == 1
    assert len(set(keys)) == len(keys)


@given(st.sampled_from(KINDS), st.text(max_size=40), st.text(max_size=20))
def test_every_key_shares_one_slot_for_any_name_and_prefix_text(
    kind: str, name: str, prefix_text: str
) -> None:
    layout = KeyLayout(prefix_text.translate(str.maketrans("", "", "{}%")))
    assert len({slot(key) for key in all_keys(layout.subject(kind, name))}) == 1


def test_different_subjects_usually_land_in_different_slots() -> None:
    names = [f"model-{i}" for i in range(200)]
    assert len({slot(LAYOUT.subject("stream", n).state) for n in names}) > 180


def test_text_after_a_brace_in_the_name_still_spreads_subjects_over_slots() -> None:
    # Unescaped, "a}1" and "a}2" would both hash on the tag "{stream:a}" alone.
    names = [f"a}}{i}" for i in range(200)]
    assert len({slot(LAYOUT.subject("stream", n).state) for n in names}) > 180


@pytest.mark.parametrize(
    ("first", "second"),
    [("{", "%7B"), ("}", "%7D"), ("%", "%25"), ("%7B", "%257B"), ("a}b", "a%7Db")],
)
def test_escaping_keeps_names_that_look_escaped_apart(first: str, second: str) -> None:
    assert LAYOUT.subject("stream", first).state != LAYOUT.subject("stream", second).state


@given(st.text(), st.text())
def test_escaping_is_injective(first: str, second: str) -> None:
    a, b = LAYOUT.subject("stream", first), LAYOUT.subject("stream", second)
    assert (first == second) == (a.state == b.state)
    assert (first == second) == (a.seen_bucket("t", 1) == b.seen_bucket("t", 1))


@given(st.sampled_from(KINDS), st.sampled_from(KINDS), st.text(max_size=10))
def test_kinds_never_share_a_key(first: str, second: str, name: str) -> None:
    same = LAYOUT.subject(first, name).state == LAYOUT.subject(second, name).state
    assert same == (first == second)


@pytest.mark.parametrize("prefix", ["dg{x}:", "dg{", "dg}", "dg%:"])
def test_a_prefix_with_braces_or_percent_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="may not contain"):
        KeyLayout(prefix)


@pytest.mark.parametrize("kind", ["Queue", "queue:depth", "{queue}", "1queue", ""])
def test_a_kind_that_is_not_a_lowercase_name_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="not a lowercase name"):
        LAYOUT.subject(kind, "x")
    with pytest.raises(ValueError, match="not a lowercase name"):
        LAYOUT.registry(kind)


def test_a_new_kind_gets_keys_of_its_own_in_one_slot() -> None:
    keys = all_keys(LAYOUT.subject("queue", "orders"))
    assert len({slot(key) for key in keys}) == 1
    assert LAYOUT.subject("queue", "orders").state != LAYOUT.subject("stream", "orders").state


def test_known_kinds_are_the_built_in_ones_then_the_registered_others() -> None:
    assert known_kinds([b"queue", b"stream", "batch"]) == [*KINDS, "batch", "queue"]
    assert known_kinds([]) == list(KINDS)


def test_global_keys_live_under_the_prefix() -> None:
    layout = KeyLayout("team-a:")
    assert layout.registry("stream") == "team-a:subjects:stream"
    assert layout.log_epochs == "team-a:log_epochs"
    assert layout.subject("stream", "m").state == "team-a:{stream:m}"


fences = st.builds(Fence, st.integers(0, 2**40), st.integers(0, 2**62))


@given(fences)
def test_fence_round_trips_as_text_and_as_bytes(fence: Fence) -> None:
    assert Fence.decode(fence.encode()) == fence
    assert Fence.decode(fence.encode().encode()) == fence


def test_a_missing_fence_decodes_to_none() -> None:
    assert Fence.decode(None) is None


@given(fences, fences)
def test_fences_order_by_epoch_then_offset(a: Fence, b: Fence) -> None:
    assert (a < b) == ((a.epoch, a.offset) < (b.epoch, b.offset))


def test_a_new_log_epoch_outranks_any_offset_of_the_old_one() -> None:
    assert Fence(2, 0) > Fence(1, 10**12)
    assert Fence(1, 5) > Fence(1, 4)


@given(
    st.floats(allow_nan=False) | st.just(float("-inf")),
    st.lists(st.integers(-(2**40), 2**40), max_size=8),
)
def test_seen_buckets_round_trip(watermark: float, buckets: list[int]) -> None:
    encoded = encode_seen_buckets(watermark, buckets)
    assert decode_seen_buckets(encoded) == (watermark, buckets)
    assert decode_seen_buckets(encoded.encode()) == (watermark, buckets)


@pytest.mark.parametrize("raw", [None, b"", ""])
def test_no_seen_buckets_is_an_empty_window(raw: bytes | str | None) -> None:
    assert decode_seen_buckets(raw) == (float("-inf"), [])


outbox_entries = st.builds(
    OutboxEntry,
    st.sampled_from(["decision", "dead_letter"]),
    st.text(min_size=1, max_size=30),
    st.binary(max_size=30),
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4),
)


@given(outbox_entries)
def test_outbox_entry_round_trips_through_xadd_pairs(entry: OutboxEntry) -> None:
    pairs = entry.encode()
    assert pairs[::2] == ["kind", "topic", "key", "value", "headers"]
    assert OutboxEntry.decode(to_redis_fields(pairs)) == entry


def test_outbox_headers_are_a_json_object() -> None:
    entry = OutboxEntry("dead_letter", "driftgate.dlq", b"k", b"\xff\x00", {"error": "bad"})
    fields = to_redis_fields(entry.encode())
    assert json.loads(fields[b"headers"]) == {"error": "bad"}
    assert fields[b"value"] == b"\xff\x00"


def test_audit_entry_round_trips() -> None:
    document = b'{"decision_id": "d1"}'
    assert decode_audit_entry(to_redis_fields(encode_audit_entry(document))) == document
