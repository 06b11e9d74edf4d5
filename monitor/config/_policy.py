"""The gate policy (YAML): each gate's section, its defaults and its checks."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ._experiment_policy import ExperimentPolicy
from ._ranges import POSITIVE, ConfigError, in_range, probability, require

__all__ = [
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
    "add_policy_loader",
    "in_range",
    "load_policy",
    "probability",
    "register_policy_check",
    "register_section",
    "require",
    "unregister_policy_check",
    "unregister_section",
]


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
    # alpha is the gate's total: the interval spends alpha - change_alpha, the detector
    # change_alpha, so a false WARN or FAIL has probability at most alpha.
    change_alpha: float = 0.01
    change_horizon: float = 100_000.0
    # The bounds every oracle label lies in: within them (and predictions within them,
    # so residuals within +-(high - low)) the interval is exact at every sample size
    # (empirical Bernstein); a residual outside turns it to the normal mixture.
    label_range: tuple[float, ...] = (0.0, 1.0)
    # Labels outside label_range: the asymptotic interval decides from this many labels
    # (a heavy-tailed stream's plug-in interval needs them; bench/validity.py).
    min_labeled_unbounded: int = 3000
    # Subgroups: the gate also judges each value of these categorical covariates (of the
    # label events' `covariates`), at most max_groups values each by name, the rest pooled
    # as `other`; an e-process per group, combined by e-BH at false discovery rate group_fdr.
    group_by: tuple[str, ...] = ()
    max_groups: int = 10
    group_fdr: float = 0.05


@dataclass(frozen=True)
class ScoreDriftPolicy:
    """The score drift gate: KS distance of live scores from the calibration scores."""

    alpha: float = 0.05
    min_n: int = 100
    relative_accuracy: float = 0.01
    warn_action: str = "alert"
    fail_action: str = "alert"


@dataclass(frozen=True)
class LabelsPolicy:
    """Label events: how long a half of a late-labeled pair (a score waiting for its
    oracle label, or a label for its score) waits, in seconds of event time."""

    join_window_seconds: float = 7 * 86_400.0


@dataclass(frozen=True)
class CovariateDriftPolicy:
    """The covariate drift gate: each declared covariate of the label events against its
    baseline, KS for numbers and total variation for categories, in the drift bands."""

    # Names under a label event's `covariates`; a number is judged by KS, anything else
    # (a string, a boolean) as a category.
    covariates: tuple[str, ...] = ()
    alpha: float = 0.05
    # The baseline: a covariate's first baseline_n values under the calibrator version;
    # the gate judges every value after them once min_n have come.
    baseline_n: int = 5000
    min_n: int = 100
    # Categories counted by name; the rest are pooled as `other`.
    max_categories: int = 10
    # Finer than the score sketch's: a covariate such as a response length lies far from
    # 0, where a bucket of 1% holds several percent of the values (the KS bound's error).
    relative_accuracy: float = 0.002
    warn_action: str = "alert"
    fail_action: str = "alert"


@dataclass(frozen=True)
class GuardrailPolicy:
    """Guardrails of the experiment-guardrail playbook, judged on anytime-valid bounds.

    A breach needs the bound to be past the threshold (the lower bound of the canary's
    toxicity rate above ``toxicity_rate_max``, say); a guardrail passes when the other
    bound is within it, and stays inconclusive in between. PII has zero tolerance: the
    first production event with ``pii: true`` breaches, without statistics.
    """

    alpha: float = 0.05
    target_time: float = 2000.0
    toxicity_rate_max: float = 0.005
    latency_p95_ms_max: float = 1200.0
    unit_cost_max: float = 0.012
    disparity_ratio_min: float = 0.8
    # The most segments expected: each is tested at alpha / max(this, segments seen), so
    # the disparity bounds stay anytime-valid while segments keep arriving.
    disparity_segments: int = 10
    min_n: int = 100
    # What a breach does on a production canary; A/B experiments only ever alert.
    action: str = "rollback"


@dataclass(frozen=True)
class CanaryPolicy:
    """Canary against control, the promotion ladder and the fail-safes (runbook defaults)."""

    ladder: tuple[int, ...] = (10, 50, 100)
    control_variant: str = "control"
    canary_variant: str = "canary"
    alpha: float = 0.05
    target_time: float = 2000.0
    # Roll back when the canary's quality is surely more than 5% below control's, or
    # its mean latency surely more than 10% above.
    quality_drop_max: float = 0.05
    latency_increase_max: float = 0.10
    # The bounds every quality outcome lies in (0/1 or a score in [0, 1]): within them the
    # quality comparison is exact at every sample size (block-paired empirical Bernstein);
    # an outcome outside them turns the stage's comparison to the asymptotic sequence.
    quality_range: tuple[float, ...] = (0.0, 1.0)
    regression_action: str = "rollback"
    # Promotion needs at least this many events of each of canary and control.
    min_n: int = 500
    srm_alpha: float = 0.001
    # No canary data for this long: HOLD; for this long: roll back.
    stale_after_seconds: float = 900.0
    stale_rollback_after_seconds: float = 3600.0
    # Monitoring longer than this without a decision: the runbook's stall alert.
    stall_hours: float = 72.0
    # The HTTP API answers HOLD while the state cannot be read, and FAIL (roll back) once
    # that happened on this many requests in a row about the agent.
    state_error_limit: int = 5


@dataclass(frozen=True)
class AgentPolicy:
    """One agent's guardrails and canary policy (the defaults with its overrides)."""

    guardrails: GuardrailPolicy = field(default_factory=GuardrailPolicy)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)


