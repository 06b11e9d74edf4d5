"""Ten minutes at a steady rate: the worker's resident memory stays flat once warm, its lag
stays bounded, and the statistics at the end equal one clean pass over the log.

Deselected by default (``soak``): ``python -m pytest -m soak -s tests/reliability/test_soak.py``
prints the figures docs/reliability.md records.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from ..integration.conftest import Deployment
from ._oracle import INPUTS, LoadProducer, Workload, check_against_oracle, reconcile_outputs

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SECONDS = 600
WARM_UP = 240  # the duplicate window (about 150 s of real time here) has turned over
MESSAGES_PER_SECOND = 25
SAMPLE_EVERY = 10


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def elements(value: bytes) -> int:
    document = orjson.loads(value)
    return len(document) if isinstance(document, list) else 1


def test_ten_minutes_at_a_steady_rate(deployment: Deployment, tmp_path: Path) -> None:
    # A two-minute duplicate window (event time runs at about a millisecond an event
    # here): the window turns over several times, so what the worker remembers of event
    # ids levels off, as it does after six hours with the default window.
    config = tmp_path / "config.yaml"
    config.write_text("dedupe_window_seconds: 120\n")
    workload = Workload(seed=61)
    messages = workload.messages(SECONDS * MESSAGES_PER_SECOND)
    sent_events = np.cumsum([elements(m.value) for m in messages])
    producer = LoadProducer(deployment, messages, per_second=MESSAGES_PER_SECOND)
    worker = deployment.start_worker(DRIFTGATE_CONFIG=str(config))
    started = time.monotonic()
    producer.start()
    samples = []  # (seconds, resident MB, events produced but not yet applied)
    while producer.is_alive():
        time.sleep(SAMPLE_EVERY)
        assert worker.poll() is None, deployment.worker_log().decode()[-3000:]
        counts = deployment.snapshot().events
        applied = sum(
            counts.get((deployment.topic(topic), outcome), 0)
            for topic in INPUTS
            for outcome in ("ok", "duplicate", "dlq")
        )
        produced = int(sent_events[producer.sent - 1]) if producer.sent else 0
        samples.append((time.monotonic() - started, resident_mb(worker.pid), produced - applied))
    producer.finish()

    seconds, rss, lag = (np.array(column) for column in zip(*samples, strict=True))
    warm = seconds >= WARM_UP
    slope = float(np.polyfit(seconds[warm] / 60, rss[warm], 1)[0])  # MB a minute
    rate = sent_events[-1] / seconds[-1]
    summary = {
        "seconds": round(float(seconds[-1])),
        "events": int(sent_events[-1]),
        "events_per_second": round(float(rate)),
        "rss_mb_first_warm": round(float(rss[warm][0]), 1),
        "rss_mb_last": round(float(rss[-1]), 1),
        "rss_mb_max_warm": round(float(rss[warm].max()), 1),
        "rss_slope_mb_per_minute_warm": round(slope, 2),
        "lag_events_max": int(lag.max()),
        "lag_seconds_max": round(float(lag.max() / rate), 2),
        "lag_events_median": int(np.median(lag)),
    }
    print("soak:", orjson.dumps(summary).decode())
    (tmp_path / "soak.json").write_bytes(orjson.dumps({"summary": summary, "samples": samples}))

    expected = check_against_oracle(deployment, workload, timeout=300)
    reconcile_outputs(deployment, expected)
    assert worker.poll() is None
    # Flat: after the warm-up, less than a megabyte a minute, and within 10% of where it
    # was. Bounded: never more than ten seconds of traffic behind.
    assert slope < 1.0 and rss[warm].max() < 1.1 * rss[warm][0], summary
    assert lag.max() < 10 * rate, summary
