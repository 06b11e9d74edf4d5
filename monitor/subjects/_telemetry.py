"""``driftgate.telemetry``: each variant's guardrails and outcomes, folded a batch at a time.

A batch's telemetry is held as columns (:class:`TelemetryColumns`: numpy arrays, the
variant and segment as integer codes) from the moment it is decoded: row events are
walked once there, columnar envelopes go straight from their decoded arrays. The fold is
then a few numpy reductions per variant (and per segment and secondary outcome) into the
estimators' mergeable statistics, in the events' order, so that a variant's statistics
are the ones its events would give one by one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from estimators import Moments, PairedDifferenceSequence, SampleRatioSequence, SplitCounts

from ..config import Policy
from ..events._structs import Guardrails, TelemetryCovariates, TelemetryEvent
from ..pipeline import DecodedBatch, RawMessage, SubjectEvents
from ..pipeline._dedupe import event_digests
from ._columnar import Table
from ._decode import MessageDecoder
from ._experiment_model import ExperimentModel
from ._experiment_state import ExperimentState, VariantStats
from ._registration import observe_registration

__all__ = ["SRM_MAX_UNITS", "Codes", "TelemetryColumns", "TelemetryHandler", "fold_variant"]

# Distinct (variant, unit) pairs a stage's split test remembers (8 bytes each) before it
# freezes: enough to tell a 9% canary from a declared 10% (about 25,000 units).
SRM_MAX_UNITS = 50_000
_NAN = math.nan
# Fields of a columnar envelope that hold a nested value whole (not by dotted name): such
# a table is read through its events.
_NESTED = ("guardrails", "covariates", "sec_outcomes")


@dataclass(frozen=True, slots=True)
class Codes:
    """Strings as integer codes into ``names`` (-1: none), in order of first appearance."""

    codes: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def of(cls, values: Iterable[str | None]) -> Codes:
        """Each value's code, in C-level passes: the row where each value first appears
        (as ``split_by_subject`` factorizes subjects), then its rank among those rows."""
        rows = list(values)
        first: dict[str | None, int] = {}
        at = np.fromiter(map(first.setdefault, rows, range(len(rows))), np.int64, len(rows))
        codes = np.searchsorted(np.fromiter(first.values(), np.int64, len(first)), at)
        names = list(first)
        if None in first:
            none = names.index(None)
            codes = np.where(codes == none, -1, codes - (codes > none))
            del names[none]
        return cls(codes, tuple(names))  # type: ignore[arg-type]

    def values(self) -> list[str | None]:
        """The string of each row (None where none)."""
        names = [*self.names, None]  # code -1 is the last
        return [names[code] for code in self.codes.tolist()]

    def take(self, rows: np.ndarray | slice) -> Codes:
        return Codes(self.codes[rows], self.names)

    @classmethod
    def concat(cls, parts: Sequence[Codes]) -> Codes:
        index: dict[str, int] = {}
        remapped = []
        for part in parts:
            lookup = np.array([index.setdefault(n, len(index)) for n in part.names] + [-1])
            remapped.append(lookup[part.codes])  # -1 indexes the trailing -1
        return cls(np.concatenate(remapped), tuple(index))

    def first_seen(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(code, its rows)`` for each code present among ``rows`` (indices, in order),
        in order of first appearance there."""
        codes = self.codes[rows]
        present, first = np.unique(codes, return_index=True)
        in_order = present[np.argsort(first)].tolist()
        return [
            (code, rows[codes == code] if present.size > 1 else rows)
            for code in in_order
            if code >= 0
        ]


