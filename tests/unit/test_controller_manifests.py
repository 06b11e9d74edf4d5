"""The Argo Rollouts and Flagger manifests and docs/canary.md stay in step with the HTTP API.

No cluster here: the manifests are parsed, their requests are sent to the real WSGI
application (over a read model that serves fixed agents), and Argo's scoring of an
analysis run is replayed from its documented rules.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry

from monitor import Settings
from monitor.cli import build_parser
from monitor.config import ENVIRONMENT, CanaryPolicy, GuardrailPolicy, Policy, load_policy
from monitor.events._decisions import GateDocument
from monitor.gates import SEVERITY
from monitor.runtime._preflight import TOPIC_NAMES
from monitor.serve._http import FLAGGER_HOOKS, GateAPI
from monitor.store._read_model import Snapshot
from monitor.subjects._experiments import CanaryEvent

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "canary.md"
ARGO_TEMPLATES = ROOT / "deploy" / "argo" / "analysis-template.yaml"
ROLLOUT = ROOT / "deploy" / "argo" / "rollout-example.yaml"
FLAGGER = ROOT / "deploy" / "flagger" / "canary.yaml"
VERDICTS = tuple(SEVERITY)  # every verdict an agent can have
# Flagger webhook type -> the driftgate hook it must call.
FLAGGER_TYPES = {
    "confirm-rollout": "rollout",
    "pre-rollout": "rollout",
    "rollout": "rollout",
    "confirm-promotion": "confirm-promotion",
    "rollback": "rollback",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def templates() -> dict[str, dict[str, Any]]:
    found = {doc["metadata"]["name"]: doc for doc in documents(ARGO_TEMPLATES)}
    assert all(doc["kind"] == "AnalysisTemplate" for doc in found.values())
    return found


def web_metrics() -> list[dict[str, Any]]:
    metrics = templates()["driftgate-verdict"]["spec"]["metrics"]
    assert metrics and all("web" in metric["provider"] for metric in metrics)
    return metrics


def rollout() -> dict[str, Any]:
    (doc,) = documents(ROLLOUT)
    assert doc["kind"] == "Rollout"
    return doc


def canary() -> dict[str, Any]:
    (doc,) = documents(FLAGGER)
    assert doc["kind"] == "Canary"
    return doc


def docs() -> str:
    return DOCS.read_text()


# --- the API, over fixed agents -------------------------------------------------------------


def agent_view(name: str, verdict: str, recommendation: str, phase: str = "monitoring") -> dict:
    return {
        "agent": name,
        "bundle_id": f"{name}-v2",
        "phase": phase,
        "canary_percent": 10.0,
        "deployed_at": 1_700_000_000.0,
        "verdict": verdict,
        "reason": "because",
        "recommendation": recommendation,
        "comparison": None,
        "rollback": None,
        "history": [],
    }


class FixedReadModel:
    """What GateAPI reads: ``snapshot()``, ``subject()`` and ``client.ping()``; ``error``
    makes them raise."""

    def __init__(self, *views: dict[str, Any], error: Exception | None = None) -> None:
        self.views = {view["agent"]: view for view in views}
        self.error = error
        self.client = self

    def ping(self) -> bool:
        if self.error:
            raise self.error
        return True

    def snapshot(self) -> Snapshot:
        if self.error:
            raise self.error
        snapshot = Snapshot()
        snapshot.views["experiment"] = {name: {"agent": v} for name, v in self.views.items()}
        snapshot.gates = [
            GateDocument(
                "canary",
                name,
                view["verdict"],
                "none",
                view["reason"],
                None,
                "2024-01-15T19:00:00Z",
                {},
                evaluated_at=None,
                kind="experiment",
            )
            for name, view in self.views.items()
        ]
        return snapshot

    def subject(self, kind: str, name: str) -> Snapshot:
        return self.snapshot().of_subject(kind, name)


def call(
    api: GateAPI,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request to the WSGI application."""
    raw = b"" if body is None else json.dumps(body).encode()
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    status: list[str] = []
    answer = b"".join(api(environ, lambda line, headers: status.append(line)))
    return int(status[0].split()[0]), json.loads(answer)


def serve(read_model: FixedReadModel, token: str | None = None) -> GateAPI:
    return GateAPI(read_model, CollectorRegistry(), lambda: None, Policy(), token)  # type: ignore[arg-type]


