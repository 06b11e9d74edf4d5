"""Fitting a stream's calibrator from JSONL and making it the active version."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import orjson

from estimators import IsotonicCalibrator, QuantileSketch

from ._config import Policy, Settings
from .gates import Verdict, decision_record
from .pipeline._write import AUDIT_MAXLEN
from .store import KeyLayout, SyncClient
from .store._calibrators import Announcement, Fresh
from .store._calibrators import activate_calibrator as store_calibrator
from .store._keys import CALIBRATOR, CALIBRATOR_VERSION, STATE
from .subjects._decode import Finite
from .subjects._labels import ActiveCalibrator, LabelModel

__all__ = ["InputError", "LabeledPairs", "activate_calibrator", "read_pairs"]


class InputError(ValueError):
    """Bad input file: exit status 2, with the file and line."""


@dataclass(frozen=True)
class LabeledPairs:
    s: np.ndarray
    y: np.ndarray
    clusters: np.ndarray | None
    """The ``cluster`` field (e.g. a prompt id), when every line has one."""


class _Pair(msgspec.Struct, frozen=True):
    """One line of a calibration, audit or pilot file (other fields are ignored)."""

    s: Finite
    y: Finite
    cluster: str | int | None = None


_PAIR = msgspec.json.Decoder(_Pair)


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
            pair = _PAIR.decode(line)
        except msgspec.DecodeError as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
        scores.append(pair.s)
        labels.append(pair.y)
        if pair.cluster is not None:
            clusters.append(str(pair.cluster))
    if len(scores) < 2:
        raise InputError(f"{path}: need at least 2 lines with s and y, found {len(scores)}")
    if clusters and len(clusters) != len(scores):
        raise InputError(f"{path}: 'cluster' is on {len(clusters)} of {len(scores)} lines")
    return LabeledPairs(
        np.asarray(scores), np.asarray(labels), np.asarray(clusters) if clusters else None
    )


def activate_calibrator(
    client: SyncClient,
    layout: KeyLayout,
    policy: Policy,
    stream: str,
    model: IsotonicCalibrator,
    baseline_scores: QuantileSketch | None = None,
    *,
    decisions_topic: str | None = None,
) -> int:
    """Store ``model`` as the stream's next calibrator version and make it active.

    The residual statistics of the retired version are kept as ``history`` (their view)
    and the new version starts empty: a new interval, announced by a ``residual_drift``
    decision (verdict INCONCLUSIVE, action ``none``, reason ``recalibrated``, the old and
    the new version in its evidence) published in the same atomic write. That decision
    is the gate's published verdict from then on, so the new version's first verdict
    (PASS, say, after a FAIL of the old one) is a change that is published too: a refit
    never flips a verdict silently. Running workers recompute any batch computed under
    the old calibrator. ``decisions_topic`` defaults to the one of the environment's
    topic prefix (``DRIFTGATE_TOPIC_PREFIX``).
    """
    labels = LabelModel(policy)
    record = ActiveCalibrator(0, model, baseline_scores).record()
    topic = decisions_topic or Settings.from_env().topic("decisions")

    def describe(version: int, previous: int) -> Fresh:
        fresh = labels.load(
            stream, {STATE: None, CALIBRATOR: record, CALIBRATOR_VERSION: str(version).encode()}
        )
        now = time.time()
        verdicts = [
            announce(v, previous) if v.gate == ANNOUNCING_GATE else v
            for v in labels.evaluate(stream, fresh, now)
        ]
        announced = next(v for v in verdicts if v.gate == ANNOUNCING_GATE)
        decision = decision_record(announced, now)
        published = {
            "verdict": announced.verdict,
            "action": announced.action,
            "reason": announced.reason,
            "decision_id": decision["decision_id"],
            "ts": decision["ts"],
        }
        gates = {}
        for v in verdicts:
            gates[v.gate] = {**v.to_record(), "reason": RECALIBRATED, "evaluated_at": now}
        gates[ANNOUNCING_GATE].update(
            {
                "decision_id": published["decision_id"],
                "published_verdict": published["verdict"],
                "published_action": published["action"],
                "published_reason": published["reason"],
                "published_at": published["ts"],
            }
        )
        return Fresh(
            orjson.dumps(labels.view(stream, fresh, verdicts)),
            orjson.dumps(gates),
            Announcement(
                ANNOUNCING_GATE,
                announced.action,
                orjson.dumps(decision),
                orjson.dumps(published),
                topic,
                AUDIT_MAXLEN,
            ),
        )

    return store_calibrator(client, layout, stream, record, describe)


ANNOUNCING_GATE = "residual_drift"
RECALIBRATED = "recalibrated"


def announce(fresh: Verdict, previous_version: int) -> Verdict:
    """The residual gate's verdict on a new version's empty interval, as the decision
    that announces it: INCONCLUSIVE, no action, the old and new versions."""
    return Verdict(
        fresh.gate,
        fresh.subject,
        "INCONCLUSIVE",
        "none",
        RECALIBRATED,
        {**fresh.evidence, "previous_calibrator_version": previous_version},
    )
