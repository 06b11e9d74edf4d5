"""Prometheus metrics, read from the read model at scrape time by one collector: the
counters and gates of every subject here, each kind's own families from its slice."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ..config import ACTIONS
from ..events._decisions import GATE_STATUS_CODES
from ..slices import REGISTRY
from ..store import STORE_ERRORS, ReadModel, Snapshot

__all__ = ["StateCollector"]

log = logging.getLogger(__name__)

# The contract's outcomes of an input event, and records counted and skipped.
OUTCOMES = ("ok", "dlq", "duplicate", "ignored")


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
        for kind in REGISTRY:  # each kind's families, in the order the kinds registered
            if kind.metrics is not None:
                yield from kind.metrics(snapshot)
        yield from _gates(snapshot, REGISTRY.gate_parts())


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
    gates = {gate.gate for gate in snapshot.gates}
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


def _gates(snapshot: Snapshot, part_labels: Mapping[str, str]) -> Iterator[Metric]:
    """``driftgate_gate_status`` by ``gate`` and ``subject``; a gate that judges a subject
    in parts (one verdict per covariate) adds the part's label (``covariate``), so each
    part is a series of its own."""
    status = GaugeMetricFamily(
        "driftgate_gate_status",
        "Current verdict: 0 PASS, 1 WARN, 2 FAIL, 3 INCONCLUSIVE or HOLD.",
        labels=["gate", "subject"],
    )
    for gate in sorted(snapshot.gates, key=lambda g: (g.gate, g.subject)):
        labels = {"gate": gate.gate, "subject": gate.subject}
        part = part_labels.get(gate.gate)
        if part is not None:
            labels[part] = str(gate.evidence.get(part, ""))
        group = gate.evidence.get("group")
        if isinstance(group, dict):  # a subgroup's verdict: its own series
            labels["group"] = f"{group['covariate']}={group['value']}"
        status.samples.append(Sample(status.name, labels, float(GATE_STATUS_CODES[gate.verdict])))
    yield status