def ask(
    read_model: FixedReadModel,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A request to an API that has :data:`TOKEN` when ``headers`` are given, none else."""
    return call(
        serve(read_model, TOKEN if headers is not None else None), method, path, body, headers
    )


# The worker's DRIFTGATE_API_TOKEN, as the Secret (Argo) and envsubst (Flagger) give it.
TOKEN = "token-of-the-manifest-tests-0123"


def argo_headers(metric: dict[str, Any]) -> dict[str, str]:
    """The headers Argo sends for a web metric, the Secret's token in its argument."""
    return {
        header["key"]: header["value"].replace("{{args.api-token}}", TOKEN)
        for header in metric["provider"]["web"]["headers"]
    }


def flagger_metadata(hook: dict[str, Any]) -> dict[str, Any]:
    """A webhook's metadata as Flagger sends it, after envsubst filled in the token."""
    return {k: v.replace("${DRIFTGATE_API_TOKEN}", TOKEN) for k, v in hook["metadata"].items()}


# --- Argo's rules, replayed ------------------------------------------------------------------


def condition(expression: str, result: str) -> bool:
    """The two forms of Argo's expr language the templates use."""
    match = re.fullmatch(r'result (==|!=) "([A-Z]+)"', expression)
    assert match, f"unexpected condition {expression!r}"
    return (result == match[2]) == (match[1] == "==")


def measure(metric: dict[str, Any], result: str) -> str:
    """Argo's evaluation of one look with both conditions set."""
    if condition(metric["failureCondition"], result):
        return "Failed"
    if condition(metric["successCondition"], result):
        return "Successful"
    return "Inconclusive"


def score(metric: dict[str, Any], phases: list[str]) -> str:
    """A metric's phase after these looks (Argo's assessMetricStatus)."""
    failed = inconclusive = count = errors = 0
    for phase in phases:
        if phase == "Error":
            errors += 1
        else:
            errors, count = 0, count + 1
            failed += phase == "Failed"
            inconclusive += phase == "Inconclusive"
        if errors > metric.get("consecutiveErrorLimit", 4):
            return "Error"
        if inconclusive > metric.get("inconclusiveLimit", 0):
            return "Inconclusive"
        if failed > metric.get("failureLimit", 0):
            return "Failed"
        if count >= metric["count"]:
            return "Successful"
    return "Running"


def run(looks: list[str]) -> str:
    """The analysis run over driftgate's answers (a verdict, or "error" for no answer).

    Every metric looks at the same times; the run ends when every metric has completed, or
    at once when one of them fails, errs or is inconclusive (the worst of them wins).
    """
    metrics = web_metrics()
    order = ["Successful", "Inconclusive", "Error", "Failed"]
    for end in range(1, len(looks) + 1):
        phases = [
            score(m, ["Error" if v == "error" else measure(m, v) for v in looks[:end]])
            for m in metrics
        ]
        if any(p not in ("Running", "Successful") for p in phases) or all(
            p == "Successful" for p in phases
        ):
            return max((p for p in phases if p != "Running"), key=order.index)
    return "Running"


# --- Argo Rollouts ----------------------------------------------------------------------------


def test_argo_verdict_metric_asks_the_agent_endpoint_of_the_contract() -> None:
    template = templates()["driftgate-verdict"]
    agent_arg, token_arg = template["spec"]["args"]
    assert agent_arg == {"name": "agent"}
    assert token_arg == {
        "name": "api-token",
        "valueFrom": {"secretKeyRef": {"name": "driftgate-api-token", "key": "token"}},
    }
    verdict = web_metrics()[0]
    assert verdict["successCondition"] == 'result == "PASS"'
    assert verdict["failureCondition"] == 'result == "FAIL"'
    for metric in web_metrics():
        web = metric["provider"]["web"]
        assert web["jsonPath"] == "{$.verdict}"
        url = urlsplit(web["url"])
        assert url.port == Settings().metrics_port
        assert url.hostname and url.hostname.startswith("driftgate.")
        assert url.path == "/v1/agents/{{args.agent}}"
        # The path is a route of the API: known agent 200, unknown agent 404 (an Argo error).
        path = url.path.replace("{{args.agent}}", "inbox_triage")
        held = FixedReadModel(agent_view("inbox_triage", "HOLD", "hold"))
        assert argo_headers(metric) == {"Authorization": f"Bearer {TOKEN}"}
        status, answer = ask(held, "GET", path, headers=argo_headers(metric))
        assert status == 200 and answer["verdict"] == "HOLD"
        assert ask(FixedReadModel(), "GET", path, headers=argo_headers(metric)) == (
            404,
            {"error": "unknown agent 'inbox_triage'"},
        )
        # Without the Secret's token: 401, an Argo error like the 404.
        assert ask(held, "GET", path, headers={})[0] == 401


def test_argo_conditions_sort_every_verdict() -> None:
    verdict, hold = web_metrics()
    expected_verdict = {"PASS": "Successful", "FAIL": "Failed"}
    expected_hold = {"HOLD": "Inconclusive", "FAIL": "Failed"}
    for result in VERDICTS:
        assert measure(verdict, result) == expected_verdict.get(result, "Inconclusive"), result
        assert measure(hold, result) == expected_hold.get(result, "Successful"), result


def test_argo_window_promotes_on_a_pass_pauses_without_one_and_aborts_on_fail() -> None:
    for metric in web_metrics():
        assert metric["interval"] and metric["initialDelay"]
        assert metric["failureLimit"] == 0 and metric["consecutiveErrorLimit"] >= 1
    verdict = web_metrics()[0]
    count = verdict["count"]
    # At count or above a window of nothing but INCONCLUSIVE would promote; at 0 (Argo's
    # default) the first look of every step, which has too little data, would pause.
    assert verdict["inconclusiveLimit"] == count - 1
    waiting = ["INCONCLUSIVE"] * (count - 1)
    assert run([*waiting, "INCONCLUSIVE"]) == "Inconclusive"  # a person decides
    assert run(["INCONCLUSIVE", "PASS", *waiting[1:]]) == "Successful"
    assert run([*waiting[:3], "FAIL"]) == "Failed"
    assert run(["INCONCLUSIVE", "HOLD", "HOLD", "HOLD"]) == "Inconclusive"
    assert run(["PASS", "HOLD", *waiting[1:]]) == "Successful"  # one HOLD is waited out
    assert run(["error"] * verdict["consecutiveErrorLimit"] + ["PASS"] * count) == "Successful"
    assert run(["error"] * (verdict["consecutiveErrorLimit"] + 1)) == "Error"


def test_argo_against_the_fail_safe_holds_then_fails() -> None:
    """Redis down: 200 HOLD (an inconclusive look, not an Argo error), FAIL at the limit."""
    api = serve(FixedReadModel(error=redis.ConnectionError("refused")), TOKEN)
    path = urlsplit(web_metrics()[0]["provider"]["web"]["url"]).path
    path = path.replace("{{args.agent}}", "inbox_triage")
    answers = []
    for _ in range(CanaryPolicy().state_error_limit):
        status, body = call(api, "GET", path, headers=argo_headers(web_metrics()[0]))
        assert status == 200
        answers.append(body["verdict"])
    assert answers == ["HOLD"] * (len(answers) - 1) + ["FAIL"]
    assert measure(web_metrics()[0], answers[-1]) == "Failed"


def event_script() -> tuple[str, list[str], dict[str, Any]]:
    """The printf format of the Job, its variables in order, and the container."""
    job = templates()["driftgate-canary-event"]["spec"]["metrics"][0]["provider"]["job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    match = re.search(r"printf '([^']*)' \\\s*((?:\"\$\w+\"\s*)+)", script)
    assert match, script
    return match[1], re.findall(r'"\$(\w+)"', match[2]), container


