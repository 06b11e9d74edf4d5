"""The command line's argument types (monitor/config/_args.py): what each accepts and refuses."""

from __future__ import annotations

import os
from argparse import ArgumentTypeError
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import _args as types

EVERY_TYPE: list[Callable[[str], Any]] = [
    types.finite_number,
    types.positive_number,
    types.probability,
    types.share_below_one,
    types.percent,
    types.hours,
    types.positive_integer,
    types.port,
    types.host,
    types.kafka_bootstrap,
    types.redis_url,
    types.http_url,
    types.topic_name,
    types.topic_prefix,
    types.subject_name,
    types.one_line,
    types.readable_file,
    types.bearer_token,
]


@pytest.mark.parametrize("check", EVERY_TYPE, ids=lambda check: check.__name__)
@given(text=st.text(max_size=300))
def test_any_text_gives_a_value_or_an_argument_error(
    check: Callable[[str], Any], text: str
) -> None:
    """Whatever is typed, the answer is a value or argparse's usage error, never a crash."""
    try:
        check(text)
    except ArgumentTypeError as exc:
        assert str(exc) and "\n" not in str(exc)


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_a_finite_number_is_read_exactly(value: float) -> None:
    assert types.finite_number(repr(value)) == value


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e309"])
def test_non_finite_numbers_are_refused_by_every_number_type(text: str) -> None:
    for check in (
        types.finite_number,
        types.positive_number,
        types.probability,
        types.share_below_one,
        types.percent,
        types.hours,
    ):
        with pytest.raises(ArgumentTypeError, match="must be a finite number"):
            check(text)


def test_a_word_is_not_a_number() -> None:
    with pytest.raises(ArgumentTypeError, match="must be a number, got 'ten'"):
        types.positive_number("ten")


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_number_ranges(value: float) -> None:
    text = repr(value)
    cases: list[tuple[Callable[[str], float], bool]] = [
        (types.positive_number, value > 0),
        (types.probability, 0 < value < 1),
        (types.share_below_one, 0 <= value < 1),
        (types.percent, 0 < value <= 100),
        (types.hours, 0 <= value <= types.MAX_HOURS),
    ]
    for check, accepted in cases:
        if accepted:
            assert check(text) == value
        else:
            with pytest.raises(ArgumentTypeError, match="must be"):
                check(text)


@pytest.mark.parametrize(
    ("check", "text", "message"),
    [
        (types.positive_number, "0", "must be a positive number, got '0'"),
        (types.positive_number, "-0.5", "must be a positive number"),
        (types.probability, "0", "must be a probability in (0, 1), got '0'"),
        (types.probability, "1", "must be a probability in (0, 1)"),
        (types.probability, "2", "must be a probability in (0, 1)"),
        (types.share_below_one, "1", "must be in [0, 1), got '1'"),
        (types.percent, "0", "must be a percent in (0, 100]"),
        (types.percent, "100.5", "must be a percent in (0, 100]"),
        (types.hours, "-1", "must be a number of hours in 0..876000, got '-1'"),
        (types.hours, "1e300", "must be a number of hours in 0..876000"),
        (types.positive_integer, "0", "must be at least 1, got '0'"),
        (types.positive_integer, "1.5", "must be an integer, got '1.5'"),
        (types.port, "0", "must be in 1..65535, got '0'"),
        (types.port, "99999", "must be in 1..65535, got '99999'"),
        (types.port, "http", "must be a port number in 1..65535"),
    ],
)
def test_each_refusal_names_the_range_and_the_value(
    check: Callable[[str], Any], text: str, message: str
) -> None:
    with pytest.raises(ArgumentTypeError) as refused:
        check(text)
    assert str(refused.value).startswith(message)


def test_hours_at_the_bounds() -> None:
    assert types.hours("0") == 0
    assert types.hours(str(types.MAX_HOURS)) == types.MAX_HOURS


