"""Writes for ``driftgate up`` and its demo, outside the batch runner."""

from __future__ import annotations

from typing import cast

import orjson

from . import _keys as fields
from ._client import SyncClient
from ._keys import KeyLayout, decode_seen_buckets

__all__ = ["forget_subject", "start_new_log_epochs"]


def start_new_log_epochs(
    client: SyncClient, layout: KeyLayout, topics: list[str], partitions: int
) -> None:
    """The logs of ``topics`` start empty (a broker that keeps nothing was started): their
    offsets begin a new epoch, so fences of the old logs hide none of the new messages,
    and no fence moves backwards."""
    pipe = client.pipeline(transaction=False)
    for topic in topics:
        for partition in range(partitions):
            pipe.hincrby(layout.log_epochs, KeyLayout.log_epoch_field(topic, partition), 1)
    pipe.execute()


def _counter_field(raw_field: bytes) -> bool:
    parts = fields.parse_view_field(raw_field.decode())
    return parts[0] in ("count", "ignored", "decisions") and len(parts) == 3


def _retired_field(raw_field: bytes, kind: str, name: str) -> str | None:
    """Where a view counter goes in the retired counts: event and decision counts summed
    over subjects, a stream's join counters kept by stream (they are shown by stream);
    None for what is no counter (a gauge such as the halves waiting)."""
    if _counter_field(raw_field):
        return raw_field.decode()
    joins = {fields.join_count(what): what for what in fields.JOIN_COUNTERS}
    what = joins.get(raw_field.decode())
    return None if kind != "stream" or what is None else fields.retired_join_count(name, what)


def forget_subject(client: SyncClient, layout: KeyLayout, kind: str, name: str) -> None:
    """Delete everything kept of one subject (the demo starts afresh on every run), but
    its counts, which move to :attr:`KeyLayout.retired_counts` first: counters are
    counters, and a reset must not turn them back. A stream's late-label join counters
    (joined, expired, repeated) move there by stream; its waiting halves are dropped.

    No worker may be writing the subject meanwhile (``driftgate up`` forgets the demo's
    subjects in its own Redis, before its worker starts): counts added between the read
    and the delete would be lost. Retired before deleted, a scrape in between counts them
    twice for a moment rather than never.
    """
    keys = layout.subject(kind, name)
    view = cast(dict[bytes, bytes], client.hgetall(keys.view))
    counts: dict[str, int] = {}
    for raw_field, stored in view.items():
        retired = _retired_field(raw_field, kind, name)
        if retired is not None and int(stored):
            counts[retired] = int(stored)
    if counts:
        pipe = client.pipeline(transaction=False)
        for counter, value in counts.items():
            pipe.hincrby(layout.retired_counts, counter, value)
        pipe.execute()
    prefix = fields.seen("").encode()
    names = cast(list[bytes], client.hkeys(keys.state))
    seen = [name for name in names if name.startswith(prefix)]
    buckets = []
    values = cast(list[bytes | None], client.hmget(keys.state, seen)) if seen else []
    for raw_field, raw in zip(seen, values, strict=True):
        topic = raw_field[len(prefix) :].decode()
        buckets += [keys.seen_bucket(topic, b) for b in decode_seen_buckets(raw)[1]]
    join = cast(bytes | None, client.hget(keys.state, fields.JOIN))
    if join:  # a stream's late-label join: its buckets of waiting halves
        buckets += [keys.pending_bucket(b) for b in orjson.loads(join)["buckets"]]
    client.delete(
        keys.state,
        keys.view,
        keys.outbox,
        keys.audit,
        keys.calibrators,
        keys.pool,
        keys.residual_history,
        *buckets,
    )
    client.srem(layout.registry(kind), name)
