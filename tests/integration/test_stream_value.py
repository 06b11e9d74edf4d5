"""A stream's online value estimate, its wait and plan, through a real worker, Kafka and
Redis: in /metrics, `status --json` and `status`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from .conftest import Deployment, encode, label
from .test_label_pipeline import scrape

pytestmark = pytest.mark.integration

START = 1.7e9


def events(
    stream: str, s: np.ndarray, y: np.ndarray, first: int, spacing: float = 0.5
) -> list[bytes]:
    """Envelopes of 100 events, ``spacing`` seconds apart; NaN ``y``: a score-only event."""
    documents = [
        label(
            f"{stream}-{first + i}",
            stream,
            float(a),
            None if math.isnan(b) else float(b),
            ts=START + (first + i) * spacing,
        )
        for i, (a, b) in enumerate(zip(s, y, strict=True))
    ]
    return [encode(documents[i : i + 100]) for i in range(0, len(documents), 100)]


def test_value_estimate_in_metrics_and_status(deployment: Deployment, tmp_path: Path) -> None:
    rng = np.random.default_rng(20261202)
    worker = deployment.start_worker()

    # An uncalibrated judge (the identity): Y = S^2, so E[Y] = 1/3 while mean S is 1/2.
    s = rng.uniform(size=4000)
    y = s**2 + rng.normal(0, 0.05, s.size)
    y[rng.uniform(size=s.size) > 0.25] = np.nan  # a quarter labeled
    # A calibrated stream whose scores follow the calibration scores.
    fit_s = rng.uniform(size=1000)
    fit = tmp_path / "fit.jsonl"
    fit.write_bytes(b"\n".join(orjson.dumps({"s": float(a), "y": float(a)}) for a in fit_s))
    calibrated = deployment.cli("calibrate", str(fit), "--stream", "steady")
    assert calibrated.returncode == 0, calibrated.stderr
    steady_s = rng.uniform(size=1000)
    steady_y = steady_s + rng.normal(0, 0.1, steady_s.size)

    deployment.produce(
        "labels", [*events("judge", s, y, 0), *events("steady", steady_s, steady_y, 0)]
    )
    deployment.wait_for_count("labels", "ok", 5000)

    labeled = ~np.isnan(y)
    expected = s.mean() + (y[labeled] - s[labeled]).mean()
    judge = deployment.status()["streams"]["judge"]
    # The contract's fields stay as they were.
    assert (judge["n"], judge["labeled_n"]) == (4000, int(labeled.sum()))
    assert judge["verdict"] == "FAIL" and judge["calibrator"]["kind"] == "identity"
    value = judge["value"]
    assert value["estimate"] == pytest.approx(expected, rel=1e-12)
    assert value["plug_in"] == pytest.approx(s.mean(), rel=1e-12)
    assert value["ci_low"] < 1 / 3 < value["ci_high"]
    assert value["ci_high"] < s.mean()  # the residual correction matters here
    assert judge["until_decided"]["status"] == "decided"
    assert judge["label_plan"]["more_labels"] == 0  # 1,000 labels reach an MDE of 0.05
    assert judge["score_band"] is None  # the identity has no baseline scores
    deciles = judge["residuals_by_decile"]
    assert sum(d["n"] for d in deciles) == labeled.sum()
    # Without a calibrator the bins are tenths of [0, 1]: S^2 - S is most negative mid-way.
    assert deciles[4]["mean_residual"] < deciles[0]["mean_residual"]

    steady = deployment.status()["streams"]["steady"]
    assert steady["calibrator"]["version"] == 1
    assert steady["score_band"] == "minor" and steady["score_verdict"] == "PASS"
    assert steady["until_decided"]["status"] == "watching"
    # Labels arrive every 0.5 s of event time: the wait is the labels at that rate.
    wait = steady["until_decided"]
    assert wait["label_rate_per_second"] == pytest.approx(2.0, rel=0.01)
    if wait["labels"] is not None:
        assert wait["seconds"] == pytest.approx(wait["labels"] / 2.0, rel=0.01)

    metrics = scrape(worker.metrics_port)  # type: ignore[attr-defined]
    judge_label = (("stream", "judge"),)
    assert metrics[("driftgate_value_estimate", judge_label)] == pytest.approx(expected, rel=1e-12)
    assert metrics[("driftgate_value_ci_lower", judge_label)] == pytest.approx(value["ci_low"])
    assert metrics[("driftgate_value_ci_upper", judge_label)] == pytest.approx(value["ci_high"])
    assert ("driftgate_value_estimate", (("stream", "steady"),)) in metrics

    text = deployment.cli("status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    judge_at = next(i for i, line in enumerate(lines) if line.startswith("judge: FAIL"))
    block = "\n".join(lines[judge_at : judge_at + 8])
    assert "verdict uses: the all-time interval" in block
    assert f"value:        {value['estimate']:.3g} [" in block
    assert "decision:     decided: FAIL" in block
    assert "score drift:  no baseline" in block
    assert "by decile:    mean residual" in block
    assert "score drift:  minor (PASS" in text.stdout
    assert "more labels would exclude 0" in text.stdout or "too near 0" in text.stdout

    # A new calibrator version starts the value estimate and the deciles afresh.
    refit = tmp_path / "judge.jsonl"
    refit.write_bytes(
        b"\n".join(
            orjson.dumps({"s": float(a), "y": float(b)})
            for a, b in zip(s[labeled], y[labeled], strict=True)
        )
    )
    assert deployment.cli("calibrate", str(refit), "--stream", "judge").returncode == 0
    fresh = deployment.status()["streams"]["judge"]
    assert fresh["calibrator"]["version"] == 1
    assert (fresh["value"]["n_scored"], fresh["value"]["n_labeled"]) == (0, 0)
    assert fresh["value"]["ci_low"] is None and fresh["label_plan"] is None
    assert sum(d["n"] for d in fresh["residuals_by_decile"]) == 0
    # Its bins are cut at the deciles of the new calibrator's fitting scores.
    cuts = [d["score_high"] for d in fresh["residuals_by_decile"][:-1]]
    assert cuts == pytest.approx(np.quantile(s[labeled], np.linspace(0.1, 0.9, 9)), abs=0.02)
