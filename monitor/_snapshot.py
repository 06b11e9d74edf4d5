"""A read-only view of the monitor's state, shared by ``driftgate status`` and /metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from estimators import NormalMixtureSequence

from ._state import Keys
from ._streams import ActiveCalibrator, StreamState

__all__ = ["Snapshot", "read_snapshot"]


@dataclass
class Snapshot:
    streams: dict[str, Any] = field(default_factory=dict)
    experiments: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    last_event_ts: dict[str, float] = field(default_factory=dict)

    def status_document(self) -> dict[str, Any]:
        """The ``driftgate status --json`` object of the contract."""
        return {"streams": self.streams, "experiments": self.experiments, "agents": self.agents}


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _text(raw: bytes) -> str:
    return raw.decode()


def _history(fields: dict[str, bytes]) -> dict[str, Any]:
    """Residual statistics of the retired calibrator versions, by version."""
    history = {}
    for key, raw in sorted(fields.items()):
        if key.startswith("history:"):
            state = StreamState.from_json(raw)
            history[key.split(":", 1)[1]] = {
                "n": state.n,
                "labeled_n": state.labeled_n,
                "residual_mean": state.residuals.mean if state.labeled_n else None,
            }
    return history


def _interval_fields(sequence: NormalMixtureSequence) -> tuple[float | None, ...]:
    """Mean, lower and upper end of a residual interval, None where undefined."""
    interval = sequence.interval
    mean = _number(interval.estimate) if sequence.n else None
    return mean, _number(interval.low), _number(interval.high)


def read_snapshot(client: redis.Redis, keys: Keys, with_history: bool = False) -> Snapshot:
    """Everything status and metrics show, in one pipelined read.

    Intervals are recomputed from the stored sufficient statistics, so what is shown
    is exactly what the gate saw. ``with_history`` adds the retired calibrator
    versions (for ``status``; a metrics scrape does not parse them).
    """
    names = sorted(_text(name) for name in client.smembers(keys.streams))  # type: ignore[union-attr, arg-type]
    pipe = client.pipeline(transaction=False)
    for name in names:
        if with_history:
            pipe.hgetall(keys.stream(name))
        else:
            pipe.hmget(keys.stream(name), ["calibrator", "state"])
    pipe.hgetall(keys.gate)
    pipe.hgetall(keys.counters)
    pipe.hgetall(keys.last_event_ts)
    replies = pipe.execute()
    rows, (gates_raw, counters_raw, last_ts_raw) = replies[: len(names)], replies[len(names) :]
    gates = {_text(k): orjson.loads(v) for k, v in gates_raw.items()}

    streams: dict[str, Any] = {}
    for name, row in zip(names, rows, strict=True):
        if with_history:
            fields = {_text(k): v for k, v in row.items()}
        else:
            fields = dict(zip(("calibrator", "state"), row, strict=True))
        calibrator = ActiveCalibrator.from_json(fields.get("calibrator"))
        raw_state = fields.get("state")
        recent: dict[str, Any] | None = None
        score_ks = None
        if raw_state:
            state = StreamState.from_json(raw_state)
            n, labeled_n = state.n, state.labeled_n
            mean, low, high = _interval_fields(state.residuals)
            score_mean = state.scores.mean if state.scores.n else None
            if state.recent is not None:
                recent_mean, recent_low, recent_high = _interval_fields(state.recent)
                recent = {
                    "since_labeled_n": state.last_change_at,
                    "n": state.recent.n,
                    "residual_mean": recent_mean,
                    "ci_low": recent_low,
                    "ci_high": recent_high,
                }
            if calibrator.baseline_scores is not None and state.score_sketch.n:
                score_ks = _number(state.score_sketch.ks_distance(calibrator.baseline_scores)[0])
            changes = state.changes
        else:
            n = labeled_n = changes = 0
            mean = low = high = score_mean = None
        gate = gates.get(f"residual_drift|{name}", {})
        streams[name] = {
            "n": n,
            "labeled_n": labeled_n,
            "residual_mean": mean,
            "ci_low": low,
            "ci_high": high,
            "verdict": gate.get("verdict", "INCONCLUSIVE"),
            "reason": gate.get("reason", "insufficient_data"),
            "calibrator": {"kind": calibrator.kind, "version": calibrator.version},
            "score_mean": score_mean,
            "score_ks": score_ks,
            "score_verdict": gates.get(f"score_drift|{name}", {}).get("verdict"),
            "changes_detected": changes,
            "since_last_change": recent,
            **({"history": _history(fields)} if with_history else {}),
        }
    return Snapshot(
        streams=streams,
        gates=gates,
        counters={_text(k): int(v) for k, v in counters_raw.items()},
        last_event_ts={_text(k): float(v) for k, v in last_ts_raw.items()},
    )
