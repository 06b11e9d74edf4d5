from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from monitor.pipeline._write import AUDIT_MAXLEN, SubjectWrite
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

KEYS = KeyLayout().subject("stream", "model-a")


def parse_argv(keys: list[str], argv: list[Any]) -> dict[str, Any]:
    """Read ARGV as subject_write.lua does, with its checks, and say what it found."""
    cursor = iter(argv)

    def take() -> Any:
        return next(cursor)

    def pairs(valid: Any = None) -> dict[Any, Any]:
        found = {}
        for _ in range(int(take())):
            name, value = take(), take()
            assert name != ""
            if valid is not None:
                assert valid(value), (name, value)
            found[name] = value
        return found

    parsed: dict[str, Any] = {
        "header": [take() for _ in range(5)],
        "fences": pairs(lambda v: re.fullmatch(r"\d+:\d+", v)),
        "state": pairs(),
        "view": pairs(),
        "counters": pairs(lambda v: re.fullmatch(r"-?\d+", v)),
        "maxima": pairs(float),
    }
    parsed["digests"] = [take() for _ in range(int(take()))]
    assert all(blob and len(blob) % 8 == 0 for blob in parsed["digests"])
    parsed["deletions"] = int(take())
    for what in ("outbox", "audit"):
        entries = []
        for _ in range(int(take())):
            entry = [x for pair in pairs().items() for x in pair]
            assert entry
            entries.append(entry)
        parsed[what] = entries
    assert next(cursor, None) is None, "trailing arguments"
    assert len(keys) == 4 + len(parsed["digests"]) + parsed["deletions"]
    return parsed


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
    decision = OutboxEntry("decision", "driftgate.decisions", b"model-a", b"{}", {"a": "b"})
    write.outbox = [decision.encode()]
    write.audit = [encode_audit_entry(b'{"d": 1}'), encode_audit_entry(b'{"d": 2}')]
    return write


def test_a_bare_write_has_the_documented_layout() -> None:
    keys, argv = SubjectWrite(KEYS, expected_rev=None).script_call()
    assert keys == [KEYS.state, KEYS.view, KEYS.outbox, KEYS.audit]
    assert argv == [REV, "", "1", OUTBOX_GROUP, str(AUDIT_MAXLEN)] + ["0"] * 9


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
    ]
    parsed = parse_argv(keys, argv)
    assert parsed["header"] == [REV, "7", "8", OUTBOX_GROUP, str(AUDIT_MAXLEN)]
    assert parsed["fences"] == write.fences
    assert parsed["state"] == write.state
    assert parsed["view"] == write.view
    assert parsed["counters"] == {count("labels", "ok"): "3", count("labels", "duplicate"): "1"}
    assert parsed["maxima"] == {last_ts("labels"): "1234.5"}
    assert parsed["digests"] == [blob for _, blob in write.appends]
    assert parsed["deletions"] == 1
    assert parsed["outbox"] == write.outbox
    assert parsed["audit"] == write.audit


def test_entries_are_sent_as_a_count_of_pairs_then_the_pairs() -> None:
    write = SubjectWrite(KEYS, expected_rev=1)
    dead_letter = OutboxEntry("dead_letter", "t", b"", b"x", {}).encode()
    write.outbox = [dead_letter]
    write.audit = [encode_audit_entry(b"{}")]
    _, argv = write.script_call()
    tail = ["0", "0", "1", "5", *dead_letter, "1", "1", "json", b"{}"]
    assert argv[-len(tail) :] == tail


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
    _, argv = write.script_call()
    assert argv[1:3] == ["" if expected is None else str(expected), str(new)]


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
