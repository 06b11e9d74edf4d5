"""``driftgate experiments`` (the experiment registry) and ``driftgate plan --experiment``
(a pre-registered experiment's sample size)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..presentation._format import rfc3339
from ._common import UsageError, load_settings, open_read_model, print_json, print_outcome

if TYPE_CHECKING:
    from ._parser import Commands

__all__ = ["add_commands", "cmd_experiments", "cmd_plan_experiment", "registry"]


def cmd_plan_experiment(args: argparse.Namespace) -> int:
    """``plan --experiment NAME``: the pre-registration's sizes, from the policy."""
    from ..subjects._experiment_plan import plan_experiment

    budget_flags = ("budget", "surrogate_cost", "oracle_cost", "pilot", "r2", "target_mde")
    mixed = [f"--{flag.replace('_', '-')}" for flag in budget_flags if getattr(args, flag)]
    if mixed:
        raise UsageError(f"--experiment sizes an experiment: leave out {', '.join(mixed)}")
    policy = load_settings(args).policy
    experiment = policy.experiments.get(args.experiment)
    if experiment is None or not experiment.registered:
        declared = sorted(n for n, e in policy.experiments.items() if e.registered)
        raise UsageError(
            f"experiment {args.experiment!r} is not pre-registered in the policy "
            "(experiments.NAME.primary_metric and mde; DRIFTGATE_CONFIG or --config); "
            f"pre-registered: {', '.join(declared) or 'none'}"
        )
    print_outcome(plan_experiment(args.experiment, experiment), args.json)
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from ..presentation._report import default_folder

    settings = load_settings(args)
    snapshot = open_read_model(settings).snapshot()
    rows = registry(snapshot.section("experiment"), settings.policy.experiments, default_folder)
    if args.json:
        print_json({"experiments": rows})
        return 0
    if not rows:
        print("no experiment: none declared in the policy, and no A/B telemetry yet")
        return 0
    header = f"{'ID':<20} {'variants':<24} {'dates':<43} {'status':<9} {'decision':<18} report"
    print(header)
    for row in rows:
        dates = f"{row['first_event'] or row['planned_start'] or '-'} .. " + (
            row["last_event"] or row["planned_end"] or "-"
        )
        decision = row["decision"] or "-"
        if row["variant"]:
            decision += f" ({row['variant']})"
        print(
            f"{row['experiment']:<20} {','.join(row['variants']) or '-':<24} {dates:<43} "
            f"{row['status']:<9} {decision:<18} {row['report']}"
            + ("" if row["report_written"] else " (not written)")
        )
    return 0


def registry(
    views: dict[str, dict[str, Any]],
    declared: dict[str, Any],
    folder_of: Any,
) -> list[dict[str, Any]]:
    """One row per A/B experiment, of the policy or with telemetry (canaries are agents,
    not listed): ID, variants, dates, status, decision and where its memo is written."""
    rows = []
    for name in sorted(set(declared) | {n for n, v in views.items() if v.get("agent") is None}):
        view = views.get(name) or {}
        if view.get("agent") is not None:
            continue
        experiment = view.get("experiment") or {}
        analysis = experiment.get("analysis") or {}
        policy = declared.get(name)
        variants = list(experiment.get("variants") or (policy.allocation if policy else {}))
        recommendation = analysis.get("recommendation") or {}
        report = folder_of(name) / "report.md"
        rows.append(
            {
                "experiment": name,
                "variants": variants,
                "pre_registered": bool(
                    analysis.get("registered") if analysis else policy and policy.registered
                ),
                "registered_at": _time(analysis.get("registered_at")),
                "planned_start": (policy.start or None) if policy else None,
                "planned_end": (policy.end or None) if policy else None,
                "first_event": _time(analysis.get("first_ts")),
                "last_event": _time(analysis.get("last_ts")),
                "status": _status(experiment, analysis),
                "decision": recommendation.get("decision"),
                "variant": recommendation.get("variant"),
                "deviations": len(analysis.get("deviations") or []),
                "report": str(report),
                "report_written": Path(report).is_file(),
            }
        )
    return rows


def _status(experiment: dict[str, Any], analysis: dict[str, Any]) -> str:
    """planned (no events), running, halted (a guardrail breach or a broken split) or
    decided (the analysis recommends ship or iterate)."""
    if not experiment:
        return "planned"
    if experiment.get("verdict") == "FAIL" or experiment.get("srm_verdict") == "FAIL":
        return "halted"
    if (analysis.get("recommendation") or {}).get("decision") in ("ship", "iterate"):
        return "decided"
    return "running"


def _time(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts, timespec="seconds")


def add_commands(commands: Commands) -> None:
    """``experiments``: the registry of the experiments' slice (``monitor.slices``)."""
    experiments = commands.add(
        "experiments",
        "the experiment registry: ID, variants, dates, status, decision and memo path",
        cmd_experiments,
    )
    experiments.add_argument("--json", action="store_true")
    commands.connection_flags(experiments, kafka=False, redis_=True)
