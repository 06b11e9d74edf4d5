"""Throughput of one driftgate worker end to end, against the limits and a per-event peer.

    python bench/throughput.py [--single 50000] [--envelope 1000000] [--peer 20000]

Every contender reads the same pre-produced topic, in the same run, on the same broker
and Redis (started here on free loopback ports):

* limit: a raw aiokafka ``getmany`` drain (no decoding);
* Faust's ceiling: a bare Faust agent that decodes and counts;
* driftgate: the real worker (``python -m monitor worker``), Kafka -> decode -> statistics
  -> Redis -> gates -> metrics;
* peer: a Faust agent doing per event what a hand-written monitor does (River ``Var`` and
  ``ADWIN``, one Redis ``HINCRBYFLOAT``, one Prometheus increment).

Rates are events per second from the first processed batch to the last. Also: Redis
commands per driftgate batch, the worker's resident memory, the latency from producing a
gate-breaking event to its decision on the topic, and two workers against one.
Results go to bench/results/throughput.json and bench/results/throughput.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
from _harness import (
    ROOT,
    Services,
    create_topic,
    free_port,
    machine_summary,
    markdown_table,
    produce,
    rss_mb,
    spawn,
    wait_until,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

STREAMS = 64


def make_messages(events: int, envelope: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=events)
    y = s + rng.normal(0, 0.1, events)
    names = [f"policy:{i}" for i in range(STREAMS)]
    messages = []
    for start in range(0, events, envelope):
        stream = names[(start // envelope) % STREAMS]
        batch = [
            {
                "event_id": f"e{seed}-{i}",
                "ts": 1.7e9 + i,
                "stream": stream,
                "s": float(s[i]),
                "y": float(y[i]),
            }
            for i in range(start, min(start + envelope, events))
        ]
        value = orjson.dumps(batch[0] if envelope == 1 else batch)
        messages.append((stream.encode(), value))
    return messages


async def _drain(bootstrap: str, topic: str, expected_messages: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8_388_608,
    )
    await consumer.start()
    seen, first = 0, 0.0
    try:
        while seen < expected_messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and not first:
                first = time.monotonic()
            seen += sum(len(messages) for messages in batch.values())
        return first, time.monotonic()
    finally:
        await consumer.stop()


def raw_drain(services: Services, topic: str, messages: int, events: int) -> float:
    first, last = asyncio.run(_drain(services.bootstrap, topic, messages))
    return events / (last - first)


def faust_contender(services: Services, mode: str, topic: str, expected: int, log: Path) -> float:
    key = f"bench:result:{mode}:{topic}"
    env = dict(
        os.environ,
        BENCH_BOOTSTRAP=services.bootstrap,
        BENCH_TOPIC=topic,
        BENCH_REDIS=services.redis_url,
        BENCH_EXPECTED=str(expected),
        BENCH_RESULT_KEY=key,
    )
    process = spawn(
        [sys.executable, str(ROOT / "bench/faust_baselines.py"), mode, "worker", "-l", "warn"],
        env,
        log,
    )
    try:
        raw = wait_until(lambda: services.redis.get(key), 600, f"{mode} on {topic}", every=0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    result = json.loads(raw)
    return result["count"] / (result["last"] - result["first"])


class Worker:
    """A real driftgate worker on a topic prefix, and what it reports."""

    def __init__(self, services: Services, prefix: str, log: Path) -> None:
        self.services, self.prefix = services, prefix
        self.metrics_port = free_port()
        env = dict(
            os.environ,
            DRIFTGATE_KAFKA_BOOTSTRAP=services.bootstrap,
            DRIFTGATE_REDIS_URL=services.redis_url,
            DRIFTGATE_TOPIC_PREFIX=prefix,
            DRIFTGATE_METRICS_PORT=str(self.metrics_port),
        )
        self.process = spawn(
            [sys.executable, "-m", "monitor", "worker", "--loglevel", "warn"], env, log
        )

    def ok_count(self) -> int:
        raw = self.services.redis.hget("driftgate:counters", f"{self.prefix}labels|ok")
        return int(raw) if raw else 0

    def batches(self) -> float:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
        for line in text.splitlines():
            if line.startswith("driftgate_batch_duration_seconds_count"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except Exception:  # noqa: BLE001 - a stuck worker must not hang the benchmark
            self.process.kill()


def measure_rate(workers: list[Worker], expected: int, timeout: float = 600) -> float:
    counts = lambda: workers[0].ok_count()  # noqa: E731 - counters are global in Redis
    first = wait_until(counts, timeout, "first batch")
    started = time.monotonic()
    wait_until(lambda: counts() >= expected, timeout, f"{expected} events")
    return (expected - first) / (time.monotonic() - started)


def commands_processed(services: Services) -> int:
    stats = services.redis.info("commandstats")
    # The harness's own polling (hget) and INFO are not the worker's.
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_hget", "cmdstat_info"))


async def _latency_trials(services: Services, prefix: str, trials: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        f"{prefix}decisions", bootstrap_servers=services.bootstrap, auto_offset_reset="latest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=services.bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    try:
        await asyncio.sleep(2)  # the consumer's position is set before the first trial
        for trial in range(trials):
            stream = f"latency:{trial}"
            events = [
                {
                    "event_id": f"lat-{trial}-{i}",
                    "ts": time.time(),
                    "stream": stream,
                    "s": 0.5,
                    "y": 1.0,
                }
                for i in range(40)
            ]
            sent[stream] = time.monotonic()
            await producer.send_and_wait(
                f"{prefix}labels", orjson.dumps(events), key=stream.encode()
            )
            deadline = time.monotonic() + 10
            while stream in sent and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=50)
                for messages in batch.values():
                    for message in messages:
                        subject = orjson.loads(message.value)["subject"]
                        if subject in sent:
                            latencies.append(time.monotonic() - sent.pop(subject))
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=50_000, help="events, one per message")
    parser.add_argument("--envelope", type=int, default=1_000_000, help="events, 100 per message")
    parser.add_argument("--peer", type=int, default=20_000, help="events the peer processes")
    parser.add_argument("--latency-trials", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    services = Services()
    logs = services.workdir
    results: dict[str, dict[str, float]] = {}
    extra: dict[str, float] = {}
    try:
        for shape, events, envelope in (
            ("single", args.single, 1),
            ("envelope", args.envelope, 100),
        ):
            prefix = f"b{shape}."
            topic = f"{prefix}labels"
            create_topic(services.bootstrap, topic, 4)
            messages = make_messages(events, envelope, seed=1)
            produce(services.bootstrap, topic, messages)
            row = results[shape] = {}
            row["raw aiokafka drain"] = raw_drain(services, topic, len(messages), events)
            row["bare Faust decode+count"] = faust_contender(
                services, "bare", topic, events, logs / f"bare-{shape}.log"
            )
            before = commands_processed(services)
            worker = Worker(services, prefix, logs / f"driftgate-{shape}.log")
            try:
                row["driftgate worker"] = measure_rate([worker], events)
                batches = worker.batches()
                extra[f"{shape}: redis commands per batch"] = (
                    commands_processed(services) - before
                ) / batches
                extra[f"{shape}: events per batch"] = events / batches
                extra[f"{shape}: worker RSS MB"] = rss_mb(worker.process.pid)
            finally:
                worker.stop()
            row["per-event peer (River+Redis+Prometheus)"] = faust_contender(
                services, "peer", topic, min(args.peer, events), logs / f"peer-{shape}.log"
            )
            print(f"{shape}: {row}", flush=True)

        # Decision latency: a gate-breaking envelope to its decision on the topic.
        latency_worker = Worker(services, "blat.", logs / "driftgate-latency.log")
        try:
            create_topic(services.bootstrap, "blat.labels", 4)
            wait_until(lambda: b"" in (logs / "driftgate-latency.log").read_bytes(), 5, "log")
            time.sleep(8)  # group join
            latencies = asyncio.run(_latency_trials(services, "blat.", args.latency_trials))
        finally:
            latency_worker.stop()
        extra["decision latency p50 s"] = statistics.median(latencies)
        extra["decision latency p99 s"] = float(np.quantile(latencies, 0.99))
        extra["decision latency trials"] = len(latencies)

        # Scale-out: one worker, then two in one group, each on a fresh topic of 4 partitions.
        for count in (1, 2):
            prefix = f"bscale{count}."
            create_topic(services.bootstrap, f"{prefix}labels", 4)
            workers = [
                Worker(services, prefix, logs / f"scale{count}-{i}.log") for i in range(count)
            ]
            try:
                time.sleep(12)  # every member joined and the partitions split
                messages = make_messages(args.envelope // 2, 100, seed=2 + count)
                started = time.monotonic()
                produce(services.bootstrap, f"{prefix}labels", messages)
                wait_until(lambda w=workers: w[0].ok_count() >= args.envelope // 2, 600, "scale")
                extra[f"scale-out: {count} worker(s) events/s (producer concurrent)"] = (
                    args.envelope // 2
                ) / (time.monotonic() - started)
            finally:
                for worker in workers:
                    worker.stop()
    finally:
        services.close()

    report(results, extra, args)


def report(
    results: dict[str, dict[str, float]], extra: dict[str, float], args: argparse.Namespace
) -> None:
    rows = []
    for shape, row in results.items():
        ours = row["driftgate worker"]
        for name, rate in row.items():
            rows.append([shape, name, rate, ours / rate])
    table = markdown_table(["messages", "contender", "events/s", "driftgate / contender"], rows)
    extras = markdown_table(["measure", "value"], [[k, v] for k, v in extra.items()])
    print(f"\nMachine: {machine_summary()}\n\n{table}\n\n{extras}")
    document = {
        "machine": machine_summary(),
        "results": results,
        "extra": extra,
        "args": {k: str(v) for k, v in vars(args).items()},
        "time": time.time(),
    }
    (args.out / "throughput.json").write_text(json.dumps(document, indent=2))
    (args.out / "throughput.md").write_text(f"{table}\n\n{extras}\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(12, 4.5))
    for axis, (shape, row) in zip(np.atleast_1d(axes), results.items(), strict=True):
        names = list(row)
        axis.barh(
            names,
            [row[n] for n in names],
            color=["#999", "#777", "#1f77b4", "#d62728"][: len(names)],
        )
        axis.set_xscale("log")
        axis.set_title(f"{shape}: {1 if shape == 'single' else 100} event(s)/message")
        axis.set_xlabel("events per second (log)")
    fig.tight_layout()
    fig.savefig(args.out / "throughput.png", dpi=110)


if __name__ == "__main__":
    main()
