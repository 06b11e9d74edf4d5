"""docker-compose.yml, the Prometheus and Alertmanager configs, the alert rules and the
Grafana dashboards stay in step with the code and with the README.

Docker is not available here, so compose is checked by parsing; rules run under promtool
and the Alertmanager config under amtool (Debian's prometheus and
prometheus-alertmanager), each skipped with the reason when the tool is missing. A real
Prometheus runs them against a worker in tests/observability/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor import Settings
from monitor.config import ENVIRONMENT
from monitor.serve import StateCollector
from monitor.store import Snapshot

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
SEVERITIES = ("critical", "warning", "info")
# What a user must set: compose refuses to start without them (${VAR:?message}).
REQUIRED = {
    "REDIS_PASSWORD": "s3cret-redis",
    "GRAFANA_ADMIN_PASSWORD": "s3cret-grafana",
    "DRIFTGATE_API_TOKEN": "s3cret-api-token-of-compose",
}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; a missing required one raises."""

    def one(match: re.Match[str]) -> str:
        name, how, word = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if how == ":?":
            raise KeyError(f"{name}: {word}")
        return word if how == ":-" else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


def worker_settings(env: dict[str, str] | None = None) -> Settings:
    raw = compose()["services"]["worker"]["environment"]
    resolved = {key: interpolate(str(value), env or REQUIRED) for key, value in raw.items()}
    return Settings.from_env(resolved)


def published(service: dict[str, Any]) -> dict[int, str]:
    """Container port -> host address ("127.0.0.1:9092") of each published port."""
    ports = {}
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = entry.split(":")
        ports[int(container_port)] = f"{host_ip}:{host_port}"
    return ports


# --- docker-compose.yml ------------------------------------------------------------------


def test_every_service_is_health_checked_and_published_on_loopback_only() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "worker", "prometheus", "alertmanager", "grafana", "demo"} <= set(
        services
    )
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for address in published(service).values():
            assert address.startswith("127.0.0.1:"), (name, address)
    assert services["demo"]["profiles"] == ["demo"]  # not started by a plain `up`
    # The demo only: the stack's own worker consumes its events (no second worker).
    assert services["demo"]["command"] == ["up", "--no-worker"]


def test_kafka_is_kraft_with_an_internal_and_a_host_listener() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) == {"INTERNAL", "HOST"}
    # The worker uses the internal one; the host one is driftgate's default bootstrap.
    assert worker_settings().kafka_bootstrap == advertised["INTERNAL"]
    assert advertised["HOST"] == Settings().kafka_bootstrap
    host_port = int(advertised["HOST"].rsplit(":", 1)[1])
    assert published(kafka)[host_port] == advertised["HOST"]
    assert f"HOST://:{host_port}" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert env["KAFKA_LOG_DIRS"] in {volume.split(":")[1] for volume in kafka["volumes"]}


def test_redis_keeps_an_append_only_file_and_requires_the_password_the_worker_uses() -> None:
    redis = compose()["services"]["redis"]
    command = [interpolate(part, REQUIRED) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    password = command[command.index("--requirepass") + 1]
    assert password == REQUIRED["REDIS_PASSWORD"]
    assert worker_settings().redis_url == f"redis://:{password}@redis:6379/0"
    assert interpolate(redis["environment"]["REDISCLI_AUTH"], REQUIRED) == password
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        worker_settings(env={"GRAFANA_ADMIN_PASSWORD": "x"})


def test_the_worker_reads_only_our_settings_and_is_health_checked_on_healthz() -> None:
    services = compose()["services"]
    for name in ("worker", "demo"):
        for variable in services[name]["environment"]:
            assert variable in ENVIRONMENT.values(), (name, variable)
    worker = services["worker"]
    settings = worker_settings()
    assert settings.metrics_host == "0.0.0.0"  # reachable from Prometheus's container
    settings.check_api_token()  # it has the token it needs there, from the shell
    assert settings.api_token == REQUIRED["DRIFTGATE_API_TOKEN"]
    with pytest.raises(KeyError, match="DRIFTGATE_API_TOKEN"):
        worker_settings(env={k: v for k, v in REQUIRED.items() if k != "DRIFTGATE_API_TOKEN"})
    assert published(worker)[settings.metrics_port] == f"127.0.0.1:{settings.metrics_port}"
    health = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.metrics_port}/healthz" in health
    assert worker["command"][0] == "worker"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["driftgate"]' in dockerfile
    assert f"EXPOSE {settings.metrics_port}" in dockerfile
    for package in ("estimators", "monitor"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_grafana_takes_its_admin_password_from_the_environment() -> None:
    env = compose()["services"]["grafana"]["environment"]
    assert interpolate(env["GF_SECURITY_ADMIN_PASSWORD"], REQUIRED) == "s3cret-grafana"
    with pytest.raises(KeyError, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(env["GF_SECURITY_ADMIN_PASSWORD"], {})
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).name).exists()


