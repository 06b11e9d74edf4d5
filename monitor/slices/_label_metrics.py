"""The label streams' Prometheus families: the residual intervals, the value estimate,
score and covariate drift, and the late-label join, by stream (read at scrape time)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from ._gauges import gauge_value as _value

if TYPE_CHECKING:
    from ..store import Snapshot

__all__ = ["stream_metrics"]


def stream_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    yield from _streams(snapshot.section("stream"))
    yield from _joins(snapshot)


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
