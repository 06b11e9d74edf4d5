"""The HTTP gate API as a WSGI application, on a read model held in memory (no Redis)."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from wsgiref.util import setup_testing_defaults

import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisClusterException

from monitor import Policy
from monitor.config import AgentPolicy, CanaryPolicy
from monitor.events._decisions import Published, encode
from monitor.gates import Verdict
from monitor.pipeline._judge import gate_records
from monitor.serve import GateAPI, serve
from monitor.serve._fresh import FRESH_FOR, Fresh
from monitor.serve._http import MAX_BODY, RAW_PATH
from monitor.store import Snapshot
from monitor.store._read_model import _gate_document

NOW = time.time()


# --- a read model in memory -----------------------------------------------------------------------


class Client:
    """What the API asks of the Redis client: ``ping``."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if self.error is not None:
            raise self.error
        return True


class ReadModel:
    def __init__(self, snapshot: Snapshot) -> None:
        self.client = Client()
        self.error: Exception | None = None
        self._snapshot = snapshot

    def snapshot(self, with_history: bool = False) -> Snapshot:
        if self.error is not None:
            raise self.error
        return self._snapshot

    def subject(self, kind: str, name: str) -> Snapshot:
        return self.snapshot().of_subject(kind, name)


def agent_view(
    name: str, phase: str, verdict: str, reason: str, recommendation: str, bundle: str = "v2"
) -> dict[str, Any]:
    """The ``agent`` block of an experiment's view, as ``ExperimentModel.view`` writes it."""
    return {
        "agent": name,
        "bundle_id": bundle,
        "phase": phase,
        "canary_percent": 10.0,
        "deployed_at": time.time() - 7200,
        "verdict": verdict,
        "reason": reason,
        "recommendation": recommendation,
        "comparison": None,
        "rollback": {"reason": reason, "decision_id": "d1"} if phase == "rolled_back" else None,
        "history": [],
    }


def gate(
    name: str,
    subject: str,
    verdict: str,
    action: str,
    reason: str,
    kind: str,
    announced_action: str | None = None,
) -> dict[str, Any]:
    """A gate as the read model shows it: the record the runner writes (announced unless
    a PASS, i.e. a quiet start), read back."""
    current = Verdict(name, subject, verdict, action, reason, {"n": 10, "estimate": None})
    published = {}
    if verdict != "PASS":
        published[name] = Published(
            verdict, announced_action or action, reason, "d-" + name, "2026-11-22T10:00:00Z"
        )
    record = gate_records([current], published, NOW - 5)[name]
    return _gate_document(name, subject, kind, orjson.loads(encode(record)))


AGENTS = {
    # name: (phase, worst verdict, reason, recommendation)
    "rolled": ("rolled_back", "FAIL", "quality_regression", "rollback"),
    "failing": ("monitoring", "FAIL", "latency_regression", "rollback"),
    "ready": ("monitoring", "PASS", "promotion_ready", "promote"),
    "watching": ("monitoring", "INCONCLUSIVE", "monitoring", "monitor"),
    "held": ("monitoring", "HOLD", "srm", "hold"),
    "paused": ("paused", "HOLD", "paused", "hold"),
    "stalled": ("monitoring", "WARN", "stalled", "monitor"),
}


def snapshot() -> Snapshot:
    views: dict[str, dict[str, Any]] = {
        name: {
            "experiment": {"control": "control", "variants": {}},
            "agent": agent_view(name, *row),
        }
        for name, row in AGENTS.items()
    }
    views["exp"] = {"experiment": {"control": "a", "variants": {}}, "agent": None}
    gates = [
        # Announced with rollback; evaluated since with none (one rollback per bundle).
        gate("canary", "rolled", "FAIL", "none", "quality_regression", "experiment", "rollback"),
        gate("guardrail", "rolled", "PASS", "none", "within_guardrails", "experiment"),
        gate("canary", "ready", "PASS", "promote", "promotion_ready", "experiment"),
        gate("guardrail", "policy:gpt-4", "FAIL", "alert", "toxicity_rate", "experiment"),
        gate("score_drift", "team/policy", "WARN", "alert", "ks_distance", "stream"),
        gate("score_drift", "café", "PASS", "none", "no_drift", "stream"),
        gate("residual_drift", "rolled", "WARN", "alert", "bias", "stream"),  # not an agent's
    ]
    return Snapshot(views={"experiment": views}, gates=gates)


