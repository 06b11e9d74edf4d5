"""Prometheus metrics, read from the read model at scrape time by one collector."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ..config import ACTIONS
from ..gates import GATE_STATUS_CODES
from ..presentation._format import finite_or
from ..store import STORE_ERRORS, ReadModel, Snapshot

__all__ = ["StateCollector"]

log = logging.getLogger(__name__)

# The contract's outcomes of an input event, and records counted and skipped.
OUTCOMES = ("ok", "dlq", "duplicate", "ignored")


def _value(number: float | None, missing: float) -> float:
    return float(finite_or(number, missing))


class StateCollector(Collector):
    """Serves the contract's metrics from the shared state in Redis.

    Every figure but ``driftgate_batch_duration_seconds`` is global: each worker serves
    the same value from Redis, one series per subject, so dashboards and alerts take
    ``max`` over workers, never ``sum``. ``driftgate_redis_up`` is 0 when the state could
    not be read.
    """

    def __init__(self, read_model: ReadModel) -> None:
        self.read_model = read_model

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("driftgate_redis_up", "1 if the state in Redis was readable.")
        try:
            snapshot = self.read_model.snapshot()
        except STORE_ERRORS as exc:
            log.warning("metrics scrape could not read Redis: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from _counters(snapshot)
        yield from _streams(snapshot.section("stream"))
        yield from _joins(snapshot)
        yield from _experiments(snapshot)
        yield from _gates(snapshot)


def _with_zeros(
    counts: dict[tuple[str, str], int], firsts: Iterable[str], seconds: Iterable[str]
) -> dict[tuple[str, str], int]:
    """The counts, with a 0 for every pair not counted yet: ``increase()`` and ``rate()``
    see nothing of a series' first value, so a counter that appeared only with its first
    dead letter (or decision) would never show it to an alert rule."""
    filled = {(first, second): 0 for first in firsts for second in seconds}
    filled.update(counts)
    return filled


def _counters(snapshot: Snapshot) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "driftgate_events", "Input events by topic and outcome.", labels=["topic", "outcome"]
    )
    topics = {topic for topic, _ in snapshot.events}
    for (topic, outcome), count in sorted(_with_zeros(snapshot.events, topics, OUTCOMES).items()):
        events.add_metric([topic, outcome], float(count))
    yield events
    ignored = CounterMetricFamily(
        "driftgate_ignored_records",
        "Input records counted and skipped, by topic and reason (OpenTelemetry spans and "
        "log records without the attributes driftgate reads).",
        labels=["topic", "reason"],
    )
    for (topic, reason), count in sorted(snapshot.ignored.items()):
        ignored.add_metric([topic, reason], float(count))
    yield ignored
    decisions = CounterMetricFamily(
        "driftgate_decisions", "Decisions published by gate and action.", labels=["gate", "action"]
    )
    gates = {gate["gate"] for gate in snapshot.gates}
    for (gate, action), count in sorted(_with_zeros(snapshot.decisions, gates, ACTIONS).items()):
        decisions.add_metric([gate, action], float(count))
    yield decisions
    last = GaugeMetricFamily(
        "driftgate_last_event_timestamp_seconds",
        "Newest event time seen, by topic.",
        labels=["topic"],
    )
    for topic, ts in sorted(snapshot.last_event_ts.items()):
        last.add_metric([topic], ts)
    yield last


# What the verdict uses: the all-time interval, or the one restarted after a change.
_RESIDUAL = (
    ("n", "Labels in the interval the residual verdict uses."),
    ("mean", "Mean residual y - f(s) of the interval the verdict uses."),
    ("ci_lower", "Lower end of that anytime-valid interval."),
    ("ci_upper", "Upper end of that anytime-valid interval."),
)
_ALL_TIME = (
    ("n", "Labels under the active calibrator version."),
    ("mean", "Mean residual y - f(s) over every label of the version."),
    ("ci_lower", "Lower end of the all-time anytime-valid interval."),
    ("ci_upper", "Upper end of the all-time anytime-valid interval."),
)

# The augmented value estimate: mean f(S) over every scored event + mean labeled residual.
_VALUE = (
    ("estimate", "Augmented value estimate: mean f(S) of all scored events + mean residual."),
    ("ci_lower", "Lower end of the value estimate's anytime-valid interval."),
    ("ci_upper", "Upper end of the value estimate's anytime-valid interval."),
)


def _streams(streams: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    verdict_interval = {
        suffix: GaugeMetricFamily(f"driftgate_residual_{suffix}", text, labels=["stream"])
        for suffix, text in _RESIDUAL
    }
    all_time = {
        suffix: GaugeMetricFamily(f"driftgate_residual_alltime_{suffix}", text, labels=["stream"])
        for suffix, text in _ALL_TIME
    }
    score_ks = GaugeMetricFamily(
        "driftgate_score_ks",
        "KS distance of the stream's recent scores from its score drift baseline (the "
        "calibration scores, moved forward while no drift is present, or set by driftgate "
        "baseline).",
        labels=["stream"],
    )
    value = {
        suffix: GaugeMetricFamily(f"driftgate_value_{suffix}", text, labels=["stream"])
        for suffix, text in _VALUE
    }
    covariates = _CovariateFamilies()
    for name, view in sorted(streams.items()):
        covariates.add(name, view.get("covariates") or {})  # absent from older views
        for family, source, n in (
            (verdict_interval, view, view["residual_n"]),
            (all_time, view["all_time"], view["all_time"]["n"]),
        ):
            family["n"].add_metric([name], float(n))
            family["mean"].add_metric([name], _value(source["residual_mean"], math.nan))
            family["ci_lower"].add_metric([name], _value(source["ci_low"], -math.inf))
            family["ci_upper"].add_metric([name], _value(source["ci_high"], math.inf))
        if view["score_ks"] is not None:
            score_ks.add_metric([name], view["score_ks"])
        estimate = view.get("value")  # absent from a view written before it existed
        if estimate is not None:
            value["estimate"].add_metric([name], _value(estimate["estimate"], math.nan))
            value["ci_lower"].add_metric([name], _value(estimate["ci_low"], -math.inf))
            value["ci_upper"].add_metric([name], _value(estimate["ci_high"], math.inf))
    yield from _groups(verdict_interval, streams)  # residuals by subgroup
    yield from verdict_interval.values()
    yield from all_time.values()
    yield score_ks
    yield from value.values()
    yield from covariates.families()


# --- residuals by subgroup (residual_drift.group_by) ------------------------------------


def _groups(families: dict[str, GaugeMetricFamily], streams: dict[str, Any]) -> Iterator[Metric]:
    """Each group's residual interval in the stream's residual families with a ``group``
    label (``covariate=value``: at most ``max_groups`` + 1 per covariate, the policy's
    cap), and its e-value (``driftgate_residual_group_e_value``)."""
    e_value = GaugeMetricFamily(
        "driftgate_residual_group_e_value",
        "A subgroup's e-value against mean residual 0 (e-BH flags it past m / (k q)).",
        labels=["stream", "group"],
    )
    for stream, view in sorted(streams.items()):
        for group, row in sorted((view.get("groups") or {}).items()):
            labels = {"stream": stream, "group": group}
            for suffix, value in (
                ("n", float(row["n"])),
                ("mean", _value(row["residual_mean"], math.nan)),
                ("ci_lower", _value(row["ci_low"], -math.inf)),
                ("ci_upper", _value(row["ci_high"], math.inf)),
            ):
                family = families[suffix]
                family.samples.append(Sample(family.name, labels, value))
            if row["e_value"] is not None:
                e_value.add_metric([stream, group], _value(row["e_value"], math.inf))
    yield e_value


class _CovariateFamilies:
    """``driftgate_covariate_distance`` (the contract's) and the lower bound its band is
    read off, by stream and declared covariate: the policy bounds the label values."""

    def __init__(self) -> None:
        labels = ["stream", "covariate"]
        self.distance = GaugeMetricFamily(
            "driftgate_covariate_distance",
            "Distance of a covariate's values since its baseline from the baseline's: KS for "
            "a number, total variation for a category.",
            labels=labels,
        )
        self.lower = GaugeMetricFamily(
            "driftgate_covariate_distance_lower",
            "Time-uniform lower bound of that distance: what the drift band is read off.",
            labels=labels,
        )

    def add(self, stream: str, rows: dict[str, dict[str, Any]]) -> None:
        for covariate, row in sorted(rows.items()):
            if row["distance"] is None:  # the baseline is still filling
                continue
            self.distance.add_metric([stream, covariate], row["distance"])
            self.lower.add_metric([stream, covariate], _value(row["ci_low"], 0.0))

    def families(self) -> Iterator[Metric]:
        yield self.distance
        yield self.lower


def _joins(snapshot: Snapshot) -> Iterator[Metric]:
    """The late-label join of every stream (zeros for one that never had a half: a
    counter's first value is invisible to ``increase()``)."""
    waiting = GaugeMetricFamily(
        "driftgate_join_waiting",
        "Halves of late-labeled pairs (a score or its oracle label) waiting for the other.",
        labels=["stream"],
    )
    joined = CounterMetricFamily(
        "driftgate_join_joined",
        "Late-labeled pairs joined: a score and its oracle label, sent apart.",
        labels=["stream"],
    )
    expired = CounterMetricFamily(
        "driftgate_join_expired",
        "Halves of late-labeled pairs that waited labels.join_window_seconds in vain.",
        labels=["stream"],
    )
    repeated = CounterMetricFamily(
        "driftgate_join_repeated",
        "Halves of late-labeled pairs not joined: a second score (or label) for a response "
        "whose first still waited.",
        labels=["stream"],
    )
    for name in sorted(snapshot.section("stream")):
        counts = snapshot.joins.get(name, {})
        waiting.add_metric([name], float(counts.get("waiting", 0)))
        joined.add_metric([name], float(counts.get("joined", 0)))
        expired.add_metric([name], float(counts.get("expired", 0)))
        repeated.add_metric([name], float(counts.get("repeated", 0)))
    yield from (waiting, joined, expired, repeated)


def _experiments(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["experiment", "variant", "guardrail"]
    value = GaugeMetricFamily(
        "driftgate_guardrail_value", "A guardrail's current value, by variant.", labels=labels
    )
    low = GaugeMetricFamily(
        "driftgate_guardrail_ci_lower", "Lower end of its anytime-valid interval.", labels=labels
    )
    high = GaugeMetricFamily(
        "driftgate_guardrail_ci_upper", "Upper end of its anytime-valid interval.", labels=labels
    )
    srm = GaugeMetricFamily(
        "driftgate_srm_p_value",
        "Sequential p-value of the declared traffic split (small: a mismatch).",
        labels=["experiment"],
    )
    document = snapshot.status_document()
    for experiment, row in sorted(document["experiments"].items()):
        for variant, stats in sorted(row["variants"].items()):
            for guardrail, reading in sorted(stats["guardrails"].items()):
                key = [experiment, variant, guardrail]
                value.add_metric(key, _value(reading["value"], math.nan))
                low.add_metric(key, _value(reading["ci_low"], -math.inf))
                high.add_metric(key, _value(reading["ci_high"], math.inf))
        if row["srm_p_value"] is not None:
            srm.add_metric([experiment], row["srm_p_value"])
    yield from (value, low, high, srm)
    percent = GaugeMetricFamily(
        "driftgate_canary_percent", "Share of traffic on the canary bundle.", labels=["agent"]
    )
    hours = GaugeMetricFamily(
        "driftgate_canary_hours_running",
        "Hours since the canary bundle was deployed.",
        labels=["agent"],
    )
    info = GaugeMetricFamily(
        "driftgate_canary_info",
        "1 for each agent's current bundle, phase and recommendation.",
        labels=["agent", "bundle_id", "phase", "recommendation"],
    )
    for agent, row in sorted(document["agents"].items()):
        percent.add_metric([agent], float(row["canary_percent"]))
        hours.add_metric([agent], float(row["hours_running"]))
        info.add_metric([agent, row["bundle_id"], row["phase"], row["recommendation"]], 1.0)
    yield from (percent, hours, info)


# The label that tells apart the several verdicts one gate gives one subject, and the
# evidence field it is read from.
_PART_LABELS = {"covariate_drift": "covariate"}


def _gates(snapshot: Snapshot) -> Iterator[Metric]:
    """``driftgate_gate_status`` by ``gate`` and ``subject``; a gate that judges a subject
    in parts (one verdict per covariate) adds the part's label (``covariate``), so each
    part is a series of its own."""
    status = GaugeMetricFamily(
        "driftgate_gate_status",
        "Current verdict: 0 PASS, 1 WARN, 2 FAIL, 3 INCONCLUSIVE or HOLD.",
        labels=["gate", "subject"],
    )
    for gate in sorted(snapshot.gates, key=lambda g: (g["gate"], g["subject"])):
        labels = {"gate": gate["gate"], "subject": gate["subject"]}
        part = _PART_LABELS.get(gate["gate"])
        if part is not None:
            labels[part] = str(gate["evidence"].get(part, ""))
        group = gate["evidence"].get("group")
        if isinstance(group, dict):  # a subgroup's verdict: its own series
            labels["group"] = f"{group['covariate']}={group['value']}"
        status.samples.append(
            Sample(status.name, labels, float(GATE_STATUS_CODES[gate["verdict"]]))
        )
    yield status
