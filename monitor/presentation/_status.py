"""``driftgate status`` for people: each stream's figures, rounded, with what they mean.

``status --json`` prints the same views at full precision; this module only words them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._format import count, interval, number, plural

if TYPE_CHECKING:
    from ..events._views import AgentStatus, ExperimentRow

__all__ = ["experiment_lines", "ignored_lines", "stream_lines"]


def ignored_lines(ignored: Mapping[str, Mapping[str, int]]) -> list[str]:
    """A line per topic of the records counted and skipped, by reason."""
    return [
        f"{topic}: {plural(sum(reasons.values()), 'record')} skipped ("
        + ", ".join(f"{reason} {count(n)}" for reason, n in reasons.items())
        + ")"
        for topic, reasons in ignored.items()
    ]


def stream_lines(name: str, row: Mapping[str, Any]) -> list[str]:
    """The lines of one stream: verdict and counts, the interval the verdict uses and the
    all-time one, the value estimate, score drift, how far from a decision, the plan and
    the residuals by score decile. A view written by an older worker lacks the later
    figures: their lines are left out."""
    calibrator = row["calibrator"]
    note = " (identity: no calibrator fitted)" if calibrator["kind"] == "identity" else ""
    lines = [
        f"{name}: {row['verdict']} ({row['reason']}); {count(row['n'])} scored, "
        f"{count(row['labeled_n'])} labeled; calibrator {calibrator['kind']} "
        f"v{calibrator['version']}{note}"
    ]
    used = _interval(row["residual_mean"], row["ci_low"], row["ci_high"], row["residual_n"])
    all_time = row.get("all_time")
    if row.get("interval") == "since_change":
        since = row.get("since_change") or {}
        where = since.get("since_labeled_n")
        start = f" (after label {count(where)})" if where is not None else ""
        lines.append(f"  verdict uses: the interval since the detected change{start}: {used}")
        if all_time is not None:
            lines.append(
                "  all time:     "
                + _interval(
                    all_time["residual_mean"],
                    all_time["ci_low"],
                    all_time["ci_high"],
                    all_time["n"],
                )
            )
    else:
        lines.append(f"  verdict uses: the all-time interval: {used}")
    _add(lines, "value:", row.get("value"), _value)
    if "score_band" in row:
        lines.append(f"  score drift:  {_score_drift(row)}")
    _add(lines, "decision:", row.get("until_decided"), lambda wait: _until_decided(row, wait))
    if row.get("next_step"):
        lines.append(f"  next step:    {row['next_step']}")
    if "label_plan" in row:
        paired = (row.get("value") or {}).get("n_labeled", 0)  # the plan's own labels
        lines.append(f"  label plan:   {_plan(row['label_plan'], paired)}")
    _add(lines, "late labels:", row.get("late_labels"), _late_labels)
    deciles = row.get("residuals_by_decile")
    if deciles and any(d["n"] for d in deciles):
        means = " ".join(number(d["mean_residual"], "+.2g") if d["n"] else "." for d in deciles)
        counts = " ".join(count(d["n"]) for d in deciles)
        lines.append(f"  by decile:    mean residual {means} (labels {counts})")
    return lines + group_lines(row.get("groups") or {})


def _add(lines: list[str], label: str, item: Any, render: Callable[[Any], str]) -> None:
    """A line of a stream's rows: ``label`` (padded) and ``render(item)``, unless ``item``
    is None."""
    if item is not None:
        lines.append(f"  {label:<14}{render(item)}")


def _value(value: Mapping[str, Any]) -> str:
    return (
        f"{number(value['estimate'], '.3g')} "
        f"{interval(None, value['ci_low'], value['ci_high'], '.3g')} "
        f"= mean f(S) {number(value['plug_in'], '.3g')} over {count(value['n_scored'])} scored "
        f"+ mean residual {number(value['residual_correction'], '+.3g')} "
        f"over {count(value['n_labeled'])} labeled"
    )


def _late_labels(join: Mapping[str, Any]) -> str:
    return (
        f"{count(join['waiting'])} waiting, {count(join['joined'])} joined, "
        f"{count(join['expired'])} expired, {count(join.get('repeated', 0))} repeated"
    )


def group_lines(groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The residuals by subgroup: each group not PASS with its verdict and interval, flagged
    ones first, with the playbook's next step for each; the passing ones in one line
    (``status --json`` has every figure of every group)."""
    order = {"FAIL": 0, "WARN": 1}
    ranked = sorted(groups.items(), key=lambda kv: (order.get(kv[1]["verdict"], 2), kv[0]))
    passing = [f"{name} ({count(g['n'])})" for name, g in ranked if g["verdict"] == "PASS"]
    lines = []
    for name, group in ranked:
        if group["verdict"] == "PASS":
            continue
        e = group["e_value"]
        evidence = f"e-value {number(e, '.3g')}" if e is not None else "not tested yet"
        lines.append(
            f"  group {name}: {group['verdict']} ({group['reason']}); "
            f"{_interval(group['residual_mean'], group['ci_low'], group['ci_high'], group['n'])}"
            f"; {evidence} (flagged from {number(group['e_threshold'], '.3g')})"
        )
        if group.get("next_step"):
            lines.append(f"    next step: {group['next_step']}")
    if passing:
        lines.append(f"  groups PASS:  {', '.join(passing)}")
    return lines