@dataclass(frozen=True)
class ModelPrice:
    """What a model's tokens cost, per million, in the unit of ``guardrails.unit_cost``."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0


EVALUATION_ROLES = ("score", "label", "pair")


@dataclass(frozen=True)
class EvaluationMapping:
    """What a ``gen_ai.evaluation.result`` of one evaluation name becomes.

    ``role``: ``score`` (a judge score ``s`` from ``gen_ai.evaluation.score.value``, no
    label), ``label`` (an oracle label ``y``: from the value, else the label through
    ``label_values``), or ``pair`` (``s`` from the value and ``y`` from the label in one
    record). ``stream``: the label stream it feeds when the record names none (see
    :attr:`OtlpPolicy.stream_attributes`).
    """

    role: str = "score"
    stream: str = ""
    label_values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OtlpPolicy:
    """How OpenTelemetry GenAI spans and evaluation results become driftgate's events.

    Each ``*_attributes`` list is looked up in order, in the span's (or log record's)
    attributes first, then in its resource's; the first present wins.
    """

    experiment_attributes: tuple[str, ...] = ("driftgate.experiment_id",)
    variant_attributes: tuple[str, ...] = ("driftgate.variant",)
    # The unit of the split test; a span without one is its own unit (its trace id).
    unit_attributes: tuple[str, ...] = ("user.id", "session.id", "gen_ai.conversation.id")
    environment_attributes: tuple[str, ...] = (
        "deployment.environment.name",
        "deployment.environment",
    )
    stream_attributes: tuple[str, ...] = ("driftgate.stream",)
    # By model (gen_ai.request.model, else gen_ai.response.model): the unit cost.
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    # By gen_ai.evaluation.name; an evaluation not named here is counted and skipped.
    evaluations: dict[str, EvaluationMapping] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    residual_drift: ResidualDriftPolicy = field(default_factory=ResidualDriftPolicy)
    score_drift: ScoreDriftPolicy = field(default_factory=ScoreDriftPolicy)
    labels: LabelsPolicy = field(default_factory=LabelsPolicy)
    covariate_drift: CovariateDriftPolicy = field(default_factory=CovariateDriftPolicy)
    guardrails: GuardrailPolicy = field(default_factory=GuardrailPolicy)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    # Overrides by agent and by experiment, merged onto the defaults above.
    agents: dict[str, AgentPolicy] = field(default_factory=dict)
    experiments: dict[str, ExperimentPolicy] = field(default_factory=dict)
    otlp: OtlpPolicy = field(default_factory=OtlpPolicy)
    # How long event ids are remembered for duplicate detection (see README).
    dedupe_window_seconds: float = 6 * 3600.0
    # The sections of the subject kinds registered beside the built-in ones, by key
    # (see PolicySection); not a key of the file itself.
    sections: dict[str, Any] = field(default_factory=dict, metadata={"file": False})

    def section(self, key: str) -> Any:
        """A registered kind's section (its defaults when the file leaves it out)."""
        found = self.sections.get(key)
        return found if found is not None else SECTIONS[key].cls()

    def for_agent(self, name: str) -> AgentPolicy:
        return self.agents.get(name) or AgentPolicy(self.guardrails, self.canary)

    def for_experiment(self, name: str) -> ExperimentPolicy:
        return self.experiments.get(name) or ExperimentPolicy()


@dataclass(frozen=True)
class PolicySection:
    """A subject kind's section of the policy file: the top-level ``key``, the frozen
    dataclass ``cls`` it is read into (the same types and errors as the built-in
    sections), and ``check``, which raises :class:`ConfigError` naming a key out of range.
    """

    key: str
    cls: type
    check: Callable[[Any], None] | None = None


SECTIONS: dict[str, PolicySection] = {}
"""The registered sections, by key (``monitor.slices`` registers a kind's)."""


