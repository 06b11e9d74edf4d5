"""Settings: the environment, overridden by the command line's flags, each value checked
with the flag's own type."""

from __future__ import annotations

import ipaddress
import os
from argparse import ArgumentTypeError
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from . import _args as arguments
from ._policy import ConfigError, Policy, load_policy
from ._secrets import secrets_of

__all__ = ["ENVIRONMENT", "MAX_MESSAGE_BYTES", "Settings"]

# The broker's message limit (Kafka's default message.max.bytes), which every producer of
# driftgate keeps to: the worker's dead letters, the emitter, ``produce``.
MAX_MESSAGE_BYTES = 1_048_576


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    # The URL may hold a password: never in a repr (messages show it through redact()).
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    config_path: str | None = None
    topic_prefix: str = "driftgate."
    # Redis key prefix; several deployments can share one Redis with different prefixes.
    redis_prefix: str = "driftgate:"
    partitions: int = 4
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    # A chat webhook's token is its path: as secret as a password.
    webhook_url: str | None = field(default=None, repr=False)
    # What every /v1/... request of the HTTP API must carry; required beyond loopback.
    api_token: str | None = field(default=None, repr=False)
    # Full names of the OpenTelemetry topics (default: the prefix + otlp.spans / otlp.logs).
    otlp_spans_topic: str | None = None
    otlp_logs_topic: str | None = None
    # Modules of subject kinds beside the built-in ones, imported before the policy is
    # read (each registers its kind: monitor.slices).
    subject_modules: tuple[str, ...] = ()
    # The attributes given by a variable or a flag: `driftgate up` uses a running service
    # only when it was named, and otherwise starts its own.
    named: frozenset[str] = field(default=frozenset(), compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The environment's settings, overridden by ``overrides`` (the CLI's flags).

        Every value is checked by the command line's argument types
        (:mod:`monitor.config._args`); a bad one raises :class:`ConfigError` naming the variable.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for attribute, variable in ENVIRONMENT.items():
            if variable in env and env[variable] != "":
                values[attribute] = env[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        for attribute, check in _CHECKS.items():
            if attribute in values:
                try:
                    values[attribute] = check(str(values[attribute]))
                except ArgumentTypeError as exc:
                    raise ConfigError(f"{ENVIRONMENT[attribute]} {exc}") from None
        settings = replace(cls(), named=frozenset(values), **values)
        if any(c in settings.redis_prefix for c in "{}%"):
            raise ConfigError(
                f"DRIFTGATE_REDIS_PREFIX may not contain {{, }} or %: {settings.redis_prefix!r}"
            )
        _check_kafka_security(settings)
        return settings

    @property
    def app_id(self) -> str:
        """Faust app id and Kafka consumer group: the topic prefix without its dot."""
        return self.topic_prefix.rstrip(".") or "driftgate"

    def topic(self, name: str) -> str:
        named = _NAMED_TOPICS.get(name)
        return (named and getattr(self, named)) or f"{self.topic_prefix}{name}"

    @cached_property
    def policy(self) -> Policy:
        """The policy file, read and checked once per settings object (the sections of
        the subject kinds registered by then among its keys)."""
        return load_policy(self.config_path)

    def secrets(self) -> list[str]:
        """What must never be shown: see :func:`secrets_of`."""
        return secrets_of(
            self.redis_url, self.kafka_sasl_password, self.webhook_url, self.api_token
        )

    def check_api_token(self) -> None:
        """Refuse to serve the HTTP API beyond loopback without a token: anyone who can
        reach it could ask about every gate and agent, or play a controller's part.

        Loopback is an IP address in 127.0.0.0/8 or ``::1``, or ``localhost``; any other
        address or name (``0.0.0.0`` above all) needs ``DRIFTGATE_API_TOKEN``.
        """
        if self.api_token or _is_loopback(self.metrics_host):
            return
        raise ConfigError(
            f"DRIFTGATE_API_TOKEN is required when the HTTP API binds beyond loopback "
            f"(DRIFTGATE_METRICS_HOST={self.metrics_host}): set it to a secret of at "
            "least 16 characters and give it to the controllers (docs/canary.md)"
        )


# Topics whose full name a setting may give instead of the prefix.
_NAMED_TOPICS = {"otlp.spans": "otlp_spans_topic", "otlp.logs": "otlp_logs_topic"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# The mechanisms that authenticate with a user name and a password (aiokafka and Faust).
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check_kafka_security(settings: Settings) -> None:
    protocol = settings.kafka_security_protocol
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"DRIFTGATE_KAFKA_SECURITY_PROTOCOL must be one of "
            f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {protocol!r}"
        )
    if not protocol.startswith("SASL"):
        return
    mechanism = settings.kafka_sasl_mechanism or "PLAIN"
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(
            f"DRIFTGATE_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
            f"got {mechanism!r}"
        )
    for attribute in ("kafka_sasl_username", "kafka_sasl_password"):
        if not getattr(settings, attribute):
            raise ConfigError(
                f"{ENVIRONMENT[attribute]} is required with "
                f"DRIFTGATE_KAFKA_SECURITY_PROTOCOL={protocol}"
            )


# Each setting's environment variable; the matching CLI flag overrides it.
ENVIRONMENT = {
    "kafka_bootstrap": "DRIFTGATE_KAFKA_BOOTSTRAP",
    "redis_url": "DRIFTGATE_REDIS_URL",
    "metrics_port": "DRIFTGATE_METRICS_PORT",
    "metrics_host": "DRIFTGATE_METRICS_HOST",
    "config_path": "DRIFTGATE_CONFIG",
    "topic_prefix": "DRIFTGATE_TOPIC_PREFIX",
    "redis_prefix": "DRIFTGATE_REDIS_PREFIX",
    "partitions": "DRIFTGATE_PARTITIONS",
    "kafka_security_protocol": "DRIFTGATE_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "DRIFTGATE_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "DRIFTGATE_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "DRIFTGATE_KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "DRIFTGATE_KAFKA_SSL_CAFILE",
    "webhook_url": "DRIFTGATE_WEBHOOK_URL",
    "api_token": "DRIFTGATE_API_TOKEN",
    "otlp_spans_topic": "DRIFTGATE_OTLP_SPANS_TOPIC",
    "otlp_logs_topic": "DRIFTGATE_OTLP_LOGS_TOPIC",
    "subject_modules": "DRIFTGATE_SUBJECTS",
}

_CHECKS: dict[str, Callable[[str], Any]] = {
    "kafka_bootstrap": arguments.kafka_bootstrap,
    "redis_url": arguments.redis_url,
    "metrics_port": arguments.port,
    "metrics_host": arguments.host,
    "topic_prefix": arguments.topic_prefix,
    "partitions": arguments.positive_integer,
    "kafka_ssl_cafile": arguments.readable_file,
    "webhook_url": arguments.http_url,
    "api_token": arguments.bearer_token,
    "otlp_spans_topic": arguments.topic_name,
    "otlp_logs_topic": arguments.topic_name,
    "subject_modules": arguments.module_names,
}
"""The argument type that checks each setting (the same as its flag's)."""
