"""Covariates of label events: the declared ones taken out of each batch, and the
statistics of their drift (per covariate, a baseline and the values since)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from estimators import CategoryCounts, QuantileSketch

from ..config import CovariateDriftPolicy, Policy
from ..events._views import CovariateRow
from ..gates import Verdict, record_key
from ..gates._covariate_drift import GATE, covariate_drift_gate
from ._columnar import Table

__all__ = [
    "CovariateDrift",
    "CovariateTrack",
    "category_name",
    "covariate_gate_keys",
    "covariate_names",
    "covariates_of_events",
    "covariates_of_table",
]

Columns = dict[str, np.ndarray]
"""Per declared covariate, its value in each event (an object array, None: not given)."""


def covariate_names(policy: Policy) -> tuple[str, ...]:
    """The covariates a label batch must carry to its statistics: those watched for drift,
    then those the residuals are grouped by."""
    watched = policy.covariate_drift.covariates
    return (*watched, *(n for n in policy.residual_drift.group_by if n not in watched))


def covariate_gate_keys(policy: Policy) -> tuple[str, ...]:
    """The published records of the covariate drift gate: one per declared covariate."""
    return tuple(record_key(GATE, name) for name in policy.covariate_drift.covariates)


def covariates_of_events(events: Sequence[Any], names: Sequence[str]) -> Columns:
    """The declared covariates of row events (their ``covariates`` object)."""
    n = len(events)
    columns = {name: np.full(n, None, dtype=object) for name in names}
    if not names:
        return columns
    for row, event in enumerate(events):
        given = event.covariates
        if given:
            for name in names:
                columns[name][row] = given.get(name)
    return columns


def covariates_of_table(table: Table, names: Sequence[str]) -> Columns:
    """The declared covariates of a columnar envelope: a dotted column
    (``covariates.domain``), or a ``covariates`` column (or constant) of objects."""
    columns: Columns = {}
    for name in names:
        values = np.full(table.n, None, dtype=object)
        dotted = f"covariates.{name}"
        if table.has(dotted):
            values[:] = table.values(dotted)
        elif table.has("covariates"):
            values[:] = [row.get(name) if row else None for row in table.values("covariates")]
        columns[name] = values
    return columns


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def category_name(value: Any) -> str:
    """A category's name: a string as it is, anything else as its JSON (``true``, ``3``)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


@dataclass
class CovariateTrack:
    """One covariate's drift statistics: its first ``baseline_n`` values (the baseline)
    and every value after them (``live``); numbers in quantile sketches, categories in
    counts. ``ignored`` counts values of the other kind (a string given to a numeric
    covariate, a non-finite number), which neither statistic can hold."""

    baseline: QuantileSketch | CategoryCounts
    live: QuantileSketch | CategoryCounts
    ignored: int = 0

    @classmethod
    def for_value(cls, value: Any, policy: CovariateDriftPolicy) -> CovariateTrack:
        """The track of a covariate whose first value is ``value``: numeric for a number."""
        if _is_number(value):
            return cls(
                QuantileSketch(policy.relative_accuracy), QuantileSketch(policy.relative_accuracy)
            )
        return cls(CategoryCounts(policy.max_categories), CategoryCounts(policy.max_categories))

    @property
    def kind(self) -> str:
        return "numeric" if isinstance(self.baseline, QuantileSketch) else "categorical"

    def _usable(self, values: np.ndarray) -> tuple[list[Any], int]:
        if self.kind == "categorical":
            return [category_name(v) for v in values], 0
        numbers = [float(v) for v in values if _is_number(v) and math.isfinite(v)]
        return numbers, values.size - len(numbers)

    def fold(self, values: np.ndarray, baseline_n: int) -> None:
        """The given values (None removed), in event order: the baseline takes what it
        lacks of ``baseline_n``, the live statistic the rest, so that the split falls on
        the same event however the events were batched."""
        usable, ignored = self._usable(values)
        self.ignored += ignored
        room = max(0, baseline_n - self.baseline.n)
        if room:
            self.baseline.update(usable[:room])  # type: ignore[arg-type]
        if len(usable) > room:
            self.live.update(usable[room:])  # type: ignore[arg-type]

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "baseline": self.baseline.to_state(),
            "live": self.live.to_state(),
            "ignored": self.ignored,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CovariateTrack:
        kind = QuantileSketch if state["kind"] == "numeric" else CategoryCounts
        return cls(
            kind.from_state(state["baseline"]),
            kind.from_state(state["live"]),
            int(state["ignored"]),
        )


@dataclass
class CovariateDrift:
    """The drift statistics of a stream's declared covariates, by name; a covariate gets
    its track with its first value (numeric when that is a number, else categorical)."""

    tracks: dict[str, CovariateTrack] = field(default_factory=dict)

    def update(self, columns: Columns, policy: CovariateDriftPolicy) -> None:
        for name in policy.covariates:
            values = columns.get(name)
            if values is None:
                continue
            given = values[values != None]  # noqa: E711  (elementwise on an object array)
            if not given.size:
                continue
            track = self.tracks.get(name)
            if track is None:
                track = self.tracks[name] = CovariateTrack.for_value(given[0], policy)
            track.fold(given, policy.baseline_n)

    def evaluate(
        self, subject: str, policy: CovariateDriftPolicy, calibrator_version: int
    ) -> list[Verdict]:
        """A verdict per declared covariate that has values (in the policy's order)."""
        return [
            covariate_drift_gate(
                subject, name, track.live, track.baseline, policy, calibrator_version
            )
            for name in policy.covariates
            if (track := self.tracks.get(name)) is not None
        ]

    def view(self, verdicts: Iterable[Verdict]) -> dict[str, CovariateRow]:
        """Per covariate, what ``driftgate status`` shows: the distance, its bounds, the
        band and verdict, and for a categorical one the shares of baseline and since."""
        rows: dict[str, CovariateRow] = {}
        for verdict in verdicts:
            if verdict.gate != GATE:
                continue
            name = verdict.part
            track = self.tracks[name]
            evidence = verdict.evidence
            shares: dict[str, Any] = {}
            if isinstance(track.baseline, CategoryCounts):
                assert isinstance(track.live, CategoryCounts)
                shares = {
                    "baseline_shares": track.baseline.fractions(),
                    "shares": track.live.fractions(),
                }
            rows[name] = CovariateRow(
                kind=track.kind,
                n=track.live.n,
                baseline_n=track.baseline.n,
                distance=evidence["estimate"],
                ci_low=evidence["ci_low"],
                ci_high=evidence["ci_high"],
                band=evidence.get("band"),
                verdict=verdict.verdict,
                reason=verdict.reason,
                ignored=track.ignored,
                **shares,
            )
        return rows

    def to_state(self) -> dict[str, Any]:
        return {name: track.to_state() for name, track in sorted(self.tracks.items())}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> CovariateDrift:
        """A state written before covariates were watched has none: they start afresh."""
        tracks = {name: CovariateTrack.from_state(t) for name, t in (state or {}).items()}
        return cls(tracks)