def register_section(section: PolicySection) -> None:
    builtin = {f.name for f in fields(Policy)} | {"agents", "experiments"}
    if section.key in builtin:
        raise ValueError(f"policy section {section.key!r} is a built-in one")
    known = SECTIONS.get(section.key)
    if known is not None and known != section:
        raise ValueError(f"policy section {section.key!r} is registered already")
    SECTIONS[section.key] = section


def unregister_section(section: PolicySection) -> None:
    if SECTIONS.get(section.key) == section:
        del SECTIONS[section.key]


CHECKS: dict[str, Callable[[Policy], None]] = {}
"""Checks of the whole policy, by subject kind, in the order registered (``monitor.slices``
registers a kind's ``check_policy``: the built-in kinds' sections are fields of
:class:`Policy`, so their ranges are checked by the kinds that use them)."""

_LOADERS: list[Callable[[], None]] = []


def register_policy_check(name: str, check: Callable[[Policy], None]) -> None:
    known = CHECKS.get(name)
    if known is not None and known != check:
        raise ValueError(f"a policy check of {name!r} is registered already")
    CHECKS[name] = check


def unregister_policy_check(name: str, check: Callable[[Policy], None]) -> None:
    if CHECKS.get(name) == check:
        del CHECKS[name]


def add_policy_loader(load: Callable[[], None]) -> None:
    """Call ``load`` before every policy file is read: the subject kinds' registry loads
    its built-in kinds there, which register their sections and checks. Config is the
    bottom layer and imports none of them; this is how their checks reach it."""
    if load not in _LOADERS:
        _LOADERS.append(load)


ACTIONS = ("none", "alert", "hold", "promote", "rollback")


def _key(where: str, name: object) -> str:
    return f"{where}.{name}" if where else str(name)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _value(kind: Any, value: Any, where: str, default: Any) -> Any:
    """``value`` as the field type ``kind`` (from the dataclass's type hints)."""
    origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _section(kind, value, where, default)  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        item_kind = get_args(kind)[1]
        return {
            str(name): _value(item_kind, item, _key(where, name), None)
            for name, item in value.items()
        }
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item_kind = get_args(kind)[0]
        return tuple(_value(item_kind, v, f"{where}[{i}]", None) for i, v in enumerate(value))
    if kind is int:
        number = _number(value, where)
        if number != int(number):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return int(number)
    if kind is float:
        return _number(value, where)
    if kind is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2026-03-01 as a date
            value = value.isoformat()
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        if where.endswith("action") and value not in ACTIONS:
            raise ConfigError(f"{where} must be one of {', '.join(ACTIONS)}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {kind!r}")  # pragma: no cover


def _section(cls: type, raw: Any, where: str, base: Any = None) -> Any:
    """A dataclass from a YAML mapping; keys left out keep ``base``'s (or the defaults)."""
    base = cls() if base is None else base
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.metadata.get("file", True)}
    if cls is Policy:
        known |= set(SECTIONS)
    unknown = sorted(str(key) for key in set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {_key(where, unknown[0])}; known: {', '.join(sorted(known))}"
        )
    values = {
        name: _value(hints[name], raw[name], _key(where, name), getattr(base, name)) for name in raw
    }
    return replace(base, **values)


def _check(policy: Policy) -> None:
    """The ranges of the settings of no subject kind (each kind checks its own)."""
    in_range(policy.dedupe_window_seconds, "dedupe_window_seconds", POSITIVE)


def load_policy(path: str | None) -> Policy:
    """Read the YAML policy file; built-in defaults for whatever it leaves out.

    A key that does not exist, a value of the wrong type or out of range stops
    start-up with a :class:`ConfigError` (exit status 2) that names the key.
    """
    if not path:
        return Policy()
    where = f"DRIFTGATE_CONFIG {path}"
    for load in _LOADERS:  # before the keys are known: the kinds' sections are keys
        load()
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must hold a mapping")
    try:
        apart = ("agents", "experiments", *SECTIONS)
        top = {key: value for key, value in raw.items() if key not in apart}
        policy = _section(Policy, top, "")
        defaults = AgentPolicy(policy.guardrails, policy.canary)
        overrides: dict[str, Any] = {}
        for key, cls in (("agents", AgentPolicy), ("experiments", ExperimentPolicy)):
            value = raw.get(key) or {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping of names to settings")
            base = defaults if cls is AgentPolicy else None
            overrides[key] = {
                str(name): _section(cls, settings, f"{key}.{name}", base)
                for name, settings in value.items()
            }
        overrides["sections"] = {
            key: _section(section.cls, raw.get(key), key) for key, section in SECTIONS.items()
        }
        policy = replace(policy, **overrides)
        _check(policy)
        # Each subject kind's checks of its sections, as its slice registered them.
        for check in list(CHECKS.values()):
            check(policy)
        for section in SECTIONS.values():
            if section.check is not None:
                section.check(policy.sections[section.key])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return policy
