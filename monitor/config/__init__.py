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
    PolicySection,
    ResidualDriftPolicy,
    ScoreDriftPolicy,
    load_policy,
    register_section,
    unregister_section,
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
    "PolicySection",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "load_policy",
    "register_section",
    "scrub",
    "secrets_of",
    "unregister_section",
]
