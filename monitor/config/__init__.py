"""Configuration: settings from the environment and the flags, the gate policy (YAML), and
the argument types both are checked with."""

from ._policy import (
    ACTIONS,
    ENVIRONMENT,
    AgentPolicy,
    CanaryPolicy,
    ConfigError,
    ExperimentPolicy,
    GuardrailPolicy,
    Policy,
    ResidualDriftPolicy,
    ScoreDriftPolicy,
    Settings,
    load_policy,
    scrub,
    secrets_of,
)

__all__ = [
    "ACTIONS",
    "ENVIRONMENT",
    "AgentPolicy",
    "CanaryPolicy",
    "ConfigError",
    "ExperimentPolicy",
    "GuardrailPolicy",
    "Policy",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "load_policy",
    "scrub",
    "secrets_of",
]
