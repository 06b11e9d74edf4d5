"""Where one driftgate worker's time goes: the batch runner alone, and inside Faust.

    python bench/profile.py [--batches 10] [--warmup 3] [--profiled 5] [--single-factor 10]
                            [--faust-events 2000000] [--duration 5] [--out bench/results]

(a) Outside Faust: ``BatchRunner.apply`` with the label handler, against a Redis of the
    harness's own, on batches shaped like those of bench/throughput.py: 500 envelopes of
    100 events over 64 streams, and 465 single-event messages over 64 streams (4
    partitions, offsets and event ids running on from batch to batch). After ``--warmup``
    batches, ``--batches`` are timed one by one (min and median per batch), then
    ``--profiled`` more run under cProfile (the single-event shape runs
    ``--single-factor`` times as many of each). Each function's own time (tottime) goes
    to the category of the file it lives in; functions that belong to no category
    (numpy, most of the standard library and of asyncio, built-ins such as
    ``orjson.dumps``) take the category of their callers, in proportion to the time they
    spent under each. The categories therefore add up to the profiled total. The
    "asyncio event loop" is the loop's own dispatch (``_run_once``, ``Handle._run``, the
    selector); "waiting in epoll" is the loop blocked on Redis's replies: the write
    script running inside Redis, and the round trips.
(b) Inside Faust: a real worker (``python -m monitor worker``) consumes a pre-produced
    topic of 100-event envelopes (4 partitions, 64 streams). Once its first batch has
    landed, ``py-spy record --rate 250 --format raw --idle --threads`` samples it for up
    to ``--duration`` seconds (less if the topic would run dry first), and each sample of
    the worker's main thread goes to the category of its innermost frame that has one,
    with the same rules: Faust / mode / aiokafka (the framework's per-message loop), the
    asyncio event loop, waiting in epoll (for Kafka's consumer thread or Redis), or
    driftgate's categories as in (a). The other threads (Faust's consumer thread, the
    metrics server) are listed apart.

Writes profile.md and profile.json to ``--out``. Needs ``py-spy`` on PATH for (b).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _harness import (
    ROOT,
    Services,
    create_topic,
    machine_summary,
    markdown_table,
    produce,
    wait_until,
)
from throughput import PARTITIONS, Worker, make_messages

from monitor import Policy
from monitor.pipeline import BatchRunner, RawMessage, TopicNames, WriteScript
from monitor.store import KeyLayout, connect_async
from monitor.subjects import LabelHandler

HERE = Path(__file__).resolve().parent
TOPIC = "bprofile.labels"
TOPICS = TopicNames("bprofile.decisions", "bprofile.dlq")
# Batches as the throughput benchmark's worker sees them: (messages, events per message).
# (messages per batch, events per message); columnar: envelopes of 1,000 events as
# monitor.emit writes them, 50,000 events a batch like the others.
SHAPES = {"envelope": (500, 100), "single": (465, 1), "columnar": (50, 1_000)}

DECODE = "decode and validation"
DEDUPE = "duplicate detection"
ESTIMATORS = "estimators (update, state)"
GATES = "gates and views"
REDIS = "Redis write, client side"
RUNNER = "rest of the runner"
AGENT = "driftgate agent and outbox"
FAUST = "Faust / mode / aiokafka"
LOOP = "asyncio event loop"
IDLE = "waiting in epoll"
OTHER = "other"
DRIFTGATE = (DECODE, DEDUPE, ESTIMATORS, GATES, REDIS, RUNNER, AGENT)
ORDER = (*DRIFTGATE, FAUST, LOOP, IDLE, OTHER)

# The file a function lives in decides its category; the first match wins.
PATHS = (
    ("monitor/subjects/_decode.py", DECODE),
    ("/msgspec/", DECODE),
    ("monitor/pipeline/_dedupe.py", DEDUPE),
    ("/estimators/", ESTIMATORS),
    ("monitor/gates/", GATES),
    ("monitor/store/_write.py", REDIS),
    ("/redis/", REDIS),
    ("/hiredis/", REDIS),
    ("monitor/pipeline/_outbox.py", AGENT),
    ("monitor/store/_outbox_streams.py", AGENT),
    ("monitor/runtime/_app.py", AGENT),
    ("monitor/pipeline/", RUNNER),
    ("monitor/store/", RUNNER),
    ("/faust/", FAUST),
    ("/mode/", FAUST),
    ("/aiokafka/", FAUST),
)
# The label handler's file holds decoding, estimator glue and the stream's view.
LABEL_FUNCTIONS = {
    "decode": DECODE,
    "update": ESTIMATORS,
    "load": ESTIMATORS,
    "dump": ESTIMATORS,
    "to_state": ESTIMATORS,
    "new_residuals": ESTIMATORS,
    "from_fields": ESTIMATORS,
    "evaluate": GATES,
    "view": GATES,
    "_interval_view": GATES,
}
# The event loop's own code: dispatching callbacks and waiting for I/O. The rest of
# asyncio (transports, futures, tasks being created) works for whoever called it.
LOOP_CORE = {"run", "run_until_complete", "run_forever", "_run_once", "_run", "select"}
# The runner's share of the gates: verdict records and the gates' view.
RUNNER_GATE_FUNCTIONS = {"_record_verdicts", "_gate_records"}
# Where a thread waits (py-spy samples idle threads too, with --idle).
IDLE_LEAVES = {"select", "wait", "_wait_for_tstate_lock"}


def category_of(path: str, function: str) -> str | None:
    """The category of a function by its file (``None``: it takes its callers')."""
    if path == "~":  # a built-in, named like "<method 'decode' of 'msgspec...' objects>"
        if "msgspec" in function:
            return DECODE
        if "select.epoll" in function:
            return IDLE
        if "hiredis" in function:
            return REDIS
        return None
    function = function.rpartition(".")[2]  # py-spy names methods Class.method
    path = path.replace("\\", "/")
    if path.endswith("monitor/subjects/_labels.py"):
        return LABEL_FUNCTIONS.get(function)
    if path.endswith("monitor/pipeline/_runner.py") and function in RUNNER_GATE_FUNCTIONS:
        return GATES
    if "/asyncio/" in path or path.endswith("/selectors.py"):
        return LOOP if function in LOOP_CORE else None
    return next((category for part, category in PATHS if part in path), None)


def stdlib_module(name: str) -> ModuleType:
    """Import a standard library module with this directory off the path: this file's
    name shadows the standard library's ``profile``, which ``cProfile`` imports."""
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if Path(p or ".").resolve() != HERE]
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


