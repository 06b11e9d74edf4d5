"""The report's "residual interval over time": the stream's history, minute by minute.

The worker keeps, with a stream's statistics, the interval its residual verdict used at
the end of every minute of event time (seven days of them: ``store._keys``). The report
plots those; a stream whose state predates the history (or that has no label yet in it)
falls back to the residual drift decisions of the audit log and the current evaluation.
Decisions are marked on the plot either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..events._decisions import GateDocument
from ..store._keys import HistoryPoint
from ..store._read_model import ts_seconds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_THRESHOLD", "ResidualSeries", "residual_figure", "residual_series"]

# The residual drift gate's default bias threshold, drawn when no evidence names one.
DEFAULT_THRESHOLD = 0.05
# The shortest time axis of the plot.
_MIN_SPAN = timedelta(minutes=10)
_VERDICT_COLORS = {"PASS": "tab:green", "WARN": "tab:orange", "FAIL": "tab:red"}


@dataclass
class ResidualSeries:
    """What the plot shows: its points (time, n, estimate, interval), where they come
    from, the decisions to mark and the threshold to draw."""

    source: str
    """``history`` (a point per minute) or ``decisions`` (a point per decision)."""
    points: list[dict[str, Any]]
    decisions: list[tuple[float, str]] = field(default_factory=list)
    """``(time, verdict)`` of each residual drift decision."""
    threshold: float = DEFAULT_THRESHOLD

    def caption(self) -> str:
        if self.source == "history":
            what = (
                "Each point is a minute of event time: the interval the verdict used once "
                "that minute's labels were in (the band); the vertical lines are residual "
                "drift decisions"
            )
        else:
            what = (
                "Each point is a residual drift decision from the audit log (the last: the "
                "current state); the bars are its interval"
            )
        return f"{what}, the dashed lines the WARN/FAIL threshold +-{self.threshold:g}."


def residual_series(
    history: Sequence[HistoryPoint],
    entries: Sequence[dict[str, Any]],
    current: GateDocument | None,
) -> ResidualSeries | None:
    """The plot's data from the stream's history, else from its decisions (None: no
    point to plot)."""
    decided = [
        {"ts": ts_seconds(e.get("ts")), "verdict": e["verdict"], **e.get("evidence", {})}
        for e in entries
        if e.get("gate") == "residual_drift"
    ]
    decided = [p for p in decided if p["ts"] is not None]
    thresholds = [p["threshold"] for p in decided if p.get("threshold") is not None]
    if current is not None and current.evidence.get("threshold") is not None:
        thresholds.append(current.evidence["threshold"])
    threshold = thresholds[-1] if thresholds else DEFAULT_THRESHOLD
    marks = [(p["ts"], p["verdict"]) for p in decided]
    shown = [p for p in history if p.estimate is not None]
    if shown:
        points = [
            {
                "ts": p.ts,
                "n": p.n,
                "estimate": p.estimate,
                "ci_low": p.ci_low,
                "ci_high": p.ci_high,
            }
            for p in shown
        ]
        return ResidualSeries("history", points, marks, threshold)
    if current is not None:
        ts = current.evaluated_at
        decided.append(
            {
                "ts": float(ts) if ts is not None else ts_seconds(current.ts),
                "verdict": current.verdict,
                **current.evidence,
            }
        )
    points = [p for p in decided if p["ts"] is not None and p.get("estimate") is not None]
    return ResidualSeries("decisions", points, marks, threshold) if points else None


def residual_figure(name: str, series: ResidualSeries, figure_of: Any) -> Figure:
    """The plot: ``figure_of(panels, size)`` makes the figure (the report's)."""
    figure, axes = figure_of(1, (8, 4))
    ax = axes[0]
    points = series.points
    times = [datetime.fromtimestamp(p["ts"], tz=UTC) for p in points]
    estimates = [p["estimate"] for p in points]
    low = [_finite_or(p.get("ci_low"), p["estimate"]) for p in points]
    high = [_finite_or(p.get("ci_high"), p["estimate"]) for p in points]
    if series.source == "history":
        ax.plot(times, estimates, color="black", linewidth=1, label="mean residual")
        ax.fill_between(times, low, high, color="tab:blue", alpha=0.25, label="interval")
        for ts, verdict in series.decisions:
            ax.axvline(
                datetime.fromtimestamp(ts, tz=UTC),
                color=_VERDICT_COLORS.get(verdict, "grey"),
                linewidth=1,
            )
    else:
        after = ["after_change" in str(p.get("method")) for p in points]
        for after_change, marker, label in ((False, "o", "all-time"), (True, "s", "since change")):
            chosen = [i for i, flag in enumerate(after) if flag == after_change]
            if not chosen:
                continue
            ax.errorbar(
                [times[i] for i in chosen],
                [estimates[i] for i in chosen],
                yerr=[
                    [estimates[i] - low[i] for i in chosen],
                    [high[i] - estimates[i] for i in chosen],
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
    for level in (series.threshold, -series.threshold):
        ax.axhline(level, color="tab:red", linestyle="--", linewidth=0.8)
    ax.set_title(f"{name}: mean residual y - f(s) and its interval")
    ax.set_ylabel("mean residual")
    ax.set_xlabel("time (UTC)")
    ax.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    return figure


def _finite_or(value: float | None, default: float) -> float:
    return default if value is None or value != value or abs(value) == float("inf") else value
