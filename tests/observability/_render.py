"""A dashboard drawn with matplotlib from its own queries against a real Prometheus, laid
out on Grafana's grid: what a person would see in Grafana, where no Grafana runs.

Drawn as Grafana would: repeated rows and panels once per value of their variable, bands
between the series an override fills between, threshold lines and zones, value mappings
as colors, state timelines, tables merged on their labels, annotations as vertical lines.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from . import _dashboards
from .conftest import PrometheusServer

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = {
    "green": "#73bf69",
    "yellow": "#fade2a",
    "red": "#f2495c",
    "blue": "#5794f2",
    "orange": "#ff9830",
    "purple": "#b877d9",
    "dark-blue": "#3274d9",
    "text": TEXT,
    "transparent": None,
}
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9"]
UNIT = 0.42  # inches per Grafana grid unit of height


def color(name: str | None) -> str | None:
    if name is None:
        return None
    return COLORS.get(name, name)


class Board:
    """One dashboard's queries run against Prometheus over [start, end]."""

    def __init__(self, name: str, prometheus: PrometheusServer, start: float, end: float):
        self.board = _dashboards.load(name)
        self.names = set(_dashboards.variables(self.board))
        self.prometheus, self.start, self.end = prometheus, start, end
        self.step = max(1, round((end - start) / 300))

    def values_of(self, variable: str) -> list[str]:
        """A query variable's values, as Grafana's label_values() finds them."""
        definition = _dashboards.variables(self.board)[variable]["definition"]
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", definition).groups()  # type: ignore[union-attr]
        rows = self.prometheus.query(f"group by ({label}) ({metric})")
        return sorted(row["metric"][label] for row in rows)

    def series(self, target: dict[str, Any], chosen: dict[str, str]) -> list[dict[str, Any]]:
        expr = _dashboards.fill(target["expr"], self.names, chosen)
        if target.get("instant"):  # a table's or a stat's: the series there now
            result = self.prometheus.get("/api/v1/query", query=expr, time=self.end)
            for series in result["result"]:
                series["values"] = [series.pop("value")]
        else:
            result = self.prometheus.query_range(expr, self.start, self.end, f"{self.step}s")
        found = []
        for series in result["result"]:
            times = [float(t) - self.start for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            found.append(
                {
                    "labels": series["metric"],
                    "name": legend(target.get("legendFormat", ""), series["metric"]),
                    "times": times,
                    "values": values,
                    "ref": target["refId"],
                }
            )
        return found


def legend(form: str, labels: dict[str, str]) -> str:
    if not form or form == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), form)


def mapping(defaults: dict[str, Any], value: float) -> tuple[str, str | None]:
    """A value's text and color under the field's value mappings."""
    for entry in defaults.get("mappings", []):
        option = entry["options"].get(str(int(value)) if value == int(value) else str(value))
        if option:
            return option.get("text", str(value)), color(option.get("color"))
    return format_value(value, defaults), threshold_color(defaults, value)


def threshold_color(defaults: dict[str, Any], value: float) -> str | None:
    steps = defaults.get("thresholds", {}).get("steps", [])
    chosen = None
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            chosen = step["color"]
    return color(chosen)


def format_value(value: float, defaults: dict[str, Any]) -> str:
    if not math.isfinite(value):
        return str(value)
    unit = defaults.get("unit", "")
    if unit == "percent":
        return f"{value:.0f}%"
    if unit == "percentunit":
        return f"{100 * value:.2f}%"
    if unit == "ops":
        return f"{value:,.0f}/s"
    if unit in ("s", "h", "ms"):
        return f"{value:.3g} {unit}"
    decimals = defaults.get("decimals")
    return f"{value:.{decimals}f}" if decimals is not None else f"{value:.4g}"


def last(series: dict[str, Any]) -> float:
    finite = [v for v in series["values"] if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def overrides(panel: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for override in panel["fieldConfig"].get("overrides", []):
        matcher = override["matcher"]
        if (matcher["id"] == "byName" and matcher["options"] == name) or (
            matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name)
        ):
            found.update({p["id"]: p["value"] for p in override["properties"]})
    return found


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, loc="left", color=TEXT, fontsize=9, fontweight="bold")
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(which="both", colors=TEXT, labelsize=7)