# --- (a) the runner alone, under cProfile ------------------------------------------------


def runner_batches(shape: str, count: int, seed: int) -> list[list[RawMessage]]:
    """``count`` consecutive batches of one shape: keyed by stream (stream i on partition
    i mod 4), offsets per partition and event ids running on from batch to batch."""
    per_batch, envelope = SHAPES[shape]
    messages = make_messages(
        per_batch * envelope * count, envelope, seed, columnar=shape == "columnar"
    )
    offsets = [0] * PARTITIONS
    raw = []
    for key, value in messages:
        partition = int(key.rpartition(b":")[2]) % PARTITIONS
        raw.append(RawMessage(TOPIC, partition, offsets[partition], value))
        offsets[partition] += 1
    return [raw[i : i + per_batch] for i in range(0, len(raw), per_batch)]


def category_shares(stats: dict[Any, Any]) -> dict[Any, dict[str, float]]:
    """Per profiled function, how its own time splits over the categories: all to its
    file's (see ``category_of``), or, for a function without one, over its callers'
    categories, weighted by the time it spent under each (pstats' per-caller tottime)."""
    shares: dict[Any, dict[str, float]] = {}

    def share_of(function: Any) -> dict[str, float]:
        if function in shares:
            return shares[function]
        path, _, name = function
        own = category_of(path, name)
        if own is not None:
            shares[function] = {own: 1.0}
            return shares[function]
        shares[function] = {OTHER: 1.0}  # what a cycle leads back to
        callers = {c: edge for c, edge in stats[function][4].items() if c in stats}
        weights = {c: edge[2] for c, edge in callers.items()}  # (nc, cc, tt, ct)
        if sum(weights.values()) <= 0:
            weights = {c: edge[0] for c, edge in callers.items()}
        total = sum(weights.values())
        result: dict[str, float] = {}
        for caller, weight in weights.items():
            for category, share in share_of(caller).items():
                result[category] = result.get(category, 0.0) + share * weight / total
        shares[function] = result or {OTHER: 1.0}
        return shares[function]

    return {function: share_of(function) for function in stats}