@given(port=st.integers(1, 65535))
def test_every_port_is_accepted(port: int) -> None:
    assert types.port(str(port)) == port


_TOPIC_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


@given(name=st.text(_TOPIC_ALPHABET, min_size=1, max_size=types.KAFKA_TOPIC_MAX_LENGTH))
def test_kafka_legal_topic_names_are_accepted(name: str) -> None:
    if name in (".", ".."):
        with pytest.raises(ArgumentTypeError):
            types.topic_name(name)
    else:
        assert types.topic_name(name) == name


@given(name=st.text(min_size=1, max_size=60))
def test_a_topic_name_with_a_character_kafka_refuses_is_refused(name: str) -> None:
    if set(name) <= set(_TOPIC_ALPHABET):
        return
    with pytest.raises(ArgumentTypeError, match="Kafka's rule"):
        types.topic_name(name)


def test_topic_name_length_is_kafkas() -> None:
    assert types.topic_name("a" * 249)
    with pytest.raises(ArgumentTypeError, match="at most 249 characters"):
        types.topic_name("a" * 250)
    with pytest.raises(ArgumentTypeError, match="Kafka topic name"):
        types.topic_name("")


def test_a_topic_prefix_leaves_room_for_every_topic_name() -> None:
    assert types.topic_prefix("") == ""
    assert types.topic_prefix("team-a.driftgate.") == "team-a.driftgate."
    longest = "a" * (249 - len("otlp.spans"))
    assert types.topic_prefix(longest) == longest
    with pytest.raises(ArgumentTypeError, match="at most 239 characters"):
        types.topic_prefix(longest + "a")
    with pytest.raises(ArgumentTypeError, match="Kafka's rule"):
        types.topic_prefix("driftgate/")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "redis://:p%40ss@redis:6379/0",
        "redis://user:secret@10.0.0.1:6380/3",
        "rediss://:secret@redis.example.com:6380/0?ssl_cert_reqs=required",
        "redis://[::1]:6379/0",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_redis_urls_redis_py_reads_are_accepted(url: str) -> None:
    assert types.redis_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "must be a redis://, rediss:// or unix:// URL, got 'notaurl'"),
        ("http://127.0.0.1:6379", "must be a redis://, rediss:// or unix:// URL"),
        ("127.0.0.1:6379", "must be a redis://, rediss:// or unix:// URL"),
        ("redis://", "must name a host"),
        ("redis://127.0.0.1:6379/zero", "must end in a database number"),
        ("redis://127.0.0.1:notaport/0", "its host or port is malformed"),
        ("redis://127.0.0.1:99999/0", "its host or port is malformed"),
        ("redis://127.0.0.1:0/0", "must have a port in 1..65535"),
        ("redis://[::1/0", "its host or port is malformed"),
        ("redis://127.0.0.1/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("unix://", "must name a socket path"),
    ],
)
def test_bad_redis_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        types.redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:notaport/0",
        "redis://admin:hunter2@127.0.0.1:99999/0",
        "redis://:hunter2@/0",
        "redis://:hunter2@127.0.0.1:6379/x",
        "http://:hunter2@127.0.0.1:6379/0",
        "redis://:hunter2@127.0.0.1:6379/0?socket_timeout=x",
    ],
)
def test_a_refused_redis_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ArgumentTypeError) as refused:
        types.redis_url(url)
    assert "hunter2" not in str(refused.value)
    assert "***" in str(refused.value)


@pytest.mark.parametrize(
    "bootstrap",
    ["127.0.0.1:9092", "kafka:29092", "a:1,b:2", "[::1]:9092", "k_1:9092"],
)
def test_bootstrap_servers(bootstrap: str) -> None:
    assert types.kafka_bootstrap(bootstrap) == bootstrap


