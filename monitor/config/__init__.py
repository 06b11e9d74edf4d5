"""Configuration: settings from the environment and the flags, the gate policy (YAML), and
the argument types both are checked with."""

from ._policy import (
    ACTIONS,
    AgentPolicy,
    CanaryPolicy,
    ConfigError,
    CovariateDriftPolicy,
    EvaluationMapping,
    ExperimentPolicy,
    GuardrailPolicy,
    LabelsPolicy,
    ModelPrice,
    OtlpPolicy,
    Policy,
    ResidualDriftPolicy,
    ScoreDriftPolicy,
    load_policy,
)
from ._settings import ENVIRONMENT, Settings, scrub, secrets_of

__all__ = [
    "ACTIONS",
    "ENVIRONMENT",
    "AgentPolicy",
    "CanaryPolicy",
    "ConfigError",
    "CovariateDriftPolicy",
    "EvaluationMapping",
    "ExperimentPolicy",
    "GuardrailPolicy",
    "LabelsPolicy",
    "ModelPrice",
    "OtlpPolicy",
    "Policy",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "load_policy",
    "scrub",
    "secrets_of",
]
