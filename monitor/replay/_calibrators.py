"""Calibrators for a replay: the file ``calibrate --save F`` writes, or a deployment's Redis.

The file holds what the stream's state holds (the calibrator's record, as
:meth:`~monitor.subjects._labels.ActiveCalibrator.record` writes it, and its version), so a
replay judges residuals with the very calibrator the worker would have used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..store import KeyLayout, SyncClient
from ..store._calibrators import read_calibrator
from ..workflows._calibration import InputError

__all__ = ["FORMAT", "StoredCalibrator", "from_redis", "read_calibrator_file", "save_calibrator"]

FORMAT = "driftgate-calibrator/1"


@dataclass(frozen=True)
class StoredCalibrator:
    """A stream's active calibrator as its state stores it (record and version)."""

    stream: str
    record: bytes
    version: int


def save_calibrator(path: str, stream: str, record: bytes, version: int) -> None:
    """Write ``calibrate --save``'s file: one JSON object."""
    document = {
        "format": FORMAT,
        "stream": stream,
        "version": version,
        "calibrator": orjson.loads(record),
    }
    Path(path).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def read_calibrator_file(path: str) -> StoredCalibrator:
    """``--calibrator F``: checked here, so that a wrong file is exit 2 before any event
    is read."""
    from ..subjects._labels import ActiveCalibrator

    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc}); give a file of calibrate --save") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{path}: not a calibrator file of calibrate --save (format {FORMAT})")
    stream, version = document.get("stream"), document.get("version")
    if not isinstance(stream, str) or not isinstance(version, int) or version < 1:
        raise InputError(f"{path}: needs a stream name and a version of at least 1")
    record = orjson.dumps(document.get("calibrator"))
    try:
        ActiveCalibrator.from_fields(record, str(version))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: the calibrator cannot be read: {exc!r}") from exc
    return StoredCalibrator(stream, record, version)


def from_redis(
    client: SyncClient, layout: KeyLayout, streams: Iterable[str]
) -> list[StoredCalibrator]:
    """The active calibrators of ``streams`` in a running deployment (the identity's
    streams are left out: the replay uses the identity for them too)."""
    found = []
    for stream in streams:
        record, version = read_calibrator(client, layout, stream)
        if record:
            found.append(StoredCalibrator(stream, bytes(record), int(version or 0)))
    return found
