"""The integration fixtures (the embedded broker or DRIFTGATE_TEST_KAFKA, a Redis of the
test's own, driftgate workers) and a real Prometheus server on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.runtime._services import free_port
from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    Deployment,
    RedisServer,
    kafka_bootstrap,
    kafka_broker,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_BINARY = shutil.which("prometheus")
ALERTMANAGER_BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@dataclass
class PrometheusServer:
    """A real ``prometheus`` process, reached over its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            document = json.loads(response.read())
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> Any:
        return self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["alerts"]  # type: ignore[no-any-return]

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return [
            a["labels"]
            for a in self.alerts()
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready: {log.read_text()[-2000:]}")


def start_prometheus(workdir: Path, worker_port: int, alertmanager: str | None) -> PrometheusServer:
    """Prometheus with the shipped config and rules, changed only where a test must: the
    worker's address, a 1 s scrape and evaluation interval (the rules' own ``for:`` stay),
    and Alertmanager's address (left out when there is none)."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "deploy/prometheus/alerts.yml")]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    if alertmanager is None:
        del config["alerting"]
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(PROMETHEUS_BINARY),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, process, log, "prometheus")
    return PrometheusServer(url, process, log)


@dataclass
class AlertmanagerServer:
    url: str
    process: subprocess.Popen[bytes]

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_alertmanager(workdir: Path) -> AlertmanagerServer:
    """Alertmanager with the shipped config as it is (its receivers' placeholder addresses
    never resolve: the test reads where each alert was routed from its API)."""
    port = free_port()
    log = workdir / "alertmanager.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(ALERTMANAGER_BINARY),
                f"--config.file={ROOT / 'deploy/alertmanager/alertmanager.yml'}",
                f"--storage.path={workdir / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # one instance: no gossip
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, process, log, "alertmanager")
    return AlertmanagerServer(url, process)


@pytest.fixture(scope="module")
def module_deployment(
    kafka_bootstrap: str,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """The integration tests' deployment, shared by one module's tests: one scenario
    feeds them all."""
    workdir = tmp_path_factory.mktemp("deployment")
    server = RedisServer(workdir / "redis")
    server.start()
    deployment = Deployment(kafka_bootstrap, server, workdir)
    yield deployment
    deployment.stop_workers()
    server.stop()