def tottime_by_category(
    stats: dict[Any, Any], shares: dict[Any, dict[str, float]]
) -> dict[str, float]:
    """Seconds of own time per category: they add up to the profiled total."""
    totals = dict.fromkeys(ORDER, 0.0)
    for function, (_, _, tottime, _, _) in stats.items():
        for category, share in shares[function].items():
            totals[category] += tottime * share
    return totals


def describe_shares(shares: dict[str, float]) -> str:
    if len(shares) == 1:
        return next(iter(shares))
    ranked = sorted(shares.items(), key=lambda item: -item[1])
    return ", ".join(
        f"{category} {100 * share:.0f}%" for category, share in ranked if share >= 0.01
    )


def short_name(function: Any) -> str:
    path, line, name = function
    if path == "~":
        return name
    for base in (str(ROOT) + "/", "site-packages/", "lib/python3."):
        if base in path:
            path = path.split(base, 1)[1]
            break
    return f"{name} ({path}:{line})"


@dataclass
class RunnerProfile:
    """One shape of batch through ``BatchRunner.apply``: timings and where the time went."""

    shape: str
    messages_per_batch: int
    events_per_batch: int
    timed_seconds: list[float]
    profiled_batches: int
    profiled_seconds: float
    categories: dict[str, float]
    """Seconds of the profiled batches, per category."""
    top: list[tuple[str, str, float]]
    """The functions with the most own time: name, category, seconds."""
    applied: dict[str, int] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.timed_seconds)


async def _apply_all(
    runner: BatchRunner[Any],
    batches: Sequence[list[RawMessage]],
    highwaters: dict[int, int | None],
    applied: dict[str, int],
    profiler: Any = None,
) -> list[float]:
    seconds = []
    for messages in batches:
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        result = await runner.apply(messages, highwaters)
        seconds.append(time.perf_counter() - started)
        if profiler is not None:
            profiler.disable()
        for outcome in ("ok", "duplicate", "skipped", "dlq", "conflicts"):
            applied[outcome] = applied.get(outcome, 0) + getattr(result, outcome)
    return seconds


async def profile_runner(redis_url: str, shape: str, args: argparse.Namespace) -> RunnerProfile:
    """Warm up, time, then cProfile ``BatchRunner.apply`` on one shape of batch."""
    factor = args.single_factor if shape == "single" else 1
    warmup, timed, profiled = (factor * n for n in (args.warmup, args.batches, args.profiled))
    batches = runner_batches(shape, warmup + timed + profiled, seed=11)
    highwaters: dict[int, int | None] = {p: None for p in range(PARTITIONS)}
    for messages in batches:
        for message in messages:
            highwaters[message.partition] = message.offset + 1
    client = connect_async(redis_url, cluster=False)
    script = WriteScript(client, redis_url)
    policy = Policy()
    runner = BatchRunner(
        client,
        KeyLayout(f"bprofile{shape}:"),
        LabelHandler(policy),
        script,
        TOPICS,
        policy.dedupe_window_seconds,
    )
    applied: dict[str, int] = {}
    profiler = stdlib_module("cProfile").Profile()
    try:
        await _apply_all(runner, batches[:warmup], highwaters, applied)
        seconds = await _apply_all(runner, batches[warmup : warmup + timed], highwaters, applied)
        under = await _apply_all(runner, batches[warmup + timed :], highwaters, applied, profiler)
    finally:
        await script.aclose()
        await client.aclose()
    stats = stdlib_module("pstats").Stats(profiler).stats
    shares = category_shares(stats)
    top = sorted(stats.items(), key=lambda item: -item[1][2])[:15]
    per_batch, envelope = SHAPES[shape]
    return RunnerProfile(
        shape=shape,
        messages_per_batch=per_batch,
        events_per_batch=per_batch * envelope,
        timed_seconds=seconds,
        profiled_batches=len(under),
        profiled_seconds=sum(under),
        categories=tottime_by_category(stats, shares),
        top=[(short_name(f), describe_shares(shares[f]), v[2]) for f, v in top],
        applied=applied,
    )


