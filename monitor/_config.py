"""Settings (environment, overridden by CLI flags) and gate policy (YAML)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "Policy",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "load_policy",
]


class ConfigError(ValueError):
    """Bad configuration: reported with exit status 2."""


@dataclass(frozen=True)
class ResidualDriftPolicy:
    """The residual drift gate: an anytime-valid interval on the mean residual."""

    alpha: float = 0.05
    target_time: float = 1000.0
    min_labeled: int = 30
    bias_threshold: float = 0.05
    warn_action: str = "alert"
    fail_action: str = "alert"
    # The change detector that restarts the interval after a late shift: chance of a
    # false alarm within change_horizon labels is at most change_alpha.
    change_alpha: float = 0.05
    change_horizon: float = 100_000.0


@dataclass(frozen=True)
class ScoreDriftPolicy:
    """The score drift gate: KS distance of live scores from the calibration scores."""

    alpha: float = 0.05
    min_n: int = 100
    relative_accuracy: float = 0.01
    warn_action: str = "alert"
    fail_action: str = "alert"


@dataclass(frozen=True)
class Policy:
    residual_drift: ResidualDriftPolicy = field(default_factory=ResidualDriftPolicy)
    score_drift: ScoreDriftPolicy = field(default_factory=ScoreDriftPolicy)
    # How long event ids are remembered for duplicate detection (see README).
    dedupe_window_seconds: float = 6 * 3600.0


_ACTIONS = {"none", "alert", "hold", "promote", "rollback"}


def _section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, str):
            if value not in _ACTIONS:
                raise ConfigError(f"{where}.{key} must be one of {sorted(_ACTIONS)}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
        values[key] = type(default)(value)
    return cls(**values)


def load_policy(path: str | None) -> Policy:
    """Read the YAML policy file; built-in defaults for whatever it leaves out."""
    if not path:
        return Policy()
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read DRIFTGATE_CONFIG {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"DRIFTGATE_CONFIG {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"DRIFTGATE_CONFIG {path} must hold a mapping")
    unknown = set(raw) - {"residual_drift", "score_drift", "dedupe_window_seconds"}
    if unknown:
        raise ConfigError(f"DRIFTGATE_CONFIG {path}: unknown keys {sorted(unknown)}")
    residual = _section(ResidualDriftPolicy, raw.get("residual_drift"), "residual_drift")
    score = _section(ScoreDriftPolicy, raw.get("score_drift"), "score_drift")
    for name, value in (
        ("residual_drift.alpha", residual.alpha),
        ("residual_drift.change_alpha", residual.change_alpha),
        ("score_drift.alpha", score.alpha),
        ("score_drift.relative_accuracy", score.relative_accuracy),
    ):
        if not 0 < value < 1:
            raise ConfigError(f"{name} must be in (0, 1)")
    window = raw.get("dedupe_window_seconds", Policy.dedupe_window_seconds)
    if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
        raise ConfigError("dedupe_window_seconds must be a positive number")
    return Policy(residual_drift=residual, score_drift=score, dedupe_window_seconds=float(window))


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
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
    webhook_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for attribute, variable in ENVIRONMENT.items():
            if variable in env and env[variable] != "":
                values[attribute] = env[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        for attribute in ("metrics_port", "partitions"):
            if attribute in values:
                try:
                    values[attribute] = int(values[attribute])
                except ValueError as exc:
                    raise ConfigError(
                        f"{ENVIRONMENT[attribute]} must be an integer, got {values[attribute]!r}"
                    ) from exc
        settings = replace(cls(), **values)
        if not 0 < settings.metrics_port < 65536:
            raise ConfigError(
                f"DRIFTGATE_METRICS_PORT must be in 1..65535, got {settings.metrics_port}"
            )
        if settings.partitions < 1:
            raise ConfigError(f"DRIFTGATE_PARTITIONS must be at least 1, got {settings.partitions}")
        if any(c in settings.redis_prefix for c in "{}%"):
            raise ConfigError(
                f"DRIFTGATE_REDIS_PREFIX may not contain {{, }} or %: {settings.redis_prefix!r}"
            )
        protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        if settings.kafka_security_protocol not in protocols:
            raise ConfigError(
                f"DRIFTGATE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(protocols)}, "
                f"got {settings.kafka_security_protocol!r}"
            )
        return settings

    @property
    def app_id(self) -> str:
        """Faust app id and Kafka consumer group: the topic prefix without its dot."""
        return self.topic_prefix.rstrip(".") or "driftgate"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def policy(self) -> Policy:
        return load_policy(self.config_path)


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
}
