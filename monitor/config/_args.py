"""The command line's one validation layer: a type for every kind of argument.

Each type is an ``argparse`` ``type=`` callable: it turns the text into a value or raises
:class:`argparse.ArgumentTypeError` with a message that names the problem ("must be a
finite number, got 'nan'"); argparse then exits with status 2, naming the flag. The
environment variables that the flags override are checked by the same functions
(:meth:`monitor.Settings.from_env`), so a value is judged alike wherever it comes from.
Nothing here connects to anything: a bad value is refused before any work starts.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from argparse import ArgumentTypeError
from pathlib import Path
from urllib.parse import urlsplit

from ._ranges import AT_LEAST_ONE, POSITIVE, PROBABILITY, SHARE_BELOW_ONE, Range
from ._secrets import redact

__all__ = [
    "KAFKA_TOPIC_MAX_LENGTH",
    "MAX_HOURS",
    "MAX_TEXT_LENGTH",
    "MIN_TOKEN_LENGTH",
    "bearer_token",
    "finite_number",
    "host",
    "hours",
    "http_url",
    "kafka_bootstrap",
    "module_names",
    "name_list",
    "one_line",
    "percent",
    "port",
    "positive_integer",
    "positive_number",
    "probability",
    "readable_file",
    "redis_url",
    "share_below_one",
    "subject_name",
    "topic_name",
    "topic_prefix",
    "writable_file",
]

# Kafka's own limit on a topic name (249: the longest that leaves room for its files).
KAFKA_TOPIC_MAX_LENGTH = 249
# The longest name driftgate appends to the prefix (``telemetry``).
_LONGEST_TOPIC_NAME = len("otlp.spans")
# A century: older than any audit log; keeps "now - hours" a representable time.
MAX_HOURS = 24 * 365 * 100
# Free text (a reason, an actor) goes into an event and the audit log: a line, not a file.
MAX_TEXT_LENGTH = 1000
# Subject names become Redis hash tags and metric labels: short, printable.
MAX_NAME_LENGTH = 256

# A shorter API token is one an attacker on the network could guess.
MIN_TOKEN_LENGTH = 16

_TOPIC_CHARACTERS = re.compile(r"[A-Za-z0-9._-]*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 6750's token characters: what an Authorization header carries unchanged.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_number(text: str) -> float:
    """Any finite number (no ``nan``, no ``inf``, nothing that overflows to it)."""
    return _number(text)


def _ranged(text: str, range_: Range) -> float:
    """The number ``text`` says, refused unless in ``range_``."""
    value = _number(text)
    if not range_.holds(value):
        raise ArgumentTypeError(range_.refusal(text))
    return value


def _whole(text: str, range_: Range, not_whole: str) -> int:
    """The whole number ``text`` says (``not_whole`` when it is none), refused unless in
    ``range_``."""
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"{not_whole}, got {text!r}") from None
    if not range_.holds(value):
        raise ArgumentTypeError(range_.refusal(text))
    return value


def positive_number(text: str) -> float:
    """A finite number above 0 (a cost, a budget, an effect size, a margin)."""
    return _ranged(text, POSITIVE.named("a positive number"))


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (a significance level)."""
    return _ranged(text, PROBABILITY.named("a probability in (0, 1)"))


def share_below_one(text: str) -> float:
    """A share in [0, 1): what part of a variance is explained (1 would need no labels)."""
    return _ranged(text, SHARE_BELOW_ONE)


def percent(text: str) -> float:
    """A share of traffic in percent: above 0, at most 100."""
    return _ranged(text, Range(0, 100, low_open=True, text="a percent in (0, 100]"))


def hours(text: str) -> float:
    """A time span back from now, in hours: finite, >= 0, at most :data:`MAX_HOURS`."""
    return _ranged(text, Range(0, MAX_HOURS, text=f"a number of hours in 0..{MAX_HOURS}"))


def positive_integer(text: str) -> int:
    """A whole number of at least 1 (a count)."""
    return _whole(text, AT_LEAST_ONE, "must be an integer")


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    return _whole(text, Range(1, 65535, text="in 1..65535"), "must be a port number in 1..65535")


