"""``driftgate report SUBJECT``: a one-page decision memo a person can read and sign.

The memo is built from what ``status`` and ``log`` read (a :class:`~monitor.store.Snapshot`
and the audit log), never from a recomputed statistic: it shows what the gates saw. It is
written once as blocks (headings, paragraphs, tables, images) and rendered twice, to
Markdown and to HTML, so the two say the same thing. Plots are PNG files beside them, made
with matplotlib's Agg canvas (the ``bench`` extra), imported only when a report is made.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._experiment_memo import analysis_section, sign_off
from ._format import interval, number, rfc3339
from ._memo import Heading, Image, Memo, Paragraph, Table
from ._report_plots import agg_figure, decile_error_bar, decile_figure, guardrail_figure
from ._residual_series import residual_figure, residual_series

if TYPE_CHECKING:
    from ..events._views import AgentStatus
    from ..store import Snapshot

__all__ = [
    "ReportError",
    "UnknownSubjectError",
    "default_folder",
    "experiment_section",
    "stream_section",
    "write_report",
]

# Files in the report folder.
MARKDOWN = "report.md"
HTML = "report.html"
RESIDUAL_PLOT = "residual_interval.png"
GUARDRAIL_PLOT = "guardrails.png"
DECILE_PLOT = "residuals_by_decile.png"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


ReportSection = Callable[[Memo, "Snapshot", str, list[dict[str, Any]], float], None]
"""A kind's section of the memo: ``(memo, snapshot, subject, its audit entries, now)``."""


class Kinds(Protocol):
    """The subject kinds a memo is made of (:data:`monitor.slices.REGISTRY`)."""

    def report_sections(self, snapshot: Snapshot, subject: str) -> list[ReportSection]: ...

    def report_nouns(self) -> str: ...


class ReportError(ValueError):
    """A report that cannot be made (bad input: exit status 2)."""


class UnknownSubjectError(ReportError):
    """No stream, experiment or agent of that name."""


def default_folder(subject: str) -> Path:
    """``./driftgate-report-SUBJECT``, the name made safe for a file system (a subject
    may hold ``/``)."""
    return Path(f"driftgate-report-{_UNSAFE.sub('_', subject).strip('.') or 'subject'}")


# --- writing --------------------------------------------------------------------------


def write_report(
    snapshot: Snapshot,
    audit: Iterable[dict[str, Any]],
    subject: str,
    folder: Path,
    kinds: Kinds,
    now: float | None = None,
) -> list[Path]:
    """Write the memo of ``subject`` (a stream, an experiment or an agent) into ``folder``.

    Parameters
    ----------
    snapshot
        The read model's snapshot (with the calibrator history, for a stream).
    audit
        The audit log, oldest first (``ReadModel.audit``); only ``subject``'s entries
        are used.
    subject
        The stream's, experiment's or agent's name.
    folder
        Created if missing; the memo's files are replaced.
    kinds
        The subject kinds, each writing its section of a subject it holds, in order.
    now
        The time the memo is made (hours running are counted to it).

    Returns
    -------
    list of Path
        The files written: the Markdown, the HTML, then the plots.

    Raises
    ------
    UnknownSubjectError
        No stream, experiment or agent has that name.
    """
    memo = build_memo(snapshot, audit, subject, kinds, now)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / MARKDOWN, folder / HTML]
        written[0].write_text(memo.markdown(), encoding="utf-8")
        written[1].write_text(memo.html(), encoding="utf-8")
        for name, figure in memo.plots.items():
            figure.savefig(folder / name, dpi=100)
            written.append(folder / name)
    except OSError as exc:
        raise ReportError(f"cannot write the report into {folder}: {exc.strerror or exc}") from exc
    return written


