from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor import Settings
from monitor._config import ConfigError, load_policy


def test_environment_then_flags() -> None:
    env = {"DRIFTGATE_KAFKA_BOOTSTRAP": "k:1", "DRIFTGATE_METRICS_PORT": "9200"}
    settings = Settings.from_env(env, redis_url="redis://r:1/0")
    assert (settings.kafka_bootstrap, settings.metrics_port, settings.redis_url) == (
        "k:1",
        9200,
        "redis://r:1/0",
    )
    assert Settings.from_env(env, kafka_bootstrap="flag:2").kafka_bootstrap == "flag:2"
    assert Settings.from_env({}).topic("labels") == "driftgate.labels"
    assert Settings.from_env({}).app_id == "driftgate"
    with pytest.raises(ConfigError, match="DRIFTGATE_METRICS_PORT"):
        Settings.from_env({"DRIFTGATE_METRICS_PORT": "x"})


def test_policy_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "residual_drift:\n  alpha: 0.01\n  fail_action: hold\ndedupe_window_seconds: 60\n"
    )
    policy = load_policy(str(path))
    assert policy.residual_drift.alpha == 0.01 and policy.residual_drift.fail_action == "hold"
    assert policy.residual_drift.bias_threshold == 0.05  # default kept
    assert policy.dedupe_window_seconds == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("residual_drift:\n  alpah: 0.1\n", "unknown key residual_drift.alpah"),
        ("residual_drift:\n  fail_action: explode\n", "must be one of"),
        ("residual_drift:\n  alpha: high\n", "must be a number"),
        ("nonsense: 1\n", "unknown key nonsense"),
        ("guardrails:\n  toxicity_rate_max: 5\n", "guardrails.toxicity_rate_max must be in"),
        ("guardrails:\n  action: explode\n", "guardrails.action must be one of"),
        ("canary:\n  ladder: [10, 5, 100]\n", "canary.ladder must rise strictly"),
        ("canary:\n  ladder: [10, 50]\n", "end at 100"),
        ("canary:\n  ladder: [10.5, 100]\n", r"canary.ladder\[0\] must be a whole number"),
        ("canary:\n  canary_variant: control\n", "canary.canary_variant must differ"),
        ("agents:\n  a:\n    canary:\n      min_n: ten\n", "agents.a.canary.min_n must be"),
        ("agents:\n  a:\n    guardrail: {}\n", "unknown key agents.a.guardrail"),
        ("agents: [1]\n", "agents must be a mapping"),
        (
            "experiments:\n  e:\n    allocation: {a: 0.5, b: 0.6}\n",
            "experiments.e.allocation shares must be positive and add up to 1",
        ),
        ("[1, 2]\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
        ("dedupe_window_seconds: -1\n", "positive"),
    ],
)
def test_bad_policy_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(str(path))


def test_kafka_security_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTGATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTGATE_KAFKA_SASL_USERNAME": "driftgate",
            "DRIFTGATE_KAFKA_SASL_PASSWORD": "hunter2",
            "DRIFTGATE_PARTITIONS": "12",
        }
    )
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert (settings.kafka_sasl_username, settings.kafka_sasl_password) == ("driftgate", "hunter2")
    assert settings.partitions == 12
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DRIFTGATE_METRICS_PORT": "0"}, "DRIFTGATE_METRICS_PORT must be in 1..65535"),
        ({"DRIFTGATE_METRICS_PORT": "65536"}, "DRIFTGATE_METRICS_PORT must be in 1..65535"),
        ({"DRIFTGATE_PARTITIONS": "0"}, "DRIFTGATE_PARTITIONS must be at least 1"),
        ({"DRIFTGATE_PARTITIONS": "four"}, "DRIFTGATE_PARTITIONS must be an integer"),
        ({"DRIFTGATE_REDIS_PREFIX": "dg{x}:"}, "DRIFTGATE_REDIS_PREFIX may not contain"),
        ({"DRIFTGATE_REDIS_PREFIX": "dg%"}, "DRIFTGATE_REDIS_PREFIX may not contain"),
        ({"DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "DRIFTGATE_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_agent_and_experiment_overrides_merge_onto_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "guardrails:\n  toxicity_rate_max: 0.01\n"
        "agents:\n  triage:\n    canary:\n      ladder: [5, 25, 100]\n"
        "    guardrails:\n      latency_p95_ms_max: 2000\n"
        "experiments:\n  exp-1:\n    allocation: {a: 0.25, b: 0.75}\n"
    )
    policy = load_policy(str(path))
    triage, other = policy.for_agent("triage"), policy.for_agent("other")
    assert triage.canary.ladder == (5, 25, 100) and other.canary.ladder == (10, 50, 100)
    assert triage.guardrails.latency_p95_ms_max == 2000
    # The file's own defaults reach the agent that overrides something else.
    assert triage.guardrails.toxicity_rate_max == other.guardrails.toxicity_rate_max == 0.01
    assert policy.for_experiment("exp-1").allocation == {"a": 0.25, "b": 0.75}
    assert policy.for_experiment("exp-2").allocation == {}