@dataclass(frozen=True, slots=True)
class TelemetryColumns:
    """A subject's telemetry of one batch, one array per field; NaN where a number is not
    given (booleans as 1.0 and 0.0)."""

    variant: Codes
    unit_id: np.ndarray
    """Object array of the unit ids (hashed with the variant for the split test)."""
    staging: np.ndarray
    outcome: np.ndarray
    toxicity: np.ndarray
    pii: np.ndarray
    latency_ms: np.ndarray
    unit_cost: np.ndarray
    pre_period: np.ndarray
    segment: Codes
    secondary: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.staging.size)

    @classmethod
    def from_events(cls, events: Sequence[TelemetryEvent]) -> TelemetryColumns:
        """The columns of row events: each field read off every event by C-level maps
        (``np.array`` of floats turns None into NaN, booleans into 1.0 and 0.0)."""
        n = len(events)
        guard = _whole(list(map(_get_guardrails, events)), _NO_GUARDRAILS)
        cov = _whole(list(map(_get_covariates, events)), _NO_COVARIATES)
        secondary: dict[str, np.ndarray] = {}
        for row, outcomes in enumerate(map(_get_secondary, events)):
            for name, value in (outcomes or {}).items():
                column = secondary.get(name)
                if column is None:
                    column = secondary[name] = np.full(n, _NAN)
                column[row] = value
        return cls(
            variant=Codes.of(map(_get_variant, events)),
            unit_id=np.array(list(map(_get_unit, events)), dtype=object),
            staging=np.array(list(map(_get_environment, events)), dtype=object) == "staging",
            outcome=_floats(map(_get_outcome, events), n),
            toxicity=_floats(map(_get_toxicity, guard), n),
            pii=_floats(map(_get_pii, guard), n),
            latency_ms=_floats(map(_get_latency, guard), n),
            unit_cost=_floats(map(_get_cost, guard), n),
            pre_period=_floats(map(_get_pre, cov), n),
            segment=Codes.of(map(_get_segment, cov)),
            secondary=secondary,
        )

    @classmethod
    def from_table(cls, table: Table, events: Any) -> TelemetryColumns:
        """A columnar envelope's columns, from its decoded arrays (``events()`` gives its
        rows as events, for a table that holds a nested field whole)."""
        if any(table.has(name) for name in _NESTED):
            return cls.from_events(events())
        secondary = {
            name.split(".", 1)[1]: table.floats(name)
            for name in [*table.columns, *table.constants]
            if name.startswith("sec_outcomes.")
        }
        environment = table.values("environment")
        return cls(
            variant=Codes.of(table.values("variant")),
            unit_id=np.array(table.values("unit_id"), dtype=object),
            staging=np.array([e == "staging" for e in environment], dtype=bool),
            outcome=table.floats("primary_outcome"),
            toxicity=table.floats("guardrails.toxicity"),
            pii=table.floats("guardrails.pii"),
            latency_ms=table.floats("guardrails.latency_ms"),
            unit_cost=table.floats("guardrails.unit_cost"),
            pre_period=table.floats("covariates.pre_period"),
            segment=Codes.of(table.values("covariates.segment")),
            secondary=secondary,
        )

    def same_rows(self, other: TelemetryColumns) -> bool:
        """Whether both hold the same values row by row (codes compared as their names,
        NaN equal to NaN)."""
        if len(self) != len(other) or self.secondary.keys() != other.secondary.keys():
            return False
        if self.variant.values() != other.variant.values():
            return False
        if self.segment.values() != other.segment.values():
            return False
        if self.unit_id.tolist() != other.unit_id.tolist():
            return False
        numbers = ("staging", "outcome", "toxicity", "pii", "latency_ms", "unit_cost")
        pairs = [(getattr(self, name), getattr(other, name)) for name in numbers]
        pairs += [(self.pre_period, other.pre_period)]
        pairs += [(values, other.secondary[name]) for name, values in self.secondary.items()]
        return all(np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in pairs)

    def take(self, rows: np.ndarray | slice) -> TelemetryColumns:
        return TelemetryColumns(
            self.variant.take(rows),
            self.unit_id[rows],
            self.staging[rows],
            self.outcome[rows],
            self.toxicity[rows],
            self.pii[rows],
            self.latency_ms[rows],
            self.unit_cost[rows],
            self.pre_period[rows],
            self.segment.take(rows),
            {name: values[rows] for name, values in self.secondary.items()},
        )

    @classmethod
    def concat(cls, parts: Sequence[TelemetryColumns]) -> TelemetryColumns:
        names = list(dict.fromkeys(name for part in parts for name in part.secondary))
        return cls(
            Codes.concat([p.variant for p in parts]),
            np.concatenate([p.unit_id for p in parts]),
            np.concatenate([p.staging for p in parts]),
            np.concatenate([p.outcome for p in parts]),
            np.concatenate([p.toxicity for p in parts]),
            np.concatenate([p.pii for p in parts]),
            np.concatenate([p.latency_ms for p in parts]),
            np.concatenate([p.unit_cost for p in parts]),
            np.concatenate([p.pre_period for p in parts]),
            Codes.concat([p.segment for p in parts]),
            {
                name: np.concatenate([p.secondary.get(name, np.full(len(p), _NAN)) for p in parts])
                for name in names
            },
        )