def rendered_event(variables: dict[str, str]) -> bytes:
    form, names, _ = event_script()
    assert form.endswith("\\n")
    return (form[:-2] % tuple(variables[name] for name in names)).encode()


def test_event_job_sends_a_canary_event_of_the_contract() -> None:
    template = templates()["driftgate-canary-event"]
    declared = {arg["name"] for arg in template["spec"]["args"]}
    _, names, container = event_script()
    env = {item["name"]: item for item in container["env"]}
    script = container["args"][0]
    assert set(names) - {"TS"} <= set(env) and "TS=$(date +%s)" in script
    for item in env.values():
        if "value" in item:
            for arg in re.findall(r"\{\{args\.([\w-]+)\}\}", item["value"]):
                assert arg in declared, arg
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    assert {name for name in env if name.startswith("DRIFTGATE_")} <= set(ENVIRONMENT.values())
    produce = re.search(r"driftgate produce (\S+) --topic (\S+)", script)
    assert produce and produce[2] in TOPIC_NAMES and produce[2] == "canary"
    assert f"> {produce[1]}" in script
    event = msgspec.json.decode(
        rendered_event(
            {
                "JOB_NAME": "run-1.canary-event.1",
                "TS": "1705327200",
                "AGENT": "inbox_triage",
                "BUNDLE_ID": "7c9f6d8b5",
                "ACTION": "deploy",
                "CANARY_PERCENT": "10",
            }
        ),
        type=CanaryEvent,
    )
    assert (event.agent, event.action, event.canary_percent) == ("inbox_triage", "deploy", 10)
    assert event.event_id == "argo-run-1.canary-event.1"


