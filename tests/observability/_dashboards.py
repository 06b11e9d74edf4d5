"""The queries of the shipped Grafana dashboards, as Prometheus runs them once Grafana
has filled in its variables."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = {path.stem: path for path in sorted((ROOT / "grafana/dashboards").glob("*.json"))}

# Grafana's variables, as a Prometheus test run fills them: every template variable is
# "All" (its allValue, .*); $__rate_interval is four scrape intervals of 1 s.
VARIABLES = {"__rate_interval": "4s", "__interval": "1s", "__range": "5m"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    kind: str  # the panel's type, or "annotation"
    ref: str
    legend: str
    expr: str  # variables filled in
    instant: bool


def fill(expr: str, names: set[str], chosen: dict[str, str] | None = None) -> str:
    """Grafana's variables replaced: built-ins by VARIABLES, the dashboard's template
    variables (``names``) by their ``chosen`` value or "All" (.*). Anything else that
    looks like one (label_replace's ``$1``) stays, as Grafana leaves it."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in VARIABLES:
            return VARIABLES[name]
        if name in names:
            return (chosen or {}).get(name) or ".*"
        return match.group(0)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def load(name: str) -> dict[str, Any]:
    return json.loads(DASHBOARDS[name].read_text())  # type: ignore[no-any-return]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries (rows hold none), in the dashboard's order."""
    return [p for p in board["panels"] if p["type"] != "row"]


def queries(name: str) -> list[Query]:
    board = load(name)
    names = set(variables(board))
    found = [
        Query(
            name,
            panel["title"],
            panel["type"],
            target["refId"],
            target.get("legendFormat", ""),
            fill(target["expr"], names),
            bool(target.get("instant")),
        )
        for panel in panels(board)
        for target in panel["targets"]
    ]
    found += [
        Query(
            name,
            a["name"],
            "annotation",
            "",
            a.get("titleFormat", ""),
            fill(a["expr"], names),
            False,
        )
        for a in board["annotations"]["list"]
        if "expr" in a
    ]
    return found
