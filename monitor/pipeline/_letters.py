"""Dead letters that fit the broker's message limit.

A dead letter is the offending bytes with four headers. An input message within a few
hundred bytes of the broker's ``message.max.bytes`` is accepted, but sent back whole with
its headers it is not: Kafka refuses it, for good, on every retry. Such a letter keeps a
prefix of its payload instead, and says so: its ``driftgate-error`` ends with what was cut,
``driftgate-payload-bytes`` is the size of the whole payload and
``driftgate-payload-sha256`` its digest, so the original can be found in the input topic
(the source headers say where) and checked against it. Nothing is lost silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..config._settings import MAX_MESSAGE_BYTES

__all__ = [
    "ERROR",
    "MAX_MESSAGE_BYTES",
    "PAYLOAD_BYTES",
    "PAYLOAD_SHA256",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "dead_letter_headers",
    "fit_dead_letter",
    "record_size",
]

# The contract's dead-letter headers, spelled here only.
ERROR = "driftgate-error"
SOURCE_TOPIC = "driftgate-source-topic"
SOURCE_PARTITION = "driftgate-source-partition"
SOURCE_OFFSET = "driftgate-source-offset"
PAYLOAD_BYTES = "driftgate-payload-bytes"
PAYLOAD_SHA256 = "driftgate-payload-sha256"
# A reason is a class and a short message; one this long (a message that quotes its
# input) is cut too when the letter must shrink, so the headers alone always fit.
MAX_ERROR_CHARS = 2_000
_NOTE = " [payload truncated:"


def dead_letter_headers(error: str, topic: str, partition: int, offset: int) -> dict[str, str]:
    """The headers of a dead letter: why, and where its input came from."""
    return {
        ERROR: error,
        SOURCE_TOPIC: topic,
        SOURCE_PARTITION: str(partition),
        SOURCE_OFFSET: str(offset),
    }


def record_size(value: bytes, headers: Mapping[str, str], key: bytes | None = None) -> int:
    """The bytes a record takes in a batch of its own, counted as the producer counts them
    against its ``max_request_size`` (and the broker against ``message.max.bytes``)."""
    encoded = [(name, text.encode()) for name, text in headers.items()]
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, encoded))


def fit_dead_letter(
    payload: bytes, headers: Mapping[str, str], limit: int
) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of a dead letter whose record takes at most ``limit`` bytes.

    A letter that fits is returned as it is. One that does not keeps the longest prefix of
    its payload that fits (none, for a ``limit`` below the headers' own size), with the
    whole payload's size and SHA-256 in ``driftgate-payload-bytes`` and
    ``driftgate-payload-sha256``, and a note at the end of ``driftgate-error``. A letter
    cut before (those headers present) keeps the size and digest of its original payload.

    Examples
    --------
    >>> headers = {"driftgate-error": "JSONDecodeError: unexpected character"}
    >>> fit_dead_letter(b"xyz", headers, 1_000) == (b"xyz", headers)
    True
    >>> payload, cut = fit_dead_letter(b"x" * 5_000, headers, 1_000)
    >>> len(payload) < 1_000, cut["driftgate-payload-bytes"]
    (True, '5000')
    >>> cut["driftgate-error"].endswith("bytes of 5000 kept]")
    True
    """
    if record_size(payload, headers) <= limit:
        return payload, dict(headers)
    if PAYLOAD_SHA256 in headers:  # cut before: describe the original, not this prefix
        total, digest = int(headers[PAYLOAD_BYTES]), headers[PAYLOAD_SHA256]
        error = headers.get(ERROR, "").split(_NOTE)[0]
    else:
        total, digest = len(payload), hashlib.sha256(payload).hexdigest()
        error = headers.get(ERROR, "")
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "..."

    def described(kept: int) -> dict[str, str]:
        return {
            **headers,
            ERROR: f"{error}{_NOTE} the first {kept} bytes of {total} kept]",
            PAYLOAD_BYTES: str(total),
            PAYLOAD_SHA256: digest,
        }

    kept = len(payload)
    while kept > 0:
        over = record_size(payload[:kept], described(kept)) - limit
        if over <= 0:
            break
        kept = max(0, kept - over)  # a byte of payload is a byte of record, give or take a varint
    return payload[:kept], described(kept)
