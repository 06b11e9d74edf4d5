"""A real Prometheus scrapes a running worker with the shipped rules and dashboards.

One scenario feeds every test of the module: two judge streams and three canaries, all
healthy at first; then one stream drifts (residual +0.2, scores shifted, its `domain`
covariate's mix moved by a total variation of 0.5), one canary's quality drops, another
leaks PII, and malformed input is dead-lettered. Prometheus
scrapes and evaluates every second with the rules exactly as shipped: their ``for:``
durations are not rewritten, since the critical rules fire at once (``for: 0s``).
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.runtime._services import free_port
from tests.integration.conftest import Deployment, encode, label

from . import _dashboards
from .conftest import (
    ALERTMANAGER_BINARY,
    PROMETHEUS_BINARY,
    AlertmanagerServer,
    PrometheusServer,
    start_alertmanager,
    start_prometheus,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS_BINARY is None,
        reason="prometheus is not installed (Debian's prometheus package, which scripts/test "
        "installs with promtool): this test needs a real Prometheus server",
    ),
]

SCREENSHOTS = "DRIFTGATE_SCREENSHOTS"  # a folder: render each dashboard there as a PNG
# For the pictures, each phase's traffic is spread over this many seconds (time series
# with a shape); the test itself sends it at once.
PACE_SECONDS = 20.0 if os.environ.get(SCREENSHOTS) else 0.0
DRIFTING, STEADY = "judge:shift", "judge:steady"
REGRESSING, LEAKY, HEALTHY = "regressing", "leaky", "steady-agent"
AGENTS = (REGRESSING, LEAKY, HEALTHY)


@dataclass
class Observed:
    deployment: Deployment
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer | None
    worker_port: int
    started: float


def telemetry(
    agent: str, units: int, rng: np.random.Generator, first: int, canary_quality: float = 0.8
) -> list[bytes]:
    """Envelopes of 100 events, 10% on the canary, as the canary's declared percent."""
    canary = rng.uniform(size=units) < 0.1
    quality = rng.normal(np.where(canary, canary_quality, 0.8), 0.1)
    latency = rng.lognormal(6.0, 0.3, units)
    events = [
        {
            "event_id": f"{agent}-{first + i}",
            "ts": time.time(),
            "experiment_id": agent,
            "unit_id": f"u{first + i}",
            "variant": "canary" if canary[i] else "control",
            "primary_outcome": float(quality[i]),
            "guardrails": {
                "toxicity": bool(rng.uniform() < 0.001),
                "pii": False,
                "latency_ms": float(latency[i]),
                "unit_cost": 0.004,
            },
        }
        for i in range(units)
    ]
    return [encode(events[i : i + 100]) for i in range(0, units, 100)]


DOMAINS = ("legal", "code", "math", "chat")
# The policy of the scenario's worker: two covariates watched, a baseline small enough
# for its traffic (the first 500 labels of each stream).
POLICY = """
covariate_drift:
  covariates: [domain, response_length]
  baseline_n: 500
"""


def labels(
    stream: str,
    s: np.ndarray,
    y: np.ndarray,
    first: int,
    rng: np.random.Generator,
    domain_shares: tuple[float, ...] = (0.1, 0.4, 0.3, 0.2),
) -> list[bytes]:
    domains = rng.choice(DOMAINS, s.size, p=domain_shares)
    lengths = rng.integers(50, 2000, s.size)
    events = [
        {
            **label(f"{stream}-{first + i}", stream, float(a), float(b), ts=time.time()),
            "covariates": {"domain": str(domains[i]), "response_length": int(lengths[i])},
        }
        for i, (a, b) in enumerate(zip(s, y, strict=True))
    ]
    return [encode(events[i : i + 100]) for i in range(0, len(events), 100)]