# --- (b) the worker inside Faust, under py-spy ------------------------------------------

FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_raw(text: str) -> list[tuple[str, list[tuple[str, str]], int]]:
    """py-spy's raw (collapsed) output: ``thread (id): name;frame;...;leaf count`` per
    line, root first; frames are ``function (path:line)``. Returns (thread name, frames
    as (function, path), samples)."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *rest = stack.split(";")
        frames = []
        for frame in rest:
            match = FRAME.match(frame)
            frames.append((match["function"], match["path"]) if match else (frame, ""))
        samples.append((thread.partition(": ")[2] or thread, frames, int(count)))
    return samples


def sample_category(frames: list[tuple[str, str]]) -> str:
    """Idle when the leaf is a standard library wait (a selector, a condition, a join);
    else the category of the innermost frame that has one."""
    leaf, path = frames[-1] if frames else ("", "")
    stdlib = "/lib/python3." in path and "-packages/" not in path
    if leaf.rpartition(".")[2] in IDLE_LEAVES and stdlib:
        return IDLE
    for function, path in reversed(frames):
        category = category_of(path, function)
        if category is not None:
            return category
    return OTHER


@dataclass
class FaustProfile:
    """py-spy samples of a worker consuming envelopes, by thread and category."""

    duration: float
    rate: int
    events: int
    """Events the worker applied during the sampling."""
    batches: float
    apply_seconds: float
    """Seconds the worker spent in ``BatchRunner.apply`` (its own histogram)."""
    ran_dry: bool
    """Whether the topic ran out before the sampling ended (then the per-event figures
    include idle time after the end)."""
    threads: dict[str, dict[str, int]]
    """Thread name -> category -> samples."""
    top: list[tuple[str, int]] = field(default_factory=list)
    """The main thread's most sampled leaf frames (non-idle)."""