def mounts() -> Iterator[tuple[str, str, str]]:
    """(service, host path, container path) of every bind mount."""
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                yield name, source, target


def test_mounts_exist_and_the_configs_point_at_each_other() -> None:
    found = list(mounts())
    for _, source, _ in found:
        assert (ROOT / source).exists(), source
    inside = {(name, target): source for name, source, target in found}
    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for rule_file in prometheus["rule_files"]:
        assert inside[("prometheus", rule_file)] == "./deploy/prometheus/alerts.yml"
    services = compose()["services"]
    port = worker_settings().metrics_port
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]
    [alertmanager] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == "alertmanager:9093"
    assert 9093 in published(services["alertmanager"])
    config_flag = next(
        flag for flag in services["alertmanager"]["command"] if flag.startswith("--config.file=")
    )
    assert inside[("alertmanager", config_flag.split("=", 1)[1])] == (
        "./deploy/alertmanager/alertmanager.yml"
    )
    provisioning = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/driftgate.yml").read_text()
    )
    assert inside[("grafana", provisioning["providers"][0]["options"]["path"])] == (
        "./grafana/dashboards"
    )
    datasource = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    for board in DASHBOARDS:
        variables = json.loads(board.read_text())["templating"]["list"]
        chosen = next(v for v in variables if v["type"] == "datasource")
        assert chosen["current"]["value"] == datasource["uid"], board.name


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Monitoring and alerting.*?(?=^## )", text, re.M | re.S)
    assert match, "README has no 'Monitoring and alerting' section"
    return match.group(0)


def test_every_port_file_and_variable_the_readme_names_exists() -> None:
    section = readme_section()
    services = compose()["services"]
    compose_text = (ROOT / "docker-compose.yml").read_text()
    host_addresses = {a for service in services.values() for a in published(service).values()}
    addresses = set(re.findall(r"127\.0\.0\.1:\d+", section))
    assert addresses, "the section names no address"
    assert addresses <= host_addresses, addresses - host_addresses
    for service, port in re.findall(r"`([a-z]+):(\d+)`", section):
        assert service in services, service
        assert re.search(rf"\b{service}:{port}\b", compose_text), f"{service}:{port}"
    paths = set(re.findall(r"`((?:\./)?[\w.-]+/[\w./-]+|[\w-]+\.(?:ya?ml|json|png))`", section))
    paths |= set(re.findall(r"\]\(((?!https?:)[^)#]+)\)", section))
    assert paths, "the section names no file"
    for path in paths:
        # A bare name (driftgate-overview.json) is found where the section says it is.
        exists = (ROOT / path).exists() or ("/" not in path and any(ROOT.glob(f"*/*/{path}")))
        assert exists, path
    variables = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", section))
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "DRIFTGATE_API_TOKEN"} <= variables
    tests_read = " ".join(p.read_text() for p in (ROOT / "tests/observability").glob("*.py"))
    for variable in variables:
        known = (
            variable in ENVIRONMENT.values()
            or re.search(rf"\$\{{{variable}\b|^\s+{variable}:", compose_text, re.M)
            or f'"{variable}"' in tests_read
        )
        assert known, variable


# --- metrics used by rules and dashboards ------------------------------------------------


class EmptyState:
    """The read model's answer before anything happened: the collector still declares
    every metric family, which is all this test reads."""

    def snapshot(self) -> Snapshot:
        return Snapshot()


def exported_metrics() -> set[str]:
    names = set()
    for family in StateCollector(EmptyState()).collect():  # type: ignore[arg-type]
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    # The one per-worker metric: a histogram of the worker's own (monitor/runtime/_app.py).
    histogram = "driftgate_batch_duration_seconds"
    assert f'"{histogram}"' in (ROOT / "monitor/runtime/_app.py").read_text()
    names |= {f"{histogram}_{suffix}" for suffix in ("bucket", "count", "sum")}
    return names


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    found = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    found += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    found += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return found


