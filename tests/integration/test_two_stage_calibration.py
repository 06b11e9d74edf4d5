"""A judge whose bias depends on difficulty, end to end (Kafka -> worker -> Redis ->
decisions): isotonic-in-S fails once traffic moves to harder prompts; calibrate --mode auto
with the covariates picks the two-stage calibrator (its out-of-fold error is lower by more
than its standard error), activates and announces it, and the stream's residual gate
passes under it; --save F replays the same calibrator offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from .conftest import Deployment, encode, label

pytestmark = pytest.mark.integration

STREAM = "judge:hard"
DOMAINS = ("legal", "code", "math", "chat")


def judged(
    rng: np.random.Generator, n: int, low: float, high: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels, difficulty and domains: the judge over-scores hard prompts (its
    bias is -0.4 * (difficulty - 0.5) of the label), whatever the domain."""
    s = rng.uniform(0, 1, n)
    difficulty = rng.uniform(low, high, n)
    domains = rng.choice(DOMAINS, n)
    y = np.clip(s - 0.4 * (difficulty - 0.5) + rng.normal(0, 0.05, n), 0.0, 1.0)
    return s, y, difficulty, domains


def rows(first: int, batch: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
    s, y, difficulty, domains = batch
    return [
        {
            **label(f"h-{first + i}", STREAM, float(s[i]), float(y[i])),
            "covariates": {"domain": str(domains[i]), "difficulty": float(difficulty[i])},
        }
        for i in range(s.size)
    ]


def write_jsonl(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in documents) + b"\n")
    return path


def residual_decisions(deployment: Deployment, expected: int) -> list[dict[str, Any]]:
    records = deployment.consume_all("decisions", expected=expected, timeout=30)
    decisions = [orjson.loads(r.value) for r in records]
    return [d for d in decisions if d["subject"] == STREAM and d["gate"] == "residual_drift"]


def test_auto_mode_picks_two_stage_and_the_residual_gate_passes_again(
    deployment: Deployment, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2323)
    # The calibration set spans every difficulty; traffic then moves to hard prompts.
    calibration = judged(rng, 4000, 0.0, 1.0)
    fit_rows = [
        {"s": float(a), "y": float(b), "covariates": {"difficulty": float(d), "domain": str(m)}}
        for a, b, d, m in zip(*calibration, strict=True)
    ]
    fit_file = write_jsonl(tmp_path / "oracle.jsonl", fit_rows)
    first = deployment.cli("calibrate", str(fit_file), "--stream", STREAM, "--json")
    assert first.returncode == 0, first.stderr
    assert orjson.loads(first.stdout)["calibrator"]["kind"] == "isotonic"

    deployment.start_worker()
    hard = judged(rng, 1500, 0.6, 1.0)
    deployment.produce(
        "labels",
        [encode(rows(i, tuple(a[i : i + 250] for a in hard))) for i in range(0, 1500, 250)],
    )
    deployment.wait_for_count("labels", "ok", 1500)
    assert deployment.status()["streams"][STREAM]["verdict"] == "FAIL"

    saved = tmp_path / "two_stage.json"
    refit = deployment.cli(
        "calibrate",
        str(fit_file),
        "--stream",
        STREAM,
        "--covariates",
        "domain,difficulty",
        "--mode",
        "auto",
        "--save",
        str(saved),
    )
    assert refit.returncode == 0, refit.stderr
    report = refit.stdout
    assert "two-stage calibrator v2" in report and "domain, difficulty" in report
    assert "mode auto:" in report and "two-stage chosen" in report
    assert "an event without difficulty uses" in report

    # The same traffic mix again, now judged by the two-stage calibrator.
    later = judged(rng, 1500, 0.6, 1.0)
    deployment.produce(
        "labels",
        [encode(rows(1500 + i, tuple(a[i : i + 250] for a in later))) for i in range(0, 1500, 250)],
    )
    deployment.wait_for_count("labels", "ok", 3000)
    deployment.wait_for(
        lambda: deployment.status()["streams"][STREAM]["labeled_n"] >= 1500,
        30,
        "the two-stage version to judge the later traffic",
    )
    row = deployment.status()["streams"][STREAM]
    assert row["calibrator"]["kind"] == "two_stage" and row["calibrator"]["version"] == 2
    assert row["verdict"] == "PASS"
    assert row["ci_low"] <= 0 <= row["ci_high"]

    decided = residual_decisions(deployment, expected=4)
    # v1 announced, FAIL under it, v2 announced, PASS under it: nothing else, in order.
    assert [(d["verdict"], d["evidence"]["calibrator_version"]) for d in decided] == [
        ("INCONCLUSIVE", 1),
        ("FAIL", 1),
        ("INCONCLUSIVE", 2),
        ("PASS", 2),
    ]
    assert [d["reason"] for d in decided[::2]] == ["recalibrated", "recalibrated"]
    assert decided[1]["evidence"]["ci_high"] < 0  # the judge over-scores the hard prompts

    # The saved calibrator replays offline: the hard traffic passes under it too.
    events = write_jsonl(tmp_path / "labels.jsonl", rows(0, later))
    replay = deployment.cli("replay", str(events), "--calibrator", str(saved), "--json")
    assert replay.returncode == 0, replay.stderr
    [run] = orjson.loads(replay.stdout)["runs"]
    replayed = run["status"]["streams"][STREAM]
    assert replayed["calibrator"] == {"kind": "two_stage", "version": 2}
    assert replayed["verdict"] == "PASS"
