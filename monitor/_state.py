"""Redis layout and the one atomic, offset-fenced write per batch.

Keys (prefix ``driftgate:`` by default)::

    fence                 hash  "{topic}|{partition}" -> next offset to apply
    seen:{topic}          zset  blake2b-128(event_id) hex -> ingest time (dedupe window)
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

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aioredis

__all__ = [
    "AUDIT_MAXLEN",
    "Keys",
    "PlanConflict",
    "WritePlan",
    "apply_plan",
    "event_digest",
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
        return f"{self.prefix}seen:{topic}"

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


def event_digest(event_id: str) -> str:
    """Fixed-size id kept for deduplication: 32 hex characters, whatever the id's length."""
    return hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()


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
    hset: list[tuple[str, str, str]] = field(default_factory=list)
    hincrby: list[tuple[str, str, int]] = field(default_factory=list)
    hmax: list[tuple[str, str, str]] = field(default_factory=list)
    sadd: list[tuple[str, str]] = field(default_factory=list)
    rpush: list[tuple[str, str]] = field(default_factory=list)
    xadd: list[tuple[str, int, list[str]]] = field(default_factory=list)

    def remember_ids(self, key: str, digests: list[str], now: float, window: float) -> None:
        self.seen = {
            "key": key,
            "ids": digests,
            "score": repr(now),
            "prune_before": repr(now - window),
        }

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
    """A fence or revision changed between read and write: re-read and recompute."""


async def apply_plan(client: aioredis.Redis, script: Any, plan: WritePlan) -> None:
    """Run the plan atomically; raise :class:`PlanConflict` when a guard has moved."""
    result = await script(args=[plan.to_json()], client=client)
    if int(result[0]) != 1:
        reason = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        raise PlanConflict(reason)
