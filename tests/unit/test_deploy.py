"""docker-compose.yml, Prometheus rules and the Grafana dashboard stay in step with the code.

Docker is not available here, so compose is checked by parsing; rules run under promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor import Settings

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_METRICS = {
    "driftgate_events_total",
    "driftgate_residual_n",
    "driftgate_residual_mean",
    "driftgate_residual_ci_lower",
    "driftgate_residual_ci_upper",
    "driftgate_gate_status",
    "driftgate_score_ks",
    "driftgate_guardrail_value",
    "driftgate_canary_percent",
    "driftgate_decisions_total",
    "driftgate_last_event_timestamp_seconds",
    "driftgate_batch_duration_seconds_bucket",
    "driftgate_redis_up",
}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack_and_the_worker_reads_our_settings() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "--appendonly" in services["redis"]["command"]
    assert (
        services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1]
        == "yes"
    )
    worker = services["worker"]
    settings = Settings.from_env(worker["environment"])
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url.startswith("redis://redis:6379")
    assert f"{settings.metrics_port}:{settings.metrics_port}" in worker["ports"]
    assert settings.metrics_host == "0.0.0.0"  # reachable from Prometheus's container
    health = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.metrics_port}/healthz" in health
    assert worker["command"][0] == "worker"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["driftgate"]' in dockerfile
    for package in ("estimators", "monitor"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_compose_mounts_exist_and_prometheus_scrapes_the_worker() -> None:
    services = compose()["services"]
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), source
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    port = Settings.from_env(services["worker"]["environment"]).metrics_port
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]


def expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "grafana/dashboards/driftgate.json").read_text())
    found += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return found


def test_rules_and_dashboard_use_only_metrics_that_exist() -> None:
    names = {name for expr in expressions() for name in re.findall(r"\bdriftgate_[a-z_]+", expr)}
    assert names, "no driftgate metric referenced at all"
    assert names <= CONTRACT_METRICS, names - CONTRACT_METRICS


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/test installs it)"
)
def test_alert_rules_pass_promtool() -> None:
    folder = ROOT / "deploy/prometheus"
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            ["promtool", *command], cwd=folder, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