def build_memo(
    snapshot: Snapshot,
    audit: Iterable[dict[str, Any]],
    subject: str,
    kinds: Kinds,
    now: float | None = None,
) -> Memo:
    """The memo of ``subject`` (see :func:`write_report`), not yet written."""
    now = time.time() if now is None else now
    sections = kinds.report_sections(snapshot, subject)
    if not sections:
        raise UnknownSubjectError(
            f"unknown subject {subject!r}: no {kinds.report_nouns()} of that name"
        )
    entries = [e for e in audit if e.get("subject") == subject and e.get("kind") != "webhook"]
    memo = Memo(f"Decision memo: {subject}")
    memo.blocks.append(
        Paragraph(
            f"Made {rfc3339(now, timespec='seconds')} by driftgate report from the monitor's "
            "current state."
        )
    )
    for section in sections:  # each kind's, in the order the kinds registered
        section(memo, snapshot, subject, entries, now)
    _history_section(memo, entries)
    experiment = snapshot.section("experiment").get(subject) or {}
    memo.blocks += [
        Heading("Sign-off"),
        *sign_off((experiment.get("experiment") or {}).get("analysis")),
        Paragraph("Decision: ______________________________"),
        Paragraph("Name: ______________________  Signature: ______________  Date: __________"),
    ]
    return memo


# --- a stream -------------------------------------------------------------------------


def stream_section(
    memo: Memo,
    snapshot: Snapshot,
    name: str,
    view: dict[str, Any],
    entries: list[dict[str, Any]],
) -> None:
    calibrator = view["calibrator"]
    since = "since the detected change" if view["interval"] == "since_change" else "all-time"
    which = "the interval since the detected change" if since != "all-time" else "all-time"
    memo.blocks += [
        Heading(f"Stream {name}"),
        Paragraph(
            f"Verdict: {view['verdict']} ({view['reason']}). Mean residual y - f(s) "
            f"{interval(view['residual_mean'], view['ci_low'], view['ci_high'])} over "
            f"{view['residual_n']} labels ({which}). Events: {view['n']}, "
            f"labeled: {view['labeled_n']}."
        ),
    ]
    residual = snapshot.gate("residual_drift", name)
    step = None if residual is None else residual.evidence.get("next_step")
    if step:
        memo.blocks.append(Paragraph(f"Next step: {step}"))  # no full stop after a command
    # The verdict's interval, then the all-time and since-the-change ones where the view
    # has them: (name, what it covers, n and the interval's document).
    intervals: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("the verdict's", since, view["residual_n"], view)
    ]
    all_time = view.get("all_time")
    if all_time:
        intervals.append(
            ("all-time", "every label of this calibrator version", all_time["n"], all_time)
        )
    change = view.get("since_change")
    if change:
        covers = f"from label {change['since_labeled_n']} (shift {number(change['change_shift'])})"
        intervals.append(("since the change", covers, change["n"], change))
    rows = [
        [label, covers, str(n), interval(at["residual_mean"], at["ci_low"], at["ci_high"])]
        for label, covers, n, at in intervals
    ]
    memo.blocks += [
        Table(["interval", "covers", "n", "mean residual [interval]"], rows),
        Paragraph(
            f"Calibrator: {calibrator['kind']} version {calibrator['version']}"
            + (" (identity: no calibrator fitted)." if calibrator["kind"] == "identity" else ".")
            + f" Changes detected: {view.get('changes_detected', 0)}."
        ),
    ]
    history = snapshot.history.get(name, {})
    if history:
        memo.blocks.append(
            Table(
                ["retired version", "labels", "mean residual [interval]", "verdict"],
                [
                    [
                        version,
                        str(old.get("residual_n", "-")),
                        interval(old.get("residual_mean"), old.get("ci_low"), old.get("ci_high")),
                        str(old.get("verdict", "-")),
                    ]
                    for version, old in sorted(history.items(), key=lambda kv: _version_key(kv[0]))
                ],
            )
        )
    else:
        memo.blocks.append(Paragraph("No earlier calibrator version of this stream."))
    score = snapshot.gate("score_drift", name)
    band = (score and score.reason) or "-"
    memo.blocks.append(
        Paragraph(
            f"Score drift: {view.get('score_verdict') or 'not evaluated'} ({band}); KS distance "
            f"from the calibration scores {number(view.get('score_ks'), '.4f')}, mean score "
            f"{number(view.get('score_mean'), '.4f')}."
        )
    )
    series = residual_series(
        snapshot.residual_history.get(name, []),
        entries,
        snapshot.gate("residual_drift", name),
    )
    memo.blocks.append(Heading("Residual interval over time", 3))
    if series is not None:
        memo.series[RESIDUAL_PLOT] = series
        memo.plots[RESIDUAL_PLOT] = residual_figure(name, series, agg_figure)
        memo.blocks += [
            Image(RESIDUAL_PLOT, f"mean residual interval of {name} over time"),
            Paragraph(series.caption()),
        ]
    else:
        memo.blocks.append(Paragraph("No residual drift evaluation yet: nothing to plot."))
    value = view.get("value") or {}
    if value.get("estimate") is not None:
        memo.blocks.append(
            Paragraph(
                f"Value estimate (mean f(s) over all {value.get('n_scored')} scored events plus "
                f"the mean labeled residual): "
                f"{interval(value['estimate'], value.get('ci_low'), value.get('ci_high'), '.4f')}."
            )
        )
    _decile_section(memo, name, view.get("residuals_by_decile") or [])
    _group_section(memo, view.get("groups") or {})