def draw_timeseries(
    ax: Axes,
    panel: dict[str, Any],
    series: list[dict[str, Any]],
    board: Board,
    annotations: list[tuple[float, str, str]],
) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    by_name = {s["name"]: s for s in series}
    steps_after = custom.get("lineInterpolation") == "stepAfter"
    for i, s in enumerate(series):
        extra = overrides(panel, s["name"])
        fixed = extra.get("color", {}).get("fixedColor")
        line_color = color(fixed) or PALETTE[i % len(PALETTE)]
        width = extra.get("custom.lineWidth", custom.get("lineWidth", 2))
        dashed = "custom.lineStyle" in extra
        hidden = extra.get("custom.hideFrom", {}).get("legend", False)
        if custom.get("drawStyle") == "bars":
            ax.bar(
                s["times"], s["values"], width=board.step * 0.8, color=line_color, label=s["name"]
            )
        elif width:
            ax.plot(
                s["times"],
                s["values"],
                color=line_color,
                linewidth=width * 0.7,
                linestyle=(0, (4, 4)) if dashed else "-",
                label=None if hidden else s["name"],
                drawstyle="steps-post" if steps_after else "default",
            )
        below = extra.get("custom.fillBelowTo")
        if below in by_name:
            other = dict(zip(by_name[below]["times"], by_name[below]["values"], strict=True))
            times = [t for t in s["times"] if t in other]
            high = [v for t, v in zip(s["times"], s["values"], strict=True) if t in other]
            band = f"{below.removesuffix(' low')} (95%)"
            ax.fill_between(
                times,
                [other[t] for t in times],
                high,
                color=line_color,
                alpha=0.3,
                label=band,
                linewidth=0,
            )
    if custom.get("scaleDistribution", {}).get("type") == "log":
        ax.set_yscale("log")
    ax.set_ylim(bottom=defaults.get("min"), top=defaults.get("max"))
    low, high = ax.get_ylim()  # a soft limit widens the axis, never narrows it
    ax.set_ylim(
        min(low, custom.get("axisSoftMin", low)), max(high, custom.get("axisSoftMax", high))
    )
    mode = custom.get("thresholdsStyle", {}).get("mode")
    steps = defaults.get("thresholds", {}).get("steps", [])
    if mode and steps:
        low, high = ax.get_ylim()
        for step, following in zip(steps, [*steps[1:], None], strict=True):
            start = -math.inf if step["value"] is None else step["value"]
            end = math.inf if following is None else following["value"]
            shade = color(step["color"])
            if shade and "area" in mode and max(start, low) < min(end, high):
                ax.axhspan(max(start, low), min(end, high), color=shade, alpha=0.12, linewidth=0)
            if step["value"] is not None and shade:
                ax.axhline(step["value"], color=shade, linewidth=1, linestyle=(0, (6, 4)))
            elif step["value"] is not None and following is not None and color(following["color"]):
                ax.axhline(
                    step["value"],
                    color=color(following["color"]),
                    linewidth=1,
                    linestyle=(0, (6, 4)),
                )
        ax.set_ylim(low, high)
    for when, shade, _ in annotations:
        ax.axvline(when, color=shade, linewidth=1, alpha=0.8)
    ax.grid(color=GRID, linewidth=0.5)
    ax.set_xlim(0, board.end - board.start)
    ax.xaxis.set_major_formatter(lambda x, _: f"{int(x) // 60}:{int(x) % 60:02d}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="best")


def draw_state_timeline(
    ax: Axes, panel: dict[str, Any], series: list[dict[str, Any]], board: Board
) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    series = sorted(series, key=lambda s: s["name"], reverse=True)
    for row, s in enumerate(series):
        points = list(zip(s["times"], s["values"], strict=True))
        for (when, value), following in zip(points, [*points[1:], None], strict=True):
            until = following[0] if following else board.end - board.start
            _, shade = mapping(defaults, value)
            ax.barh(row, until - when, left=when, height=0.8, color=shade or "#444", linewidth=0)
    ax.set_yticks(range(len(series)), [s["name"] for s in series], fontsize=7)
    ax.set_xlim(0, board.end - board.start)
    ax.xaxis.set_major_formatter(lambda x, _: f"{int(x) // 60}:{int(x) % 60:02d}")
    seen = {}
    for entry in defaults.get("mappings", []):
        for option in entry["options"].values():
            seen[option["text"]] = color(option["color"])
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in seen.values()]
    ax.legend(
        handles,
        list(seen),
        fontsize=6,
        facecolor=PANEL,
        edgecolor=GRID,
        labelcolor=TEXT,
        loc="upper left",
        ncol=len(seen),
    )