Call = Callable[..., tuple[int, dict[str, str], Any]]


@pytest.fixture
def read_model() -> ReadModel:
    return ReadModel(snapshot())


@pytest.fixture
def health() -> dict[str, str | None]:
    return {"reason": None}


@pytest.fixture
def app(read_model: ReadModel, health: dict[str, str | None]) -> GateAPI:
    return GateAPI(read_model, CollectorRegistry(), lambda: health["reason"], Policy())  # type: ignore[arg-type]


def request(
    app: Callable[..., Any],
    path: str,
    method: str = "GET",
    body: Any = None,
    raw: bytes | None = None,
    content_length: str | None = None,
    raw_path: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(data),
        "CONTENT_LENGTH": str(len(data)) if content_length is None else content_length,
    }
    if raw_path is not None:  # what driftgate's server adds: the path as sent
        environ[RAW_PATH] = raw_path
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    payload = b"".join(app(environ, start_response))
    code, _, phrase = seen["status"].partition(" ")
    assert phrase
    return int(code), seen["headers"], payload


def call(app: GateAPI, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
    status, headers, payload = request(app, path, method, **kwargs)
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(payload))
    return status, json.loads(payload)


# --- health and metrics ---------------------------------------------------------------------------


def test_healthz_ok(app: GateAPI, read_model: ReadModel) -> None:
    assert call(app, "/healthz") == (200, {"status": "ok"})
    assert read_model.client.pings == 1


def test_healthz_says_why_the_worker_is_not_consuming(
    app: GateAPI, read_model: ReadModel, health: dict[str, str | None]
) -> None:
    health["reason"] = "no partitions assigned"
    assert call(app, "/healthz") == (
        503,
        {"status": "unavailable", "reason": "no partitions assigned"},
    )
    assert read_model.client.pings == 0


def test_healthz_when_redis_does_not_answer(app: GateAPI, read_model: ReadModel) -> None:
    read_model.client.error = redis.ConnectionError("connection refused")
    status, document = call(app, "/healthz")
    assert status == 503 and document["status"] == "unavailable"
    assert document["reason"] == "Redis does not answer: connection refused"
    read_model.client.error = None
    assert call(app, "/healthz")[0] == 200


def test_metrics_are_served() -> None:
    app = GateAPI(ReadModel(Snapshot()), CollectorRegistry(), lambda: None, Policy())  # type: ignore[arg-type]
    status, headers, payload = request(app, "/metrics")
    assert status == 200 and payload == b""
    assert headers["Content-Type"].startswith("text/plain")
    registry = CollectorRegistry()
    Counter("driftgate_test_events", "events", registry=registry).inc(3)
    app = GateAPI(ReadModel(Snapshot()), registry, lambda: None, Policy())  # type: ignore[arg-type]
    status, _, payload = request(app, "/metrics")
    assert status == 200 and b"driftgate_test_events_total 3.0" in payload


# --- gates ----------------------------------------------------------------------------------------


def test_every_gate(app: GateAPI) -> None:
    status, document = call(app, "/v1/gates")
    assert status == 200
    gates = document["gates"]
    assert [(g["gate"], g["subject"]) for g in gates] == [
        ("canary", "rolled"),
        ("guardrail", "rolled"),
        ("canary", "ready"),
        ("guardrail", "policy:gpt-4"),
        ("score_drift", "team/policy"),
        ("score_drift", "café"),
        ("residual_drift", "rolled"),
    ]
    fields = ["gate", "subject", "verdict", "action", "reason", "decision_id", "ts", "evidence"]
    assert all(list(g) == fields for g in gates)
    assert gates[0]["decision_id"] == "d-canary" and gates[0]["ts"] == "2026-11-22T10:00:00Z"
    # Not announced: no decision id, the time it was evaluated.
    assert gates[1]["decision_id"] is None and gates[1]["ts"].endswith("Z")


def test_one_gate_with_a_percent_encoded_subject(app: GateAPI) -> None:
    status, document = call(app, "/v1/gates/guardrail/policy%3Agpt-4")
    assert status == 200
    assert (document["gate"], document["subject"], document["verdict"]) == (
        "guardrail",
        "policy:gpt-4",
        "FAIL",
    )
    assert (document["action"], document["reason"]) == ("alert", "toxicity_rate")
    assert call(app, "/v1/gates/guardrail/policy:gpt-4") == (status, document)
    assert call(app, "/v1/gates/canary/ready/")[1]["action"] == "promote"  # trailing slash


