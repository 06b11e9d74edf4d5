"""``driftgate replay`` with a stream's calibrator, end to end through the CLI: from the
file ``calibrate --save F`` wrote (``--calibrator F``), and from a running deployment's
Redis (``--redis-url``, a redis-server of the test's own on a free port). Both give the
replay the very calibrator the deployment activated: its version in status, its residuals
(not the identity's), and the same decisions and status from either source."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.store import KeyLayout
from monitor.store._calibrators import read_calibrator

from .conftest import RedisServer, driftgate_env, run_cli

pytestmark = pytest.mark.integration

STREAM = "judge:replayed"
START = 1_767_225_600.0


def cli(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    settings = {} if redis_url is None else {"DRIFTGATE_REDIS_URL": redis_url}
    return run_cli(*args, env=driftgate_env(**settings), timeout=180)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def judge_pairs(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels on another scale than the score (y = s^2): the identity's residuals are
    biased by about -1/6, a calibrator fitted on such pairs removes that."""
    s = rng.uniform(0, 1, count)
    return s, np.clip(s**2 + rng.normal(0, 0.05, count), 0, 1)


@pytest.fixture
def calibrated(redis_server: RedisServer, tmp_path: Path) -> tuple[Path, Path, int]:
    """The stream calibrated in the test's Redis with ``--save``; the replay's events (new
    labels of the same judge, in envelopes of 100); the version activated."""
    rng = np.random.default_rng(19)
    s, y = judge_pairs(rng, 2_000)
    fit = tmp_path / "fit.jsonl"
    fit.write_bytes(
        b"\n".join(
            orjson.dumps({"s": a, "y": b}) for a, b in zip(s.tolist(), y.tolist(), strict=True)
        )
    )
    saved = tmp_path / "judge.json"
    fitted = ok_json(
        cli(
            "calibrate", str(fit), "--stream", STREAM, "--save", str(saved), "--json",
            redis_url=redis_server.url,
        )
    )  # fmt: skip
    assert saved.exists() and fitted
    _, version = read_calibrator(redis_server.client(), KeyLayout(), STREAM)
    s, y = judge_pairs(rng, 3_000)
    rows = [
        {"event_id": f"e{i}", "ts": START + i / 10, "stream": STREAM, "s": a, "y": b}
        for i, (a, b) in enumerate(zip(s.tolist(), y.tolist(), strict=True))
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join(orjson.dumps(rows[i : i + 100]) for i in range(0, len(rows), 100))
    )
    return saved, events, int(version or 0)


def replay(*args: str) -> dict[str, Any]:
    (run,) = ok_json(cli("replay", *args, "--batch", "500", "--json"))["runs"]
    return run  # type: ignore[no-any-return]


def residual_decisions(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in run["decisions"] if d["gate"] == "residual_drift"]


def test_calibrate_save_then_replay_with_the_file_judges_with_that_calibrator(
    calibrated: tuple[Path, Path, int],
) -> None:
    saved, events, version = calibrated
    document = orjson.loads(saved.read_bytes())
    assert (document["stream"], document["version"]) == (STREAM, version) and version >= 1
    with_file = replay(str(events), "--calibrator", str(saved))
    stream = with_file["status"]["streams"][STREAM]
    assert stream["calibrator"] == {"kind": "isotonic", "version": version}
    assert stream["labeled_n"] == 3_000
    assert abs(stream["residual_mean"]) < 0.02  # the calibrator's residuals, centred
    assert (stream["verdict"], stream["reason"]) == ("PASS", "no_drift")
    assert not [d for d in residual_decisions(with_file) if d["verdict"] == "FAIL"]
    # Without it, the identity judges the same labels: biased by about -1/6, a FAIL.
    bare = replay(str(events))
    assert bare["status"]["streams"][STREAM]["calibrator"]["version"] == 0
    assert bare["status"]["streams"][STREAM]["residual_mean"] < -0.1
    assert [d["verdict"] for d in residual_decisions(bare)].count("FAIL") >= 1


def test_replay_reads_the_active_calibrator_from_a_running_deployments_redis(
    calibrated: tuple[Path, Path, int], redis_server: RedisServer
) -> None:
    saved, events, version = calibrated
    from_redis = replay(str(events), "--redis-url", redis_server.url)
    from_file = replay(str(events), "--calibrator", str(saved))
    stream = from_redis["status"]["streams"][STREAM]
    assert stream["calibrator"] == {"kind": "isotonic", "version": version}
    for run in (from_redis, from_file):
        run["status"].pop("generated_at", None)
    assert from_redis["decisions"] == from_file["decisions"]
    assert from_redis["status"] == from_file["status"]