def _group_section(memo: Memo, groups: dict[str, dict[str, Any]]) -> None:
    """Where a bias lives by covariate: each subgroup's residuals, e-value and verdict."""
    if not groups:
        return
    memo.blocks.append(Heading("Residuals by subgroup", 3))
    rows = [
        [
            name,
            str(group["n"]),
            interval(group["residual_mean"], group["ci_low"], group["ci_high"]),
            number(group["e_value"], ".3g") if group["e_value"] is not None else "-",
            group["verdict"],
        ]
        for name, group in sorted(groups.items())
    ]
    memo.blocks.append(
        Table(["group", "labels", "mean residual [interval]", "e-value", "verdict"], rows)
    )
    threshold = next(iter(groups.values()))["e_threshold"]
    memo.blocks.append(
        Paragraph(
            "Each group's residuals are an e-process against mean 0; e-BH flags the groups "
            f"whose e-values pass m / (k q) (now {number(threshold, '.3g')}), so the expected "
            "share of wrongly flagged groups stays at most q however often it is read. The "
            "intervals hold the means not rejected at that threshold."
        )
    )
    for name, group in sorted(groups.items()):
        if group.get("next_step"):
            memo.blocks.append(Paragraph(f"Next step for {name}: {group['next_step']}"))


def _decile_section(memo: Memo, name: str, rows: list[dict[str, Any]]) -> None:
    """Where the residual lives: its mean by score decile, from the monitor's state."""
    memo.blocks.append(Heading("Residuals by score decile", 3))
    filled = [row for row in rows if row["n"]]
    if not filled:
        memo.blocks.append(Paragraph("No labeled residual yet under this calibrator version."))
        return
    table = []
    for row in rows:
        low, high = decile_error_bar(row)
        table.append(
            [
                str(row["bin"]),
                f"{number(row['score_low'], '.3f', '-inf')} to "
                f"{number(row['score_high'], '.3f', '+inf')}",
                str(row["n"]),
                interval(row["mean_residual"], low, high) if row["n"] else "-",
            ]
        )
    memo.plots[DECILE_PLOT] = decile_figure(name, rows)
    memo.blocks += [
        Table(["decile", "scores", "labels", "mean residual [+-2 s.e.]"], table),
        Image(DECILE_PLOT, f"mean residual of {name} by score decile"),
        Paragraph(
            "Bins are cut at the deciles of the calibrator's fitting scores. The bars are "
            "+-2 standard errors of a fixed-n mean, a guide to where the bias sits, not a "
            "sequential test (the verdict's interval above is that)."
        ),
    ]


# --- an experiment or agent -----------------------------------------------------------