def send(deployment: Deployment, traffic: list[tuple[str, list[bytes], str]]) -> None:
    """Each (topic, messages, key) at once, or interleaved over PACE_SECONDS."""
    slices = 10 if PACE_SECONDS else 1
    for n in range(slices):
        for topic, messages, key in traffic:
            part = messages[n * len(messages) // slices : (n + 1) * len(messages) // slices]
            deployment.produce(topic, part, [key.encode()] * len(part))
        time.sleep(PACE_SECONDS / slices)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def verdicts(prometheus: PrometheusServer, gate: str) -> dict[str, float]:
    rows = prometheus.query(f'max by (subject) (driftgate_gate_status{{gate="{gate}"}})')
    return {row["metric"]["subject"]: float(row["value"][1]) for row in rows}


@pytest.fixture(scope="module")
def observed(
    module_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    deployment = module_deployment
    workdir = tmp_path_factory.mktemp("observability")
    rng = np.random.default_rng(11)
    alertmanager = start_alertmanager(workdir) if ALERTMANAGER_BINARY else None
    worker_port = free_port()
    prometheus = start_prometheus(
        workdir, worker_port, alertmanager.url.removeprefix("http://") if alertmanager else None
    )
    started = time.time()
    try:
        # The drifting stream gets a calibrator, so its scores are compared (KS) too.
        s = rng.uniform(0, 1, 2000)
        calibration = workdir / "calibration.jsonl"
        calibration.write_text(
            "".join(
                f'{{"s": {a}, "y": {a + b}}}\n'
                for a, b in zip(s, rng.normal(0, 0.1, 2000), strict=True)
            )
        )
        result = deployment.cli("calibrate", str(calibration), "--stream", DRIFTING)
        assert result.returncode == 0, result.stderr
        policy = workdir / "policy.yml"
        policy.write_text(POLICY)
        deployment.start_worker(
            DRIFTGATE_METRICS_PORT=str(worker_port), DRIFTGATE_CONFIG=str(policy)
        )

        # Healthy: both streams calibrated, three canaries at 10% like their control.
        deploys = [
            encode(
                {
                    "event_id": f"deploy-{agent}",
                    "ts": time.time(),
                    "agent": agent,
                    "bundle_id": f"{agent}-v2",
                    "action": "deploy",
                    "canary_percent": 10,
                }
            )
            for agent in AGENTS
        ]
        deployment.produce("canary", deploys, [a.encode() for a in AGENTS])
        healthy: list[tuple[str, list[bytes], str]] = []
        for stream in (DRIFTING, STEADY):
            s = rng.uniform(0, 1, 1000)
            y = s + rng.normal(0, 0.1, 1000)
            healthy.append(("labels", labels(stream, s, y, 0, rng), stream))
        healthy += [("telemetry", telemetry(agent, 3000, rng, 0), agent) for agent in AGENTS]
        send(deployment, healthy)
        deployment.wait_for_count("labels", "ok", 2000)
        deployment.wait_for_count("telemetry", "ok", 9000)
        # Prometheus has seen the healthy state (so verdict changes are in its data).
        wait_for(
            lambda: (
                verdicts(prometheus, "residual_drift") == {DRIFTING: 0, STEADY: 0}
                and len(verdicts(prometheus, "canary")) == len(AGENTS)
            ),
            30,
            "Prometheus to see the healthy gates",
        )

        # Trouble: drift, a quality regression, a PII leak, malformed input.
        s = rng.beta(5, 2, 1000)
        steady_s = rng.uniform(0, 1, 1000)
        trouble = [
            (
                "labels",
                labels(
                    DRIFTING,
                    s,
                    s + 0.2 + rng.normal(0, 0.1, 1000),
                    1000,
                    rng,
                    domain_shares=(0.6, 0.1, 0.2, 0.1),
                ),
                DRIFTING,
            ),
            (
                "labels",
                labels(STEADY, steady_s, steady_s + rng.normal(0, 0.1, 1000), 1000, rng),
                STEADY,
            ),
            ("telemetry", telemetry(REGRESSING, 6000, rng, 3000, canary_quality=0.6), REGRESSING),
            ("telemetry", telemetry(HEALTHY, 3000, rng, 3000), HEALTHY),
        ]
        send(deployment, trouble)
        leak = {
            "event_id": "leak-1",
            "ts": time.time(),
            "experiment_id": LEAKY,
            "unit_id": "u-leak",
            "variant": "canary",
            "guardrails": {"pii": True},
        }
        deployment.produce("telemetry", [encode(leak)], [LEAKY.encode()])
        deployment.produce("labels", [b'{"event_id": "bad-1"', encode({"event_id": "bad-2"})])
        deployment.wait_for_count("labels", "dlq", 2)
        yield Observed(deployment, prometheus, alertmanager, worker_port, started)
    finally:
        prometheus.stop()
        if alertmanager is not None:
            alertmanager.stop()


def test_residual_drift_fires_the_drift_alert_read_from_prometheus(observed: Observed) -> None:
    fired = wait_for(
        lambda: observed.prometheus.firing("DriftgateResidualDriftFail"), 40, "the drift alert"
    )
    assert fired == [
        {
            "alertname": "DriftgateResidualDriftFail",
            "gate": "residual_drift",
            "subject": DRIFTING,
            "severity": "critical",
        }
    ]
    status = observed.deployment.status()["streams"]
    assert status[DRIFTING]["verdict"] == "FAIL" and status[STEADY]["verdict"] == "PASS"


def test_canary_regression_fires_the_rollback_alert_read_from_prometheus(
    observed: Observed,
) -> None:
    def rolled_back() -> set[str]:
        return {a["agent"] for a in observed.prometheus.firing("DriftgateCanaryRollback")}

    wait_for(lambda: rolled_back() == {REGRESSING, LEAKY}, 40, "the rollback alerts")
    [rollback] = [
        a for a in observed.prometheus.firing("DriftgateCanaryRollback") if a["agent"] == REGRESSING
    ]
    assert rollback == {
        "alertname": "DriftgateCanaryRollback",
        "agent": REGRESSING,
        "bundle_id": f"{REGRESSING}-v2",
        "severity": "critical",
    }
    agents = observed.deployment.status()["agents"]
    assert agents[REGRESSING]["phase"] == "rolled_back"
    assert agents[HEALTHY]["phase"] == "monitoring"
    # The PII leak pages on its own; the dead letters (the first ones the labels topic
    # ever had) are seen by increase() thanks to the counters' zero series.
    leaks = wait_for(lambda: observed.prometheus.firing("DriftgatePIILeak"), 20, "the PII alert")
    assert [(a["experiment"], a["variant"]) for a in leaks] == [(LEAKY, "canary")]
    dead = wait_for(
        lambda: observed.prometheus.firing("DriftgateDeadLetters"), 20, "the dead-letter alert"
    )
    assert [a["topic"] for a in dead] == [observed.deployment.topic("labels")]


def test_alertmanager_routes_each_severity_to_its_receiver(observed: Observed) -> None:
    if observed.alertmanager is None:
        pytest.skip("Alertmanager is not installed (Debian's prometheus-alertmanager)")
    alertmanager = observed.alertmanager

    def critical() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if a["labels"]["severity"] == "critical"]

    names = {"DriftgateResidualDriftFail", "DriftgateCanaryRollback", "DriftgatePIILeak"}
    wait_for(lambda: names <= {a["labels"]["alertname"] for a in critical()}, 40, "alerts")
    for alert in alertmanager.alerts():
        receivers = [r["name"] for r in alert["receivers"]]
        assert receivers == [alert["labels"]["severity"]], alert["labels"]


def finite_points(result: dict[str, Any]) -> int:
    return sum(
        1
        for series in result["result"]
        for _, value in series["values"]
        if math.isfinite(float(value))
    )


def test_every_dashboard_panel_query_returns_data(observed: Observed) -> None:
    # Wait for the trouble to be in Prometheus, so that every panel has something.
    wait_for(lambda: observed.prometheus.firing("DriftgateCanaryRollback"), 40, "a rollback")
    prometheus = observed.prometheus
    end = time.time()
    results = {}
    for name in _dashboards.DASHBOARDS:
        for query in _dashboards.queries(name):
            result = prometheus.query_range(query.expr, observed.started, end)
            results[query] = result
            if query.kind != "annotation":
                assert finite_points(result), f"{name} / {query.panel}: no data for {query.expr}"
    # Annotations mark changes, so only those the scenario made must show.
    shown = {q.panel for q, r in results.items() if q.kind == "annotation" and finite_points(r)}
    assert {"Verdict → FAIL", "Rollback decided"} <= shown, shown
    if os.environ.get(SCREENSHOTS):
        from ._render import render

        time.sleep(PACE_SECONDS)  # the trouble's aftermath, in the picture too
        for name in _dashboards.DASHBOARDS:
            out = Path(os.environ[SCREENSHOTS]) / f"{name.removeprefix('driftgate-')}.png"
            render(name, prometheus, observed.started, time.time(), out)


def test_rules_and_panels_use_only_metrics_of_a_real_scrape(observed: Observed) -> None:
    url = f"http://127.0.0.1:{observed.worker_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    scraped = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    used = set()
    for name in _dashboards.DASHBOARDS:
        used |= {m for q in _dashboards.queries(name) for m in re.findall(r"driftgate_\w+", q.expr)}
    rules = yaml.safe_load((_dashboards.ROOT / "deploy/prometheus/alerts.yml").read_text())
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        used |= set(re.findall(r"driftgate_\w+", rule["expr"]))
    assert used <= scraped, used - scraped
