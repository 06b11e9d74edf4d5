"""Adding a subject kind is one module and one registration line, nothing else.

``queue_subject.py`` defines queue depths, a kind that the store, the read model, the
outbox, status, the metrics, the HTTP API and report have never heard of, and registers it
(its last line). A real worker loads it as a deployment would (``DRIFTGATE_SUBJECTS``
names the module), creates its topic, consumes its events through the batch runner and
publishes its decisions; every reader shows it: ``status`` (text and ``--json``),
``/metrics``, the HTTP API and ``report``; and its command is one of the command line's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import CLUSTER_NOW_STANDALONE_IN_SOAK, Deployment, encode

pytestmark = pytest.mark.integration

SUBJECTS = {"DRIFTGATE_SUBJECTS": "tests.integration.queue_subject"}
NOW = 1.7e9


def queue_events() -> list[bytes]:
    return [
        encode({"event_id": f"{queue}-{i}", "ts": NOW, "queue": queue, "depth": depth})
        for queue, depth in (("orders", 12.0), ("refunds", 480.0))
        for i in range(3)
    ]


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, body if path == "/metrics" else json.loads(body)


@CLUSTER_NOW_STANDALONE_IN_SOAK  # a Redis Cluster: the new kind's keys share a slot
def test_a_new_subject_kind_runs_on_the_worker_and_shows_in_every_reader(
    deployment: Deployment, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("queues:\n  depth_max: 100\n")  # the kind's own section of the file
    env = {**SUBJECTS, "DRIFTGATE_CONFIG": str(policy)}
    worker = deployment.start_worker(**env)
    port: int = worker.metrics_port  # type: ignore[attr-defined]

    deployment.produce("queues", queue_events())
    deployment.wait_for_count("queues", "ok", 6)
    [decision] = [orjson.loads(r.value) for r in deployment.consume_all("decisions", 1)]
    assert (decision["gate"], decision["subject"], decision["verdict"]) == (
        "queue_depth",
        "refunds",
        "FAIL",
    )

    views = {
        "orders": {"n": 3, "mean_depth": 12.0, "verdict": "PASS"},
        "refunds": {"n": 3, "mean_depth": 480.0, "verdict": "FAIL"},
    }
    status = deployment.cli("status", "--json", **env)
    assert status.returncode == 0, status.stderr
    document = orjson.loads(status.stdout)
    assert list(document) == ["streams", "experiments", "agents", "queues"]
    assert document["queues"] == views
    text = deployment.cli("status", **env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "queue orders: PASS, mean depth 12 over 3 readings",
        "queue refunds: FAIL, mean depth 480 over 3 readings",
    ]

    metrics_status, metrics = get(port, "/metrics")
    assert metrics_status == 200
    lines = metrics.decode().splitlines()
    assert 'driftgate_queue_depth_mean{queue="refunds"} 480.0' in lines
    assert 'driftgate_queue_depth_mean{queue="orders"} 12.0' in lines
    assert 'driftgate_gate_status{gate="queue_depth",subject="refunds"} 2.0' in lines
    topic = deployment.topic("queues")
    assert f'driftgate_events_total{{outcome="ok",topic="{topic}"}} 6.0' in lines

    status_code, refunds = get(port, "/v1/queues/refunds")
    assert status_code == 200
    assert {k: refunds[k] for k in ("queue", "n", "mean_depth", "verdict")} == {
        "queue": "refunds",
        **views["refunds"],
    }
    [gate] = refunds["gates"]
    assert (gate["gate"], gate["verdict"], gate["action"], gate["decision_id"]) == (
        "queue_depth",
        "FAIL",
        "alert",
        decision["decision_id"],
    )
    assert get(port, "/v1/gates/queue_depth/refunds") == (200, gate)
    assert get(port, "/v1/queues/nowhere") == (404, {"error": "unknown queue 'nowhere'"})

    out = tmp_path / "memo"
    report = deployment.cli("report", "refunds", "--out", str(out), **env)
    assert report.returncode == 0, report.stderr
    memo = (out / "report.md").read_text()
    assert "## Queue refunds" in memo
    assert "Verdict: FAIL. Mean depth 480 over 3 readings." in memo
    assert "queue_depth" in memo  # the decision history, from the audit log
    deepest = deployment.cli("deepest-queue", **env)
    assert (deepest.returncode, deepest.stdout) == (0, "refunds 480\n"), deepest.stderr
    unknown = deployment.cli("report", "nowhere", **env)
    assert unknown.returncode == 2
    assert "no stream, experiment, agent or queue of that name" in unknown.stderr


def test_the_kind_s_policy_section_is_checked_like_the_built_in_ones(
    deployment: Deployment, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("queues:\n  depth_max: -1\n")
    bad = deployment.cli("status", **SUBJECTS, DRIFTGATE_CONFIG=str(policy))
    assert bad.returncode == 2
    assert "queues.depth_max must be positive, got -1.0" in bad.stderr
    # Without the kind, its section is a key the file may not have.
    unknown = deployment.cli("status", DRIFTGATE_CONFIG=str(policy))
    assert unknown.returncode == 2
    assert "unknown key queues" in unknown.stderr
    missing = deployment.cli("status", DRIFTGATE_SUBJECTS="tests.integration.no_such_kind")
    assert missing.returncode == 2
    assert "DRIFTGATE_SUBJECTS names 'tests.integration.no_such_kind'" in missing.stderr
