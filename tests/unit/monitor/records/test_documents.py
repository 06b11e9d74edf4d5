"""The documents the read side shows keep their bytes: ``status --json`` and every answer
of the HTTP gate API.

``golden_status.json`` and ``golden_http.json`` were written by the code before the
status document and the API's answers became ``msgspec`` Structs (dictionaries then):
the state a replay of ``docs/examples/replay-demo.jsonl.gz`` leaves (a stream whose
residuals drift, an agent whose canary its guardrail rolled back) and that of a
calibrated stream, read as the read model reads the worker's state. Today's code writes
the same bytes: ``status --json`` as ``print_json`` prints it, and for each request the
API's status, headers and body.

Regenerate (only where a change of the documents is meant): run this module as a script.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from monitor import Policy
from monitor.events._decisions import GateAnswer
from monitor.presentation._format import json_text
from monitor.replay import Replay, StoredCalibrator, read_events
from monitor.serve import GateAPI
from monitor.slices import agent_status, status_document
from monitor.store import Snapshot
from tests.unit.monitor.records.test_records import DEMO, STREAM, calibrator, covariate_lines
from tests.unit.monitor.serve.test_http import ReadModel, request

HERE = Path(__file__).parent
NOW = 1767312000.0
"""The wall clock while the documents are written: an agent's ``hours_running`` counts to it."""
TOKEN = "s3cret"


def demo_snapshot() -> tuple[Snapshot, float]:
    replay = Replay(Policy(), read_events([str(DEMO)]), batch=500)
    result = replay.run()
    snapshot = replay.snapshot()
    # What only the worker's state holds: skipped OpenTelemetry records.
    snapshot.ignored[("otlp.spans", "no_genai_attributes")] = 3
    snapshot.ignored[("otlp.logs", "no_evaluation")] = 1
    return snapshot, result.clock


def calibrated_snapshot(tmp_path: Path) -> tuple[Snapshot, float]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(covariate_lines()) + b"\n")
    stored = StoredCalibrator(STREAM, calibrator()[2], 3)
    replay = Replay(Policy(), read_events([str(events)]), [stored], batch=300)
    result = replay.run()
    return replay.snapshot(), result.clock


def status_texts(tmp_path: Path) -> dict[str, str]:
    """``driftgate status --json`` of each state, as printed."""
    return {
        name: json_text(status_document(snapshot, now).to_builtins())
        for name, (snapshot, now) in {
            "demo": demo_snapshot(),
            "calibrated": calibrated_snapshot(tmp_path),
            "empty": (Snapshot(), NOW),
        }.items()
    }


# (method, path, body): every route, and every kind of refusal.
REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/healthz", None),
    ("GET", "/v1/gates", None),
    ("HEAD", "/v1/gates", None),
    ("GET", "/v1/gates/residual_drift/demo:judge", None),
    ("GET", "/v1/gates/canary/demo-agent", None),
    ("GET", "/v1/gates/guardrail/demo-agent", None),
    ("GET", "/v1/gates/residual_drift/cov%3Ajudge", None),
    ("GET", "/v1/gates/score_drift/cov:judge?covariate=domain", None),
    ("GET", "/v1/gates/nothing/demo:judge", None),
    ("GET", "/v1/agents/demo-agent", None),
    ("GET", "/v1/agents/nobody", None),
    ("GET", "/v1/nothing", None),
    ("POST", "/v1/gates", None),
    ("GET", "/v1/flagger/rollout", None),
    ("POST", "/v1/flagger/rollout", {"name": "demo-agent"}),
    ("POST", "/v1/flagger/confirm-promotion", {"metadata": {"agent": "demo-agent"}}),
    ("POST", "/v1/flagger/rollback", {"metadata": {"agent": "demo-agent"}}),
    ("POST", "/v1/flagger/rollout", {"metadata": {"agent": "demo-agent", "bundle_id": "x"}}),
    ("POST", "/v1/flagger/rollout", {"metadata": {}}),
    ("POST", "/v1/flagger/rollout", {"name": "nobody"}),
    ("POST", "/v1/flagger/rollout", [1]),
    ("POST", "/v1/flagger/nothing", {}),
]