def faust_profile(services: Services, args: argparse.Namespace) -> FaustProfile:
    """A worker on a pre-produced envelope topic, sampled by py-spy while it consumes."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not on PATH (pip install py-spy)")
    prefix = "bprofaust."
    create_topic(services.bootstrap, f"{prefix}labels", PARTITIONS)
    produce(services.bootstrap, f"{prefix}labels", make_messages(args.faust_events, 100, seed=13))
    raw_path = services.workdir / "profile-faust.raw.txt"
    worker = Worker(services, prefix, "bprofaust:", services.workdir / "driftgate-profile.log")
    try:
        wait_until(worker.ok_count, 300, "the worker's first batch", every=0.05)
        # The rate so far, to stop sampling before the topic runs dry.
        count, started = worker.ok_count(), time.monotonic()
        time.sleep(0.5)
        rate = (worker.ok_count() - count) / (time.monotonic() - started)
        remaining = (args.faust_events - worker.ok_count()) / max(rate, 1.0)
        if remaining < 1.5:
            raise SystemExit(
                f"the worker applies ~{rate:,.0f} events/s: {args.faust_events:,} events "
                "leave no second to sample; raise --faust-events"
            )
        duration = int(max(1, min(args.duration, 0.7 * remaining)))
        batches, apply_seconds = worker.batch_totals()
        before = worker.ok_count()
        started = time.monotonic()
        subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(worker.process.pid),
                "--rate",
                str(args.rate),
                "--duration",
                str(duration),
                "--format",
                "raw",
                "--idle",
                "--threads",
                "--full-filenames",
                "--output",
                str(raw_path),
            ],
            check=True,
            capture_output=True,
        )
        elapsed = time.monotonic() - started
        after = worker.ok_count()
        batches_after, apply_after = worker.batch_totals()
    finally:
        worker.stop()
    threads: dict[str, dict[str, int]] = {}
    leaves: dict[str, int] = {}
    for thread, frames, samples in parse_raw(raw_path.read_text()):
        category = sample_category(frames)
        counts = threads.setdefault(thread, dict.fromkeys(ORDER, 0))
        counts[category] += samples
        if thread == "MainThread" and category != IDLE and frames:
            leaf = f"{frames[-1][0]} ({short_path(frames[-1][1])}) [{category}]"
            leaves[leaf] = leaves.get(leaf, 0) + samples
    print(f"py-spy raw samples: {raw_path}", flush=True)
    return FaustProfile(
        duration=min(elapsed, duration),
        rate=args.rate,
        events=after - before,
        batches=batches_after - batches,
        apply_seconds=apply_after - apply_seconds,
        ran_dry=after >= args.faust_events,
        threads=threads,
        top=sorted(leaves.items(), key=lambda item: -item[1])[:15],
    )


def short_path(path: str) -> str:
    for base in (str(ROOT) + "/", "site-packages/", "lib/python3.11/"):
        if base in path:
            return path.split(base, 1)[1]
    return path


# --- report -------------------------------------------------------------------------------


def runner_section(result: RunnerProfile) -> str:
    total = sum(result.categories.values())
    per_batch = total / result.profiled_batches
    median = result.median
    rows = []
    for category in ORDER:
        seconds = result.categories[category] / result.profiled_batches
        if seconds <= 0:
            continue
        share = seconds / per_batch
        rows.append(
            [
                category,
                f"{100 * share:.1f}%",
                1e3 * seconds,
                1e3 * share * median,
                1e6 * share * median / result.events_per_batch,
            ]
        )
    rows.append(
        ["total", "100%", 1e3 * per_batch, 1e3 * median, 1e6 * median / result.events_per_batch]
    )
    table = markdown_table(
        [
            "category",
            "share",
            "ms per batch (cProfile)",
            "≈ ms per batch (share × median)",
            "≈ µs per event",
        ],
        rows,
    )
    top = markdown_table(
        ["function (most own time)", "category", "ms per batch (cProfile)"],
        [[name, category, 1e3 * s / result.profiled_batches] for name, category, s in result.top],
    )
    events = result.events_per_batch
    return (
        f"### {result.shape}: {result.messages_per_batch} messages, {events:,} events per batch\n\n"
        f"Without the profiler: min {1e3 * min(result.timed_seconds):.1f} ms, median "
        f"{1e3 * median:.1f} ms per batch over {len(result.timed_seconds)} batches "
        f"({events / median:,.0f} events/s at the median). Under cProfile: "
        f"{1e3 * per_batch:.1f} ms per batch over {result.profiled_batches} batches "
        f"(x{per_batch / median:.2f}). Applied: {result.applied}.\n\n{table}\n\n{top}\n"
    )


def faust_section(result: FaustProfile) -> str:
    main = result.threads.get("MainThread", dict.fromkeys(ORDER, 0))
    samples = sum(main.values()) or 1
    busy = samples - main[IDLE]
    per_batch = result.events / result.batches if result.batches else float("nan")
    rows = []
    for category in ORDER:
        if not main[category]:
            continue
        seconds = result.duration * main[category] / samples
        rows.append(
            [
                category,
                main[category],
                f"{100 * main[category] / samples:.1f}%",
                "" if category == IDLE else f"{100 * main[category] / max(busy, 1):.1f}%",
                1e3 * seconds / result.batches if result.batches else float("nan"),
                1e6 * seconds / result.events if result.events else float("nan"),
            ]
        )
    table = markdown_table(
        ["category", "samples", "share", "share of busy", "ms per batch", "µs per event"], rows
    )
    ours = sum(main[c] for c in DRIFTGATE)
    others = markdown_table(
        ["thread", "samples", "busy", "where (busy samples)"],
        [
            [
                name,
                sum(counts.values()),
                f"{100 * (1 - counts[IDLE] / max(sum(counts.values()), 1)):.0f}%",
                ", ".join(
                    f"{c} {n}"
                    for c, n in sorted(counts.items(), key=lambda i: -i[1])
                    if n and c != IDLE
                ),
            ]
            for name, counts in result.threads.items()
        ],
    )
    leaves = markdown_table(
        ["leaf frame of the main thread (busy)", "samples"], [list(item) for item in result.top]
    )
    dry = (
        " The topic ran dry before the sampling ended: per-event figures are too high."
        if result.ran_dry
        else ""
    )
    return (
        f"py-spy at {result.rate} Hz for {result.duration:.1f} s: {result.events:,} events in "
        f"{result.batches:.0f} batches ({per_batch:,.0f} events per batch, "
        f"{result.events / result.duration:,.0f} events/s while sampled; py-spy pauses the "
        f"worker for each sample). The worker's own histogram puts "
        f"{100 * result.apply_seconds / result.duration:.0f}% of the window in "
        f"`BatchRunner.apply`.{dry}\n\n"
        f"Main thread: driftgate {100 * ours / samples:.0f}%, Faust / mode / aiokafka "
        f"{100 * main[FAUST] / samples:.0f}%, asyncio loop {100 * main[LOOP] / samples:.0f}%, "
        f"waiting in epoll {100 * main[IDLE] / samples:.0f}% of the samples.\n\n"
        f"{table}\n\n{others}\n\n{leaves}\n"
    )


def report(
    runner: list[RunnerProfile],
    faust: FaustProfile | None,
    args: argparse.Namespace,
    seconds: float,
) -> None:
    parts = [f"Machine: {machine_summary()}; took {seconds:.0f} s.\n"]
    if runner:
        parts.append("## Outside Faust: `BatchRunner.apply` under cProfile\n")
        parts += [runner_section(result) for result in runner]
    if faust is not None:
        parts.append("## Inside Faust: one worker under py-spy\n")
        parts.append(faust_section(faust))
    text = "\n".join(parts)
    print(f"\n{text}")
    document = {
        "machine": machine_summary(),
        "runner": [{**asdict(r), "median": r.median} for r in runner],
        "faust": None if faust is None else asdict(faust),
        "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": seconds,
        "time": time.time(),
    }
    (args.out / "profile.json").write_text(json.dumps(document, indent=2))
    (args.out / "profile.md").write_text(text)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="timed envelope batches")
    parser.add_argument("--warmup", type=int, default=3, help="envelope batches before timing")
    parser.add_argument("--profiled", type=int, default=5, help="envelope batches profiled")
    parser.add_argument(
        "--single-factor", type=int, default=10, help="times as many single-event batches"
    )
    parser.add_argument("--faust-events", type=int, default=2_000_000, help="events for (b)")
    parser.add_argument("--duration", type=int, default=5, help="py-spy seconds, at most")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--only", choices=("runner", "faust"), help="run one part only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args(None if argv is None else list(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    services = Services()
    runner: list[RunnerProfile] = []
    faust = None
    try:
        if args.only in (None, "runner"):
            for shape in SHAPES:
                runner.append(asyncio.run(profile_runner(services.redis_url, shape, args)))
                print(runner_section(runner[-1]), flush=True)
        if args.only in (None, "faust"):
            faust = faust_profile(services, args)
    finally:
        services.close()
    report(runner, faust, args, time.monotonic() - started)


if __name__ == "__main__":
    main()
