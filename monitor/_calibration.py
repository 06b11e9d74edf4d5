"""Fitting a stream's calibrator from JSONL and making it the active version."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import redis

from estimators import IsotonicCalibrator

from ._events import EventValidationError, require_number
from ._state import Keys
from ._streams import ActiveCalibrator

__all__ = ["InputError", "activate_calibrator", "read_pairs"]


class InputError(ValueError):
    """Bad input file: exit status 2, with the file and line."""


def read_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(s, y)`` arrays from JSONL; every line must have finite ``s`` and ``y``."""
    scores: list[float] = []
    labels: list[float] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
            if not isinstance(document, dict):
                raise EventValidationError("each line must be a JSON object")
            scores.append(require_number(document, "s"))
            labels.append(require_number(document, "y"))
        except (orjson.JSONDecodeError, EventValidationError) as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
    if len(scores) < 2:
        raise InputError(f"{path}: need at least 2 lines with s and y, found {len(scores)}")
    return np.asarray(scores), np.asarray(labels)


def activate_calibrator(
    client: redis.Redis, keys: Keys, stream: str, model: IsotonicCalibrator
) -> int:
    """Store ``model`` as the stream's next calibrator version and make it active.

    The residual statistics of the retired version move to ``history:{version}`` and
    the new version starts empty; the revision bump makes any batch computed under
    the old calibrator retry under the new one.
    """
    stream_key, versions_key = keys.stream(stream), keys.calibrators(stream)
    gate_field = f"residual_drift|{stream}"

    def swap(pipe: redis.client.Pipeline) -> int:
        raw_calibrator, raw_state = pipe.hmget(stream_key, ["calibrator", "state"])
        raw_gate = pipe.hget(keys.gate, gate_field)
        old_version = ActiveCalibrator.from_json(raw_calibrator).version
        version = int(pipe.hget(versions_key, "latest") or 0) + 1
        record = ActiveCalibrator(version, model).to_json()
        pipe.multi()
        pipe.hset(versions_key, mapping={"latest": version, f"v{version}": record})
        if raw_state:
            pipe.hset(stream_key, f"history:{old_version}", raw_state)
        pipe.hset(stream_key, "calibrator", record)
        pipe.hdel(stream_key, "state")
        pipe.hincrby(stream_key, "rev", 1)
        pipe.sadd(keys.streams, stream)
        if raw_gate:
            gate = orjson.loads(raw_gate)
            gate.update(verdict="INCONCLUSIVE", reason="recalibrated", updated=time.time())
            pipe.hset(keys.gate, gate_field, orjson.dumps(gate))
        return version

    version = client.transaction(
        swap,  # type: ignore[arg-type]  # redis-py types the callable as returning None
        stream_key,
        versions_key,
        keys.gate,
        value_from_callable=True,
    )
    return int(version)  # type: ignore[arg-type]