def draw_table(ax: Axes, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    """Instant values merged on their labels (Grafana's merge), renamed and ordered."""
    organize = next(
        (t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"), {}
    )
    rows: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    refs = sorted({s["ref"] for s in series})
    value_name = "Value" if len(refs) == 1 else None
    for s in series:
        key = tuple(sorted(s["labels"].items()))
        # Merge rows that agree on the labels they share (the first query has the most).
        target = next(
            (r for k, r in rows.items() if set(key) <= set(k) or set(k) <= set(key)), None
        )
        if target is None:
            target = rows.setdefault(key, dict(s["labels"]))
        target.update(s["labels"])
        target[value_name or f"Value #{s['ref']}"] = last(s)
    excluded = {k for k, v in organize.get("excludeByName", {}).items() if v}
    order = organize.get("indexByName", {})
    names = organize.get("renameByName", {})
    columns = sorted(
        {c for r in rows.values() for c in r} - excluded,
        key=lambda c: (order.get(c, 100), c),
    )
    defaults = panel["fieldConfig"]["defaults"]
    cells, shades = [], []
    for row in sorted(rows.values(), key=lambda r: [str(r.get(c, "")) for c in columns]):
        line, line_shades = [], []
        for column in columns:
            value = row.get(column, "")
            shown = names.get(column, column)
            extra = {**defaults, **overrides_as_defaults(panel, shown)}
            if isinstance(value, float):
                text, shade = mapping(extra, value) if math.isfinite(value) else (str(value), None)
            else:
                text, shade = value, mapping_text_color(extra, value)
            line.append(text)
            cell = extra.get("custom.cellOptions", {}).get("type", "auto")  # auto: no color
            line_shades.append((shade, cell) if shade and cell != "auto" else None)
        cells.append(line)
        shades.append(line_shades)
    ax.axis("off")
    if not cells:
        return
    rows_fit = min(1.0, (len(cells) + 1) / 12)  # short tables keep their rows' height
    table = ax.table(
        cellText=cells,
        colLabels=[names.get(c, c) for c in columns],
        bbox=(0, 1 - rows_fit, 1, rows_fit),
        cellLoc="left",
        colLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(6 if len(cells) > 12 else 7)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor(GRID)
        cell.set_facecolor(PANEL)
        cell.get_text().set_color(TEXT)
        if row == 0:
            cell.get_text().set_fontweight("bold")
    for i, line_shades in enumerate(shades):
        for j, shaded in enumerate(line_shades):
            if shaded and shaded[1] == "color-text":
                table[i + 1, j].get_text().set_color(shaded[0])
            elif shaded:
                table[i + 1, j].set_facecolor(shaded[0])
                table[i + 1, j].get_text().set_color("#111217")


def overrides_as_defaults(panel: dict[str, Any], name: str) -> dict[str, Any]:
    found = overrides(panel, name)
    result: dict[str, Any] = {}
    if "mappings" in found:
        result["mappings"] = found["mappings"]
    if "thresholds" in found:
        result["thresholds"] = found["thresholds"]
    for key in ("unit", "decimals"):
        if key in found:
            result[key] = found[key]
    if "custom.cellOptions" in found:
        result["custom.cellOptions"] = found["custom.cellOptions"]
    return result


def mapping_text_color(defaults: dict[str, Any], text: str) -> str | None:
    for entry in defaults.get("mappings", []):
        option = entry["options"].get(text)
        if option:
            return color(option.get("color"))
    return None


def draw_stat(ax: Axes, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    value = last(series[0]) if series else math.nan
    text, shade = mapping(defaults, value) if math.isfinite(value) else ("no data", None)
    ax.set_facecolor(shade or PANEL)
    ax.text(
        0.5,
        0.4,
        text,
        ha="center",
        va="center",
        fontsize=20,
        fontweight="bold",
        color="#111217" if shade else TEXT,
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def draw_bargauge(ax: Axes, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    series = sorted(series, key=lambda s: s["name"], reverse=True)
    values = [last(s) for s in series]
    ax.barh(
        range(len(series)),
        values,
        color=[threshold_color(defaults, v) or PALETTE[0] for v in values],
    )
    ax.set_yticks(range(len(series)), [s["name"] for s in series], fontsize=7)
    ax.set_xlim(defaults.get("min", 0), defaults.get("max", max(values or [1]) * 1.2))
    for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
        ax.axvline(step["value"], color=color(step["color"]), linestyle=(0, (6, 4)))
    for i, v in enumerate(values):
        ax.text(v, i, f" {format_value(v, defaults)}", va="center", color=TEXT, fontsize=7)


def layout(board: Board) -> list[tuple[dict[str, Any], dict[str, str], tuple[int, int, int, int]]]:
    """Each panel to draw, with its variables and grid place, repeats expanded."""
    placed = []
    shift = 0
    panels = board.board["panels"]
    index = 0
    while index < len(panels):
        panel = panels[index]
        if panel["type"] == "row" and panel.get("repeat"):
            block = [panel]
            index += 1
            while index < len(panels) and panels[index]["type"] != "row":
                block.append(panels[index])
                index += 1
            top = panel["gridPos"]["y"]
            height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in block) - top
            values = board.values_of(panel["repeat"])
            for n, value in enumerate(values):
                chosen = {panel["repeat"]: value}
                for member in block:
                    g = member["gridPos"]
                    placed.append((member, chosen, (g["x"], g["y"] + shift, g["w"], g["h"])))
                if n < len(values) - 1:
                    shift += height
            continue
        g = panel["gridPos"]
        if panel.get("repeat"):
            values = board.values_of(panel["repeat"])
            per_row = panel.get("maxPerRow", 4)
            width = 24 // min(per_row, max(1, len(values)))
            for n, value in enumerate(values):
                x, down = (n % per_row) * width, (n // per_row) * g["h"]
                placed.append(
                    (panel, {panel["repeat"]: value}, (x, g["y"] + shift + down, width, g["h"]))
                )
            shift += (math.ceil(len(values) / per_row) - 1) * g["h"]
        else:
            placed.append((panel, {}, (g["x"], g["y"] + shift, g["w"], g["h"])))
        index += 1
    return placed


def render(name: str, prometheus: PrometheusServer, start: float, end: float, out: Path) -> None:
    board = Board(name, prometheus, start, end)
    placed = layout(board)
    height = max(y + h for _, _, (_, y, _, h) in placed)
    figure = plt.figure(figsize=(20, height * UNIT + 0.6), facecolor=BACKGROUND)
    top = 1 - 0.6 / (height * UNIT + 0.6)
    figure.text(
        0.01,
        top + 0.3 / (height * UNIT + 0.6),
        f"{board.board['title']}  ·  {int(end - start)} s of a real run (tests/observability)",
        color=TEXT,
        fontsize=13,
        fontweight="bold",
        va="center",
    )
    annotations = []
    for entry in board.board["annotations"]["list"]:
        if "expr" not in entry:
            continue
        for s in board.series({"expr": entry["expr"], "refId": "", "legendFormat": ""}, {}):
            first = next(
                (t for t, v in zip(s["times"], s["values"], strict=True) if math.isfinite(v)), None
            )
            if first is not None:
                annotations.append((first, color(entry["iconColor"]) or TEXT, entry["name"]))
    for panel, chosen, (x, y, w, h) in placed:
        left, width = x / 24 + 0.004, w / 24 - 0.012
        bottom = top * (1 - (y + h) / height) + 0.004
        box_height = top * h / height - (0.03 if panel["type"] != "row" else 0.0)
        title = panel["title"]
        for variable, value in chosen.items():
            title = title.replace(f"${variable}", value)
        if panel["type"] == "row":
            figure.text(
                left,
                bottom + box_height / 2,
                title,
                color=TEXT,
                fontsize=11,
                fontweight="bold",
                va="center",
            )
            continue
        # Room for the axis labels: values left of a time series, names left of bars.
        axis_room = {"timeseries": 0.02, "state-timeline": 0.08, "bargauge": 0.05}.get(
            panel["type"], 0.0
        )
        ax = figure.add_axes((left + axis_room, bottom + 0.01, width - axis_room, box_height))
        style(ax, title)
        series = [s for t in panel["targets"] for s in board.series(t, chosen)]
        if panel["type"] == "timeseries":
            draw_timeseries(ax, panel, series, board, annotations)
        elif panel["type"] == "state-timeline":
            draw_state_timeline(ax, panel, series, board)
        elif panel["type"] == "table":
            draw_table(ax, panel, series)
        elif panel["type"] == "stat":
            draw_stat(ax, panel, series)
        elif panel["type"] == "bargauge":
            draw_bargauge(ax, panel, series)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=BACKGROUND)
    plt.close(figure)
