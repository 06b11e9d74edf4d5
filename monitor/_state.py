"""Redis layout and the one atomic, offset-fenced write per batch.

Keys (prefix ``driftgate:`` by default)::

    fence                 hash  "{topic}|{partition}" -> next offset to apply
    seen:{topic}:{bucket} set   XXH3-128(event_id), 16 bytes; bucket = floor(time / window),
                                the current and the previous bucket are checked
    streams               set   names of label streams
    stream:{name}         hash  calibrator (JSON, active), state (JSON), rev,
                                history:{version} (JSON state of retired calibrators)
    calibrators:{name}    hash  latest (int), v{k} (JSON of each fitted calibrator)
    gate                  hash  "{gate}|{subject}" -> JSON of the current verdict
    counters              hash  "{topic}|{outcome}", "decisions|{gate}|{action}" -> int
    last_event_ts         hash  topic -> newest event time (Unix seconds)
    outbox                list  decision events not yet confirmed on Kafka
    audit                 stream decisions and canary actions (``driftgate log``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aioredis
import xxhash

__all__ = [
    "AUDIT_MAXLEN",
    "Keys",
    "PlanConflict",
    "WritePlan",
    "apply_plan",
    "event_digests",
    "fence_field",
    "load_apply_script",
    "reset_fences",
]

AUDIT_MAXLEN = 100_000


@dataclass(frozen=True)
class Keys:
    prefix: str = "driftgate:"

    @property
    def fence(self) -> str:
        return f"{self.prefix}fence"

    def seen(self, topic: str) -> str:
        """Prefix of the per-window sets of remembered event ids (``{prefix}{bucket}``)."""
        return f"{self.prefix}seen:{topic}:"

    @property
    def streams(self) -> str:
        return f"{self.prefix}streams"

    def stream(self, name: str) -> str:
        return f"{self.prefix}stream:{name}"

    def calibrators(self, name: str) -> str:
        return f"{self.prefix}calibrators:{name}"

    @property
    def gate(self) -> str:
        return f"{self.prefix}gate"

    @property
    def counters(self) -> str:
        return f"{self.prefix}counters"

    @property
    def last_event_ts(self) -> str:
        return f"{self.prefix}last_event_ts"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def outbox_lock(self) -> str:
        return f"{self.prefix}outbox:lock"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"


DIGEST_SIZE = 16


def event_digests(event_ids: list[str]) -> list[bytes]:
    """Fixed-size ids kept for deduplication: 16 bytes (XXH3-128) whatever the id's length.

    A 128-bit digest makes a collision (which would drop an event as a duplicate) about
    as likely as ``n^2 / 2^129``: 1e-21 for a billion remembered ids.
    """
    return list(map(xxhash.xxh3_128_digest, map(str.encode, event_ids)))


def fence_field(topic: str, partition: int) -> str:
    return f"{topic}|{partition}"


@dataclass
class WritePlan:
    """Everything one batch writes, applied by ``apply_batch.lua`` in one step.

    ``checks`` are ``(key, field, expected)`` compare-and-set guards: the offset
    fences of the batch's partitions and the revisions of the subjects it touches.
    If any changed since they were read, nothing is written.
    """

    checks: list[tuple[str, str, str | None]] = field(default_factory=list)
    seen: dict[str, Any] | None = None
    seen_ids: bytes = b""
    hset: list[tuple[str, str, str]] = field(default_factory=list)
    hincrby: list[tuple[str, str, int]] = field(default_factory=list)
    hmax: list[tuple[str, str, str]] = field(default_factory=list)
    sadd: list[tuple[str, str]] = field(default_factory=list)
    rpush: list[tuple[str, str]] = field(default_factory=list)
    xadd: list[tuple[str, int, list[str]]] = field(default_factory=list)

    def remember_ids(self, key: str, digests: list[bytes], now: float, window: float) -> None:
        # The digests travel as one binary argument beside the JSON plan: no escaping,
        # no JSON parsing of tens of thousands of strings inside Redis.
        bucket = int(now // window)
        self.seen = {
            "current": f"{key}{bucket}",
            "previous": f"{key}{bucket - 1}",
            "count": len(digests),
            "size": DIGEST_SIZE,
            "expire_seconds": int(2 * window) + 1,
        }
        self.seen_ids = b"".join(digests)

    def count(self, key: str, field_name: str, amount: int) -> None:
        if amount:
            self.hincrby.append((key, field_name, amount))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "checks": self.checks,
                "seen": self.seen,
                "hset": self.hset,
                "hincrby": self.hincrby,
                "hmax": self.hmax,
                "sadd": self.sadd,
                "rpush": self.rpush,
                "xadd": self.xadd,
            }
        )


def load_apply_script() -> str:
    return resources.files("monitor").joinpath("apply_batch.lua").read_text()


def reset_fences(client: redis.Redis, keys: Keys, topics: list[str]) -> int:
    """Forget the offset fences of ``topics``: for a broker known to start with empty logs."""
    fields = [
        name
        for name in cast(list[bytes], client.hkeys(keys.fence))
        if name.decode().rpartition("|")[0] in topics
    ]
    return int(cast(int, client.hdel(keys.fence, *fields))) if fields else 0


class PlanConflict(Exception):
    """A guard moved between read and write (a fence or revision changed, or some event
    ids were already remembered, listed in ``seen``): recompute and try again."""

    def __init__(self, reason: str, seen: list[bytes]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seen = seen


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def apply_plan(client: aioredis.Redis, script: Any, plan: WritePlan) -> None:
    """Run the plan atomically; raise :class:`PlanConflict` when a guard has moved."""
    result = await script(args=[plan.to_json(), plan.seen_ids], client=client)
    if int(result[0]) != 1:
        seen = [bytes(digest) for digest in result[2]] if len(result) > 2 else []
        raise PlanConflict(_text(result[1]), seen)
