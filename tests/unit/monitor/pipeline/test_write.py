from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from monitor.store._keys import (
    OUTBOX_GROUP,
    REV,
    KeyLayout,
    OutboxEntry,
    count,
    encode_audit_entry,
    fence,
    last_ts,
)
from monitor.store._write import AUDIT_MAXLEN, SubjectWrite

KEYS = KeyLayout().subject("stream", "model-a")


def parse_argv(keys: list[str], argv: list[Any]) -> dict[str, Any]:
    """Read ARGV as subject_write.lua does (the shape, then the values back to back), with
    its checks, and say what it found."""
    assert len(argv) == 2
    shape = iter(int(number) for number in argv[0].split(","))
    counts = [next(shape) for _ in range(8)]
    outbox_sizes = [next(shape) for _ in range(next(shape))]
    audit_sizes = [next(shape) for _ in range(next(shape))]
    blob, offset = argv[1], 0

    def value() -> bytes:
        nonlocal offset
        length = next(shape)
        assert offset + length <= len(blob)
        offset += length
        return bytes(blob[offset - length : offset])

    def pairs(n: int, valid: Any = None) -> dict[bytes, bytes]:
        found = {}
        for _ in range(n):
            name, text = value(), value()
            assert name != b""
            if valid is not None:
                assert valid(text.decode()), (name, text)
            found[name] = text
        return found

    parsed: dict[str, Any] = {
        "header": [value().decode() for _ in range(5)],
        "fences": pairs(counts[0], lambda v: re.fullmatch(r"\d+:\d+", v)),
        "state": pairs(counts[1]),
        "view": pairs(counts[2]),
        "counters": pairs(counts[3], lambda v: re.fullmatch(r"-?\d+", v)),
        "maxima": pairs(counts[4], float),
    }
    parsed["digests"] = [value() for _ in range(counts[5])]
    assert all(digest and len(digest) % 8 == 0 for digest in parsed["digests"])
    parsed["deletions"] = counts[6]
    parsed["overwrites"] = [(int(value().decode()), value()) for _ in range(counts[7])]
    assert all(data for _, data in parsed["overwrites"])
    for what, sizes in (("outbox", outbox_sizes), ("audit", audit_sizes)):
        parsed[what] = [[x for pair in pairs(size).items() for x in pair] for size in sizes if size]
        assert all(sizes)
    assert next(shape, None) is None and offset == len(blob), "trailing values"
    assert len(keys) == 4 + len(parsed["digests"]) + parsed["deletions"] + counts[7]
    return parsed


