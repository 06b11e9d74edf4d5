"""deploy/kubernetes/ (docs/deploy.md): every manifest valid, and in step with the code,
the other manifests and the docs.

No cluster here. What each check does:

* Built-in kinds (Namespace, ConfigMap, Deployment, Service, PodDisruptionBudget,
  NetworkPolicy) are validated by ``kubernetes-validate`` against the JSON schemas it ships
  (offline), in strict mode (an unknown or misspelt field fails), for the newest
  Kubernetes it ships a schema for (1.37 with kubernetes-validate 1.37) and the oldest
  the docs support (1.25).
* kubernetes-validate has no schema for CRDs: it raises ``SchemaNotFoundError`` for
  ServiceMonitor and PrometheusRule (asserted, so a release that adds them is noticed).
  Those two are validated structurally against the schemas below, written for the fields
  these manifests use after Prometheus Operator's ``monitoring.coreos.com/v1`` API (unknown
  fields refused, durations by the operator's pattern); the PrometheusRule's groups are
  also run through ``promtool check rules`` and the promtool unit tests of
  ``deploy/prometheus/alerts_test.yml`` when promtool is installed.
* ``kubectl kustomize`` (when kubectl is installed; skipped, saying so, otherwise)
  renders the kustomization, and every rendered resource is validated again.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from monitor import Settings
from monitor.cli import build_parser
from monitor.config import ENVIRONMENT, Policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy/kubernetes"
DOCS = ROOT / "docs/deploy.md"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
# The newest Kubernetes whose schemas kubernetes-validate 1.37 ships (pyproject's dev
# extra requires at least that release), and the oldest docs/deploy.md supports.
VERSIONS = ("1.37", "1.25")
# In the contract's HTTP API section: required once the API binds beyond loopback. Not in
# monitor.config.ENVIRONMENT on every branch yet, so named here.
CONTRACT_VARIABLES = set(ENVIRONMENT.values()) | {"DRIFTGATE_API_TOKEN"}

sys.path.insert(0, str(ROOT / "scripts"))
import gen_prometheusrule  # noqa: E402


def manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / name).read_text())  # type: ignore[no-any-return]


def kustomization() -> dict[str, Any]:
    return manifest("kustomization.yaml")


def resources() -> dict[str, dict[str, Any]]:
    """Every resource of the kustomization, by file name."""
    return {name: manifest(name) for name in kustomization()["resources"]}


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in resources().values() if doc["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    (worker,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return worker  # type: ignore[no-any-return]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# --- the schemas ------------------------------------------------------------------------

DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
    "additionalProperties": False,
}


def crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SERVICE_MONITOR = crd(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": STRINGS},
                "additionalProperties": False,
            },
            "namespaceSelector": {"type": "object"},
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        "honorLabels": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
)
PROMETHEUS_RULE = crd(
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string", "pattern": DURATION},
                        "rules": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": {"type": "string"},
                                    "record": {"type": "string"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "for": {"type": "string", "pattern": DURATION},
                                    "keep_firing_for": {"type": "string", "pattern": DURATION},
                                    "labels": STRINGS,
                                    "annotations": STRINGS,
                                },
                                "additionalProperties": False,
                            },
                        },
                    },
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    },
)
CUSTOM = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


def validate(resource: dict[str, Any], version: str) -> None:
    """kubernetes-validate for built-in kinds; the schemas above for the two CRDs."""
    if resource["kind"] in CUSTOM:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(resource, version, strict=True)
        jsonschema.Draft202012Validator(CUSTOM[resource["kind"]]).validate(resource)
        return
    kubernetes_validate.validate(resource, version, strict=True)


# --- every manifest valid -----------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_of_the_directory() -> None:
    listed = kustomization()["resources"]
    present = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    kinds = {doc["kind"] for doc in resources().values()}
    assert kinds == {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_the_pinned_kubernetes_versions_are_ones_the_package_ships() -> None:
    """validate() would fall back to an older schema for a version it lacks: it must not."""
    shipped = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(VERSIONS) <= shipped, set(VERSIONS) - shipped


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(kustomization()["resources"]))
def test_every_manifest_is_valid(name: str, version: str) -> None:
    validate(manifest(name), version)


def test_the_validation_catches_a_misspelt_field_and_a_wrong_type() -> None:
    deployment = manifest("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/healthz"
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        validate(deployment, VERSIONS[0])
    budget = manifest("poddisruptionbudget.yaml")
    budget["spec"]["maxUnavailable"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(budget, VERSIONS[0])
    monitor = manifest("servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, VERSIONS[0])
    rule = manifest("prometheusrule.yaml")
    rule["spec"]["groups"][0]["rules"][0]["severity"] = "critical"  # belongs in labels
    with pytest.raises(jsonschema.ValidationError):
        validate(rule, VERSIONS[0])


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl not installed (its kustomize renders the kustomization)",
)
def test_kustomize_renders_valid_resources_in_one_namespace() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(kustomization()["resources"])
    namespace = kustomization()["namespace"]
    for resource in rendered:
        validate(resource, VERSIONS[0])
        if resource["kind"] == "Namespace":
            assert resource["metadata"]["name"] == namespace
        else:
            assert resource["metadata"]["namespace"] == namespace, resource["kind"]
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "driftgate"
    (deployment,) = [r for r in rendered if r["kind"] == "Deployment"]
    # The common labels stay out of the selectors (immutable on a Deployment).
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "driftgate"}


# --- the PrometheusRule is alerts.yml -------------------------------------------------------


def test_the_prometheusrule_is_generated_from_the_alert_rules() -> None:
    path = KUBERNETES / "prometheusrule.yaml"
    assert path.read_text() == gen_prometheusrule.render(), (
        "run python3 scripts/gen_prometheusrule.py"
    )
    assert (
        manifest("prometheusrule.yaml")["spec"]["groups"]
        == (yaml.safe_load(ALERTS.read_text())["groups"])
    )
    assert gen_prometheusrule.main(["--check"]) == 0


def test_the_generator_notices_a_changed_rule(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["for"] = "5m"
    changed = tmp_path / "alerts.yml"
    changed.write_text(yaml.safe_dump(rules))
    assert gen_prometheusrule.render(changed) != (KUBERNETES / "prometheusrule.yaml").read_text()


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian's prometheus package; scripts/test installs it)",
)
def test_the_prometheusrules_groups_pass_promtool_and_the_alert_unit_tests(
    tmp_path: Path,
) -> None:
    groups = {"groups": manifest("prometheusrule.yaml")["spec"]["groups"]}
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(ROOT / "deploy/prometheus/alerts_test.yml", tmp_path / "alerts_test.yml")
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            ["promtool", *command], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- in step with the code --------------------------------------------------------------------

SECRET_VALUES = {
    "redis-url": "redis://:s3cret@redis-cluster.redis.svc:6379/0",
    "api-token": "t0ken-of-32-characters-for-tests",
    "kafka-sasl-username": "driftgate",
    "kafka-sasl-password": "s3cret",
    "webhook-url": "https://hooks.example.invalid/T0/B0",
}


def secret_refs() -> dict[str, tuple[str, bool]]:
    """Variable -> (key of the Secret driftgate, optional)."""
    found = {}
    for variable in container()["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "driftgate", variable["name"]
        found[variable["name"]] = (ref["key"], ref.get("optional", False))
    return found


def worker_environment(optional: bool = True) -> dict[str, str]:
    """The worker's environment: the settings ConfigMap and the Secret's values."""
    env = dict(manifest("settings.yaml")["data"])
    for variable, (key, is_optional) in secret_refs().items():
        if optional or not is_optional:
            env[variable] = SECRET_VALUES[key]
    return env


def test_the_worker_reads_only_our_settings_and_they_parse() -> None:
    worker = container()
    assert [source["configMapRef"]["name"] for source in worker["envFrom"]] == [
        "driftgate-settings"
    ]
    assert set(worker_environment()) <= CONTRACT_VARIABLES
    required = {name for name, (_, optional) in secret_refs().items() if not optional}
    assert required == {"DRIFTGATE_REDIS_URL", "DRIFTGATE_API_TOKEN"}
    for optional in (False, True):
        settings = Settings.from_env(worker_environment(optional))
        assert settings.metrics_host == "0.0.0.0"  # the Service reaches the pod
        assert settings.redis_url == SECRET_VALUES["redis-url"]
    # No secret in the ConfigMap.
    assert not {
        "DRIFTGATE_REDIS_URL",
        "DRIFTGATE_KAFKA_SASL_PASSWORD",
        "DRIFTGATE_API_TOKEN",
    } & set(manifest("settings.yaml")["data"])


def test_the_policy_is_mounted_where_driftgate_config_says_and_spells_the_defaults(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env(worker_environment())
    assert settings.config_path
    path = Path(settings.config_path)
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == "policy"]
    assert mount["mountPath"] == str(path.parent) and mount["readOnly"]
    volumes = by_kind("Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "policy"]
    config_map = manifest("policy.yaml")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][path.name]
    (tmp_path / path.name).write_text(text)
    assert load_policy(str(tmp_path / path.name)) == Policy()


def test_probes_ask_healthz_on_the_metrics_port() -> None:
    worker = container()
    settings = Settings.from_env(worker_environment())
    (port,) = worker["ports"]
    assert port["containerPort"] == settings.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}, probe
    # A Redis failover is waited out, not restarted: liveness gives up well after readiness.
    live, ready = worker["livenessProbe"], worker["readinessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 4 * (
        ready["periodSeconds"] * ready["failureThreshold"]
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {settings.metrics_port}" in dockerfile
    assert worker["args"][0] == "worker" and 'ENTRYPOINT ["driftgate"]' in dockerfile


def test_the_image_is_this_version_and_runs_as_the_dockerfiles_user() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container()["image"] == f"driftgate:{version}"
    assert kustomization()["images"] == [{"name": "driftgate", "newTag": version}]
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid[1])
    assert container()["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in container()["volumeMounts"]} >= {"/tmp"}  # Faust's datadir


def test_service_monitor_budget_and_policy_select_the_workers() -> None:
    deployment = by_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = by_kind("Service")
    assert matches(service["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in container()["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names
    monitor = by_kind("ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service_port["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    budget = by_kind("PodDisruptionBudget")
    assert matches(budget["spec"]["selector"]["matchLabels"], pod_labels)
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    policy = by_kind("NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]
    # Workers beyond the partitions would idle: the default replicas fit the default.
    partitions = Settings.from_env(worker_environment()).partitions
    assert deployment["spec"]["replicas"] <= partitions


def test_the_controllers_manifests_call_this_service_and_kafka() -> None:
    service = by_kind("Service")
    namespace = kustomization()["namespace"]
    address = f"http://{service['metadata']['name']}.{namespace}.svc:{service['spec']['ports'][0]['port']}/"
    urls = re.findall(
        r"url:\s*\"?(http://[^\s\"]+)",
        (ROOT / "deploy/argo/analysis-template.yaml").read_text()
        + (ROOT / "deploy/flagger/canary.yaml").read_text(),
    )
    assert len(urls) >= 5
    for url in urls:
        assert url.startswith(address), url
    settings = manifest("settings.yaml")["data"]
    template = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy/argo/analysis-template.yaml").read_text())
        if doc["metadata"]["name"] == "driftgate-canary-event"
    )
    args = {arg["name"]: arg.get("value") for arg in template["spec"]["args"]}
    assert args["kafka-bootstrap"] == settings["DRIFTGATE_KAFKA_BOOTSTRAP"]
    assert args["topic-prefix"] == settings["DRIFTGATE_TOPIC_PREFIX"]


# --- docs/deploy.md ----------------------------------------------------------------------------


def test_the_docs_create_the_secret_the_deployment_reads() -> None:
    text = DOCS.read_text()
    (command,) = re.findall(
        r"kubectl -n monitoring create secret generic driftgate.*?```", text, re.S
    )
    keys = set(re.findall(r"--from-literal=([a-z-]+)=", command))
    required = {key for key, optional in secret_refs().values() if not optional}
    assert required <= keys <= {key for key, _ in secret_refs().values()}
    every = " ".join(re.findall(r"`([a-z-]+)`", text))
    for key, _ in secret_refs().values():
        assert key in every, key


def test_the_docs_name_only_real_files_variables_and_commands() -> None:
    text = DOCS.read_text()
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert not link.startswith(("http:", "https:")), f"links outside the repository: {link}"
        assert (DOCS.parent / link).resolve().exists(), link
    for path in re.findall(r"`((?:deploy|docs|bench|scripts|tests|grafana)/[\w./-]+)`", text):
        assert (ROOT / path).exists(), path
    variables = set(re.findall(r"\bDRIFTGATE_[A-Z_]+\b", text))
    assert variables and variables <= CONTRACT_VARIABLES, variables - CONTRACT_VARIABLES
    assert "kubectl apply -k deploy/kubernetes" in text
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()
    (subcommands,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    code = " ".join(re.findall(r"`[^`\n]+`", text) + re.findall(r"```sh\n(.*?)```", text, re.S))
    used = set(re.findall(r"(?:^|[`\s])driftgate ([a-z]+)\b", code, re.M))
    assert {"status", "produce"} <= used, used
    assert used <= set(subcommands.choices), used - set(subcommands.choices)


def test_the_docs_quote_the_benchmarks_as_they_are() -> None:
    """Every figure of the sizing section's table is in bench/README.md, and so is the
    date of the run it names."""
    text = DOCS.read_text()
    bench = (ROOT / "bench/README.md").read_text()
    match = re.search(r"^## Sizing\n.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/deploy.md has no 'Sizing' section"
    table = "\n".join(line for line in match[0].splitlines() if line.startswith("| "))
    figures = set(re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w,])", table))
    assert len(figures) >= 15, figures
    for figure in figures:
        assert re.search(rf"(?<![\d,.]){re.escape(figure)}(?![\d,])", bench), figure
    dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", match[0])
    assert dates and all(f"run of {date}" in bench for date in dates), dates
