"""The calibration loop through the CLI against a real Redis: calibrate reports its
out-of-fold quality and keeps its pairs, audit says the next step, a probe joins the pool
only after a PASS, and calibrate --pool refits on history + pool, announces the new
version and empties the pool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest

from estimators import IsotonicCalibrator, calibration_quality, cross_fit_predictions
from monitor import Policy
from monitor.store import KeyLayout
from monitor.store._calibrators import (
    add_to_pool,
    decode_pairs,
    read_calibration_pairs,
    read_calibrator,
)
from monitor.store._keys import (
    CALIBRATION_PAIRS_PREFIX,
    CALIBRATOR,
    CALIBRATOR_VERSION,
    calibration_pairs,
)
from monitor.subjects._labels import ActiveCalibrator
from monitor.workflows._calibration import activate_calibrator

from .conftest import CLUSTER_NOW_STANDALONE_IN_SOAK, RedisServer, driftgate_env, run_cli

pytestmark = pytest.mark.integration

STREAM = "policy:gpt-4-mini"


def run(redis_server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = driftgate_env(DRIFTGATE_REDIS_URL=redis_server.url, DRIFTGATE_TOPIC_PREFIX="loop.")
    return run_cli(*args, env=env)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress in captured output
    return orjson.loads(result.stdout)


def judge(
    rng: np.random.Generator, count: int, bias: float = 0.0, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Labels on another scale than the judge's score (y = s^2), shifted by ``bias``."""
    s = rng.uniform(0, 1, count)
    return s, s**2 + bias + rng.normal(0, noise, count)


def write(path: Path, s: np.ndarray, y: np.ndarray) -> Path:
    path.write_bytes(
        b"\n".join(orjson.dumps({"s": float(a), "y": float(b)}) for a, b in zip(s, y, strict=True))
    )
    return path


def stream_keys(redis_server: RedisServer) -> Any:
    return KeyLayout().subject("stream", STREAM)


def announcements(redis_server: RedisServer) -> list[tuple[int, int]]:
    """(previous, new) version of every decision in the stream's outbox (no worker runs)."""
    client = redis_server.client()
    try:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream_keys(redis_server).outbox)
        )
    finally:
        client.close()
    decisions = [orjson.loads(fields[b"value"]) for _, fields in entries]
    assert {(d["gate"], d["reason"]) for d in decisions} <= {("residual_drift", "recalibrated")}
    return [
        (d["evidence"]["previous_calibrator_version"], d["evidence"]["calibrator_version"])
        for d in decisions
    ]


def test_calibrate_reports_the_out_of_fold_quality_and_keeps_its_pairs(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(81)
    s, y = judge(rng, 2000)
    fit = write(tmp_path / "oracle.jsonl", s, y)
    document = ok_json(run(redis_server, "calibrate", str(fit), "--stream", STREAM, "--json"))
    assert document["version"] == 1 and document["previous_version"] == 0
    assert document["calibrator"] == {"kind": "isotonic", "version": 1}
    assert document["sources"] == {"file": 2000, "history": 0, "pooled": 0, "pooled_probes": 0}

    # The report's figures, straight from the out-of-fold predictions with numpy.
    predictions = cross_fit_predictions(s, y, folds=5, seed=0)
    residuals = y - predictions
    quality = document["quality"]
    assert quality["n"] == 2000 and quality["folds"] == 5
    assert quality["r2"] == pytest.approx(
        1 - np.sum(residuals**2) / np.sum((y - y.mean()) ** 2), rel=1e-12
    )
    assert quality["mean_absolute_error"] == pytest.approx(np.abs(residuals).mean(), rel=1e-12)
    assert quality == orjson.loads(orjson.dumps(calibration_quality(s, y).to_dict()))
    order = np.argsort(s)
    for row, part in zip(quality["deciles"], order.reshape(10, 200), strict=True):
        assert row["n"] == 200
        assert row["mean_label"] == pytest.approx(y[part].mean())
        assert row["mean_prediction"] == pytest.approx(predictions[part].mean())
    assert quality["r2"] > 0.9  # s^2 with noise 0.05 on uniform scores: a good fit

    # The version keeps the pairs it was fitted on, as float64.
    client = redis_server.client()
    try:
        kept = read_calibration_pairs(client, KeyLayout(), STREAM, 1)
    finally:
        client.close()
    assert kept is not None
    kept_s, kept_y = kept
    assert np.array_equal(kept_s, s) and np.array_equal(kept_y, y)
    # Its out-of-fold mean squared residual is where the new interval's variance starts.
    client = redis_server.client()
    try:
        record, version = read_calibrator(client, KeyLayout(), STREAM)
    finally:
        client.close()
    residual_variance = ActiveCalibrator.from_fields(record, version).residual_variance
    assert residual_variance == pytest.approx(np.mean(residuals**2), rel=1e-12)

    # For people: the activation line, R^2 and MAE rounded, a row per decile.
    text = run(redis_server, "calibrate", str(fit), "--stream", STREAM)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"stream {STREAM}: isotonic calibrator v2 active (2000 pairs")
    assert (
        f"R^2 {quality['r2']:.3f}, mean absolute error {quality['mean_absolute_error']:.4f}"
        in (lines[1])
    )
    assert lines[2].split()[:4] == ["decile", "n", "score", "range"]
    assert [line.split()[0] for line in lines[3:]] == [str(d) for d in range(1, 11)]
    assert announcements(redis_server) == [(0, 1), (1, 2)]


