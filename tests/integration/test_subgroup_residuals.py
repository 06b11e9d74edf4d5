"""Residuals by subgroup end to end: Kafka -> worker -> Redis -> decisions, status,
/metrics, report; and a restarted worker that does not announce the group again."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from .conftest import Deployment, encode, label
from .test_label_pipeline import scrape

pytestmark = pytest.mark.integration

DOMAINS = np.array(
    ["legal", "code", "math", "chat", "support", "sales", "medical", "finance", "travel", "games"]
)
POLICY = """
residual_drift:
  group_by: [domain]
"""


def messages(stream: str, n: int, first: int, rng: np.random.Generator) -> list[bytes]:
    """Envelopes of 250 labeled events over 10 domains of equal shares; the judge scores
    ``domain=legal`` 0.15 above its true rate (the labels' mean)."""
    domain = rng.choice(DOMAINS, n)
    p = rng.uniform(0.05, 0.8, n)
    s = np.where(domain == "legal", p + 0.15, p)
    y = (rng.random(n) < p).astype(float)
    events = [
        {
            **label(f"{stream}-{first + i}", stream, float(s[i]), float(y[i])),
            "covariates": {"domain": str(domain[i])},
        }
        for i in range(n)
    ]
    return [encode(events[i : i + 250]) for i in range(0, n, 250)]


def test_a_bias_in_one_domain_fails_that_group_while_the_stream_passes(
    deployment: Deployment,
) -> None:
    rng = np.random.default_rng(23)
    policy = deployment.workdir / "groups.yml"
    policy.write_text(POLICY)
    worker = deployment.start_worker(DRIFTGATE_CONFIG=str(policy))
    traffic = messages("judge", 3000, 0, rng)
    deployment.produce("labels", traffic, [b"judge"] * len(traffic))
    deployment.wait_for_count("labels", "ok", 3000)

    decisions = [orjson.loads(r.value) for r in deployment.consume_all("decisions", expected=1)]
    assert [(d["gate"], d["verdict"], d["evidence"].get("group")) for d in decisions] == [
        ("residual_drift", "FAIL", {"covariate": "domain", "value": "legal"})
    ]
    fail = decisions[0]
    evidence = fail["evidence"]
    assert fail["subject"] == "judge" and fail["reason"] == "residual_bias"
    assert evidence["method"] == "e_process_e_bh" and evidence["groups"] == 11
    assert evidence["e_value"] >= evidence["e_threshold"] == 11 / 0.05
    # The judge over-scores: residuals below 0, by more than the bias threshold.
    assert evidence["ci_high"] < 0 and evidence["estimate"] <= -evidence["threshold"]
    assert "relabel domain=legal" in evidence["next_step"]

    stream = deployment.status()["streams"]["judge"]
    assert stream["verdict"] == "PASS" and stream["labeled_n"] == 3000
    groups = stream["groups"]
    assert set(groups) == {f"domain={d}" for d in DOMAINS}
    assert groups["domain=legal"]["verdict"] == "FAIL"
    assert {g["verdict"] for k, g in groups.items() if k != "domain=legal"} == {"PASS"}
    assert sum(g["n"] for g in groups.values()) == 3000

    metrics = scrape(worker.metrics_port)  # type: ignore[attr-defined]
    legal = (("gate", "residual_drift"), ("group", "domain=legal"), ("subject", "judge"))
    assert metrics[("driftgate_gate_status", legal)] == 2
    assert (
        metrics[("driftgate_gate_status", (("gate", "residual_drift"), ("subject", "judge")))] == 0
    )
    mean = ("driftgate_residual_mean", (("group", "domain=legal"), ("stream", "judge")))
    assert metrics[mean] == pytest.approx(groups["domain=legal"]["residual_mean"])
    assert sum(1 for name, _ in metrics if name == "driftgate_residual_group_e_value") == 10

    report = deployment.cli("report", "judge", "--out", str(deployment.workdir / "memo"))
    assert report.returncode == 0, report.stderr
    memo = next((deployment.workdir / "memo").glob("*.md")).read_text()
    assert "Residuals by subgroup" in memo and "Next step for domain=legal" in memo

    # A new worker loads the stream: the group's FAIL stands, and is not announced again.
    deployment.stop_workers()
    deployment.start_worker(DRIFTGATE_CONFIG=str(policy))
    more = messages("judge", 500, 3000, rng)
    deployment.produce("labels", more, [b"judge"] * len(more))
    deployment.wait_for_count("labels", "ok", 3500)
    again = [orjson.loads(r.value) for r in deployment.consume_all("decisions", expected=1)]
    assert [d["decision_id"] for d in again] == [fail["decision_id"]]
    assert deployment.status()["streams"]["judge"]["groups"]["domain=legal"]["n"] > 300
