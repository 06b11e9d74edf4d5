from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor import Settings
from monitor.config import ConfigError, load_policy, scrub, secrets_of


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
        "residual_drift:\n  alpha: 0.01\n  change_alpha: 0.002\n  fail_action: hold\n"
        "dedupe_window_seconds: 60\n"
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
        ("residual_drift:\n  bias_threshold: -0.1\n", "bias_threshold must be 0 or more"),
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


def test_secrets_are_found_in_every_setting_that_holds_one() -> None:
    settings = Settings.from_env(
        {
            "DRIFTGATE_REDIS_URL": "redis://admin:p%40ss%2Fword@redis:6379/0",
            "DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTGATE_KAFKA_SASL_USERNAME": "driftgate",
            "DRIFTGATE_KAFKA_SASL_PASSWORD": "kafka-secret",
            "DRIFTGATE_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/XYZ?token=abc",
            "DRIFTGATE_API_TOKEN": "api-token-0123456789",
        }
    )
    secrets = settings.secrets()
    # The password as written in the URL and as the client sends it; the SASL password;
    # the webhook's path (a chat webhook's token) and query; the API's token.
    assert {"p%40ss%2Fword", "p@ss/word", "kafka-secret", "services/T0/B0/XYZ"} <= set(secrets)
    assert {"token=abc", "api-token-0123456789"} <= set(secrets)
    text = (
        "AUTH admin p@ss/word failed at redis://admin:p%40ss%2Fword@redis:6379/0; "
        "SASL kafka-secret; POST https://hooks.example.com/services/T0/B0/XYZ?token=abc; "
        "Authorization: Bearer api-token-0123456789"
    )
    scrubbed = scrub(text, secrets)
    for secret in secrets:
        assert secret not in scrubbed
    assert "redis://admin:***@redis:6379/0" in scrubbed and "hooks.example.com" in scrubbed
    assert "Bearer ***" in scrubbed
    # None of them in a repr either (a settings object in a log line or a traceback).
    shown = repr(settings)
    assert all(secret not in shown for secret in secrets) and "kafka_bootstrap" in shown


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("short-token", "DRIFTGATE_API_TOKEN must be at least 16 characters long, got 11"),
        ("has spaces in it, 0123456789", "DRIFTGATE_API_TOKEN must hold only letters, digits"),
        ("tokén-0123456789abcdef", "DRIFTGATE_API_TOKEN must hold only letters, digits"),
        ("=0123456789abcdef", "DRIFTGATE_API_TOKEN must hold only letters, digits"),
    ],
)
def test_a_bad_api_token_is_refused_without_being_shown(token: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DRIFTGATE_API_TOKEN": token})
    assert str(refused.value).startswith(message)
    assert token not in str(refused.value)


def test_a_good_api_token_is_kept() -> None:
    token = "aZ09-._~+/aZ09-._~+/=="
    assert Settings.from_env({"DRIFTGATE_API_TOKEN": token}).api_token == token
    assert Settings.from_env({"DRIFTGATE_API_TOKEN": ""}).api_token is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_on_loopback_the_api_needs_no_token(host: str) -> None:
    Settings.from_env({"DRIFTGATE_METRICS_HOST": host}).check_api_token()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "fe80::1", "driftgate.internal"])
def test_beyond_loopback_the_api_needs_a_token(host: str) -> None:
    settings = Settings.from_env({"DRIFTGATE_METRICS_HOST": host})
    with pytest.raises(ConfigError, match=r"^DRIFTGATE_API_TOKEN is required when the HTTP API"):
        settings.check_api_token()
    token = "0123456789abcdef"
    Settings.from_env(
        {"DRIFTGATE_METRICS_HOST": host, "DRIFTGATE_API_TOKEN": token}
    ).check_api_token()


def test_a_password_without_a_user_name_is_a_secret_too() -> None:
    assert secrets_of("redis://s3cret@redis:6379/0", None, None) == ["s3cret"]
    assert secrets_of("redis://redis:6379/0", None, None) == []
    # A malformed URL is still searched (it may be shown in the message that refuses it).
    assert secrets_of("redis://:s3cret@[bad:6379/0", None, None) == ["s3cret"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DRIFTGATE_REDIS_URL": "localhost:6379"}, "DRIFTGATE_REDIS_URL must be a redis://"),
        ({"DRIFTGATE_KAFKA_BOOTSTRAP": "k:99999"}, "DRIFTGATE_KAFKA_BOOTSTRAP must be host:port"),
        ({"DRIFTGATE_METRICS_HOST": "every interface"}, "DRIFTGATE_METRICS_HOST must be an IP"),
        ({"DRIFTGATE_TOPIC_PREFIX": "dg/"}, "DRIFTGATE_TOPIC_PREFIX must hold only"),
        ({"DRIFTGATE_WEBHOOK_URL": "hooks.example.com/x"}, "DRIFTGATE_WEBHOOK_URL must be an"),
        ({"DRIFTGATE_KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "DRIFTGATE_KAFKA_SSL_CAFILE must"),
        (
            {"DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DRIFTGATE_KAFKA_SASL_USERNAME": "u"},
            "DRIFTGATE_KAFKA_SASL_PASSWORD is required with "
            "DRIFTGATE_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {
                "DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "DRIFTGATE_KAFKA_SASL_MECHANISM": "GSSAPI",
                "DRIFTGATE_KAFKA_SASL_USERNAME": "u",
                "DRIFTGATE_KAFKA_SASL_PASSWORD": "p",
            },
            "DRIFTGATE_KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
    ],
)
def test_bad_connection_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_kafka_security_settings_reach_the_clients() -> None:
    """aiokafka's options and Faust's credentials carry the protocol, the mechanism, the
    user, the password and the CA file's trust (the system's own bundle here)."""
    import ssl

    from monitor.runtime._kafka import client_options, faust_credentials

    cafile = ssl.get_default_verify_paths().openssl_cafile
    if not Path(cafile).is_file():
        pytest.skip(f"no CA bundle at {cafile}")
    settings = Settings.from_env(
        {
            "DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTGATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTGATE_KAFKA_SASL_USERNAME": "driftgate",
            "DRIFTGATE_KAFKA_SASL_PASSWORD": "hunter2",
            "DRIFTGATE_KAFKA_SSL_CAFILE": cafile,
        }
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == (
        "SCRAM-SHA-512",
        "driftgate",
    )
    assert options["sasl_plain_password"] == "hunter2"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert options["ssl_context"].cert_store_stats()["x509_ca"] > 0  # the CA file was read
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("driftgate", "hunter2")
    assert "hunter2" not in repr(credentials)
    tls_only = Settings.from_env(
        {"DRIFTGATE_KAFKA_SECURITY_PROTOCOL": "SSL", "DRIFTGATE_KAFKA_SSL_CAFILE": cafile}
    )
    assert client_options(tls_only)["security_protocol"] == "SSL"
    assert "sasl_plain_password" not in client_options(tls_only)
    assert faust_credentials(tls_only).protocol.value == "SSL"
    assert faust_credentials(Settings()) is None
