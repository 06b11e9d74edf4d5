"""The experiments' and agents' Prometheus families: guardrails by variant, the split's
p-value, and each agent's canary (read at scrape time)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ._gauges import gauge_value as _value
from ._status import ExperimentsStatus

__all__ = ["experiment_metrics"]


def experiment_metrics(section: ExperimentsStatus) -> Iterator[Metric]:
    """From the slice's section of the status document (``experiments`` and ``agents``)."""
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
    for experiment, row in sorted(section.experiments.items()):
        for variant, stats in sorted(row.variants.items()):
            for guardrail, reading in sorted(stats["guardrails"].items()):
                key = [experiment, variant, guardrail]
                value.add_metric(key, _value(reading["value"], math.nan))
                low.add_metric(key, _value(reading["ci_low"], -math.inf))
                high.add_metric(key, _value(reading["ci_high"], math.inf))
        if row.srm_p_value is not None:
            srm.add_metric([experiment], row.srm_p_value)
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
    for name, agent in sorted(section.agents.items()):
        percent.add_metric([name], float(agent.canary_percent))
        hours.add_metric([name], agent.hours_running)
        info.add_metric([name, agent.bundle_id, agent.phase, agent.recommendation], 1.0)
    yield from (percent, hours, info)