def analysis_steps() -> Iterator[tuple[int, dict[str, Any]]]:
    for index, step in enumerate(rollout()["spec"]["strategy"]["canary"]["steps"]):
        if "analysis" in step:
            yield index, step["analysis"]


def test_rollout_walks_the_ladder_telling_driftgate_then_asking_it() -> None:
    steps = rollout()["spec"]["strategy"]["canary"]["steps"]
    weights = [step["setWeight"] for step in steps if "setWeight" in step]
    assert weights == [10, 50, 100] == list(CanaryPolicy().ladder)
    known = templates()
    agents = set()
    for index, analysis in analysis_steps():
        (ref,) = analysis["templates"]
        template = known[ref["templateName"]]
        given = {arg["name"]: arg for arg in analysis["args"]}
        defaults = {"value", "valueFrom"}  # a value, or one from a Secret
        required = {a["name"] for a in template["spec"]["args"] if not defaults & set(a)}
        assert required <= set(given), (index, required - set(given))
        agents.add(given["agent"]["value"])
    assert len(agents) == 1
    for position, weight in enumerate(weights):
        at = next(i for i, step in enumerate(steps) if step.get("setWeight") == weight)
        event = steps[at + 1]["analysis"]
        args = {arg["name"]: arg for arg in event["args"]}
        assert event["templates"][0]["templateName"] == "driftgate-canary-event"
        assert args["action"]["value"] == ("deploy" if position == 0 else "promote")
        assert args["canary-percent"]["value"] == str(weight)
        assert args["bundle-id"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
        rendered = {
            "JOB_NAME": "job",
            "TS": "1705327200",
            "AGENT": args["agent"]["value"],
            "BUNDLE_ID": "7c9f6d8b5",
            "ACTION": args["action"]["value"],
            "CANARY_PERCENT": args["canary-percent"]["value"],
        }
        msgspec.json.decode(rendered_event(rendered), type=CanaryEvent)
        if weight < 100:  # then wait for driftgate's verdict before the next weight
            gate = steps[at + 2]["analysis"]["templates"][0]["templateName"]
            assert gate == "driftgate-verdict"
    assert "analysis" in steps[-1]  # the promotion to 100 is announced


def test_rollout_labels_pods_with_driftgates_variant_names() -> None:
    spec = rollout()["spec"]
    strategy = spec["strategy"]["canary"]
    policy = CanaryPolicy()
    assert strategy["canaryMetadata"]["labels"]["role"] == policy.canary_variant
    assert strategy["stableMetadata"]["labels"]["role"] == policy.control_variant
    (volume,) = spec["template"]["spec"]["volumes"]
    (item,) = volume["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == "metadata.labels['role']"


# --- Flagger ----------------------------------------------------------------------------------


def webhooks() -> list[dict[str, Any]]:
    return canary()["spec"]["analysis"]["webhooks"]


def test_flagger_webhooks_call_the_hooks_of_the_contract() -> None:
    hooks = webhooks()
    assert {"pre-rollout", "rollout", "confirm-promotion", "rollback"} <= {h["type"] for h in hooks}
    agents = set()
    for hook in hooks:
        url = urlsplit(hook["url"])
        assert url.port == Settings().metrics_port and url.hostname.startswith("driftgate.")
        expected = FLAGGER_TYPES[hook["type"]]
        assert expected in FLAGGER_HOOKS
        assert url.path == f"/v1/flagger/{expected}", hook["name"]
        assert isinstance(hook["metadata"]["agent"], str) and hook["metadata"]["agent"]
        assert hook["metadata"]["token"] == "${DRIFTGATE_API_TOKEN}"  # for envsubst
        agents.add(hook["metadata"]["agent"])
    assert len(agents) == 1 and agents != {canary()["metadata"]["name"]}


@pytest.mark.parametrize(
    ("verdict", "recommendation", "phase", "allowed"),
    [
        ("INCONCLUSIVE", "monitor", "monitoring", {"rollout"}),
        ("PASS", "promote", "monitoring", {"rollout", "confirm-promotion"}),
        ("HOLD", "hold", "monitoring", set()),
        ("WARN", "monitor", "monitoring", {"rollout"}),
        ("FAIL", "rollback", "monitoring", {"rollback"}),
        ("FAIL", "rollback", "rolled_back", {"rollback"}),
    ],
)
def test_flagger_payloads_get_the_documented_answers(
    verdict: str, recommendation: str, phase: str, allowed: set[str]
) -> None:
    resource = canary()
    for hook in webhooks():
        agent = hook["metadata"]["agent"]
        read_model = FixedReadModel(agent_view(agent, verdict, recommendation, phase))
        payload = {
            "name": resource["metadata"]["name"],
            "namespace": resource["metadata"]["namespace"],
            "phase": "Progressing",
            "metadata": flagger_metadata(hook),
        }
        path = urlsplit(hook["url"]).path
        status, answer = ask(read_model, "POST", path, payload, headers={})
        target = FLAGGER_TYPES[hook["type"]]
        assert status == (200 if target in allowed else 409), (hook["type"], answer)
        assert 200 <= status <= 202 or status == 409  # Flagger's success is 200-202
        assert (answer["agent"], answer["verdict"]) == (agent, verdict)
        # Not filled in (or another token): 401, a failed check for Flagger.
        unfilled = {**payload, "metadata": hook["metadata"]}
        assert ask(read_model, "POST", path, unfilled, headers={})[0] == 401


def policy_example() -> Policy:
    blocks = re.findall(r"```yaml\n(.*?)```", docs(), re.S)
    (block,) = [b for b in blocks if b.startswith("guardrails:") and "\nagents:" in b]
    return load_policy_text(block)


def load_policy_text(text: str) -> Policy:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        return load_policy(handle.name)
    finally:
        Path(handle.name).unlink()


def test_flagger_step_and_argo_weights_match_the_documented_ladders() -> None:
    policy = policy_example()
    flagger_agent = webhooks()[0]["metadata"]["agent"]
    steps = canary()["spec"]["analysis"]["stepWeights"]
    assert [*steps, 100] == list(policy.for_agent(flagger_agent).canary.ladder)
    argo_agent = next(analysis_steps())[1]["args"][0]["value"]
    steps = rollout()["spec"]["strategy"]["canary"]["steps"]
    weights = [step["setWeight"] for step in steps if "setWeight" in step]
    assert weights == list(policy.for_agent(argo_agent).canary.ladder)


# --- docs/canary.md ---------------------------------------------------------------------------


def test_docs_policy_table_gives_the_code_defaults() -> None:
    rows = re.findall(r"^\| `(guardrails|canary)\.(\w+)` \| `([^`]+)` \|", docs(), re.M)
    table = {(section, key): yaml.safe_load(value) for section, key, value in rows}
    for section, cls in (("guardrails", GuardrailPolicy), ("canary", CanaryPolicy)):
        defaults = cls()
        for field in fields(cls):
            assert (section, field.name) in table, f"{section}.{field.name} missing"
            value = getattr(defaults, field.name)
            shown = table[(section, field.name)]
            assert (list(value) if isinstance(value, tuple) else value) == shown, field.name
    assert len(table) == len(fields(GuardrailPolicy)) + len(fields(CanaryPolicy))


def test_docs_policy_keys_and_reasons_exist() -> None:
    text = docs()
    known = {
        "guardrails": {f.name for f in fields(GuardrailPolicy)},
        "canary": {f.name for f in fields(CanaryPolicy)},
    }
    for section, key in re.findall(r"`(?:agents\.\w+\.)?(guardrails|canary)\.(\w+)", text):
        if key not in ("pii", "toxicity", "latency_ms", "unit_cost"):  # telemetry fields
            assert key in known[section], f"{section}.{key}"
    table = text.split("### Verdicts and reasons")[1].split("\n## ")[0]
    reasons = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert len(reasons) >= 15
    code = "".join(p.read_text() for p in (ROOT / "monitor").rglob("*.py"))
    for reason in reasons:
        assert f'"{reason}"' in code, reason


def test_docs_name_only_real_variables_ports_paths_and_commands() -> None:
    text = docs()
    contract_variables = set(ENVIRONMENT.values())
    named = set(re.findall(r"\bDRIFTGATE_[A-Z_]+\b", text))
    assert named and named <= contract_variables, named - contract_variables

    settings = Settings()
    ports = {settings.metrics_port, int(settings.kafka_bootstrap.rsplit(":", 1)[1])}
    ports.add(int(urlsplit(settings.redis_url).port or 0))
    mentioned = {int(port) for port in re.findall(r"[A-Za-z\]`]:(\d{2,5})\b", text)}
    assert settings.metrics_port in mentioned and mentioned <= ports, mentioned - ports

    read_model = FixedReadModel(agent_view("inbox_triage", "PASS", "promote"))
    paths = set(re.findall(r"(/v1/[\w{}.,/-]+|/healthz|/metrics)", text))
    assert {"/healthz", "/v1/gates", "/v1/agents/{agent}", "/v1/flagger/{hook}"} <= paths
    for path in sorted(paths):
        for concrete in expand(path.rstrip(".,")):
            method = "POST" if concrete.startswith("/v1/flagger/") else "GET"
            if concrete == "/metrics":
                continue  # served by prometheus_client beside the API
            status, answer = ask(read_model, method, concrete, {"name": "inbox_triage"})
            error = answer.get("error", "") if status >= 400 else ""
            assert "no such path" not in error and "unknown Flagger hook" not in error, concrete

    (subcommands,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    commands = set(subcommands.choices)
    used = set(re.findall(r"`driftgate ([a-z]+)\b", text))  # inline code
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):  # and shell blocks
        used |= set(re.findall(r"^\s*driftgate ([a-z]+)\b", block, re.M))
    assert {"produce", "promote", "rollback"} <= used and used <= commands, used - commands


def expand(path: str) -> list[str]:
    """A documented path with its placeholders filled in."""
    path = path.replace("{{args.agent}}", "inbox_triage").replace("{agent}", "inbox_triage")
    path = path.replace("{gate}", "canary")
    path = path.replace("{subject}", "inbox_triage").replace("{hook}", "rollout")
    choices = re.search(r"\{([\w,-]+)\}", path)
    if choices:
        return [path.replace(choices[0], choice) for choice in choices[1].split(",")]
    return [path]


def test_docs_link_the_manifests_that_exist() -> None:
    links = set(re.findall(r"\]\((\.\./deploy/[^)]+)\)", docs()))
    assert {"../deploy/argo/analysis-template.yaml", "../deploy/argo/rollout-example.yaml"} <= links
    assert "../deploy/flagger/canary.yaml" in links
    for link in links:
        assert (DOCS.parent / link).resolve().is_file(), link


def test_flagger_token_is_read_from_a_secret_the_docs_create() -> None:
    """The command that fills in ``metadata.token`` reads a Secret that docs/canary.md's
    ``kubectl create secret`` lines make, in the Canary's namespace, by its key."""
    text = docs()
    created = {
        (namespace, name, key)
        for namespace, name, literals in re.findall(
            r"kubectl -n (\S+) create secret generic (\S+)((?: \\?\s*--from-literal=[\w-]+=\S+)+)",
            text,
        )
        for key in re.findall(r"--from-literal=([\w-]+)=", literals)
    }
    read = re.search(
        r"DRIFTGATE_API_TOKEN=\$\(kubectl -n (\S+) get secret (\S+) -o "
        r"jsonpath='\{\.data\.([\w-]+)\}' \| base64 -d\)",
        text,
    )
    assert read, "docs/canary.md shows how Flagger's token is filled in"
    assert (read[1], read[2], read[3]) in created, created
    assert read[1] == canary()["metadata"]["namespace"]
    assert read.group(0).split("=", 1)[1] in FLAGGER.read_text().replace("\\\n#     ", "")
