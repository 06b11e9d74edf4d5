"""``driftgate report SUBJECT``: a one-page decision memo a person can read and sign.

The memo is built from what ``status`` and ``log`` read (a :class:`~monitor.store.Snapshot`
and the audit log), never from a recomputed statistic: it shows what the gates saw. It is
written once as blocks (headings, paragraphs, tables, images) and rendered twice, to
Markdown and to HTML, so the two say the same thing. Plots are PNG files beside them, made
with matplotlib's Agg canvas (the ``bench`` extra), imported only when a report is made.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store._read_model import ts_seconds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..store import Snapshot

__all__ = ["ReportError", "UnknownSubjectError", "default_folder", "write_report"]

# The residual drift gate's default bias threshold, drawn when no evidence names one.
DEFAULT_THRESHOLD = 0.05
# Files in the report folder.
MARKDOWN = "report.md"
HTML = "report.html"
RESIDUAL_PLOT = "residual_interval.png"
GUARDRAIL_PLOT = "guardrails.png"
DECILE_PLOT = "residuals_by_decile.png"

# The shortest time axis of the residual plot.
_MIN_SPAN = timedelta(minutes=10)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ReportError(ValueError):
    """A report that cannot be made (bad input: exit status 2)."""


class UnknownSubjectError(ReportError):
    """No stream, experiment or agent of that name."""


def default_folder(subject: str) -> Path:
    """``./driftgate-report-SUBJECT``, the name made safe for a file system (a subject
    may hold ``/``)."""
    return Path(f"driftgate-report-{_UNSAFE.sub('_', subject).strip('.') or 'subject'}")


# --- blocks ---------------------------------------------------------------------------


@dataclass
class _Heading:
    text: str
    level: int = 2


@dataclass
class _Paragraph:
    text: str


@dataclass
class _Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass
class _Image:
    file: str
    alt: str


_Block = _Heading | _Paragraph | _Table | _Image


@dataclass
class Memo:
    """The memo as blocks, and the plots to write beside it (file name -> figure)."""

    title: str
    blocks: list[_Block] = field(default_factory=list)
    plots: dict[str, Figure] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, _Heading):
                lines += [f"{'#' * block.level} {block.text}", ""]
            elif isinstance(block, _Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, _Table):
                cell = _markdown_cell
                lines.append("| " + " | ".join(cell(h) for h in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"![{block.alt}]({block.file})", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for block in self.blocks:
            if isinstance(block, _Heading):
                body.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
            elif isinstance(block, _Paragraph):
                body.append(f"<p>{e(block.text)}</p>")
            elif isinstance(block, _Table):
                head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                    for row in block.rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                body.append(f'<p><img src="{e(block.file)}" alt="{e(block.alt)}"></p>')
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{e(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


# A few plain rules: readable printed or on screen, no framework.
_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}"
    "th{background:#eee}img{max-width:100%}"
)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- writing --------------------------------------------------------------------------


def write_report(
    snapshot: Snapshot,
    audit: Iterable[dict[str, Any]],
    subject: str,
    folder: Path,
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
    memo = build_memo(snapshot, audit, subject, now)
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
    now: float | None = None,
) -> Memo:
    """The memo of ``subject`` (see :func:`write_report`), not yet written."""
    now = time.time() if now is None else now
    stream = snapshot.section("stream").get(subject)
    experiment = snapshot.section("experiment").get(subject)
    if stream is None and experiment is None:
        raise UnknownSubjectError(
            f"unknown subject {subject!r}: no stream, experiment or agent of that name"
        )
    entries = [e for e in audit if e.get("subject") == subject and e.get("kind") != "webhook"]
    memo = Memo(f"Decision memo: {subject}")
    memo.blocks.append(
        _Paragraph(f"Made {_rfc3339(now)} by driftgate report from the monitor's current state.")
    )
    if stream is not None:
        _stream_section(memo, snapshot, subject, stream, entries)
    if experiment is not None:
        _experiment_section(memo, snapshot, subject, experiment, now)
    _history_section(memo, entries)
    memo.blocks += [
        _Heading("Sign-off"),
        _Paragraph("Decision: ______________________________"),
        _Paragraph("Name: ______________________  Signature: ______________  Date: __________"),
    ]
    return memo


# --- a stream -------------------------------------------------------------------------


def _stream_section(
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
        _Heading(f"Stream {name}"),
        _Paragraph(
            f"Verdict: {view['verdict']} ({view['reason']}). Mean residual y - f(s) "
            f"{_interval(view['residual_mean'], view['ci_low'], view['ci_high'])} over "
            f"{view['residual_n']} labels ({which}). Events: {view['n']}, "
            f"labeled: {view['labeled_n']}."
        ),
    ]
    step = (snapshot.gate("residual_drift", name) or {}).get("evidence", {}).get("next_step")
    if step:
        memo.blocks.append(_Paragraph(f"Next step: {step}"))  # no full stop after a command
    rows = [
        [
            "the verdict's",
            since,
            str(view["residual_n"]),
            _interval(view["residual_mean"], view["ci_low"], view["ci_high"]),
        ]
    ]
    all_time = view.get("all_time")
    if all_time:
        rows.append(
            [
                "all-time",
                "every label of this calibrator version",
                str(all_time["n"]),
                _interval(all_time["residual_mean"], all_time["ci_low"], all_time["ci_high"]),
            ]
        )
    change = view.get("since_change")
    if change:
        rows.append(
            [
                "since the change",
                f"from label {change['since_labeled_n']} (shift {_num(change['change_shift'])})",
                str(change["n"]),
                _interval(change["residual_mean"], change["ci_low"], change["ci_high"]),
            ]
        )
    memo.blocks += [
        _Table(["interval", "covers", "n", "mean residual [interval]"], rows),
        _Paragraph(
            f"Calibrator: {calibrator['kind']} version {calibrator['version']}"
            + (" (identity: no calibrator fitted)." if calibrator["kind"] == "identity" else ".")
            + f" Changes detected: {view.get('changes_detected', 0)}."
        ),
    ]
    history = snapshot.history.get(name, {})
    if history:
        memo.blocks.append(
            _Table(
                ["retired version", "labels", "mean residual [interval]", "verdict"],
                [
                    [
                        version,
                        str(old.get("residual_n", "-")),
                        _interval(old.get("residual_mean"), old.get("ci_low"), old.get("ci_high")),
                        str(old.get("verdict", "-")),
                    ]
                    for version, old in sorted(history.items(), key=lambda kv: _version_key(kv[0]))
                ],
            )
        )
    else:
        memo.blocks.append(_Paragraph("No earlier calibrator version of this stream."))
    score = snapshot.gate("score_drift", name)
    band = (score or {}).get("reason") or "-"
    memo.blocks.append(
        _Paragraph(
            f"Score drift: {view.get('score_verdict') or 'not evaluated'} ({band}); KS distance "
            f"from the calibration scores {_num(view.get('score_ks'), '.4f')}, mean score "
            f"{_num(view.get('score_mean'), '.4f')}."
        )
    )
    residual = snapshot.gate("residual_drift", name)
    points = _residual_points(entries, residual)
    threshold = next(
        (p["threshold"] for p in reversed(points) if p.get("threshold") is not None),
        DEFAULT_THRESHOLD,
    )
    memo.blocks.append(_Heading("Residual interval over time", 3))
    if points:
        memo.plots[RESIDUAL_PLOT] = _residual_figure(name, points, threshold)
        memo.blocks += [
            _Image(RESIDUAL_PLOT, f"mean residual interval of {name} over time"),
            _Paragraph(
                f"Each point is a residual drift decision from the audit log (the last: the "
                f"current state); the bars are its interval, the dashed lines the WARN/FAIL "
                f"threshold +-{threshold:g}."
            ),
        ]
    else:
        memo.blocks.append(_Paragraph("No residual drift evaluation yet: nothing to plot."))
    value = view.get("value") or {}
    if value.get("estimate") is not None:
        memo.blocks.append(
            _Paragraph(
                f"Value estimate (mean f(s) over all {value.get('n_scored')} scored events plus "
                f"the mean labeled residual): "
                f"{_interval(value['estimate'], value.get('ci_low'), value.get('ci_high'), '.4f')}."
            )
        )
    _decile_section(memo, name, view.get("residuals_by_decile") or [])


def _decile_section(memo: Memo, name: str, rows: list[dict[str, Any]]) -> None:
    """Where the residual lives: its mean by score decile, from the monitor's state."""
    memo.blocks.append(_Heading("Residuals by score decile", 3))
    filled = [row for row in rows if row["n"]]
    if not filled:
        memo.blocks.append(_Paragraph("No labeled residual yet under this calibrator version."))
        return
    table = []
    for row in rows:
        low, high = _decile_error_bar(row)
        table.append(
            [
                str(row["bin"]),
                f"{_bound(row['score_low'], '-inf')} to {_bound(row['score_high'], '+inf')}",
                str(row["n"]),
                _interval(row["mean_residual"], low, high) if row["n"] else "-",
            ]
        )
    memo.plots[DECILE_PLOT] = _decile_figure(name, rows)
    memo.blocks += [
        _Table(["decile", "scores", "labels", "mean residual [+-2 s.e.]"], table),
        _Image(DECILE_PLOT, f"mean residual of {name} by score decile"),
        _Paragraph(
            "Bins are cut at the deciles of the calibrator's fitting scores. The bars are "
            "+-2 standard errors of a fixed-n mean, a guide to where the bias sits, not a "
            "sequential test (the verdict's interval above is that)."
        ),
    ]


