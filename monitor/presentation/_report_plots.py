"""The memo's plots: the residual interval over time, the residuals by score decile and
the guardrails by variant, on matplotlib's Agg canvas (imported only when a report is
made, so the command line starts without matplotlib)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._format import finite_or

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["agg_figure", "decile_error_bar", "decile_figure", "guardrail_figure"]


def decile_error_bar(row: dict[str, Any]) -> tuple[float | None, float | None]:
    mean, std, n = row["mean_residual"], row.get("std_residual"), row["n"]
    if mean is None or std is None or n < 2:
        return None, None
    half = 2.0 * std / math.sqrt(n)
    return mean - half, mean + half


def decile_figure(name: str, rows: list[dict[str, Any]]) -> Figure:
    figure, axes = agg_figure(1, (8, 3.5))
    ax = axes[0]
    shown = [row for row in rows if row["n"]]
    positions = [row["bin"] for row in shown]
    means = [row["mean_residual"] for row in shown]
    errors = []
    for row in shown:
        low, _ = decile_error_bar(row)
        errors.append(0.0 if low is None else row["mean_residual"] - low)
    ax.bar(positions, means, yerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_title(f"{name}: mean residual y - f(s) by score decile")
    ax.set_xlabel("score decile")
    ax.set_ylabel("mean residual")
    return figure


def guardrail_figure(name: str, variants: dict[str, Any]) -> Figure:
    guardrails = sorted({g for stats in variants.values() for g in stats["guardrails"]})
    figure, axes = agg_figure(len(guardrails), (8, 1.2 + 1.0 * len(variants) * len(guardrails)))
    names = list(variants)
    colors = {"breach": "tab:red", "pass": "tab:green", "unknown": "tab:gray", "info": "tab:blue"}
    for ax, guardrail in zip(axes, guardrails, strict=True):
        for row, variant in enumerate(names):
            reading = variants[variant]["guardrails"].get(guardrail)
            if reading is None or reading["value"] is None:
                continue
            value = reading["value"]
            low = finite_or(reading["ci_low"], value)
            high = finite_or(reading["ci_high"], value)
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


def agg_figure(panels: int, size: tuple[float, float]) -> tuple[Figure, list[Any]]:
    """A figure on the Agg canvas (no display, no pyplot state): imported here, so the
    command line starts without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    return figure, list(axes)
