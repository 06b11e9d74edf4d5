"""The experiments' and agents' slice: the ``telemetry`` and ``canary`` topics, the
guardrails, the traffic split and the canary ladder, and ``/v1/agents/NAME``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..presentation._status import experiment_lines
from ._experiment_metrics import experiment_metrics
from ._registry import REGISTRY, ApiRoute, SubjectKind

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


def _status(snapshot: Snapshot, now: float | None) -> dict[str, Any]:
    """``experiments`` (each one's guardrails and split) and ``agents`` (each canary)."""
    experiments: dict[str, Any] = {}
    agents: dict[str, Any] = {}
    for name, view in snapshot.section("experiment").items():
        if view.get("experiment"):
            experiments[name] = view["experiment"]
        agent = snapshot.agent(name, now)
        if agent is not None:
            agents[name] = agent
    return {"experiments": experiments, "agents": agents}


def _status_lines(document: Mapping[str, Any]) -> list[str]:
    return experiment_lines(document["experiments"], document["agents"])


def _metrics(snapshot: Snapshot) -> Iterator[Metric]:
    return experiment_metrics(_status(snapshot, None))


def _agent(snapshot: Snapshot, name: str) -> dict[str, Any] | None:
    return snapshot.agent(name)


def _agent_unreadable(policy: Policy, name: str, errors: int, exc: Exception) -> dict[str, Any]:
    """While the state cannot be read, HOLD, then FAIL at the agent's limit (the
    fail-safe: a controller never promotes blind, and does not wait for ever)."""
    failed = errors >= policy.for_agent(name).canary.state_error_limit
    return {
        "agent": name,
        "bundle_id": None,
        "phase": None,
        "canary_percent": None,
        "hours_running": None,
        "verdict": "FAIL" if failed else "HOLD",
        "recommendation": "rollback" if failed else "hold",
        "reason": "state_unavailable",
        "detail": f"{errors} request(s) in a row could not read the state: {exc}",
        "gates": [],
    }


def _report(
    memo: Memo, snapshot: Snapshot, name: str, entries: list[dict[str, Any]], now: float
) -> None:
    from ..presentation._report import experiment_section

    experiment_section(memo, snapshot, name, snapshot.section("experiment")[name], now)


def _commands(commands: Any) -> None:
    from ..cli._canary import add_commands

    add_commands(commands)


EXPERIMENTS = REGISTRY.register(
    SubjectKind(
        name="experiments",
        kinds=("experiment",),
        handlers={"telemetry": _telemetry_handler, "canary": _canary_handler},
        status=_status,
        status_lines=_status_lines,
        metrics=_metrics,
        api={"agents": ApiRoute("experiment", "agent", _agent, _agent_unreadable)},
        report=_report,
        report_nouns=("experiment", "agent"),
        commands=_commands,
    )
)
