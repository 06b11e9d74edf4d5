"""The Faust contenders of bench/throughput.py, one process each.

    python bench/faust_baselines.py bare|peer

Both run with the driftgate worker's own Faust settings (``monitor.runtime._app.FAUST_SETTINGS``:
fetch sizes, stream buffer, rebalance timeouts), so that all three read Kafka alike.

* ``bare``: Faust's own ceiling: decode every message and count the events, nothing else
  (of a columnar envelope, also its ``s`` and ``y`` arrays into numpy, as the worker does).
* ``peer``: what a typical hand-written monitor does per event: a River ``stats.Var`` and
  ``drift.ADWIN`` update, one Redis ``HINCRBYFLOAT`` and one Prometheus counter increment.

Both read BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_REDIS, BENCH_EXPECTED and BENCH_RESULT_KEY,
and when they have seen BENCH_EXPECTED events write ``{first, last, count}`` (monotonic
seconds of the first and last processed event) to Redis under BENCH_RESULT_KEY.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import faust
import numpy as np
import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter

from monitor.runtime._app import FAUST_SETTINGS

MODE = sys.argv.pop(1)
EXPECTED = int(os.environ["BENCH_EXPECTED"])
RESULT_KEY = os.environ["BENCH_RESULT_KEY"]

app = faust.App(
    f"bench-{MODE}-{os.getpid()}",
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    value_serializer="raw",
    web_enabled=False,
    datadir=tempfile.mkdtemp(prefix="bench-faust-"),
    **FAUST_SETTINGS,
)
topic = app.topic(os.environ["BENCH_TOPIC"], value_type=bytes)
client = aioredis.from_url(os.environ["BENCH_REDIS"])
seen = {"count": 0, "first": 0.0}


async def report() -> None:
    await client.set(
        RESULT_KEY,
        orjson.dumps({"first": seen["first"], "last": time.monotonic(), "count": seen["count"]}),
    )


if MODE == "bare":

    @app.agent(topic)
    async def bare(stream):  # type: ignore[no-untyped-def]
        async for events in stream.noack_take(10_000, within=0.1):
            if not seen["count"]:
                seen["first"] = time.monotonic()
            for event in events:
                document = orjson.loads(event.value)
                if isinstance(document, list):
                    seen["count"] += len(document)
                elif "columns" in document:  # a columnar envelope: its arrays, as numpy
                    columns = document["columns"]
                    seen["count"] += len(columns["event_id"])
                    np.array(columns["s"], dtype=np.float64)
                    np.array(columns["y"], dtype=np.float64)
                else:
                    seen["count"] += 1
            for event in events:
                await stream.ack(event)
            if seen["count"] >= EXPECTED:
                await report()

elif MODE == "peer":
    from river import drift, stats

    variance = stats.Var()
    detector = drift.ADWIN()
    registry = CollectorRegistry()
    processed = Counter("peer_events", "events", registry=registry)

    @app.agent(topic)
    async def peer(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            if not seen["count"]:
                seen["first"] = time.monotonic()
            document = orjson.loads(value)
            for event in document if isinstance(document, list) else [document]:
                residual = event["y"] - event["s"]
                variance.update(residual)
                detector.update(residual)
                await client.hincrbyfloat("bench:peer:" + event["stream"], "sum", residual)
                processed.inc()
                seen["count"] += 1
            if seen["count"] >= EXPECTED:
                await report()

else:
    raise SystemExit(f"unknown mode {MODE!r}")

if __name__ == "__main__":
    app.main()
