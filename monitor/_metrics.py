"""Prometheus metrics, read from Redis at scrape time by one collector."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._gates import GATE_STATUS_CODES
from ._snapshot import read_snapshot
from ._state import Keys

__all__ = ["StateCollector"]

log = logging.getLogger(__name__)


def _value(number: float | None, missing: float) -> float:
    return missing if number is None or not math.isfinite(number) else number


class StateCollector(Collector):
    """Serves the contract's metrics from the shared state in Redis.

    Counters and gauges are global (every worker serves the same values), so a
    Prometheus that scrapes several workers should aggregate with ``max``, not ``sum``.
    ``driftgate_redis_up`` is 0 when the state could not be read.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("driftgate_redis_up", "1 if the state in Redis was readable.")
        try:
            snapshot = read_snapshot(self.client, self.keys)
        except redis.RedisError as exc:
            log.warning("metrics scrape could not read Redis: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up

        events = CounterMetricFamily(
            "driftgate_events", "Input events by topic and outcome.", labels=["topic", "outcome"]
        )
        decisions = CounterMetricFamily(
            "driftgate_decisions",
            "Decisions published by gate and action.",
            labels=["gate", "action"],
        )
        for name, count in sorted(snapshot.counters.items()):
            parts = name.split("|")
            if parts[0] == "decisions" and len(parts) == 3:
                decisions.add_metric(parts[1:], float(count))
            elif len(parts) == 2:
                events.add_metric(parts, float(count))
        yield events
        yield decisions

        residual = {
            suffix: GaugeMetricFamily(f"driftgate_residual_{suffix}", help_text, labels=["stream"])
            for suffix, help_text in (
                ("n", "Labeled events under the active calibrator."),
                ("mean", "Mean residual y - f(s) under the active calibrator."),
                ("ci_lower", "Lower end of the anytime-valid interval on the mean residual."),
                ("ci_upper", "Upper end of the anytime-valid interval on the mean residual."),
            )
        }
        for name, row in snapshot.streams.items():
            residual["n"].add_metric([name], float(row["labeled_n"]))
            residual["mean"].add_metric([name], _value(row["residual_mean"], math.nan))
            residual["ci_lower"].add_metric([name], _value(row["ci_low"], -math.inf))
            residual["ci_upper"].add_metric([name], _value(row["ci_high"], math.inf))
        yield from residual.values()

        score_ks = GaugeMetricFamily(
            "driftgate_score_ks",
            "KS distance of the stream's scores from its calibration scores.",
            labels=["stream"],
        )
        for name, row in snapshot.streams.items():
            if row["score_ks"] is not None:
                score_ks.add_metric([name], row["score_ks"])
        yield score_ks

        status = GaugeMetricFamily(
            "driftgate_gate_status",
            "Current verdict: 0 PASS, 1 WARN, 2 FAIL, 3 INCONCLUSIVE or HOLD.",
            labels=["gate", "subject"],
        )
        for key, record in sorted(snapshot.gates.items()):
            gate, subject = key.split("|", 1)
            status.add_metric([gate, subject], float(GATE_STATUS_CODES[record["verdict"]]))
        yield status

        last = GaugeMetricFamily(
            "driftgate_last_event_timestamp_seconds",
            "Newest event time seen, by topic.",
            labels=["topic"],
        )
        for topic, ts in sorted(snapshot.last_event_ts.items()):
            last.add_metric([topic], ts)
        yield last