def covariate_drift(stream: str, verdicts: dict[str, str]) -> list[dict[str, Any]]:
    """covariate_drift's records of a stream, one per covariate (``covariate_drift/NAME``),
    as the runner writes and the read model reads them back."""
    current = [
        Verdict("covariate_drift", stream, verdict, "none", "r", {"covariate": name}, part=name)
        for name, verdict in verdicts.items()
    ]
    records = gate_records(current, {}, NOW - 5)
    return [
        _gate_document(key, stream, "stream", orjson.loads(encode(record)))
        for key, record in records.items()
    ]


def covariate_app() -> GateAPI:
    gates = covariate_drift("s", {"domain": "PASS", "difficulty": "FAIL", "length": "WARN"})
    gates += covariate_drift("t", {"domain": "WARN"})
    return GateAPI(ReadModel(Snapshot(gates=gates)), CollectorRegistry(), lambda: None, Policy())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "verdict", "covariate"),
    [
        ("/v1/gates/covariate_drift/s?covariate=domain", "PASS", "domain"),
        ("/v1/gates/covariate_drift/s?covariate=difficulty", "FAIL", "difficulty"),
        ("/v1/gates/covariate_drift/s?covariate=length", "WARN", "length"),
        # Without a covariate: the worst of the stream's (FAIL first, as an agent's).
        ("/v1/gates/covariate_drift/s", "FAIL", "difficulty"),
        ("/v1/gates/covariate_drift/t", "WARN", "domain"),
        ("/v1/gates/covariate_drift/t?covariate=domain&x=1", "WARN", "domain"),
    ],
)
def test_covariate_drift_answers_per_covariate(path: str, verdict: str, covariate: str) -> None:
    """covariate_drift gives a stream one verdict per covariate; the first of them was
    the only one the API could answer."""
    status, document = call(covariate_app(), path)
    assert status == 200
    assert (document["gate"], document["verdict"]) == ("covariate_drift", verdict)
    assert document["evidence"]["covariate"] == covariate


def test_an_unknown_covariate_is_404() -> None:
    app = covariate_app()
    status, document = call(app, "/v1/gates/covariate_drift/s?covariate=region")
    assert status == 404
    assert document["error"] == "no gate 'covariate_drift' for subject 's' and covariate 'region'"
    assert call(app, "/v1/gates/covariate_drift/u?covariate=domain")[0] == 404
    # Every covariate's verdict is in the list of every gate.
    gates = call(app, "/v1/gates")[1]["gates"]
    assert sorted(g["evidence"]["covariate"] for g in gates if g["subject"] == "s") == [
        "difficulty",
        "domain",
        "length",
    ]


