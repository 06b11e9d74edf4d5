"""Replacing a subject's state from outside the batch runner: a compare-and-set.

``driftgate baseline`` changes one part of a stream's state (its score drift baseline)
while workers may be writing it. The write goes through only if the revision and the
calibrator version are still those the new state was computed from, and it moves the
revision, so a worker that computed a batch from the old state re-reads and recomputes
it (as after a new calibrator, ``_calibrators.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import _keys as fields
from ._calibrators import StateConflictError
from ._client import SyncClient
from ._keys import KeyLayout

__all__ = ["StateMissingError", "replace_state"]

# KEYS: 1 the subject's state hash. ARGV: 1 the revision field, 2 the revision read,
# 3 the calibrator version field, 4 the version read, 5 the state field, 6 the new state.
# Returns 1 written, 0 the revision or the version moved meanwhile, -1 the key is no hash.
_COMPARE_AND_SET = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' then return -1 end
if (redis.call('HGET', KEYS[1], ARGV[1]) or '0') ~= ARGV[2] then return 0 end
if (redis.call('HGET', KEYS[1], ARGV[3]) or '0') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""


class StateMissingError(LookupError):
    """The subject has no state yet (no event of it was ever processed)."""


def replace_state(
    client: SyncClient,
    layout: KeyLayout,
    kind: str,
    name: str,
    change: Callable[[Mapping[str, bytes | None]], bytes],
    attempts: int = 20,
) -> None:
    """Write ``change(stored)`` as the state of subject ``kind:name``.

    ``stored`` holds the state, calibrator and calibrator version fields as read; when a
    worker or a calibrate writes in between, they are read again and ``change`` runs
    again (up to ``attempts`` times, then :class:`TimeoutError`).
    """
    keys = layout.subject(kind, name)
    names = (fields.REV, fields.STATE, fields.CALIBRATOR, fields.CALIBRATOR_VERSION)
    for _ in range(attempts):
        values = client.hmget(keys.state, list(names))
        stored: dict[str, bytes | None] = dict(zip(names, values, strict=True))  # type: ignore[arg-type]
        if not stored[fields.STATE]:
            raise StateMissingError(f"{kind} {name!r} has no state yet")
        reply = client.eval(
            _COMPARE_AND_SET,
            1,
            keys.state,
            fields.REV,
            stored[fields.REV] or b"0",
            fields.CALIBRATOR_VERSION,
            stored[fields.CALIBRATOR_VERSION] or b"0",
            fields.STATE,
            change(stored),
        )
        if reply == -1:
            raise StateConflictError(
                f"{keys.state} is not a hash: another application shares the prefix"
            )
        if reply == 1:
            return
    raise StateConflictError(f"{kind} {name!r} kept changing: its state was not replaced")