def experiment_section(
    memo: Memo, snapshot: Snapshot, name: str, view: dict[str, Any], agent: AgentStatus | None
) -> None:
    if agent is not None:
        memo.blocks += [
            Heading(f"Agent {name}"),
            Paragraph(
                f"Bundle {agent.bundle_id}: {agent.phase} at {agent.canary_percent:g}% "
                f"for {agent.hours_running:.1f} h. Verdict: {agent.verdict} "
                f"({agent.reason}). Recommendation: {agent.recommendation}."
            ),
        ]
    gates = snapshot.gates_of("experiment", name)
    if gates:
        memo.blocks += [
            Heading("Gates", 3),
            Table(
                ["gate", "verdict", "action", "reason", "n", "estimate [interval]"],
                [
                    [
                        g.gate,
                        g.verdict,
                        str(g.action),
                        str(g.reason),
                        str(g.evidence.get("n", "-")),
                        interval(
                            g.evidence.get("estimate"),
                            g.evidence.get("ci_low"),
                            g.evidence.get("ci_high"),
                        ),
                    ]
                    for g in gates
                ],
            ),
        ]
    experiment = view.get("experiment")
    if not experiment:
        return
    srm = experiment.get("srm_p_value")
    memo.blocks += [
        Heading(f"Experiment {name}"),
        Paragraph(
            f"Guardrails: {experiment.get('verdict') or 'not evaluated'}. Split: "
            f"{experiment.get('srm_verdict') or 'not evaluated'}"
            + ("" if srm is None else f" (SRM p = {srm:.3g})")
            + f". Control: {experiment['control']}."
        ),
    ]
    rows = [
        [
            variant,
            guardrail,
            number(reading["value"], ".4g"),
            interval(None, reading["ci_low"], reading["ci_high"], ".4g"),
            number(reading["threshold"], ".4g"),
            str(reading["n"]),
            reading["status"],
        ]
        for variant, stats in experiment["variants"].items()
        for guardrail, reading in stats["guardrails"].items()
    ]
    if not rows:
        memo.blocks.append(Paragraph("No guardrail reading yet."))
    else:
        memo.blocks.append(
            Table(["variant", "guardrail", "value", "interval", "threshold", "n", "status"], rows)
        )
        memo.plots[GUARDRAIL_PLOT] = guardrail_figure(name, experiment["variants"])
        memo.blocks.append(
            Image(GUARDRAIL_PLOT, f"guardrails of {name} by variant, against their thresholds")
        )
    if agent is None:  # an A/B experiment: the analysis under its pre-registration
        analysis_section(memo, experiment.get("analysis"))


# --- the decision history -------------------------------------------------------------


def _history_section(memo: Memo, entries: list[dict[str, Any]]) -> None:
    memo.blocks.append(Heading("Decision history"))
    if not entries:
        memo.blocks.append(Paragraph("No decision or canary action in the audit log."))
        return
    rows = []
    for entry in entries:
        if entry.get("kind") == "canary":
            percent = entry.get("canary_percent")
            rows.append(
                [
                    str(entry.get("ts")),
                    "canary",
                    str(entry["action"]) + ("" if percent is None else f" to {percent:g}%"),
                    "-",
                    str(entry.get("rationale") or "-"),
                    "-",
                ]
            )
        elif "gate" not in entry:  # a pre-registration's lock or deviation
            rows.append(
                [str(entry.get("ts")), str(entry.get("kind")), "-", "-", entry["note"], "-"]
            )
        else:
            evidence = entry.get("evidence", {})
            rows.append(
                [
                    str(entry.get("ts")),
                    str(entry.get("gate")),
                    str(entry.get("action")),
                    str(entry.get("verdict")),
                    str(entry.get("reason")),
                    interval(
                        evidence.get("estimate"), evidence.get("ci_low"), evidence.get("ci_high")
                    )
                    + f" n={evidence.get('n', '-')}",
                ]
            )
    memo.blocks.append(Table(["time", "gate", "action", "verdict", "reason", "evidence"], rows))


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
