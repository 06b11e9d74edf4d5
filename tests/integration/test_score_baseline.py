"""`driftgate baseline` against a real worker, Kafka and Redis: a score drift is found
against the calibration scores, accepted as the new baseline, and the gate says so."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pytest

from monitor.store import KeyLayout
from monitor.store import _keys as fields
from monitor.store._score_baseline import StateMissingError, replace_state

from .conftest import (
    BOTH_REDIS,
    CLUSTER_NOW_STANDALONE_IN_SOAK,
    Deployment,
    RedisServer,
    encode,
    label,
)

pytestmark = pytest.mark.integration


def scores_only(stream: str, s: np.ndarray, first: int) -> list[bytes]:
    documents = [
        label(f"{stream}-{first + i}", stream, float(a), None, ts=1.7e9 + first + i)
        for i, a in enumerate(s)
    ]
    return [encode(documents[i : i + 250]) for i in range(0, len(documents), 250)]


def score_gate(deployment: Deployment, stream: str) -> dict:
    gate = deployment.snapshot().gate("score_drift", stream)
    assert gate is not None
    return msgspec.to_builtins(gate)  # type: ignore[no-any-return]


@CLUSTER_NOW_STANDALONE_IN_SOAK
def test_a_drift_then_a_new_baseline(deployment: Deployment, tmp_path: Path) -> None:
    rng = np.random.default_rng(20261203)
    fit = tmp_path / "fit.jsonl"
    fit.write_bytes(
        b"\n".join(orjson.dumps({"s": float(a), "y": float(a)}) for a in rng.uniform(size=1000))
    )
    assert deployment.cli("calibrate", str(fit), "--stream", "judge").returncode == 0
    deployment.start_worker()

    # The scores move up: the calibration scores are uniform on [0, 1] (a KS distance of
    # 0.6, so that 500 scores clear the time-uniform margin against 1,000 baseline scores).
    deployment.produce("labels", scores_only("judge", rng.uniform(0.6, 1.0, 2000), 0))
    deployment.wait_for_count("labels", "ok", 2000)
    drifted = score_gate(deployment, "judge")
    assert drifted["verdict"] == "FAIL", drifted
    assert drifted["evidence"]["band"] == "severe"
    assert deployment.status()["streams"]["judge"]["score_band"] == "severe"

    # Accepted as the new normal: the stream's recent scores become the baseline.
    result = deployment.cli("baseline", "--stream", "judge")
    assert result.returncode == 0, result.stderr
    assert "score drift baseline set from recent scores (2,000 scores" in result.stdout
    deployment.produce("labels", scores_only("judge", rng.uniform(0.6, 1.0, 500), 2000))
    deployment.wait_for_count("labels", "ok", 2500)
    deployment.wait_for(
        lambda: score_gate(deployment, "judge")["verdict"] == "PASS", 30, "PASS on the baseline"
    )
    calm = score_gate(deployment, "judge")
    assert calm["evidence"]["band"] == "minor"
    assert (calm["evidence"]["n"], calm["evidence"]["baseline_n"]) == (500, 2000)

    decisions = [orjson.loads(r.value) for r in deployment.consume_all("decisions", expected=3)]
    score = [d for d in decisions if d["gate"] == "score_drift"]
    # One decision for each change of band: severe (FAIL), then minor (PASS).
    assert [(d["verdict"], d["evidence"].get("band")) for d in score] == [
        ("FAIL", "severe"),
        ("PASS", "minor"),
    ]

    # From a file: uniform scores again, and the moved-up traffic drifts from them.
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(b"\n".join(orjson.dumps({"s": float(a)}) for a in rng.uniform(size=1000)))
    result = deployment.cli("baseline", "--stream", "judge", "--from-file", str(scores))
    assert result.returncode == 0, result.stderr
    deployment.produce("labels", scores_only("judge", rng.uniform(0.6, 1.0, 500), 2500))
    deployment.wait_for(
        lambda: score_gate(deployment, "judge")["verdict"] == "FAIL", 30, "FAIL on the file"
    )


def test_baseline_refuses_bad_input_with_exit_2(deployment: Deployment, tmp_path: Path) -> None:
    unknown = deployment.cli("baseline", "--stream", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "driftgate baseline: no stream 'nobody': no event of it was processed yet"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"s": 0.2}\n{"s": "high"}\n')
    result = deployment.cli("baseline", "--stream", "nobody", "--from-file", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2: Expected `float`, got `str` - at `$.s`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    deployment.start_worker()
    deployment.produce("labels", scores_only("few", np.linspace(0, 1, 50), 0))
    deployment.wait_for_count("labels", "ok", 50)
    few = deployment.cli("baseline", "--stream", "few")
    assert few.returncode == 2
    assert "a baseline needs at least 100 scores (score_drift.min_n)" in few.stderr
    assert "has 50" in few.stderr


@BOTH_REDIS
def test_a_write_in_between_makes_the_baseline_recompute(redis_server: RedisServer) -> None:
    """A worker (or calibrate) that writes between the read and the write: the state is
    read again and the change made again on it, and the revision moves each time."""
    client = redis_server.client()
    layout = KeyLayout()
    keys = layout.subject("stream", "judge")
    client.hset(keys.state, mapping={fields.STATE: b"first", fields.REV: 7})
    seen: list[bytes | None] = []

    def change(stored: Mapping[str, bytes | None]) -> bytes:
        seen.append(stored[fields.STATE])
        if len(seen) == 1:  # someone else writes meanwhile
            client.hset(keys.state, mapping={fields.STATE: b"second", fields.REV: 8})
        return b"changed " + (stored[fields.STATE] or b"")

    replace_state(client, layout, "stream", "judge", change)
    assert seen == [b"first", b"second"]
    assert client.hget(keys.state, fields.STATE) == b"changed second"
    assert client.hget(keys.state, fields.REV) == b"9"
    with pytest.raises(StateMissingError):
        replace_state(client, layout, "stream", "nobody", change)
    client.close()