@pytest.mark.parametrize(
    ("bootstrap", "message"),
    [
        ("127.0.0.1:0", "port '0' is not in 1..65535"),
        ("127.0.0.1:99999", "port '99999' is not in 1..65535"),
        ("kafka:port", "port 'port' is not in 1..65535"),
        ("", "'' is not a host"),
        ("a:1,,b:2", "'' is not a host"),
        ("kafka://k:9092", "is not a host"),
        ("bad host:9092", "'bad host:9092' is not a host"),
        # No port: the clients would guess 9092 where the user may have meant another.
        ("localhost", "'localhost' has no port"),
        ("a:1,broker.example.com", "'broker.example.com' has no port"),
        ("[::1]", "'[::1]' has no port"),
    ],
)
def test_bad_bootstrap_servers_are_named(bootstrap: str, message: str) -> None:
    with pytest.raises(ArgumentTypeError, match="must be host:port") as refused:
        types.kafka_bootstrap(bootstrap)
    assert message in str(refused.value)


def test_hosts() -> None:
    for host in ("127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "driftgate.internal"):
        assert types.host(host) == host
    for bad in ("", "a b", "-leading.dash", "300.1.1.1.1/", "host:80"):
        with pytest.raises(ArgumentTypeError, match="must be an IP address or a host name"):
            types.host(bad)


def test_webhook_urls_are_checked_without_showing_their_token() -> None:
    assert types.http_url("https://hooks.example.com/services/T0/B0/XXX")
    with pytest.raises(ArgumentTypeError) as refused:
        types.http_url("ftp://hooks.example.com/services/T0KEN")
    assert "T0KEN" not in str(refused.value) and "http://" in str(refused.value)
    with pytest.raises(ArgumentTypeError, match="malformed port"):
        types.http_url("https://hooks.example.com:port/T0KEN")


TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


@given(
    body=st.text(TOKEN_ALPHABET, min_size=types.MIN_TOKEN_LENGTH, max_size=100),
    padding=st.integers(0, 2),
)
def test_a_bearer_token_of_rfc_6750s_characters_is_kept(body: str, padding: int) -> None:
    token = body + "=" * padding
    assert types.bearer_token(token) == token


def refusal(text: str) -> str | None:
    try:
        types.bearer_token(text)
    except ArgumentTypeError as refused:
        return str(refused)
    return None


@given(text=st.text(min_size=1, max_size=100))
def test_a_refused_bearer_token_is_never_shown(text: str) -> None:
    """The message is that of a stand-in of the same length refused for the same reason:
    it depends on the length alone, never on the characters."""
    message = refusal(text)
    if message is None:
        assert len(text) >= types.MIN_TOKEN_LENGTH
        return
    wrong_characters = "must hold only" in message
    assert message == refusal(("!" if wrong_characters else "a") * len(text))


def test_names_and_one_line_text() -> None:
    assert types.subject_name("policy:gpt-4-mini") == "policy:gpt-4-mini"
    with pytest.raises(ArgumentTypeError, match="must not be empty"):
        types.subject_name("  ")
    with pytest.raises(ArgumentTypeError, match="control characters"):
        types.subject_name("a\nb")
    with pytest.raises(ArgumentTypeError, match="at most 256 characters"):
        types.subject_name("a" * 257)
    assert types.one_line("p95 latency above 2 s") == "p95 latency above 2 s"
    with pytest.raises(ArgumentTypeError, match="one line"):
        types.one_line("two\nlines")
    with pytest.raises(ArgumentTypeError, match="at most 1000 characters"):
        types.one_line("a" * 1001)


def test_readable_file(tmp_path: Path) -> None:
    present = tmp_path / "events.jsonl"
    present.write_text("{}\n")
    assert types.readable_file(str(present)) == str(present)
    with pytest.raises(ArgumentTypeError, match="must name an existing file"):
        types.readable_file(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ArgumentTypeError, match="must name a regular file"):
        types.readable_file(str(tmp_path))
    if os.geteuid() != 0:  # root reads whatever the mode says
        present.chmod(0)
        with pytest.raises(ArgumentTypeError, match="this user can read"):
            types.readable_file(str(present))