def test_rules_and_dashboards_use_only_metrics_the_worker_exports() -> None:
    exported = exported_metrics()
    assert {"driftgate_events_total", "driftgate_gate_status", "driftgate_canary_info"} <= exported
    expressions = rule_expressions()
    for board in DASHBOARDS:
        expressions += dashboard_expressions(json.loads(board.read_text()))
    used = {name for expr in expressions for name in re.findall(r"\bdriftgate_[a-z_]+", expr)}
    assert len(used) >= 15, used
    assert used <= exported, used - exported


def test_aggregations_take_the_max_over_workers_never_the_sum() -> None:
    """Global figures are one series per subject served by every worker: a sum over
    workers counts each once per worker. Only the per-worker histogram may be summed
    (over its buckets, by instance), and sums over topics of a max are fine."""
    expressions = rule_expressions()
    for board in DASHBOARDS:
        expressions += dashboard_expressions(json.loads(board.read_text()))
    for expr in expressions:
        for match in re.finditer(r"\bsum\b\s*(by\s*\(([^)]*)\))?\s*\(", expr):
            inner = expr[match.end() :]
            by = match.group(2) or ""
            per_worker = "driftgate_batch_duration_seconds_bucket" in inner and "instance" in by
            of_a_max = inner.lstrip().startswith("max by")
            assert per_worker or of_a_max, expr


def test_dashboards_are_provisionable_and_show_what_the_issue_asks() -> None:
    titles = {}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"]
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert all(p.get("targets") for p in panels), path.name
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
        titles[board["uid"]] = {p["title"]: p for p in panels}
    overview, canaries = titles["driftgate-overview"], titles["driftgate-canaries"]
    residual = overview["Mean residual y − f(s) and its anytime-valid interval"]
    band = {o["matcher"]["options"]: o for o in residual["fieldConfig"]["overrides"]}
    assert {"id": "custom.fillBelowTo", "value": "interval low"} in band["interval high"][
        "properties"
    ]
    steps = residual["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, -0.05, 0.05]  # the FAIL bias threshold
    verdicts = overview["Verdicts over time"]["fieldConfig"]["defaults"]["mappings"][0]
    assert {v["text"]: v["color"] for v in verdicts["options"].values()} == {
        "PASS": "green",
        "WARN": "yellow",
        "FAIL": "red",
        "INCONCLUSIVE / HOLD": "blue",
    }
    board = json.loads((ROOT / "grafana/dashboards/driftgate-overview.json").read_text())
    annotations = [a["name"] for a in board["annotations"]["list"] if "expr" in a]
    assert "Verdict → FAIL" in annotations and "Rollback decided" in annotations
    table = " ".join(t["expr"] for t in canaries["Canaries"]["targets"])
    for metric in ("canary_info", "canary_percent", "canary_hours_running"):
        assert f"driftgate_{metric}" in table
    assert {"Gate status", "Canary traffic share", "Dead letters"} <= set(overview)


# --- promtool and amtool -----------------------------------------------------------------

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian's prometheus package; scripts/test installs it)",
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not installed (Debian's prometheus-alertmanager package)",
)


def run(*command: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    run("promtool", "check", "rules", "alerts.yml")
    run("promtool", "test", "rules", "alerts_test.yml")


@needs_promtool
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]  # the container's path, here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))


def test_every_rule_has_a_severity_and_a_test_and_each_severity_its_receiver() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    severity = {
        rule["alert"]: rule["labels"]["severity"]
        for group in rules["groups"]
        for rule in group["rules"]
    }
    assert set(severity.values()) == set(SEVERITIES)
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in severity:
        fired = [c for c in cases if c["alertname"] == alert and c["exp_alerts"]]
        quiet = [c for c in cases if c["alertname"] == alert and not c["exp_alerts"]]
        assert fired and quiet, f"{alert}: a test where it fires and one where it does not"
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    receivers = {}
    for child in route["routes"]:
        [matcher] = child["matchers"]
        receivers[matcher] = child["receiver"]
    assert receivers == {f'severity="{s}"': s for s in SEVERITIES}


@needs_amtool
def test_alertmanager_config_passes_amtool_and_routes_each_severity_apart() -> None:
    run("amtool", "check-config", str(ALERTMANAGER))
    for severity in SEVERITIES:
        out = run(
            "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
            f"severity={severity}", "alertname=DriftgateAny",
        )  # fmt: skip
        assert out.strip() == severity