def test_a_subject_with_a_slash_or_beyond_ascii_from_the_path_as_sent(app: GateAPI) -> None:
    """driftgate's server hands the path as sent (PATH_INFO is decoded already, %2F and
    all, as Latin-1): it is split first, then each part decoded once, as UTF-8."""
    status, document = call(
        app,
        "/v1/gates/score_drift/team/policy",
        raw_path="/v1/gates/score_drift/team%2Fpolicy",
    )
    assert (status, document["subject"], document["verdict"]) == (200, "team/policy", "WARN")
    latin1 = "/v1/gates/score_drift/" + "café".encode().decode("latin-1")  # as PATH_INFO has it
    status, document = call(app, latin1, raw_path="/v1/gates/score_drift/caf%C3%A9")
    assert (status, document["subject"]) == (200, "café")
    # Decoded once: a literal %25 stays a percent sign.
    assert call(app, "/x", raw_path="/v1/gates/canary/ready%252F")[0] == 404
    assert request(app, "/metrics", raw_path="/metrics")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/gates/guardrail/nobody",
        "/v1/gates/srm/policy%3Agpt-4",
        "/v1/gates/canary",
        "/v1/gates/canary/ready/extra",
        "/v1/agents",
        "/v1/agents/ready/gates",
        "/v1",
        "/",
        "/v2/gates",
        "/healthz/more",
    ],
)
def test_unknown_paths_and_gates_are_404(app: GateAPI, path: str) -> None:
    status, document = call(app, path)
    assert status == 404 and list(document) == ["error"] and document["error"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/v1/gates", "GET, HEAD"),
        ("DELETE", "/v1/gates/canary/ready", "GET, HEAD"),
        ("PUT", "/v1/agents/ready", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("GET", "/v1/flagger/rollout", "POST"),
        ("PUT", "/v1/flagger/rollback", "POST"),
        ("HEAD", "/v1/flagger/confirm-promotion", "POST"),
    ],
)
def test_an_unsupported_method_on_a_known_path_is_405_with_allow(
    app: GateAPI, method: str, path: str, allowed: str
) -> None:
    status, headers, payload = request(app, path, method, body={})
    assert (status, headers["Allow"]) == (405, allowed)
    if method != "HEAD":
        assert json.loads(payload) == {"error": f"{path} takes {allowed.replace(', ', ' or ')}"}
    for method_allowed in allowed.split(", "):
        status = request(app, path, method_allowed, body=flagger("ready", "ready"))[0]
        assert status in (200, 409)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/metrics",
        "/v1/gates",
        "/v1/gates/residual_drift/policy%2Fgpt",
        "/v1/agents/ready",
        "/v1/agents/nobody",
        "/v1/gates/nothing/nobody",
    ],
)
def test_head_is_get_without_the_body(
    app: GateAPI, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)  # an agent's hours running, alike in both
    got = request(app, path, raw_path=path)
    head = request(app, path, "HEAD", raw_path=path)
    assert head[2] == b""
    assert head[:2] == (got[0], {**got[1], "Content-Length": str(len(got[2]))})


def test_head_needs_the_token_as_get_does(read_model: ReadModel) -> None:
    app = GateAPI(read_model, CollectorRegistry(), lambda: None, Policy(), token="t" * 32)  # type: ignore[arg-type]
    status, headers, payload = request(app, "/v1/agents/ready", "HEAD")
    assert (status, payload) == (401, b"") and "WWW-Authenticate" in headers
    assert request(app, "/healthz", "HEAD")[:1] == (200,)


def test_an_unknown_path_is_404_whatever_the_method(app: GateAPI) -> None:
    for method in ("GET", "POST", "DELETE"):
        status, headers, _ = request(app, "/v1/nothing", method)
        assert status == 404 and "Allow" not in headers


def test_gates_while_redis_is_down_are_503(app: GateAPI, read_model: ReadModel) -> None:
    read_model.error = redis.ConnectionError("gone")
    for path in ("/v1/gates", "/v1/gates/canary/ready"):
        status, document = call(app, path)
        assert status == 503 and "gone" in document["error"]


# --- agents ---------------------------------------------------------------------------------------


def test_a_rolled_back_agent(app: GateAPI) -> None:
    status, document = call(app, "/v1/agents/rolled")
    assert status == 200
    assert (document["agent"], document["bundle_id"], document["phase"]) == (
        "rolled",
        "v2",
        "rolled_back",
    )
    assert (document["verdict"], document["recommendation"], document["reason"]) == (
        "FAIL",
        "rollback",
        "quality_regression",
    )
    assert document["hours_running"] == pytest.approx(2.0, abs=0.01)
    # Its experiment gates only, in the API's shape.
    assert [(g["gate"], g["verdict"], g["action"]) for g in document["gates"]] == [
        ("canary", "FAIL", "rollback"),  # as announced, for as long as the verdict stands
        ("guardrail", "PASS", "none"),
    ]
    assert all("kind" not in g and "evaluated_at" not in g for g in document["gates"])


def test_a_healthy_agent(app: GateAPI) -> None:
    status, document = call(app, "/v1/agents/ready")
    assert status == 200
    assert (document["verdict"], document["recommendation"], document["phase"]) == (
        "PASS",
        "promote",
        "monitoring",
    )
    assert [g["action"] for g in document["gates"]] == ["promote"]
    status, document = call(app, "/v1/agents/watching")
    assert (status, document["verdict"], document["gates"]) == (200, "INCONCLUSIVE", [])