def _is_host(name: str) -> bool:
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return 0 < len(name) <= 253 and all(
            _HOST_LABEL.fullmatch(label) for label in name.removesuffix(".").split(".")
        )
    return True


def host(text: str) -> str:
    """An address to bind or reach: an IP address (v4 or v6) or a host name."""
    if not _is_host(text):
        raise ArgumentTypeError(f"must be an IP address or a host name, got {text!r}")
    return text


def kafka_bootstrap(text: str) -> str:
    """Kafka's bootstrap servers: ``host:port``, comma-separated (``[v6]:port`` too).

    The port is required: the clients would take 9092 for a missing one, which is not
    where a broker on another port is, and ``driftgate up`` would start one there.
    """
    entries = text.split(",")
    for entry in entries:
        address = entry.strip()
        name, colon, number = address.rpartition(":")
        if not colon or (name and not name.endswith("]") and ":" in name):
            name, number = address, ""  # no port, or a bare IPv6 address
        if not _is_host(name):
            raise ArgumentTypeError(
                f"must be host:port[,host:port...], got {text!r} ({address!r} is not a host)"
            )
        if not number:
            raise ArgumentTypeError(
                f"must be host:port[,host:port...], got {text!r} ({address!r} has no port)"
            )
        if not (number.isdigit() and 0 < int(number) < 65536):
            raise ArgumentTypeError(
                f"must be host:port[,host:port...], got {text!r} "
                f"(port {number!r} is not in 1..65535)"
            )
    return ",".join(entry.strip() for entry in entries)


