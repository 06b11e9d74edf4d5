"""The telemetry fold works a batch at a time on columns: the statistics it leaves are
those of the same events one at a time (a look after every event), whatever fields each
event carries, and columnar envelopes give the columns row events give."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from monitor import Policy
from monitor.pipeline import RawMessage
from monitor.subjects import TelemetryHandler
from monitor.subjects._experiment_state import ExperimentState

POLICY = Policy()
NOW = 1_795_341_600.0


def mixed_events(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Three variants, some staging, outcomes (bool and float) or none, segments or none,
    pre-period covariates on some, secondary outcomes in either order, guardrails partly
    given or absent."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(count):
        event: dict[str, Any] = {
            "event_id": f"e{i}",
            "ts": NOW + i,
            "experiment_id": "exp",
            "unit_id": f"u{rng.integers(60)}",
            "variant": ["control", "b", "c"][int(rng.integers(3))],
        }
        if rng.random() < 0.1:
            event["environment"] = "staging"
        kind = rng.random()
        if kind < 0.6:
            event["primary_outcome"] = float(rng.normal(0.7, 0.2))
        elif kind < 0.8:
            event["primary_outcome"] = bool(rng.random() < 0.5)
        covariates = {}
        if rng.random() < 0.5:
            covariates["segment"] = ["free", "pro", "team"][int(rng.integers(3))]
        if rng.random() < 0.4:
            covariates["pre_period"] = float(rng.normal())
        if covariates:
            event["covariates"] = covariates
        if rng.random() < 0.3:
            names = ["clicks", "dwell"] if rng.random() < 0.5 else ["dwell", "clicks"]
            event["sec_outcomes"] = {name: float(rng.poisson(3)) for name in names}
        if rng.random() < 0.8:
            guardrails = {
                "toxicity": bool(rng.random() < 0.02),
                "latency_ms": float(rng.lognormal(6, 0.4)),
                "unit_cost": 0.004,
                "pii": False,
            }
            event["guardrails"] = {k: v for k, v in guardrails.items() if rng.random() < 0.8}
        events.append(event)
    return events


def folded(events: list[dict[str, Any]], batch: int) -> ExperimentState:
    handler = TelemetryHandler(POLICY)
    state = ExperimentState()
    for start in range(0, len(events), batch):
        part = events[start : start + batch]
        decoded = handler.decode([RawMessage("telemetry", 0, start, orjson.dumps(part))])
        assert decoded.dead_letters == []
        handler.update("exp", state, decoded.subjects["exp"], NOW + start)
    return state


def close(a: Any, b: Any, where: str = "$") -> None:
    """Equal documents, numbers to 1e-9 relative; the fold's own mappings (variants,
    segments, secondary outcomes, staging) in the same order of first appearance, a
    sketch's buckets as mappings."""
    if where.endswith((".positive", ".negative")):
        assert dict(a) == dict(b), where
    elif isinstance(a, dict):
        ordered = where.endswith((".variants", ".segments", ".secondary", ".staging"))
        assert (list(a) if ordered else set(a)) == (list(b) if ordered else set(b)), where
        for key in a:
            close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_a_batch_folds_as_its_events_one_at_a_time(batch: int) -> None:
    events = mixed_events(400)
    whole = folded(events, len(events)).to_state()
    looked = folded(events, batch).to_state()
    # The split test's running maximum is over its looks: more looks, another maximum.
    for state in (whole, looked):
        state["srm"].pop("max_log_e_value")
    close(looked, whole)
    assert set(whole["variants"]) == {"control", "b", "c"}
    assert sum(v["n"] for v in whole["variants"].values()) + sum(whole["staging"].values()) == len(
        events
    )


def test_a_columnar_envelope_folds_as_its_rows() -> None:
    rows = [e for e in mixed_events(300) if "sec_outcomes" not in e]
    for row in rows:  # the columnar format names nested fields by their dotted names
        row.setdefault("environment", "prod")  # a column of strings: no nulls
        for parent in ("guardrails", "covariates"):
            for key, value in row.pop(parent, {}).items():
                row[f"{parent}.{key}"] = value
    names = list(dict.fromkeys(key for row in rows for key in row))
    document = {"columns": {name: [row.get(name) for row in rows] for name in names}}
    handler = TelemetryHandler(POLICY)
    decoded = handler.decode([RawMessage("telemetry", 0, 0, orjson.dumps(document))])
    assert decoded.dead_letters == []
    state = ExperimentState()
    handler.update("exp", state, decoded.subjects["exp"], NOW)
    as_rows = [e for e in mixed_events(300) if "sec_outcomes" not in e]
    close(state.to_state(), folded(as_rows, len(as_rows)).to_state())