def test_an_agent_row_of_an_earlier_worker_is_answered() -> None:
    """A row stored before ``comparison``, ``rollback`` and ``history`` were written (an
    earlier worker's state) is answered, not a 500 that fails every controller's check."""
    row = agent_view("old", "monitoring", "PASS", "promotion_ready", "promote")
    for later in ("comparison", "rollback", "history"):
        del row[later]
    views = {"experiment": {"old": {"experiment": {}, "agent": row}}}
    app = GateAPI(ReadModel(Snapshot(views=views)), CollectorRegistry(), lambda: None, Policy())  # type: ignore[arg-type]
    status, document = call(app, "/v1/agents/old")
    assert (status, document["verdict"], document["history"]) == (200, "PASS", [])
    status, document = call(app, "/v1/flagger/rollout", "POST", body={"name": "old"})
    assert (status, document["verdict"]) == (200, "PASS")


@pytest.mark.parametrize("name", ["nobody", "exp", "policy%3Agpt-4"])
def test_an_unknown_agent_is_404(app: GateAPI, name: str) -> None:
    status, document = call(app, f"/v1/agents/{name}")
    assert status == 404 and list(document) == ["error"]


def test_while_the_state_cannot_be_read_hold_then_fail(app: GateAPI, read_model: ReadModel) -> None:
    """The fail-safe: HOLD (never promote blind), then FAIL from the state_error_limit-th
    request in a row on (do not wait for ever); one success starts the count again."""
    now = [0.0]
    app._reads = Fresh(FRESH_FOR, clock=lambda: now[0])
    limit = CanaryPolicy().state_error_limit
    assert limit == 5
    read_model.error = redis.ConnectionError("Connection refused")
    answers = [call(app, "/v1/agents/ready") for _ in range(limit + 2)]
    assert all(status == 200 for status, _ in answers)
    assert [(d["verdict"], d["recommendation"]) for _, d in answers] == [("HOLD", "hold")] * (
        limit - 1
    ) + [("FAIL", "rollback")] * 3
    first = answers[0][1]
    assert first == {
        "agent": "ready",
        "bundle_id": None,
        "phase": None,
        "canary_percent": None,
        "hours_running": None,
        "verdict": "HOLD",
        "recommendation": "hold",
        "reason": "state_unavailable",
        "detail": "1 request(s) in a row could not read the state: Connection refused",
        "gates": [],
    }
    assert answers[-1][1]["detail"].startswith(f"{limit + 2} request(s) in a row")
    # Unknown agents get the fail-safe too: the state that would say so cannot be read.
    assert call(app, "/v1/agents/nobody")[1]["verdict"] == "HOLD"
    read_model.error = None
    assert call(app, "/v1/agents/ready")[1]["verdict"] == "PASS"
    read_model.error = redis.ConnectionError("again")
    # The successful read is kept FRESH_FOR seconds (a failed one never is): the state was
    # readable that recently, and its answer stands until then.
    assert call(app, "/v1/agents/ready")[1]["verdict"] == "PASS"
    now[0] += FRESH_FOR
    document = call(app, "/v1/agents/ready")[1]
    assert document["verdict"] == "HOLD"  # counted afresh
    assert document["detail"].startswith("1 request(s) in a row")


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        redis.ResponseError("LOADING"),
        RedisClusterException("Redis Cluster cannot be connected"),
    ],
    ids=["connection", "timeout", "response", "cluster"],
)
def test_every_state_error_takes_the_fail_safe(
    app: GateAPI, read_model: ReadModel, error: Exception
) -> None:
    read_model.error = error
    document = call(app, "/v1/agents/ready")[1]
    assert (document["verdict"], document["reason"]) == ("HOLD", "state_unavailable")
    status, document = call(app, "/v1/gates")
    assert status == 503 and str(error) in document["error"]
    read_model.client.error = error
    assert call(app, "/healthz")[0] == 503


def test_the_error_count_is_per_agent_and_the_limit_per_agent_policy(read_model: ReadModel) -> None:
    policy = Policy(agents={"ready": AgentPolicy(canary=CanaryPolicy(state_error_limit=2))})
    app = GateAPI(read_model, CollectorRegistry(), lambda: None, policy)  # type: ignore[arg-type]
    read_model.error = redis.TimeoutError("slow")
    assert call(app, "/v1/agents/ready")[1]["verdict"] == "HOLD"
    assert call(app, "/v1/agents/watching")[1]["verdict"] == "HOLD"
    assert call(app, "/v1/agents/ready")[1]["verdict"] == "FAIL"
    assert [call(app, "/v1/agents/watching")[1]["verdict"] for _ in range(4)] == [
        "HOLD",
        "HOLD",
        "HOLD",
        "FAIL",
    ]