def _bound(value: float | None, open_end: str) -> str:
    return open_end if value is None else f"{value:.3f}"


def _decile_error_bar(row: dict[str, Any]) -> tuple[float | None, float | None]:
    mean, std, n = row["mean_residual"], row.get("std_residual"), row["n"]
    if mean is None or std is None or n < 2:
        return None, None
    half = 2.0 * std / math.sqrt(n)
    return mean - half, mean + half


def _decile_figure(name: str, rows: list[dict[str, Any]]) -> Figure:
    figure, axes = _figure(1, (8, 3.5))
    ax = axes[0]
    shown = [row for row in rows if row["n"]]
    positions = [row["bin"] for row in shown]
    means = [row["mean_residual"] for row in shown]
    errors = []
    for row in shown:
        low, _ = _decile_error_bar(row)
        errors.append(0.0 if low is None else row["mean_residual"] - low)
    ax.bar(positions, means, yerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_title(f"{name}: mean residual y - f(s) by score decile")
    ax.set_xlabel("score decile")
    ax.set_ylabel("mean residual")
    return figure


def _residual_points(
    entries: list[dict[str, Any]], current: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The residual drift gate's decisions, then its current evaluation: time, verdict and
    the evidence's interval."""
    points = [
        {"ts": ts_seconds(e.get("ts")), "verdict": e["verdict"], **e.get("evidence", {})}
        for e in entries
        if e.get("gate") == "residual_drift"
    ]
    if current is not None:
        ts = current.get("evaluated_at")
        points.append(
            {
                "ts": float(ts) if ts is not None else ts_seconds(current.get("ts")),
                "verdict": current["verdict"],
                **current["evidence"],
            }
        )
    return [p for p in points if p["ts"] is not None and p.get("estimate") is not None]


def _residual_figure(name: str, points: list[dict[str, Any]], threshold: float) -> Figure:
    figure, axes = _figure(1, (8, 4))
    ax = axes[0]
    times = [datetime.fromtimestamp(p["ts"], tz=UTC) for p in points]
    for after_change, marker, label in ((False, "o", "all-time"), (True, "s", "since change")):
        chosen = [
            i
            for i, p in enumerate(points)
            if ("after_change" in str(p.get("method"))) == after_change
        ]
        if not chosen:
            continue
        estimates = [points[i]["estimate"] for i in chosen]
        low = [_finite_or(points[i].get("ci_low"), points[i]["estimate"]) for i in chosen]
        high = [_finite_or(points[i].get("ci_high"), points[i]["estimate"]) for i in chosen]
        ax.errorbar(
            [times[i] for i in chosen],
            estimates,
            yerr=[
                [e - lo for e, lo in zip(estimates, low, strict=True)],
                [hi - e for e, hi in zip(estimates, high, strict=True)],
            ],
            fmt=marker,
            capsize=4,
            label=f"{label} interval",
        )
    first, last = min(times), max(times)
    if last - first < _MIN_SPAN:  # one moment: matplotlib's own axis would span years
        middle = first + (last - first) / 2
        ax.set_xlim(middle - _MIN_SPAN / 2, middle + _MIN_SPAN / 2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    for level in (threshold, -threshold):
        ax.axhline(level, color="tab:red", linestyle="--", linewidth=0.8)
    ax.set_title(f"{name}: mean residual y - f(s) and its interval")
    ax.set_ylabel("mean residual")
    ax.set_xlabel("time (UTC)")
    ax.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    return figure


# --- an experiment or agent -----------------------------------------------------------


def _experiment_section(
    memo: Memo, snapshot: Snapshot, name: str, view: dict[str, Any], now: float
) -> None:
    agent = snapshot.agent(name, now)
    if agent is not None:
        memo.blocks += [
            _Heading(f"Agent {name}"),
            _Paragraph(
                f"Bundle {agent['bundle_id']}: {agent['phase']} at {agent['canary_percent']:g}% "
                f"for {agent['hours_running']:.1f} h. Verdict: {agent['verdict']} "
                f"({agent['reason']}). Recommendation: {agent['recommendation']}."
            ),
        ]
    gates = [g for g in snapshot.gates if g["subject"] == name and g["kind"] == "experiment"]
    if gates:
        memo.blocks += [
            _Heading("Gates", 3),
            _Table(
                ["gate", "verdict", "action", "reason", "n", "estimate [interval]"],
                [
                    [
                        g["gate"],
                        g["verdict"],
                        str(g["action"]),
                        str(g["reason"]),
                        str(g["evidence"].get("n", "-")),
                        _interval(
                            g["evidence"].get("estimate"),
                            g["evidence"].get("ci_low"),
                            g["evidence"].get("ci_high"),
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
        _Heading(f"Experiment {name}"),
        _Paragraph(
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
            _num(reading["value"], ".4g"),
            _interval(None, reading["ci_low"], reading["ci_high"], ".4g"),
            _num(reading["threshold"], ".4g"),
            str(reading["n"]),
            reading["status"],
        ]
        for variant, stats in experiment["variants"].items()
        for guardrail, reading in stats["guardrails"].items()
    ]
    if not rows:
        memo.blocks.append(_Paragraph("No guardrail reading yet."))
        return
    memo.blocks.append(
        _Table(["variant", "guardrail", "value", "interval", "threshold", "n", "status"], rows)
    )
    memo.plots[GUARDRAIL_PLOT] = _guardrail_figure(name, experiment["variants"])
    memo.blocks.append(
        _Image(GUARDRAIL_PLOT, f"guardrails of {name} by variant, against their thresholds")
    )


def _guardrail_figure(name: str, variants: dict[str, Any]) -> Figure:
    guardrails = sorted({g for stats in variants.values() for g in stats["guardrails"]})
    figure, axes = _figure(len(guardrails), (8, 1.2 + 1.0 * len(variants) * len(guardrails)))
    names = list(variants)
    colors = {"breach": "tab:red", "pass": "tab:green", "unknown": "tab:gray", "info": "tab:blue"}
    for ax, guardrail in zip(axes, guardrails, strict=True):
        for row, variant in enumerate(names):
            reading = variants[variant]["guardrails"].get(guardrail)
            if reading is None or reading["value"] is None:
                continue
            value = reading["value"]
            low = _finite_or(reading["ci_low"], value)
            high = _finite_or(reading["ci_high"], value)
            ax.errorbar(
                [value],
                [row],
                xerr=[[value - low], [high - value]],
                fmt="o",
                capsize=4,
                color=colors.get(reading["status"], "black"),
            )
            if reading["threshold"] is not None:
                ax.plot(
                    [reading["threshold"]] * 2, [row - 0.35, row + 0.35], color="tab:red", ls="--"
                )
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_title(f"{guardrail} (dashed: threshold)", fontsize="small")
    figure.suptitle(f"{name}: guardrails by variant")
    return figure


# --- the decision history -------------------------------------------------------------


def _history_section(memo: Memo, entries: list[dict[str, Any]]) -> None:
    memo.blocks.append(_Heading("Decision history"))
    if not entries:
        memo.blocks.append(_Paragraph("No decision or canary action in the audit log."))
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
        else:
            evidence = entry.get("evidence", {})
            rows.append(
                [
                    str(entry.get("ts")),
                    str(entry.get("gate")),
                    str(entry.get("action")),
                    str(entry.get("verdict")),
                    str(entry.get("reason")),
                    _interval(
                        evidence.get("estimate"), evidence.get("ci_low"), evidence.get("ci_high")
                    )
                    + f" n={evidence.get('n', '-')}",
                ]
            )
    memo.blocks.append(_Table(["time", "gate", "action", "verdict", "reason", "evidence"], rows))


# --- small helpers --------------------------------------------------------------------


def _figure(panels: int, size: tuple[float, float]) -> tuple[Figure, list[Any]]:
    """A figure on the Agg canvas (no display, no pyplot state): imported here, so the
    command line starts without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    return figure, list(axes)


def _num(value: float | None, form: str = "+.4f") -> str:
    return "-" if value is None else format(value, form)


def _interval(
    estimate: float | None, low: float | None, high: float | None, form: str = "+.4f"
) -> str:
    bounds = f"[{'-inf' if low is None else format(low, form)}, "
    bounds += f"{'+inf' if high is None else format(high, form)}]"
    return bounds if estimate is None else f"{format(estimate, form)} {bounds}"


def _finite_or(value: float | None, default: float) -> float:
    return default if value is None or value != value or abs(value) == float("inf") else value


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
