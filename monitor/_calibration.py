"""Fitting a stream's calibrator from JSONL and making it the active version."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import redis

from estimators import IsotonicCalibrator, QuantileSketch

from ._events import EventValidationError, require_number
from ._state import Keys
from ._streams import ActiveCalibrator

__all__ = ["InputError", "LabeledPairs", "activate_calibrator", "read_pairs"]


class InputError(ValueError):
    """Bad input file: exit status 2, with the file and line."""


@dataclass(frozen=True)
class LabeledPairs:
    s: np.ndarray
    y: np.ndarray
    clusters: np.ndarray | None
    """The ``cluster`` field (e.g. a prompt id), when every line has one."""


def read_pairs(path: str | Path) -> LabeledPairs:
    """``s`` and ``y`` arrays from JSONL; every line must have finite ``s`` and ``y``."""
    scores: list[float] = []
    labels: list[float] = []
    clusters: list[str] = []
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
            if document.get("cluster") is not None:
                clusters.append(str(document["cluster"]))
        except (orjson.JSONDecodeError, EventValidationError) as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
    if len(scores) < 2:
        raise InputError(f"{path}: need at least 2 lines with s and y, found {len(scores)}")
    if clusters and len(clusters) != len(scores):
        raise InputError(f"{path}: 'cluster' is on {len(clusters)} of {len(scores)} lines")
    return LabeledPairs(
        np.asarray(scores), np.asarray(labels), np.asarray(clusters) if clusters else None
    )


def activate_calibrator(
    client: redis.Redis,
    keys: Keys,
    stream: str,
    model: IsotonicCalibrator,
    baseline_scores: QuantileSketch | None = None,
) -> int:
    """Store ``model`` as the stream's next calibrator version and make it active.

    The residual statistics of the retired version move to ``history:{version}`` and
    the new version starts empty; the revision bump makes any batch computed under
    the old calibrator retry under the new one.
    """
    stream_key, versions_key = keys.stream(stream), keys.calibrators(stream)
    gate_fields = [f"residual_drift|{stream}", f"score_drift|{stream}"]

    def swap(pipe: redis.client.Pipeline) -> int:
        raw_calibrator, raw_state = pipe.hmget(stream_key, ["calibrator", "state"])
        raw_gates = pipe.hmget(keys.gate, gate_fields)
        old_version = ActiveCalibrator.from_json(raw_calibrator).version
        version = int(pipe.hget(versions_key, "latest") or 0) + 1
        record = ActiveCalibrator(version, model, baseline_scores).to_json()
        pipe.multi()
        pipe.hset(versions_key, mapping={"latest": version, f"v{version}": record})
        if raw_state:
            pipe.hset(stream_key, f"history:{old_version}", raw_state)
        pipe.hset(stream_key, "calibrator", record)
        pipe.hdel(stream_key, "state")
        pipe.hincrby(stream_key, "rev", 1)
        pipe.sadd(keys.streams, stream)
        for gate_field, raw_gate in zip(gate_fields, raw_gates, strict=True):
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
