"""One subject's share of a batch as a script call, and running many of them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    ResponseError,
    SlotNotCoveredError,
)

from ._client import AsyncClient, connect_node_async
from ._keys import OUTBOX_GROUP, REV, SubjectKeys, encode_audit_entry

__all__ = ["Applied", "Conflict", "Refused", "SubjectWrite", "WriteScript", "append_audit"]

AUDIT_MAXLEN = 100_000


async def append_audit(client: AsyncClient, keys: SubjectKeys, document: bytes) -> None:
    """Append ``document`` (JSON) to the subject's audit stream on its own, outside a
    batch's write (the webhook's delivery attempts), capped like the script's appends."""
    fields = encode_audit_entry(document)
    await client.xadd(
        keys.audit,
        dict(zip(fields[::2], fields[1::2], strict=True)),  # type: ignore[arg-type]
        maxlen=AUDIT_MAXLEN,
        approximate=True,
    )


@dataclass
class SubjectWrite:
    """Everything one batch writes for one subject; applied all at once or not at all."""

    keys: SubjectKeys
    expected_rev: int | None
    fences: dict[str, str] = field(default_factory=dict)
    state: dict[str, bytes | str] = field(default_factory=dict)
    view: dict[str, bytes | str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)
    appends: list[tuple[str, bytes]] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)
    overwrites: list[tuple[str, int, bytes]] = field(default_factory=list)
    """``(key, offset, bytes)``: bytes written at an offset of a string (``SETRANGE``): the
    records of a ring, such as a stream's residual history."""
    outbox: list[list[bytes | str]] = field(default_factory=list)
    audit: list[list[bytes | str]] = field(default_factory=list)

    @property
    def new_rev(self) -> int:
        return (self.expected_rev or 0) + 1

    def count(self, field_name: str, amount: int) -> None:
        if amount:
            self.counters[field_name] = self.counters.get(field_name, 0) + amount

    def script_call(self) -> tuple[list[str], list[Any]]:
        """``KEYS`` and ``ARGV`` as ``subject_write.lua`` reads them: the plan's shape and
        its values back to back."""
        keys = [self.keys.state, self.keys.view, self.keys.outbox, self.keys.audit]
        keys += [key for key, _ in self.appends]
        keys += self.deletions
        keys += [key for key, _, _ in self.overwrites]
        counters = {name: str(amount) for name, amount in self.counters.items()}
        maxima = {name: repr(float(number)) for name, number in self.maxima.items()}
        pair_lists = (self.fences, self.state, self.view, counters, maxima)
        shape = [len(pairs) for pairs in pair_lists]
        shape += [len(self.appends), len(self.deletions), len(self.overwrites)]
        shape += [len(self.outbox)]
        shape += [len(entry) // 2 for entry in self.outbox]
        shape += [len(self.audit)] + [len(entry) // 2 for entry in self.audit]
        values: list[bytes | str] = [
            REV,
            "" if self.expected_rev is None else str(self.expected_rev),
            str(self.new_rev),
            OUTBOX_GROUP,
            str(AUDIT_MAXLEN),
        ]
        for pairs in pair_lists:
            for pair in pairs.items():
                values += pair
        values += [blob for _, blob in self.appends]
        for _, offset, data in self.overwrites:
            values += [str(offset), data]
        for entry in (*self.outbox, *self.audit):
            values += entry
        encoded = [v if isinstance(v, bytes) else v.encode() for v in values]
        shape += map(len, encoded)
        return keys, [",".join(map(str, shape)), b"".join(encoded)]


@dataclass(frozen=True)
class Applied:
    pass


@dataclass(frozen=True)
class Conflict:
    """The subject changed since it was read: read again and recompute."""

    current_rev: str


@dataclass(frozen=True)
class Refused:
    """The script refused the write and changed nothing: a key of the wrong type, or input
    it could not accept. Retrying the same write cannot succeed."""

    reason: str


Outcome = Applied | Conflict | Refused


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WriteScript:
    """``subject_write.lua``, loaded on every node, run for many subjects at once: one
    pipeline on a single Redis, one pipeline per node (concurrently) on a cluster."""

    def __init__(self, client: AsyncClient, url: str | None = None) -> None:
        self.client = client
        self.url = url
        self.source = resources.files("monitor.store").joinpath("subject_write.lua").read_text()
        self.sha: str | None = None
        self._nodes: dict[str, aioredis.Redis] = {}

    async def aclose(self) -> None:
        """Close the clients of single cluster nodes (the caller owns ``client``)."""
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()

    async def load(self) -> None:
        # On Redis Cluster, SCRIPT LOAD goes to every primary.
        self.sha = await self.client.script_load(self.source)

    async def run(self, writes: Sequence[SubjectWrite]) -> list[Outcome]:
        """Apply each write atomically (one pipeline; on a cluster, one per node).

        Writes are independent: each one's outcome is its own. A lost connection raises
        (and nothing is known of which writes landed: the caller re-reads).
        """
        if self.sha is None:
            await self.load()
        assert self.sha is not None
        outcomes: list[Outcome | None] = [None] * len(writes)
        todo = list(range(len(writes)))
        for _ in range(2):  # a second pass only if Redis forgot the script (restart)
            replies = await self._execute(writes, todo)
            missing = []
            for index, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(index)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    outcomes[index] = _outcome(reply)
            if not missing:
                break
            await self.load()
            assert self.sha is not None
            todo = missing
        else:
            raise NoScriptError("the write script vanished from Redis twice in a row")
        return [outcome for outcome in outcomes if outcome is not None]

    async def _execute(self, writes: Sequence[SubjectWrite], todo: list[int]) -> list[Any]:
        assert self.sha is not None
        if not isinstance(self.client, AsyncRedisCluster):
            return await self._pipeline(self.client, writes, todo)
        # redis-py keeps scripts out of cluster pipelines; every key of a write shares a
        # slot, so the writes go to their nodes as plain pipelines, side by side.
        by_node: dict[str, list[int]] = {}
        for index in todo:
            node = self.client.get_node_from_key(writes[index].keys.state)
            if node is None:  # the client's slot table has a hole: a failover under way
                # Transient, as pipeline._errors.is_transient classifies it: retried.
                raise SlotNotCoveredError(
                    f"no Redis Cluster node serves {writes[index].keys.state}"
                )
            by_node.setdefault(node.name, []).append(index)
        groups = list(by_node.items())
        answers = await asyncio.gather(
            *(self._pipeline(self._node(name), writes, indices) for name, indices in groups)
        )
        replies: dict[int, Any] = {}
        for (_, indices), answer in zip(groups, answers, strict=True):
            replies.update(zip(indices, answer, strict=True))
        for index, reply in replies.items():
            if _redirected(reply):  # the slot moved (a reshard, a failover)
                assert self.sha is not None
                keys, args = writes[index].script_call()
                replies[index] = await self.client.evalsha(self.sha, len(keys), *keys, *args)
        return [replies[index] for index in todo]

    async def _pipeline(
        self, client: aioredis.Redis, writes: Sequence[SubjectWrite], indices: list[int]
    ) -> list[Any]:
        assert self.sha is not None
        pipe = client.pipeline(transaction=False)
        for index in indices:
            keys, args = writes[index].script_call()
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    def _node(self, name: str) -> aioredis.Redis:
        """A plain client of one cluster node, with the cluster URL's credentials and TLS."""
        client = self._nodes.get(name)
        if client is None:
            assert self.url is not None, "a cluster client needs the URL for its nodes"
            host, _, port = name.rpartition(":")
            client = self._nodes[name] = connect_node_async(self.url, host, int(port))
        return client


def _redirected(reply: Any) -> bool:
    return isinstance(reply, MovedError | AskError) or (
        isinstance(reply, ResponseError) and str(reply).startswith(("MOVED", "ASK"))
    )


def _outcome(reply: list[Any]) -> Outcome:
    code = int(reply[0])
    if code == 1:
        return Applied()
    if code == 0:
        return Conflict(_text(reply[1]))
    if code == -1:
        return Refused(f"Redis key {_text(reply[1])} holds a {_text(reply[2])}")
    return Refused(f"write refused: {_text(reply[1])}")