# --- Flagger's webhooks ---------------------------------------------------------------------------


def flagger(name: str | None = None, agent: Any = None) -> dict[str, Any]:
    """Flagger's webhook payload (its canary's name, namespace, phase and the metadata)."""
    payload: dict[str, Any] = {"namespace": "prod", "phase": "Progressing", "checksum": "x"}
    if name is not None:
        payload["name"] = name
    if agent is not None:
        payload["metadata"] = {"agent": agent, "type": "confirm-rollout"}
    return payload


@pytest.mark.parametrize(
    ("hook", "agent", "status"),
    [
        ("rollout", "ready", 200),
        ("rollout", "watching", 200),
        ("rollout", "stalled", 200),
        ("rollout", "held", 409),
        ("rollout", "paused", 409),
        ("rollout", "failing", 409),
        ("rollout", "rolled", 409),
        ("confirm-promotion", "ready", 200),
        ("confirm-promotion", "watching", 409),
        ("confirm-promotion", "held", 409),
        ("confirm-promotion", "rolled", 409),
        ("rollback", "rolled", 200),
        ("rollback", "failing", 200),  # recommended, not yet rolled back
        ("rollback", "ready", 409),
        ("rollback", "held", 409),
        ("rollback", "watching", 409),
    ],
)
def test_flagger_hooks(app: GateAPI, hook: str, agent: str, status: int) -> None:
    _, verdict, reason, recommended = AGENTS[agent]
    answer = call(app, f"/v1/flagger/{hook}", "POST", body=flagger("podinfo", agent))
    assert answer == (
        status,
        {
            "agent": agent,
            "hook": hook,
            "verdict": verdict,
            "recommendation": recommended,
            "reason": reason,
        },
    )


def test_the_agent_is_metadata_agent_else_the_name(app: GateAPI) -> None:
    assert call(app, "/v1/flagger/rollback", "POST", body=flagger("rolled"))[1]["agent"] == "rolled"
    both = flagger("watching", "rolled")
    assert call(app, "/v1/flagger/rollback", "POST", body=both) == (
        200,
        {
            "agent": "rolled",
            "hook": "rollback",
            "verdict": "FAIL",
            "recommendation": "rollback",
            "reason": "quality_regression",
        },
    )
    for metadata in ({"agent": ""}, {}, "rolled", ["rolled"], None):
        payload = {**flagger("rolled"), "metadata": metadata}
        assert call(app, "/v1/flagger/rollback", "POST", body=payload)[1]["agent"] == "rolled"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"raw": b"{not json"}, "the body is not Flagger's JSON payload"),
        ({"raw": b"\xff\xfe"}, "the body is not Flagger's JSON payload"),
        ({"raw": b"{}", "content_length": "two"}, "the body is not Flagger's JSON payload"),
        ({"body": ["rolled"]}, "the body must be a JSON object"),
        ({"body": "rolled"}, "the body must be a JSON object"),
        ({"body": {}}, "no agent: give metadata.agent or name"),
        ({"raw": b""}, "no agent: give metadata.agent or name"),
        ({"body": flagger()}, "no agent: give metadata.agent or name"),
        ({"body": {"name": 7}}, "no agent: give metadata.agent or name"),
        ({"body": {"name": "", "metadata": {"agent": 3}}}, "no agent: give metadata.agent or name"),
    ],
)
def test_a_bad_hook_body_is_400(app: GateAPI, kwargs: dict[str, Any], error: str) -> None:
    status, document = call(app, "/v1/flagger/rollout", "POST", **kwargs)
    assert status == 400 and document["error"].startswith(error)


def test_a_hook_body_over_a_mebibyte_is_413_and_a_negative_length_400(app: GateAPI) -> None:
    large = orjson.dumps({**flagger("rolled"), "padding": "x" * MAX_BODY})
    status, document = call(app, "/v1/flagger/rollout", "POST", raw=large)
    assert status == 413
    assert document["error"] == f"the body is {len(large)} bytes, over the limit of {MAX_BODY}"
    # At the limit it is read and answered.
    exact = orjson.dumps(flagger("rolled"))
    exact = exact[:-1] + b" " * (MAX_BODY - len(exact)) + b"}"
    assert call(app, "/v1/flagger/rollout", "POST", raw=exact)[0] == 409
    status, document = call(app, "/v1/flagger/rollout", "POST", raw=b"{}", content_length="-1")
    assert status == 400 and "negative" in document["error"]