@CLUSTER_NOW_STANDALONE_IN_SOAK
def test_a_probe_is_pooled_only_after_a_pass_and_the_pooled_refit_is_announced(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(82)
    history_s, history_y = judge(rng, 2000)
    fit = write(tmp_path / "oracle.jsonl", history_s, history_y)
    assert run(redis_server, "calibrate", str(fit), "--stream", STREAM).returncode == 0
    probes = {
        "PASS": judge(rng, 60),
        "FAIL": judge(rng, 60, bias=0.1),
        "WARN": judge(rng, 60, bias=0.03, noise=0.01),
    }
    files = {k: write(tmp_path / f"{k}.jsonl", *v) for k, v in probes.items()}
    keys = stream_keys(redis_server)
    client = redis_server.client()

    # FAIL and WARN probes stay out of the pool, and the audit says why (exit 0).
    for status in ("FAIL", "WARN"):
        result = ok_json(
            run(redis_server, "audit", str(files[status]), "--stream", STREAM, "--pool", "--json")
        )
        assert result["status"] == status
        assert result["pool"]["pooled"] is False
        assert f"the audit is {status}" in result["pool"]["reason"]
        assert client.exists(keys.pool) == 0

    # The next step, in words, after the verdict line.
    fail_text = run(redis_server, "audit", str(files["FAIL"]), "--stream", STREAM).stdout
    verdict, step = fail_text.splitlines()[:2]
    assert verdict.startswith(f"Transport: FAIL | Group: {STREAM} | N=60")
    assert "collect 100-200 more target labels stratified by score decile" in step
    assert step.endswith(f"driftgate calibrate TARGET_LABELS.jsonl --stream {STREAM}")
    warn = ok_json(run(redis_server, "audit", str(files["WARN"]), "--stream", STREAM, "--json"))
    worst = max(warn["deciles"], key=lambda d: abs(d["mean_residual"]))
    assert warn["next_step"]["action"] == "enlarge_probe"
    assert warn["next_step"]["worst_decile"] == worst
    assert f"the worst is decile {worst['decile']} " in warn["next_step"]["text"]

    # A PASS probe joins the pool.
    passed = ok_json(
        run(redis_server, "audit", str(files["PASS"]), "--stream", STREAM, "--pool", "--json")
    )
    assert passed["status"] == "PASS"
    assert passed["pool"] == {
        "pooled": True,
        "reason": passed["pool"]["reason"],
        "pool_pairs": 60,
        "pool_probes": 1,
    }
    assert passed["next_step"]["command"] == f"driftgate calibrate --stream {STREAM} --pool"
    assert client.llen(keys.pool) == 1

    # The pooled refit: history + the pooled probe, a new version announced, the pool empty.
    refit = ok_json(run(redis_server, "calibrate", "--stream", STREAM, "--pool", "--json"))
    assert (refit["version"], refit["previous_version"]) == (2, 1)
    assert refit["sources"] == {"file": 0, "history": 2000, "pooled": 60, "pooled_probes": 1}
    assert refit["n_pairs"] == 2060 and refit["pooled_refit"] is True
    assert client.exists(keys.pool) == 0
    assert announcements(redis_server) == [(0, 1), (1, 2)]
    kept_s, kept_y = decode_pairs(cast(bytes, client.hget(keys.calibrators, calibration_pairs(2))))
    assert np.array_equal(kept_s, np.concatenate([history_s, probes["PASS"][0]]))
    assert np.array_equal(kept_y, np.concatenate([history_y, probes["PASS"][1]]))
    pooled_fit = IsotonicCalibrator().fit(kept_s, kept_y)
    record = orjson.loads(cast(bytes, client.hget(keys.state, CALIBRATOR)))
    assert record["model"] == orjson.loads(orjson.dumps(pooled_fit.to_state()))
    status = ok_json(run(redis_server, "status", "--json"))["streams"][STREAM]
    assert status["calibrator"] == {"kind": "isotonic", "version": 2}

    # Nothing left to pool: exit 2, and nothing changes.
    again = run(redis_server, "calibrate", "--stream", STREAM, "--pool")
    assert again.returncode == 2
    assert f"nothing pooled for stream '{STREAM}'" in again.stderr
    assert announcements(redis_server) == [(0, 1), (1, 2)]

    # A WARN that persists: the probe joins the history through --pool FILE.
    warned = run(redis_server, "calibrate", str(files["WARN"]), "--stream", STREAM, "--pool")
    assert warned.returncode == 0, warned.stderr
    assert "pooled refit of v2: 2,060 pairs of its history + 0 from 0 pooled probes + 60" in (
        warned.stdout
    )
    # Pairs are kept for the active and the previous version only.
    names = cast(list[bytes], client.hkeys(keys.calibrators))
    fields = sorted(f for f in names if f.startswith(CALIBRATION_PAIRS_PREFIX.encode()))
    assert fields == [calibration_pairs(2).encode(), calibration_pairs(3).encode()]
    client.close()


def test_refusals_name_the_problem_with_exit_2(redis_server: RedisServer, tmp_path: Path) -> None:
    rng = np.random.default_rng(83)
    fit = write(tmp_path / "oracle.jsonl", *judge(rng, 200))
    none = run(redis_server, "calibrate", "--stream", STREAM, "--pool")
    assert none.returncode == 2
    assert f"stream '{STREAM}' has no calibrator to refit: fit one first" in none.stderr

    # A version fitted before driftgate kept pairs: a pooled refit needs its FILE.
    client = redis_server.client()
    layout = KeyLayout()
    model = IsotonicCalibrator().fit(*judge(rng, 200))
    activate_calibrator(client, layout, Policy(), STREAM, model, decisions_topic="loop.decisions")
    s, y = judge(rng, 50)
    assert add_to_pool(client, layout, STREAM, s, y).added
    old = run(redis_server, "calibrate", "--stream", STREAM, "--pool")
    assert old.returncode == 2
    assert "calibrator v1 of stream" in old.stderr and "no stored calibration pairs" in old.stderr
    with_file = ok_json(
        run(redis_server, "calibrate", str(fit), "--stream", STREAM, "--pool", "--json")
    )
    assert with_file["sources"] == {"file": 200, "history": 0, "pooled": 50, "pooled_probes": 1}

    # The pool's cap: a probe that would pass it is not added, and says so.
    assert add_to_pool(client, layout, STREAM, s, y, max_pairs=80).added
    refused = add_to_pool(client, layout, STREAM, s, y, max_pairs=80)
    assert (refused.added, refused.pairs, refused.probes) == (False, 50, 1)
    client.close()

    # A cluster-robust audit of a single cluster: exit 2 naming the file (it was exit 1).
    probe = tmp_path / "one_cluster.jsonl"
    probe.write_bytes(
        b"\n".join(orjson.dumps({"s": float(a), "y": float(a), "cluster": "p1"}) for a in s[:30])
    )
    audit = run(redis_server, "audit", str(probe), "--stream", STREAM)
    assert audit.returncode == 2
    assert audit.stderr == (
        f"driftgate audit: {probe}: cluster-robust audit needs at least 2 clusters\n"
    )


def test_a_refit_whose_pooled_probes_were_taken_meanwhile_says_so(
    redis_server: RedisServer,
) -> None:
    """Two refits of one pool: the second finds fewer probes than its fit used and is
    refused at once with what happened, not retried and reported as a busy stream."""
    from monitor.store._calibrators import StateConflictError

    rng = np.random.default_rng(9)
    client, layout = redis_server.client(), KeyLayout()
    s, y = judge(rng, 200)
    model = IsotonicCalibrator().fit(s, y)
    activate_calibrator(client, layout, Policy(), STREAM, model, decisions_topic="loop.decisions")
    with pytest.raises(StateConflictError, match="lost probes this refit used \\(now 0 entries"):
        activate_calibrator(
            client,
            layout,
            Policy(),
            STREAM,
            model,
            decisions_topic="loop.decisions",
            pooled_entries=1,
            based_on=1,
        )
    state = layout.subject("stream", STREAM).state
    assert client.hget(state, CALIBRATOR_VERSION) == b"1"  # nothing changed
