"""Throughput of one driftgate worker end to end, against the limits and a per-event peer.

    python bench/throughput.py [--single 50000] [--envelope 1000000] [--peer 20000]
                               [--columnar 2000000] [--columnar-size 1000]
                               [--shapes single,envelope,columnar]
                               [--rounds 3] [--latency-trials 50] [--out bench/results]

Every contender reads the same pre-produced messages, in the same run, on the same broker
and Redis (started here on free loopback ports):

* limit: a raw aiokafka ``getmany`` drain (no decoding);
* Faust's ceiling: a bare Faust agent that decodes and counts, with the worker's own Faust
  settings (``monitor.runtime._app.FAUST_SETTINGS``);
* driftgate: the real worker (``python -m monitor worker``), Kafka -> decode -> statistics
  -> Redis -> gates -> metrics;
* peer: a Faust agent doing per event what a hand-written monitor does (River ``Var`` and
  ``ADWIN``, one Redis ``HINCRBYFLOAT``, one Prometheus increment).

The two contenders that matter, bare Faust and driftgate, run in ``--rounds`` alternating
rounds so that a drift of the machine's speed cancels out of their ratio: each shape of
messages is produced once per round to a fresh topic (same bytes every time), and round
``r`` runs both on copy ``r``, bare Faust first in even rounds, driftgate first in odd
ones. Each driftgate round has its own consumer group (topic prefix) and its own Redis
key prefix, so every round starts from empty statistics and duplicate windows. The raw
drain and the (slow) peer run once per shape, on copy 0.

Rates are events per second from the first processed batch to the last. Also: Redis
commands per driftgate batch (counted by Redis, script-internal commands included), the
worker's resident memory, the latency from producing a gate-breaking event to its
decision on the topic, and two workers against one. Writes throughput.json,
throughput.md and throughput.png to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
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

from monitor.store import KeyLayout, ReadModel

STREAMS = 64
PARTITIONS = 4

RAW = "raw aiokafka drain"
BARE = "bare Faust decode+count"
DRIFTGATE = "driftgate worker"
PEER = "per-event peer (River+Redis+Prometheus)"
CONTENDERS = (RAW, BARE, DRIFTGATE, PEER)
COLORS = {RAW: "#999", BARE: "#777", DRIFTGATE: "#1f77b4", PEER: "#d62728"}

# Redis commands that are not the worker's batches: the harness's polling (the read
# model: SMEMBERS, HGETALL), INFO, the Faust contenders' result (GET), the worker's outbox
# sweep every 5 s (SMEMBERS of the registries, XLEN of every outbox) and connection set-up
# (HELLO, PING, SCRIPT LOAD, CLIENT ...). The worker's own GETs (duplicate buckets of a
# subject read cold) and HGETALL (log epochs, once) go too; with a fresh key prefix per
# round there are no buckets to read.
NOT_PER_BATCH = frozenset({"smembers", "hgetall", "info", "get", "xlen", "hello", "ping"})
NOT_PER_BATCH_PREFIXES = ("script|", "client|", "select")


def make_messages(
    events: int, envelope: int, seed: int, columnar: bool = False
) -> list[tuple[bytes, bytes]]:
    """``events`` label events over 64 streams, ``envelope`` per message (1: bare events;
    ``columnar``: one columnar envelope per message, the stream at its top level, as
    ``monitor.emit`` writes them)."""
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
        if columnar:
            value = orjson.dumps(
                {
                    "stream": stream,
                    "columns": {
                        name: [event[name] for event in batch]
                        for name in ("event_id", "ts", "s", "y")
                    },
                }
            )
        else:
            value = orjson.dumps(batch[0] if envelope == 1 else batch)
        messages.append((stream.encode(), value))
    return messages


async def _drain(bootstrap: str, topic: str, expected_messages: int) -> tuple[int, float, float]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8_388_608,
    )
    await consumer.start()
    seen, first_batch, first = 0, 0, 0.0
    try:
        while seen < expected_messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(messages) for messages in batch.values())
            if batch and not first:
                first_batch, first = seen, time.monotonic()
        return first_batch, first, time.monotonic()
    finally:
        await consumer.stop()


def raw_drain(services: Services, topic: str, messages: int, events: int) -> float:
    """Events per second of a plain aiokafka consumer that only fetches, from the first
    fetch to the last (the first fetch's messages are not counted: as for the worker)."""
    first_batch, first, last = asyncio.run(_drain(services.bootstrap, topic, messages))
    if first_batch >= messages or last <= first:
        return float("nan")  # everything came in the first fetch: too few messages
    return (messages - first_batch) * (events / messages) / (last - first)


def faust_contender(services: Services, mode: str, topic: str, expected: int, log: Path) -> float:
    """Events per second of a ``bench/faust_baselines.py`` agent (``bare`` or ``peer``)."""
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
    """A real driftgate worker on a topic prefix and a Redis key prefix, and what it
    reports."""

    def __init__(self, services: Services, prefix: str, redis_prefix: str, log: Path) -> None:
        self.services, self.prefix = services, prefix
        self.layout = KeyLayout(redis_prefix)
        self.metrics_port = free_port()
        env = dict(
            os.environ,
            DRIFTGATE_KAFKA_BOOTSTRAP=services.bootstrap,
            DRIFTGATE_REDIS_URL=services.redis_url,
            DRIFTGATE_TOPIC_PREFIX=prefix,
            DRIFTGATE_REDIS_PREFIX=redis_prefix,
            DRIFTGATE_METRICS_PORT=str(self.metrics_port),
        )
        self.process = spawn(
            [sys.executable, "-m", "monitor", "worker", "--loglevel", "warn"], env, log
        )

    def ok_count(self) -> int:
        """Events applied so far (the read model's counters under this worker's prefix)."""
        snapshot = ReadModel(self.services.redis, self.layout).snapshot()
        return snapshot.events.get((f"{self.prefix}labels", "ok"), 0)

    def batch_totals(self) -> tuple[float, float]:
        """Batches applied by this worker, and the seconds spent in them (its own
        ``driftgate_batch_duration_seconds`` histogram)."""
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
        totals = {"count": 0.0, "sum": 0.0}
        for line in text.splitlines():
            for total in totals:
                if line.startswith(f"driftgate_batch_duration_seconds_{total}"):
                    totals[total] += float(line.rsplit(" ", 1)[1])
        return totals["count"], totals["sum"]

    def batches(self) -> float:
        return self.batch_totals()[0]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except Exception:  # noqa: BLE001 - a stuck worker must not hang the benchmark
            self.process.kill()


def measure_rate(workers: list[Worker], expected: int, timeout: float = 600) -> float:
    counts = lambda: workers[0].ok_count()  # noqa: E731 - counters are global in Redis
    # Polled every 50 ms: the poll reads every subject's view, and must not take the CPU
    # the worker is being measured on.
    first = wait_until(counts, timeout, "first batch", every=0.05)
    started = time.monotonic()
    wait_until(lambda: counts() >= expected, timeout, f"{expected} events", every=0.05)
    return (expected - first) / (time.monotonic() - started)


def command_calls(services: Services) -> dict[str, int]:
    """Calls so far of every Redis command (``INFO commandstats``; Redis counts the
    commands a Lua script runs too)."""
    stats = services.redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def worker_commands(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The calls between two readings that are the worker's batches' (see NOT_PER_BATCH)."""
    return {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if name not in NOT_PER_BATCH
        and not name.startswith(NOT_PER_BATCH_PREFIXES)
        and calls > before.get(name, 0)
    }


@dataclass
class WorkerRun:
    """One driftgate round: its rate, batches, Redis commands and memory."""

    rate: float
    batches: float
    commands: dict[str, int]
    rss_mb: float


def driftgate_run(
    services: Services, prefix: str, redis_prefix: str, events: int, log: Path
) -> WorkerRun:
    """A fresh worker drains ``{prefix}labels`` (``events`` events) into fresh Redis keys."""
    before = command_calls(services)
    worker = Worker(services, prefix, redis_prefix, log)
    try:
        rate = measure_rate([worker], events)
        batches = worker.batches()
        commands = worker_commands(before, command_calls(services))
        return WorkerRun(rate, batches, commands, rss_mb(worker.process.pid))
    finally:
        worker.stop()


@dataclass
class ShapeResult:
    """Every run of one message shape: rates per contender, and the driftgate rounds."""

    events: int
    rates: dict[str, list[float]]
    rounds: list[dict[str, float | int | str]]
    runs: list[WorkerRun]


def measure_shape(
    services: Services, shape: str, events: int, envelope: int, args: argparse.Namespace
) -> ShapeResult:
    """The raw drain, ``--rounds`` alternating rounds of bare Faust and driftgate (a fresh
    copy of the messages each), and the peer (not on columnar messages: it reads rows)."""
    logs = services.workdir
    columnar = shape == "columnar"
    messages = make_messages(events, envelope, seed=1, columnar=columnar)
    topics = []
    for r in range(args.rounds):
        topics.append(f"b{shape}{r}.labels")
        create_topic(services.bootstrap, topics[-1], PARTITIONS)
        produce(services.bootstrap, topics[-1], messages)
    result = ShapeResult(events, {name: [] for name in CONTENDERS}, [], [])
    result.rates[RAW].append(raw_drain(services, topics[0], len(messages), events))
    for r, topic in enumerate(topics):
        order = (BARE, DRIFTGATE) if r % 2 == 0 else (DRIFTGATE, BARE)
        rates: dict[str, float] = {}
        for contender in order:
            if contender == BARE:
                rates[BARE] = faust_contender(
                    services, "bare", topic, events, logs / f"bare-{shape}-{r}.log"
                )
            else:
                run = driftgate_run(
                    services,
                    f"b{shape}{r}.",
                    f"bench{shape}{r}:",
                    events,
                    logs / f"driftgate-{shape}-{r}.log",
                )
                result.runs.append(run)
                rates[DRIFTGATE] = run.rate
        result.rates[BARE].append(rates[BARE])
        result.rates[DRIFTGATE].append(rates[DRIFTGATE])
        result.rounds.append(
            {
                "round": r,
                "first": "bare" if order[0] == BARE else "driftgate",
                "bare": rates[BARE],
                "driftgate": rates[DRIFTGATE],
                "ratio": rates[DRIFTGATE] / rates[BARE],
            }
        )
        print(f"{shape} round {r}: {result.rounds[-1]}", flush=True)
    if not columnar:
        result.rates[PEER].append(
            faust_contender(
                services, "peer", topics[0], min(args.peer, events), logs / f"peer-{shape}.log"
            )
        )
    return result


def shape_extras(shape: str, result: ShapeResult) -> dict[str, float]:
    """Redis commands and events per batch over all driftgate rounds; median RSS."""
    batches = sum(run.batches for run in result.runs)
    commands = sum(sum(run.commands.values()) for run in result.runs)
    return {
        f"{shape}: redis commands per batch": commands / batches,
        f"{shape}: events per batch": result.events * len(result.runs) / batches,
        f"{shape}: worker RSS MB (median of rounds)": statistics.median(
            run.rss_mb for run in result.runs
        ),
    }


def commands_by_name(result: ShapeResult) -> dict[str, float]:
    """Calls per batch of each Redis command, over all driftgate rounds, most first."""
    batches = sum(run.batches for run in result.runs)
    totals: dict[str, int] = {}
    for run in result.runs:
        for name, calls in run.commands.items():
            totals[name] = totals.get(name, 0) + calls
    return {name: calls / batches for name, calls in sorted(totals.items(), key=lambda i: -i[1])}


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


def decision_latency(services: Services, trials: int) -> dict[str, float]:
    """A gate-breaking envelope to its decision on the decisions topic."""
    log = services.workdir / "driftgate-latency.log"
    worker = Worker(services, "blat.", "blat:", log)
    try:
        create_topic(services.bootstrap, "blat.labels", PARTITIONS)
        wait_until(lambda: b"" in log.read_bytes(), 5, "log")
        time.sleep(8)  # group join
        latencies = asyncio.run(_latency_trials(services, "blat.", trials))
    finally:
        worker.stop()
    return {
        "decision latency p50 s": statistics.median(latencies),
        "decision latency p99 s": float(np.quantile(latencies, 0.99)),
        "decision latency trials": len(latencies),
    }


def scale_out(services: Services, events: int) -> dict[str, float]:
    """One worker, then two in one group, each on a fresh topic of 4 partitions, with the
    producer running concurrently."""
    extra = {}
    for count in (1, 2):
        prefix = f"bscale{count}."
        create_topic(services.bootstrap, f"{prefix}labels", PARTITIONS)
        workers = [
            Worker(services, prefix, f"bscale{count}:", services.workdir / f"scale{count}-{i}.log")
            for i in range(count)
        ]
        try:
            time.sleep(12)  # every member joined and the partitions split
            messages = make_messages(events, 100, seed=2 + count)
            started = time.monotonic()
            produce(services.bootstrap, f"{prefix}labels", messages)
            wait_until(lambda w=workers: w[0].ok_count() >= events, 600, "scale")
            extra[f"scale-out: {count} worker(s) events/s (producer concurrent)"] = events / (
                time.monotonic() - started
            )
        finally:
            for worker in workers:
                worker.stop()
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=50_000, help="events, one per message")
    parser.add_argument("--envelope", type=int, default=1_000_000, help="events, 100 per message")
    parser.add_argument("--columnar", type=int, default=2_000_000, help="events, columnar")
    parser.add_argument(
        "--columnar-size", type=int, default=1_000, help="events per columnar message"
    )
    parser.add_argument(
        "--shapes", default="single,envelope,columnar", help="which shapes to run (comma-separated)"
    )
    parser.add_argument("--peer", type=int, default=20_000, help="events the peer processes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/driftgate rounds")
    parser.add_argument("--latency-trials", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    services = Services()
    results: dict[str, ShapeResult] = {}
    extra: dict[str, float] = {}
    try:
        for shape, events, envelope in (
            ("single", args.single, 1),
            ("envelope", args.envelope, 100),
            ("columnar", args.columnar, args.columnar_size),
        ):
            if shape in args.shapes.split(","):
                results[shape] = measure_shape(services, shape, events, envelope, args)
                extra.update(shape_extras(shape, results[shape]))
        if "envelope" in args.shapes.split(","):
            extra.update(decision_latency(services, args.latency_trials))
            extra.update(scale_out(services, args.envelope // 2))
    finally:
        services.close()
    report(results, extra, args, time.monotonic() - started)


def summary_rows(results: dict[str, ShapeResult]) -> list[list[object]]:
    """Per shape and contender: runs, median / min / max rate, and driftgate's ratio (for
    bare Faust the median of the per-round ratios, else of the medians)."""
    rows: list[list[object]] = []
    for shape, result in results.items():
        ours = statistics.median(result.rates[DRIFTGATE])
        for name in CONTENDERS:
            rates = result.rates[name]
            if not rates:  # not run on this shape
                continue
            if name == BARE:
                ratio = statistics.median(float(r["ratio"]) for r in result.rounds)
            else:
                ratio = ours / statistics.median(rates) if statistics.median(rates) else math.nan
            rows.append(
                [shape, name, len(rates), statistics.median(rates), min(rates), max(rates), ratio]
            )
    return rows


def report(
    results: dict[str, ShapeResult],
    extra: dict[str, float],
    args: argparse.Namespace,
    seconds: float,
) -> None:
    table = markdown_table(
        [
            "messages",
            "contender",
            "runs",
            "events/s (median)",
            "min",
            "max",
            "driftgate / contender",
        ],
        summary_rows(results),
    )
    rounds = markdown_table(
        ["messages", "round", "ran first", "bare Faust events/s", "driftgate events/s", "ratio"],
        [
            [shape, r["round"], r["first"], r["bare"], r["driftgate"], r["ratio"]]
            for shape, result in results.items()
            for r in result.rounds
        ],
    )
    extras = markdown_table(["measure", "value"], [[k, v] for k, v in extra.items()])
    by_name = {shape: commands_by_name(result) for shape, result in results.items()}
    commands = markdown_table(
        ["messages", "Redis command", "calls per batch"],
        [[shape, name, calls] for shape, calls in by_name.items() for name, calls in calls.items()],
    )
    header = (
        f"Machine: {machine_summary()}\n"
        f"{args.rounds} alternating round(s) of bare Faust and driftgate per shape "
        f"(each on its own copy of the messages); shapes {args.shapes}: {args.single:,} "
        f"single events, {args.envelope:,} events in envelopes of 100, {args.columnar:,} "
        f"events in columnar envelopes of {args.columnar_size:,}; took {seconds:.0f} s.\n"
        "driftgate / bare Faust: median of the per-round ratios."
    )
    note = (
        "Redis commands per batch: every command Redis counted while the worker ran "
        "(those its Lua script runs included), without the harness's polling (SMEMBERS, "
        "HGETALL, GET, INFO), the worker's 5-second outbox sweep (SMEMBERS, XLEN) and "
        "connection set-up (HELLO, PING, SCRIPT LOAD, CLIENT)."
    )
    text = f"{header}\n\n{table}\n\n{rounds}\n\n{extras}\n\n{note}\n\n{commands}\n"
    print(f"\n{text}")
    document = {
        "machine": machine_summary(),
        "results": {shape: result.rates for shape, result in results.items()},
        "rounds": {shape: result.rounds for shape, result in results.items()},
        "redis_commands_per_batch": by_name,
        "extra": extra,
        "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": seconds,
        "time": time.time(),
    }
    (args.out / "throughput.json").write_text(json.dumps(document, indent=2))
    (args.out / "throughput.md").write_text(text)
    plot(results, args.out / "throughput.png")


def plot(results: dict[str, ShapeResult], path: Path) -> None:
    """A bar per contender (median rate), the rounds' min-max range as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)))
    for axis, (shape, result) in zip(np.atleast_1d(axes), results.items(), strict=True):
        names = [
            name
            for name in CONTENDERS
            if result.rates[name] and all(math.isfinite(r) and r > 0 for r in result.rates[name])
        ]
        medians = np.array([statistics.median(result.rates[n]) for n in names])
        low = medians - np.array([min(result.rates[n]) for n in names])
        high = np.array([max(result.rates[n]) for n in names]) - medians
        axis.barh(
            names,
            medians,
            xerr=[low, high],
            capsize=4,
            color=[COLORS[n] for n in names],
        )
        axis.invert_yaxis()
        axis.set_xscale("log")
        size = {"single": 1, "envelope": 100}.get(shape, "columnar")
        axis.set_title(f"{shape}: {size} event(s)/message")
        axis.set_xlabel("events per second (log): median, whiskers min-max of the runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
