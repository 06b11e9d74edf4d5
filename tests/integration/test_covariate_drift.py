"""Covariate drift end to end: Kafka -> worker -> Redis -> decisions, status, /metrics."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from .conftest import Deployment, encode, label
from .test_label_pipeline import scrape

pytestmark = pytest.mark.integration

DOMAINS = ("legal", "code", "math", "chat")
POLICY = """
covariate_drift:
  covariates: [domain, difficulty]
  baseline_n: 1000
"""


def messages(
    stream: str, n: int, first: int, rng: np.random.Generator, shares: tuple[float, ...]
) -> list[bytes]:
    """Envelopes of 500 score-only events; ``domain`` by ``shares``, ``difficulty``
    uniform on [0, 1] (never moved)."""
    domains = rng.choice(DOMAINS, n, p=shares)
    difficulty = rng.uniform(size=n)
    events = [
        {
            **label(f"{stream}-{first + i}", stream, 0.5, None),
            "covariates": {"domain": str(domains[i]), "difficulty": float(difficulty[i])},
        }
        for i in range(n)
    ]
    return [encode(events[i : i + 500]) for i in range(0, n, 500)]


def test_a_moved_domain_mix_is_decided_named_shown_and_scraped(deployment: Deployment) -> None:
    rng = np.random.default_rng(23)
    policy = deployment.workdir / "covariates.yml"
    policy.write_text(POLICY)
    worker = deployment.start_worker(DRIFTGATE_CONFIG=str(policy))
    before, after = (0.1, 0.4, 0.3, 0.2), (0.7, 0.1, 0.1, 0.1)  # total variation 0.6
    traffic = messages("mix", 1000, 0, rng, before) + messages("mix", 9000, 1000, rng, after)
    deployment.produce("labels", traffic, [b"mix"] * len(traffic))
    deployment.wait_for_count("labels", "ok", 10_000)

    decisions = [orjson.loads(r.value) for r in deployment.consume_all("decisions", expected=1)]
    covariate = [d for d in decisions if d["gate"] == "covariate_drift"]
    # Read first after 500 moved events, the bound is already past 0.3 (margin ~0.23).
    assert [(d["verdict"], d["evidence"]["covariate"]) for d in covariate] == [("FAIL", "domain")]
    fail = covariate[0]
    assert fail["subject"] == "mix" and fail["reason"] == "covariate_drift_severe"
    evidence = fail["evidence"]
    assert evidence["method"] == "time_uniform_tv" and evidence["band"] == "severe"
    assert evidence["ci_low"] >= 0.3 and evidence["baseline_n"] == 1000

    row = deployment.status()["streams"]["mix"]["covariates"]
    assert row["domain"]["verdict"] == "FAIL" and row["domain"]["n"] == 9000
    assert row["domain"]["shares"]["legal"] == pytest.approx(0.7, abs=0.03)
    assert row["difficulty"]["verdict"] == "PASS" and row["difficulty"]["kind"] == "numeric"

    metrics = scrape(worker.metrics_port)  # type: ignore[attr-defined]
    domain = (("covariate", "domain"), ("stream", "mix"))
    assert metrics[("driftgate_covariate_distance", domain)] == pytest.approx(
        row["domain"]["distance"]
    )
    assert metrics[("driftgate_covariate_distance_lower", domain)] == row["domain"]["ci_low"]
    status_labels = (("covariate", "domain"), ("gate", "covariate_drift"), ("subject", "mix"))
    assert metrics[("driftgate_gate_status", status_labels)] == 2
    difficulty = (("covariate", "difficulty"), ("gate", "covariate_drift"), ("subject", "mix"))
    assert metrics[("driftgate_gate_status", difficulty)] == 0