def encoded(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def as_bytes(pairs: dict[str, Any]) -> dict[bytes, bytes]:
    return {encoded(name): encoded(value) for name, value in pairs.items()}


def full_write() -> SubjectWrite:
    write = SubjectWrite(KEYS, expected_rev=7)
    write.fences = {fence("labels", 0): "2:15", fence("labels", 3): "2:9"}
    write.state = {"state": b'{"n": 3}', "seen:labels": "1000.0;10,11"}
    write.view = {"view": b"{}", "gates": b"[]"}
    write.count(count("labels", "ok"), 3)
    write.count(count("labels", "duplicate"), 1)
    write.maxima = {last_ts("labels"): np.float64(1234.5)}
    write.appends = [
        (KEYS.seen_bucket("labels", 10), np.array([1, 2], np.uint64).tobytes()),
        (KEYS.seen_bucket("labels", 11), np.array([3], np.uint64).tobytes()),
    ]
    write.deletions = [KEYS.seen_bucket("labels", 8)]
    write.overwrites = [(KEYS.residual_history, 64, b"\x00record\xff")]
    decision = OutboxEntry("decision", "driftgate.decisions", b"model-a", b"{}", {"a": "b"})
    write.outbox = [decision.encode()]
    write.audit = [encode_audit_entry(b'{"d": 1}'), encode_audit_entry(b'{"d": 2}')]
    return write


def test_a_bare_write_has_the_documented_layout() -> None:
    keys, argv = SubjectWrite(KEYS, expected_rev=None).script_call()
    assert keys == [KEYS.state, KEYS.view, KEYS.outbox, KEYS.audit]
    head = [REV, "", "1", OUTBOX_GROUP, str(AUDIT_MAXLEN)]
    # eight counts, no outbox and no audit entries, then each value's length
    assert argv[0] == ",".join(["0"] * 10 + [str(len(v)) for v in head])
    assert argv[1] == "".join(head).encode()


def test_a_full_write_lays_out_keys_and_argv_as_the_script_reads_them() -> None:
    write = full_write()
    keys, argv = write.script_call()
    assert keys == [
        KEYS.state,
        KEYS.view,
        KEYS.outbox,
        KEYS.audit,
        KEYS.seen_bucket("labels", 10),
        KEYS.seen_bucket("labels", 11),
        KEYS.seen_bucket("labels", 8),
        KEYS.residual_history,
    ]
    parsed = parse_argv(keys, argv)
    assert parsed["header"] == [REV, "7", "8", OUTBOX_GROUP, str(AUDIT_MAXLEN)]
    assert parsed["fences"] == as_bytes(write.fences)
    assert parsed["state"] == as_bytes(write.state)
    assert parsed["view"] == as_bytes(write.view)
    assert parsed["counters"] == as_bytes(
        {count("labels", "ok"): "3", count("labels", "duplicate"): "1"}
    )
    assert parsed["maxima"] == as_bytes({last_ts("labels"): "1234.5"})
    assert parsed["digests"] == [blob for _, blob in write.appends]
    assert parsed["deletions"] == 1
    assert parsed["overwrites"] == [(64, b"\x00record\xff")]
    assert parsed["outbox"] == [[encoded(x) for x in entry] for entry in write.outbox]
    assert parsed["audit"] == [[encoded(x) for x in entry] for entry in write.audit]


def test_entries_are_sent_as_a_count_of_pairs_then_the_pairs() -> None:
    write = SubjectWrite(KEYS, expected_rev=1)
    dead_letter = OutboxEntry("dead_letter", "t", b"", b"\xff\x00 not utf-8", {}).encode()
    write.outbox = [dead_letter]
    write.audit = [encode_audit_entry(b"{}")]
    keys, argv = write.script_call()
    shape = argv[0].split(",")
    assert shape[8:12] == ["1", "5", "1", "1"]  # 1 entry of 5 pairs, 1 entry of 1 pair
    parsed = parse_argv(keys, argv)
    assert parsed["outbox"] == [[encoded(x) for x in dead_letter]]  # bytes kept exact
    assert parsed["audit"] == [[b"json", b"{}"]]


@pytest.mark.parametrize(("appends", "deletions"), [(0, 0), (3, 0), (0, 2), (4, 5)])
def test_the_key_count_is_four_plus_appends_plus_deletions(appends: int, deletions: int) -> None:
    write = SubjectWrite(KEYS, expected_rev=3)
    write.appends = [(KEYS.seen_bucket("t", b), b"\x01" * 8) for b in range(appends)]
    write.deletions = [KEYS.seen_bucket("t", -b) for b in range(1, deletions + 1)]
    keys, argv = write.script_call()
    assert len(keys) == 4 + appends + deletions
    parse_argv(keys, argv)


@pytest.mark.parametrize(("expected", "new"), [(None, 1), (0, 1), (1, 2), (41, 42)])
def test_the_new_revision_follows_the_expected_one(expected: int | None, new: int) -> None:
    write = SubjectWrite(KEYS, expected_rev=expected)
    assert write.new_rev == new
    header = parse_argv(*write.script_call())["header"]
    assert header[1:3] == ["" if expected is None else str(expected), str(new)]


def test_count_accumulates_and_ignores_zero() -> None:
    write = SubjectWrite(KEYS, expected_rev=None)
    write.count("count:t:ok", 0)
    assert write.counters == {}
    write.count("count:t:ok", 2)
    write.count("count:t:ok", 3)
    write.count("count:t:duplicate", 0)
    write.count("count:t:dlq", 1)
    assert write.counters == {"count:t:ok": 5, "count:t:dlq": 1}


def test_maxima_are_sent_as_exact_floats() -> None:
    write = SubjectWrite(KEYS, expected_rev=None)
    write.maxima = {"last_ts:t": 0.1 + 0.2, "last_ts:u": 1795341600}
    maxima = parse_argv(*write.script_call())["maxima"]
    assert [float(v) for v in maxima.values()] == [0.1 + 0.2, 1795341600.0]
