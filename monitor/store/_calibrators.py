"""Storing a stream's calibrator versions (the one write outside the batch runner)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from . import _keys as fields
from ._client import SyncClient
from ._keys import KeyLayout

__all__ = ["StateConflictError", "activate_calibrator", "read_calibrator"]


class StateConflictError(RuntimeError):
    """A key driftgate needs holds another type: another application shares the prefix."""


LATEST = "latest"


def activate_calibrator(
    client: SyncClient,
    layout: KeyLayout,
    stream: str,
    record: bytes,
    describe: Callable[[int], tuple[bytes, bytes]],
) -> int:
    """Store ``record`` as ``stream``'s next calibrator version and make it active.

    ``describe(version)`` gives the view and the gates of the fresh statistics, shown
    until the next batch arrives. Returns the new version.
    """
    keys = layout.subject("stream", stream)
    source = resources.files("monitor.store").joinpath("activate_calibrator.lua").read_text()
    client.sadd(layout.registry("stream"), stream)
    for _ in range(10):  # only another calibrate of the same stream can take the version
        version = int(client.hget(keys.calibrators, LATEST) or 0) + 1  # type: ignore[arg-type]
        view, gates = describe(version)
        reply = client.eval(
            source,
            3,
            keys.state,
            keys.view,
            keys.calibrators,
            record,
            view,
            gates,
            fields.REV,
            fields.CALIBRATOR,
            fields.CALIBRATOR_VERSION,
            fields.STATE,
            fields.VIEW,
            fields.GATES,
            fields.history(""),
            LATEST,
            "v",
            str(version),
        )
        if not isinstance(reply, list):
            return int(reply)  # type: ignore[arg-type]
        if int(reply[0]) == -1:
            key, kind = (part.decode() for part in reply[1:])
            raise StateConflictError(
                f"Redis key {key} holds a {kind}, not a hash: does another application use "
                "the prefix? (check DRIFTGATE_REDIS_PREFIX)"
            )
    raise StateConflictError(f"stream {stream!r} is being calibrated by someone else right now")


def read_calibrator(
    client: SyncClient, layout: KeyLayout, stream: str
) -> tuple[bytes | None, bytes | None]:
    """The active calibrator's record and version of ``stream`` (None, None: identity)."""
    record, version = client.hmget(
        layout.subject("stream", stream).state, [fields.CALIBRATOR, fields.CALIBRATOR_VERSION]
    )
    return record, version  # type: ignore[return-value]