def _without_password(url: str) -> str:
    """``url`` for a message: its password hidden even when the rest does not parse."""
    try:
        return redact(url)
    except ValueError:  # a malformed port: keep what follows the credentials
        scheme, _, rest = url.rpartition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def redis_url(text: str) -> str:
    """A Redis URL: ``redis://``, ``rediss://`` (TLS) or ``unix://``, as redis-py reads it.

    Messages show the URL without its password.
    """
    shown = _without_password(text)
    try:
        parts = urlsplit(text)
        number = parts.port  # raises ValueError when not a number in range
    except ValueError:
        raise ArgumentTypeError(
            f"must be a Redis URL, got {shown!r} (its host or port is malformed)"
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ArgumentTypeError(f"must be a redis://, rediss:// or unix:// URL, got {shown!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ArgumentTypeError(f"must name a socket path, got {shown!r}")
        return text
    if not parts.hostname or not _is_host(parts.hostname):
        raise ArgumentTypeError(f"must name a host, got {shown!r}")
    if number == 0:
        raise ArgumentTypeError(f"must have a port in 1..65535, got {shown!r}")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ArgumentTypeError(f"must end in a database number (/0), got {shown!r}")
    from redis.connection import parse_url

    try:
        parse_url(text)  # the query's options, as the client will read them
    except ValueError as exc:
        raise ArgumentTypeError(f"is not a Redis URL ({exc}): {shown!r}") from None
    return text


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (a webhook); shown without secrets."""
    parts = urlsplit(text)
    shown = f"{parts.scheme}://{parts.hostname or ''}"
    try:
        parts.port  # noqa: B018 - raises ValueError when malformed
    except ValueError:
        raise ArgumentTypeError(f"has a malformed port: {shown}...") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgumentTypeError(f"must be an http:// or https:// URL with a host, got {shown}...")
    return text


def bearer_token(text: str) -> str:
    """A secret for ``Authorization: Bearer``: its characters and length are checked, and
    the message never shows it."""
    if not _BEARER_TOKEN.fullmatch(text):
        raise ArgumentTypeError(
            "must hold only letters, digits and - . _ ~ + / (then = padding), as a bearer "
            "token does (the value is not shown)"
        )
    if len(text) < MIN_TOKEN_LENGTH:
        raise ArgumentTypeError(
            f"must be at least {MIN_TOKEN_LENGTH} characters long, got {len(text)} "
            "(e.g. `openssl rand -hex 32`)"
        )
    return text


def topic_name(text: str) -> str:
    """A Kafka topic name: letters, digits, ``.``, ``_`` and ``-``; 1..249 characters."""
    if not text or text in (".", ".."):
        raise ArgumentTypeError(f"must be a Kafka topic name, got {text!r}")
    if len(text) > KAFKA_TOPIC_MAX_LENGTH:
        raise ArgumentTypeError(
            f"must be at most {KAFKA_TOPIC_MAX_LENGTH} characters (Kafka's limit), got {len(text)}"
        )
    if not _TOPIC_CHARACTERS.fullmatch(text):
        raise ArgumentTypeError(
            f"must hold only letters, digits, '.', '_' and '-' (Kafka's rule), got {text!r}"
        )
    return text


def module_names(text: str) -> tuple[str, ...]:
    """Python module names (dotted), separated by commas."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if not _MODULE_NAME.fullmatch(name):
            raise ArgumentTypeError(f"must name Python modules, separated by commas, got {name!r}")
    return names


def topic_prefix(text: str) -> str:
    """What driftgate puts before its topic names; the names must stay legal for Kafka."""
    longest = KAFKA_TOPIC_MAX_LENGTH - _LONGEST_TOPIC_NAME
    if len(text) > longest:
        raise ArgumentTypeError(f"must be at most {longest} characters, got {len(text)}")
    if not _TOPIC_CHARACTERS.fullmatch(text):
        raise ArgumentTypeError(
            f"must hold only letters, digits, '.', '_' and '-' (Kafka's rule), got {text!r}"
        )
    return text


def subject_name(text: str) -> str:
    """A stream's or agent's name: 1..256 characters, no control characters."""
    if not text.strip():
        raise ArgumentTypeError("must not be empty")
    if len(text) > MAX_NAME_LENGTH:
        raise ArgumentTypeError(f"must be at most {MAX_NAME_LENGTH} characters, got {len(text)}")
    if _CONTROL.search(text):
        raise ArgumentTypeError(f"must not hold control characters, got {text!r}")
    return text


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names (``domain,difficulty``): each non-empty and given once."""
    names = tuple(part.strip() for part in text.split(","))
    if any(not name for name in names):
        raise ArgumentTypeError(f"must be names separated by commas, got {text!r}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ArgumentTypeError(f"names {', '.join(twice)} more than once")
    if any(_CONTROL.search(name) for name in names):
        raise ArgumentTypeError("must not hold control characters")
    return names


def one_line(value: str) -> str:
    """Free text of one line (a reason, an actor): at most :data:`MAX_TEXT_LENGTH`."""
    if len(value) > MAX_TEXT_LENGTH:
        raise ArgumentTypeError(f"must be at most {MAX_TEXT_LENGTH} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise ArgumentTypeError("must be one line, without control characters")
    return value


def _exists(path: Path) -> bool:
    """``Path.exists`` that answers no, rather than raising, for a name the file system
    cannot hold (too long, an invalid byte)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def readable_file(text: str) -> str:
    """A path to a regular file this process can read."""
    path = Path(text)
    if not _exists(path):
        raise ArgumentTypeError(f"must name an existing file, got {text!r}")
    if not path.is_file():
        raise ArgumentTypeError(f"must name a regular file, got {text!r}")
    if not os.access(path, os.R_OK):
        raise ArgumentTypeError(f"must name a file this user can read, got {text!r}")
    return text


def writable_file(text: str) -> str:
    """A file path whose folder exists and can be written (checked before any work, so
    that a fit or a replay is not lost to a typo in the path)."""
    path = Path(text)
    folder = path.parent if str(path.parent) else Path(".")
    if len(path.name.encode(errors="surrogateescape")) > 255:
        raise ArgumentTypeError(f"its file name is too long, got {text!r}")
    if path.is_dir():
        raise ArgumentTypeError(f"must name a file, not a folder, got {text!r}")
    if not folder.is_dir():
        raise ArgumentTypeError(f"its folder must exist, got {text!r}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ArgumentTypeError(f"must name a file this user can write, got {text!r}")
    return text
