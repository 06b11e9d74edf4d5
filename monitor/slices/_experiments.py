"""The experiments' and agents' slice: the ``telemetry`` and ``canary`` topics, the
guardrails, the traffic split and the canary ladder, and ``/v1/agents/NAME``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ..config import AgentPolicy
from ..config._experiment_policy import check_experiment
from ..config._ranges import increasing_pair, probability, require
from ..events._views import AgentStatus, AgentUnavailable, ExperimentRow
from ..presentation._status import experiment_lines
from ._experiment_metrics import experiment_metrics
from ._registry import REGISTRY, ApiRoute, SubjectKind
from ._status import ExperimentsStatus, agent_status

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..config import Policy
    from ..pipeline import Handler
    from ..presentation._memo import Memo
    from ..store import Snapshot

__all__ = ["EXPERIMENTS"]


def _telemetry_handler(policy: Policy) -> Handler:
    from ..subjects._experiments import TelemetryHandler

    return TelemetryHandler(policy)


def _canary_handler(policy: Policy) -> Handler:
    from ..subjects._experiments import CanaryHandler

    return CanaryHandler(policy)


def _check_policy(policy: Policy) -> None:
    """The ranges the guardrails, the split and the canary need: the defaults and every
    agent's and experiment's own (each error names its key)."""
    agents = {"": AgentPolicy(policy.guardrails, policy.canary), **policy.agents}
    for name, agent in agents.items():
        at = f"agents.{name}." if name else ""
        guard, canary = agent.guardrails, agent.canary
        probability(guard.alpha, f"{at}guardrails.alpha")
        probability(guard.toxicity_rate_max, f"{at}guardrails.toxicity_rate_max")
        probability(guard.disparity_ratio_min, f"{at}guardrails.disparity_ratio_min")
        require(
            guard.disparity_segments >= 2,
            f"{at}guardrails.disparity_segments",
            "must be at least 2",
        )
        for key in ("latency_p95_ms_max", "unit_cost_max", "target_time"):
            require(getattr(guard, key) > 0, f"{at}guardrails.{key}", "must be positive")
        probability(canary.alpha, f"{at}canary.alpha")
        probability(canary.srm_alpha, f"{at}canary.srm_alpha")
        probability(canary.quality_drop_max, f"{at}canary.quality_drop_max")
        increasing_pair(canary.quality_range, f"{at}canary.quality_range")
        require(
            canary.latency_increase_max > 0, f"{at}canary.latency_increase_max", "must be positive"
        )
        ladder = canary.ladder
        require(
            bool(ladder)
            and all(0 < step <= 100 for step in ladder)
            and list(ladder) == sorted(set(ladder))
            and ladder[-1] == 100,
            f"{at}canary.ladder",
            f"must rise strictly within 1..100 and end at 100, got {list(ladder)}",
        )
        require(
            canary.control_variant != canary.canary_variant,
            f"{at}canary.canary_variant",
            "must differ from canary.control_variant",
        )
        require(
            0 < canary.stale_after_seconds <= canary.stale_rollback_after_seconds,
            f"{at}canary.stale_rollback_after_seconds",
            "must be at least canary.stale_after_seconds (both positive)",
        )
    for name, experiment in policy.experiments.items():
        check_experiment(name, experiment, require, probability)


def _status(snapshot: Snapshot, now: float | None) -> ExperimentsStatus:
    """``experiments`` (each one's guardrails and split) and ``agents`` (each canary)."""
    experiments: dict[str, ExperimentRow] = {}
    agents: dict[str, AgentStatus] = {}
    for name, view in snapshot.section("experiment").items():
        if view.get("experiment"):
            experiments[name] = msgspec.convert(view["experiment"], ExperimentRow)
        agent = agent_status(snapshot, name, now)
        if agent is not None:
            agents[name] = agent
    return ExperimentsStatus(experiments, agents)


def _status_lines(section: ExperimentsStatus) -> list[str]:
    return experiment_lines(section.experiments, section.agents)


def _metrics(snapshot: Snapshot) -> Iterator[Metric]:
    return experiment_metrics(_status(snapshot, None))


def _agent(snapshot: Snapshot, name: str) -> AgentStatus | None:
    agent = agent_status(snapshot, name)
    return None if agent is None else agent.answer()


def _agent_unreadable(policy: Policy, name: str, errors: int, exc: Exception) -> AgentUnavailable:
    """While the state cannot be read, HOLD, then FAIL at the agent's limit (the
    fail-safe: a controller never promotes blind, and does not wait for ever)."""
    failed = errors >= policy.for_agent(name).canary.state_error_limit
    return AgentUnavailable(
        agent=name,
        verdict="FAIL" if failed else "HOLD",
        recommendation="rollback" if failed else "hold",
        reason="state_unavailable",
        detail=f"{errors} request(s) in a row could not read the state: {exc}",
    )


def _report(
    memo: Memo, snapshot: Snapshot, name: str, entries: list[dict[str, Any]], now: float
) -> None:
    from ..presentation._report import experiment_section

    view = snapshot.section("experiment")[name]
    experiment_section(memo, snapshot, name, view, agent_status(snapshot, name, now))


def _commands(commands: Any) -> None:
    from ..cli import _canary, _experiments

    _canary.add_commands(commands)
    _experiments.add_commands(commands)


EXPERIMENTS = REGISTRY.register(
    SubjectKind(
        name="experiments",
        kinds=("experiment",),
        handlers={"telemetry": _telemetry_handler, "canary": _canary_handler},
        check_policy=_check_policy,
        status=_status,
        status_lines=_status_lines,
        metrics=_metrics,
        api={"agents": ApiRoute("experiment", "agent", _agent, _agent_unreadable)},
        report=_report,
        report_nouns=("experiment", "agent"),
        commands=_commands,
    )
)
