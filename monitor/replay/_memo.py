"""``replay --out DIR``: a Markdown memo of what the replay decided, with a timeline plot
per subject (each gate's interval over event time, its threshold, each decision marked).

Plots are drawn like ``report``'s (matplotlib's Agg canvas, imported only here).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..presentation._report_plots import agg_figure
from ..workflows._calibration import InputError
from ._engine import RunResult, TimelinePoint
from ._input import EventLog
from ._summary import KnownGood, summary_lines

__all__ = ["write_memo"]

MARKDOWN = "replay.md"
COLORS = {"PASS": "tab:green", "WARN": "tab:orange", "FAIL": "tab:red", "HOLD": "tab:purple"}


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _plot(
    subject: str,
    timelines: dict[str, list[TimelinePoint]],
    runs: Sequence[tuple[str, RunResult]],
    known_good: Sequence[KnownGood],
) -> Any:
    """One panel per gate: the first policy's interval and threshold over event time,
    every policy's decisions as vertical lines (solid: the first policy, dashed: others)."""
    gates = sorted(
        g for g, points in timelines.items() if any(p.estimate is not None for p in points)
    )
    figure, axes = agg_figure(max(1, len(gates)), (9, 2.6 * max(1, len(gates))))
    for axis, gate in zip(axes, gates, strict=False):
        points = [p for p in timelines[gate] if p.estimate is not None]
        times = [_when(p.ts) for p in points]
        axis.plot(times, [p.estimate for p in points], color="black", lw=1, label="estimate")
        low = [p.ci_low if p.ci_low is not None else float("nan") for p in points]
        high = [p.ci_high if p.ci_high is not None else float("nan") for p in points]
        axis.fill_between(times, low, high, color="tab:blue", alpha=0.25, label="interval")
        thresholds = {p.threshold for p in points if p.threshold is not None}
        for threshold in sorted(thresholds)[:2]:
            axis.axhline(threshold, color="tab:red", lw=0.8, ls=":")
            if gate == "residual_drift":
                axis.axhline(-threshold, color="tab:red", lw=0.8, ls=":")
        for period in known_good:
            axis.axvspan(_when(period.start), _when(period.end), color="tab:green", alpha=0.08)
        for index, (_, result) in enumerate(runs):
            for decision, mark in zip(result.decisions, result.marks, strict=True):
                if decision.subject != subject or decision.gate != gate:
                    continue
                axis.axvline(
                    _when(mark.ts),
                    color=COLORS.get(decision.verdict, "grey"),
                    ls="-" if index == 0 else "--",
                    lw=1.2,
                )
        axis.set_title(f"{subject}: {gate}", fontsize=9)
        axis.tick_params(labelsize=7)
    return figure


def write_memo(
    folder: str,
    names: Sequence[str],
    results: Sequence[RunResult],
    known_good: Sequence[KnownGood],
    log: EventLog,
) -> list[Path]:
    """Write ``replay.md`` and a PNG per subject into ``folder``; the paths written."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {folder}: {exc.strerror or exc}") from exc
    runs = list(zip(names, results, strict=True))
    lines = [
        "# driftgate replay",
        "",
        f"{log.size:,} events from {', '.join(f'`{p}`' for p in log.paths)}, "
        f"policies {', '.join(f'`{n}`' for n in names)}. Decisions are marked on each "
        "timeline (green PASS, orange WARN, red FAIL; dashed: the policies after the first).",
        "",
    ]
    for name, result in runs:
        lines += [
            f"## Decisions under `{name}`",
            "",
            "| event time | gate | subject | verdict | action | reason |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            "| "
            + " | ".join(
                str(getattr(d, k))
                for k in ("event_ts", "gate", "subject", "verdict", "action", "reason")
            )
            + " |"
            for d in result.decisions
        ]
        lines.append("")
    lines += [
        "## Per subject and gate",
        "",
        "```",
        *summary_lines(names, results, known_good),
        "```",
        "",
    ]
    written = [out / MARKDOWN]
    first = results[0]
    for index, ((kind, subject), timelines) in enumerate(sorted(first.timelines.items())):
        figure = _plot(subject, timelines, runs, known_good)
        name = f"timeline-{index}.png"
        try:
            figure.savefig(out / name, dpi=100)
        except OSError as exc:
            raise InputError(f"--out {folder}: {exc.strerror or exc}") from exc
        written.append(out / name)
        lines += [f"## {kind} `{subject}`", "", f"![{subject}]({name})", ""]
    written[0].write_text("\n".join(lines), encoding="utf-8")
    return written