def test_a_sender_of_a_large_body_reads_the_413_over_a_real_socket(app: GateAPI) -> None:
    """Closed on unread bytes, the connection would reset and the client would see that
    instead of the answer (it did for every body of 8 MiB before the body was drained)."""
    server = serve(app, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/v1/flagger/rollout"
        body = orjson.dumps({**flagger("rolled"), "padding": "x" * (8 * MAX_BODY)})
        for _ in range(3):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(urllib.request.Request(url, body, method="POST"), timeout=10)
            assert answer.value.code == 413
            assert json.loads(answer.value.read())["error"].startswith(f"the body is {len(body)}")
    finally:
        server.close()


def test_a_hook_about_another_bundle_gets_no_verdict(app: GateAPI) -> None:
    """metadata.bundle_id names the bundle the controller rolls out: when driftgate follows
    another one, it has no verdict of it to give."""
    other = {**flagger("podinfo", "ready"), "metadata": {"agent": "ready", "bundle_id": "v1"}}
    for hook in ("rollout", "confirm-promotion", "rollback"):
        status, answer = call(app, f"/v1/flagger/{hook}", "POST", body=other)
        assert status == 409
        assert (answer["verdict"], answer["recommendation"]) == ("INCONCLUSIVE", "monitor")
        assert answer["reason"] == "driftgate follows bundle 'v2', not 'v1'"
    same = {**other, "metadata": {"agent": "ready", "bundle_id": "v2"}}
    assert call(app, "/v1/flagger/confirm-promotion", "POST", body=same)[0] == 200


def test_a_hook_about_an_unknown_agent_is_404(app: GateAPI) -> None:
    status, document = call(app, "/v1/flagger/rollout", "POST", body=flagger("nobody"))
    assert status == 404 and document == {"error": "unknown agent 'nobody'"}


def test_an_unknown_hook_is_404_and_hooks_take_post(app: GateAPI) -> None:
    status, document = call(app, "/v1/flagger/pre-rollout", "POST", body=flagger("ready"))
    assert status == 404 and "known: rollout, confirm-promotion, rollback" in document["error"]
    for method in ("GET", "PUT", "DELETE"):
        status, document = call(app, "/v1/flagger/rollout", method)
        assert (status, document) == (405, {"error": "/v1/flagger/rollout takes POST"})
    assert call(app, "/v1/flagger/pre-rollout")[0] == 404  # not a hook, whatever the method
    assert call(app, "/v1/flagger", "POST", body=flagger("ready"))[0] == 404
    assert call(app, "/v1/flagger/rollout/extra", "POST", body=flagger("ready"))[0] == 404


def test_hooks_under_the_fail_safe(app: GateAPI, read_model: ReadModel) -> None:
    read_model.error = redis.ConnectionError("down")
    body = flagger("podinfo", "ready")
    assert call(app, "/v1/flagger/rollout", "POST", body=body)[0] == 409  # HOLD
    assert call(app, "/v1/flagger/confirm-promotion", "POST", body=body)[0] == 409
    assert call(app, "/v1/flagger/rollback", "POST", body=body)[0] == 409  # not yet
    assert call(app, "/v1/flagger/rollout", "POST", body=body)[0] == 409
    status, answer = call(app, "/v1/flagger/rollback", "POST", body=body)  # the 5th in a row
    assert (status, answer["verdict"], answer["reason"]) == (200, "FAIL", "state_unavailable")


def test_hooks_naming_the_bundle_under_the_fail_safe(app: GateAPI, read_model: ReadModel) -> None:
    read_model.error = redis.ConnectionError("down")
    body = {**flagger("podinfo"), "metadata": {"agent": "ready", "bundle_id": "v2"}}
    answers = [call(app, "/v1/flagger/rollback", "POST", body=body) for _ in range(5)]
    assert [status for status, _ in answers] == [409, 409, 409, 409, 200]
    assert all(answer["reason"] == "state_unavailable" for _, answer in answers)