def _answer(app: GateAPI, method: str, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    status, headers, payload = request(app, path, method, body=body, **kwargs)
    return {"request": f"{method} {path}", "status": status, "headers": headers,
            "body": payload.decode()}  # fmt: skip


def http_answers(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Each request's answer: on the state of both replays, then with a token, then
    while Redis cannot be read (the agents' fail-safe)."""
    demo, calibrated = demo_snapshot()[0], calibrated_snapshot(tmp_path)[0]
    snapshot = Snapshot(
        views={**demo.views, **calibrated.views}, gates=[*demo.gates, *calibrated.gates]
    )
    read_model = ReadModel(snapshot)
    # Kept reads (0.5 s) would answer the fail-safe requests below from before Redis failed.
    app = GateAPI(read_model, CollectorRegistry(), lambda: None, Policy(), fresh_for=0)  # type: ignore[arg-type]
    for method, path, body in REQUESTS:
        yield _answer(app, method, path, body)
    locked = GateAPI(read_model, CollectorRegistry(), lambda: None, Policy(), TOKEN)  # type: ignore[arg-type]
    yield _answer(locked, "GET", "/v1/gates", None)
    yield _answer(locked, "POST", "/v1/flagger/rollout", {"name": "demo-agent"})
    sick = GateAPI(read_model, CollectorRegistry(), lambda: "no partitions", Policy())  # type: ignore[arg-type]
    yield _answer(sick, "GET", "/healthz", None)
    read_model.error = redis.ConnectionError("Connection refused")
    for _ in range(Policy().canary.state_error_limit):
        yield _answer(app, "GET", "/v1/agents/demo-agent", None)
    yield _answer(app, "POST", "/v1/flagger/rollout", {"name": "demo-agent"})
    yield _answer(app, "GET", "/v1/gates", None)


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)


def golden(name: str) -> Any:
    return orjson.loads((HERE / f"golden_{name}.json").read_bytes())


@pytest.mark.usefixtures("wall_clock")
def test_status_json_writes_the_golden_documents(tmp_path: Path) -> None:
    texts = status_texts(tmp_path)
    before = golden("status")
    assert texts.keys() == before.keys()
    for name, text in texts.items():
        assert text == before[name], name
    demo = orjson.loads(texts["demo"])
    assert list(demo) == ["streams", "experiments", "agents", "ignored"]
    assert demo["agents"]["demo-agent"]["phase"] == "rolled_back"
    assert orjson.loads(texts["empty"]) == {"streams": {}, "experiments": {}, "agents": {}}


@pytest.mark.usefixtures("wall_clock")
def test_the_http_api_gives_the_golden_answers(tmp_path: Path) -> None:
    answers = list(http_answers(tmp_path))
    before = golden("http")
    assert [a["request"] for a in answers] == [a["request"] for a in before]
    for answer, expected in zip(answers, before, strict=True):
        assert answer == expected, answer["request"]
    statuses = {a["status"] for a in answers}
    assert {200, 400, 401, 404, 405, 409, 503} <= statuses


def _regenerate() -> None:  # pragma: no cover - run by hand
    import tempfile

    time.time = lambda: NOW  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        for name, document in (
            ("status", status_texts(Path(tmp))),
            ("http", list(http_answers(Path(tmp)))),
        ):
            text = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
            (HERE / f"golden_{name}.json").write_bytes(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_regenerate())


def test_an_agent_is_shown_as_its_row_with_its_hours_and_gates() -> None:
    snapshot, now = demo_snapshot()
    row = snapshot.views["experiment"]["demo-agent"]["agent"]
    # A field a newer worker adds is left out; the rest is the row as written.
    snapshot.views["experiment"]["demo-agent"]["agent"] = {**row, "added_later": 1}
    agent = agent_status(snapshot, "demo-agent", row["deployed_at"] + 5400)
    assert agent is not None and agent.hours_running == 1.5
    shown = msgspec.to_builtins(agent)
    assert "added_later" not in shown
    assert {k: shown[k] for k in row} == row
    assert [g.gate for g in agent.gates] == [
        g.gate for g in snapshot.gates_of("experiment", "demo-agent")
    ]
    # The HTTP API's answer shows each gate as GATE alone.
    assert all(
        set(msgspec.to_builtins(g)) == set(GateAnswer.__struct_fields__)
        for g in agent.answer().gates
    )
    assert agent_status(snapshot, "nobody", now) is None