_NO_GUARDRAILS = Guardrails()
_NO_COVARIATES = TelemetryCovariates()
_get_guardrails, _get_covariates = attrgetter("guardrails"), attrgetter("covariates")
_get_secondary, _get_variant = attrgetter("sec_outcomes"), attrgetter("variant")
_get_unit, _get_environment = attrgetter("unit_id"), attrgetter("environment")
_get_outcome, _get_toxicity = attrgetter("primary_outcome"), attrgetter("toxicity")
_get_pii, _get_latency = attrgetter("pii"), attrgetter("latency_ms")
_get_cost, _get_pre = attrgetter("unit_cost"), attrgetter("pre_period")
_get_segment = attrgetter("segment")


def _whole(values: list[Any], empty: Any) -> list[Any]:
    """``values`` with ``empty`` (every field None) where a nested value is absent."""
    return [empty if v is None else v for v in values] if None in values else values


def _floats(values: Iterable[float | bool | None], n: int) -> np.ndarray:
    column = np.array(list(values), dtype=np.float64)
    return column if column.shape == (n,) else np.full(n, _NAN)  # n == 0


def _present(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def fold_variant(stats: VariantStats, columns: TelemetryColumns, rows: np.ndarray) -> None:
    """One variant's events of one batch (``rows``, in order) into its statistics: each
    field's given values, in the events' order, into its estimator."""
    stats.n += int(rows.size)
    toxicity = _present(columns.toxicity[rows])
    stats.toxicity_n += int(toxicity.size)
    stats.toxic += int(np.count_nonzero(toxicity))
    pii = _present(columns.pii[rows])
    stats.pii_n += int(pii.size)
    stats.pii += int(np.count_nonzero(pii))
    latency = _present(columns.latency_ms[rows])
    if latency.size:
        stats.latency.update(latency)
        stats.latency_moments.update(latency)
        stats.log_latency.update(np.log1p(latency))
    cost = _present(columns.unit_cost[rows])
    if cost.size:
        stats.cost.update(cost)
    outcome = columns.outcome[rows]
    given = ~np.isnan(outcome)
    if given.any():
        with_outcome = rows[given]
        outcome = outcome[given]
        stats.primary.update(outcome)
        pre = columns.pre_period[with_outcome]
        paired = ~np.isnan(pre)
        if paired.any():
            stats.primary_pre.update(pre[paired], outcome[paired])
        for code, segment_rows in columns.segment.first_seen(with_outcome):
            name = columns.segment.names[code]
            stats.segments.setdefault(name, Moments()).update(columns.outcome[segment_rows])
    if columns.secondary:
        _fold_secondary(stats, columns.secondary, rows)


def _fold_secondary(
    stats: VariantStats, secondary: Mapping[str, np.ndarray], rows: np.ndarray
) -> None:
    """Each secondary outcome's given values; new names in order of first appearance."""
    firsts = []
    for order, (name, column) in enumerate(secondary.items()):
        values = column[rows]
        given = np.flatnonzero(~np.isnan(values))
        if given.size:
            firsts.append((int(given[0]), order, name, values[given]))
    for _, _, name, values in sorted(firsts, key=lambda item: item[:2]):
        stats.secondary.setdefault(name, Moments()).update(values)


class TelemetryHandler:
    """``driftgate.telemetry``: each variant's guardrails and outcomes, per experiment."""

    topic: str = "telemetry"

    def __init__(self, policy: Policy) -> None:
        self.model = ExperimentModel(policy)
        self.decoder = MessageDecoder(TelemetryEvent)

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        return self.decoder.decode_subjects(
            messages,
            "experiment_id",
            TelemetryColumns.from_events,
            lambda table: TelemetryColumns.from_table(
                table, lambda: self.decoder.columnar.events(table)
            ),
        )

    def update(
        self, subject: str, state: ExperimentState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        """Fold one batch into each variant's statistics (production events only);
        returns the audit log's entries of the experiment's pre-registration."""
        columns: TelemetryColumns = events.columns
        variants = columns.variant
        staging = columns.staging
        if staging.any():  # counted and shown, never judged
            for code, rows in variants.first_seen(np.flatnonzero(staging)):
                name = variants.names[code]
                state.staging[name] = state.staging.get(name, 0) + int(rows.size)
            production = np.flatnonzero(~staging)
        else:
            production = np.arange(staging.size)
        by_variant = variants.first_seen(production)
        for code, rows in by_variant:
            stats = state.variants.setdefault(variants.names[code], VariantStats())
            fold_variant(stats, columns, rows)
        audit: list[dict[str, Any]] = []
        if production.size:
            first = float(events.ts[production].min())
            if state.stage_first_ts is None or first < state.stage_first_ts:
                state.stage_first_ts = first
            if state.lifecycle is None:  # an A/B experiment: its plan locks, or deviates
                policy = self.model.policy.for_experiment(subject)
                last = float(events.ts[production].max())
                audit = observe_registration(subject, state, policy, first, last, now)
        rows_of = {variants.names[code]: rows for code, rows in by_variant}
        canary = self.model.policy.for_agent(subject).canary
        if state.lifecycle is not None and canary.canary_variant in rows_of:
            state.lifecycle.last_data_at = now
        added = self._count_units(subject, state, columns, events.ts, production)
        self._test_split(subject, state, added)
        self._pair_quality(subject, state, columns, rows_of)
        return audit

    def _pair_quality(
        self,
        subject: str,
        state: ExperimentState,
        columns: TelemetryColumns,
        rows_of: Mapping[str, np.ndarray],
    ) -> None:
        """The active canary's and control's quality outcomes, in arrival order, into the
        stage's pairs (started with the stage's first telemetry; a policy whose ratio or
        bounds changed starts them afresh)."""
        expected = self.model.expected_split(subject, state)
        if state.lifecycle is None or expected is None:
            return
        canary = self.model.policy.for_agent(subject).canary
        low, high = canary.quality_range
        design = (expected[canary.canary_variant], 1 - canary.quality_drop_max, low, high)
        pairs = state.quality_pairs
        if pairs is None or (pairs.treatment_share, pairs.ratio, pairs.low, pairs.high) != design:
            pairs = state.quality_pairs = PairedDifferenceSequence(
                *design[:2], canary.alpha, low, high, canary.target_time
            )
        none = np.zeros(0, dtype=np.int64)
        pairs.update(
            _present(columns.outcome[rows_of.get(canary.canary_variant, none)]),
            _present(columns.outcome[rows_of.get(canary.control_variant, none)]),
        )

    def _count_units(
        self,
        subject: str,
        state: ExperimentState,
        columns: TelemetryColumns,
        ts: np.ndarray,
        production: np.ndarray,
    ) -> dict[str, int]:
        """Count the batch's distinct units per variant into the stage's split counts.

        The counts start with the stage's first event of a variant other than control
        (its canary traffic) at or after the stage's start: before a controller routes
        traffic to the canary, control alone is all there is, and no mismatch. That
        first event is a stopping time and the mixture's first factor is 1 whatever it
        is, so starting there keeps the test's level."""
        variants = columns.variant
        if state.split is None:
            control = self.model.control(subject, state)
            since = -math.inf if state.split_from is None else state.split_from
            codes = variants.codes[production]
            other = codes != (variants.names.index(control) if control in variants.names else -2)
            starts = np.flatnonzero(other & (ts[production] >= since))
            if starts.size == 0:
                return {}
            state.split = SplitCounts(SRM_MAX_UNITS)
            state.split_started_at = float(ts[production[starts[0]]])
            production = production[starts[0] :]
        if state.split.full or production.size == 0:
            return {}  # a frozen count adds nothing: no need to hash the units
        names = np.array(variants.names, dtype=object)[variants.codes[production]]
        units = columns.unit_id[production].tolist()
        pairs = [f"{v}\x1f{u}" for v, u in zip(names.tolist(), units, strict=True)]
        return state.split.update(names, event_digests(pairs))

    def _test_split(self, subject: str, state: ExperimentState, added: Mapping[str, int]) -> None:
        """Feed the sample-ratio test the units added, of the declared variants only."""
        expected = self.model.expected_split(subject, state)
        if expected is None or state.split is None:
            return
        names = sorted(expected)
        if state.srm is None or state.srm_variants != names:
            # A new stage, or new variants: the test starts with what the stage counted.
            state.srm = SampleRatioSequence([expected[name] for name in names])
            state.srm_variants = names
            counts = [state.split.counts.get(name, 0) for name in names]
        else:
            counts = [added.get(name, 0) for name in names]
        state.srm.update(counts)