def _interval(mean: float | None, low: float | None, high: float | None, n: int) -> str:
    return (
        f"mean residual {number(mean, '+.3g')} {interval(None, low, high, '+.3g')} "
        f"over {plural(n, 'label')}"
    )


def _score_drift(row: Mapping[str, Any]) -> str:
    band, verdict = row.get("score_band"), row.get("score_verdict")
    ks = row.get("score_ks")
    if verdict is None:
        return "no baseline (the identity has no calibration scores)"
    distance = "" if ks is None else f", KS {number(ks, '.3g')}"
    if band is None:
        return f"too few scores to judge ({verdict}{distance})"
    return f"{band} ({verdict}{distance})"


def _until_decided(row: Mapping[str, Any], wait: Mapping[str, Any]) -> str:
    labels, status = wait["labels"], wait["status"]
    if status == "decided":
        return f"decided: {row['verdict']}"
    when = _eta(wait.get("seconds"), wait.get("label_rate_per_second"))
    if status == "collecting":
        return f"{plural(labels, 'more label')} before the gate may decide{when}"
    mean = row["residual_mean"]
    if labels is None:
        return (
            f"{row['verdict']} so far; the mean residual ({number(mean, '+.3g')}) is too near 0 "
            "for its interval to exclude 0 in any useful time"
        )
    return (
        f"{row['verdict']} so far; ~{plural(labels, 'more label')} would exclude 0 if the mean "
        f"residual stays at {number(mean, '+.3g')}{when}"
    )


def _plan(plan: Mapping[str, Any] | None, labeled: int) -> str:
    if plan is None:
        if labeled >= 2:  # then only a bias threshold of 0 leaves nothing to plan for
            # (labeled: the residuals counted beside the predictions, as the plan's are)
            return "none: residual_drift.bias_threshold is 0, so there is no MDE to aim for"
        return "needs two labels at least (no variance yet)"
    more = plan["more_labels"]
    if more is None:
        return (
            f"value estimate's MDE now {number(plan['current_mde'], '.3g')} with "
            f"{plural(labeled, 'label')}; an MDE of {number(plan['target_mde'], '.3g')} "
            "(the bias threshold as target) is "
            "out of reach (over 10^12 labels)"
        )
    need = "enough labels" if more == 0 else f"{plural(more, 'more label')}"
    return (
        f"value estimate's MDE now {number(plan['current_mde'], '.3g')} with "
        f"{plural(labeled, 'label')}; an MDE of {number(plan['target_mde'], '.3g')} "
        "(the bias threshold as target) needs "
        f"{count(plan['labels_needed'])}: {need}"
    )


def _eta(seconds: float | None, rate: float | None) -> str:
    if seconds is None or rate is None:
        return ""
    return f" (~{_duration(seconds)} at {number(rate, '.3g')} labels/s)"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0), ("s", 0.0)):
        if seconds >= size:
            amount = seconds / size if size else seconds
            return f"{amount:.0f} {unit}" if amount >= 10 else f"{amount:.2g} {unit}"
    return f"{seconds:.2g} s"


def experiment_lines(
    experiments: Mapping[str, ExperimentRow], agents: Mapping[str, AgentStatus]
) -> list[str]:
    """Each experiment's guardrails and split by variant, and each agent's canary."""
    lines = []
    for name, row in experiments.items():
        srm = row.srm_p_value
        lines.append(
            f"experiment {name}: guardrails {row.verdict}, split {row.srm_verdict}"
            f"{'' if srm is None else f' (SRM p={srm:.3g})'}, control {row.control}"
        )
        for variant, stats in row.variants.items():
            guardrails = stats["guardrails"]
            primary = guardrails.get("primary_outcome_mean", {})
            shown = ", ".join(
                f"{g} {number(r['value'], '.4g')} [{r['status']}]"
                for g, r in guardrails.items()
                if g != "primary_outcome_mean"
            )
            versus = stats.get("vs_control") or {}
            ratio = versus.get("ratio", 1.0)
            against = "control" if ratio == 1.0 else f"{ratio:g} x control"
            difference = (
                f"; vs {against} {number(versus['estimate'])} "
                f"[{number(versus['ci_low'])}, {number(versus['ci_high'])}] ({versus['method']})"
                if versus.get("method")
                else ""
            )
            lines.append(
                f"  {variant:<12} n={stats['n']} staging={stats['staging_n']} primary "
                f"{number(primary.get('value'), '.4f')} [{number(primary.get('ci_low'), '.4f')}, "
                f"{number(primary.get('ci_high'), '.4f')}]{difference}"
                + (f"; {shown}" if shown else "")
            )
    for name, agent in agents.items():
        lines.append(
            f"agent {name}: bundle {agent.bundle_id} {agent.phase} at "
            f"{agent.canary_percent:g}% for {agent.hours_running:.1f} h: {agent.verdict} "
            f"({agent.reason}), recommendation {agent.recommendation}"
        )
    return lines
