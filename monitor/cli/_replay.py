"""``driftgate replay``: its flags and what it prints (the work is in :mod:`monitor.replay`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from ..config import _args as types
from ._common import print_json

__all__ = ["EXAMPLES", "add_replay"]

EXAMPLES = (
    "driftgate replay events.jsonl --batch 100",
    "driftgate replay labels.jsonl telemetry.jsonl --policy default --policy loose.yaml "
    "--known-good 2026-01-01..2026-01-08 --out memo",
    "driftgate replay events.jsonl --calibrator judge.json --every-event --json",
)


DEFAULT_POLICY = "default"


def _policy_name(text: str) -> str:
    """``--policy``: the built-in policy by name, or a file that can be read."""
    return text if text == DEFAULT_POLICY else types.readable_file(text)


def add_replay(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the command with the command line's parser."""
    replay = command(
        commands,
        "replay",
        "run the worker's gates on JSONL history offline (no Kafka, no Redis), "
        "with what-if policies",
        cmd_replay,
    )
    replay.add_argument(
        "files",
        nargs="+",
        type=types.readable_file,
        metavar="FILE",
        help="JSONL (or gzip) of labels, telemetry and canary messages, as produce takes them",
    )
    replay.add_argument(
        "--policy",
        action="append",
        type=_policy_name,
        metavar="P",
        help="a policy YAML (as DRIFTGATE_CONFIG), or 'default' for the built-in one; repeat "
        "to compare policies on the same events",
    )
    replay.add_argument(
        "--calibrator",
        action="append",
        type=types.readable_file,
        metavar="F",
        help="a stream's calibrator, as calibrate --save wrote it (repeat per stream)",
    )
    replay.add_argument(
        "--redis-url",
        type=types.redis_url,
        metavar="URL",
        help="read the streams' active calibrators from this deployment's Redis",
    )
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--batch",
        type=types.positive_integer,
        default=10_000,
        metavar="N",
        help="events per batch, judged after each (default 10000, the worker's largest batch)",
    )
    pace.add_argument(
        "--every-event", action="store_true", help="judge after every event (batches of 1)"
    )
    replay.add_argument(
        "--known-good",
        action="append",
        default=[],
        metavar="START..END",
        help="event time (RFC 3339 or Unix seconds) where any FAIL is a false alarm; repeatable",
    )
    replay.add_argument(
        "--topic",
        type=types.topic_name,
        help="every line is of this topic (labels, telemetry, canary); default: from its fields",
    )
    replay.add_argument(
        "--no-sort",
        action="store_true",
        help="keep the files' order even where event time goes back (said on stderr)",
    )
    replay.add_argument("--json", action="store_true")
    replay.add_argument(
        "--out", metavar="DIR", help="also write a Markdown memo with a timeline plot per subject"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from ..config import Policy, load_policy
    from ..replay import Replay, read_calibrator_file, read_events
    from ..replay._summary import parse_known_good, summary_lines
    from ..slices._schemas import topic_kind
    from ..workflows._pairs import InputError, Progress

    started = time.perf_counter()
    known_good = [parse_known_good(text) for text in args.known_good]
    kind = None
    if args.topic is not None:
        kind = topic_kind(args.topic)
        if kind is None:
            raise InputError(f"--topic {args.topic!r}: give labels, telemetry or canary")
    policies = [
        (p, Policy() if p == DEFAULT_POLICY else load_policy(p)) for p in args.policy or []
    ] or [(DEFAULT_POLICY, Policy())]
    calibrators = [read_calibrator_file(path) for path in args.calibrator or []]
    progress = Progress(sys.stderr)
    log = read_events(
        args.files,
        kind,
        sort=not args.no_sort,
        progress=progress,
        policies=[policy for _, policy in policies],
    )
    if log.unsorted:
        what = "kept in the files' order (--no-sort)" if args.no_sort else "sorted"
        print(
            f"driftgate replay: {log.unsorted:,} events came before an earlier event of their "
            f"subject in the files: {what}",
            file=sys.stderr,
        )
    if args.redis_url:
        calibrators = _from_redis(args.redis_url, log, calibrators)
    batch = 1 if args.every_event else args.batch
    results = []
    for name, policy in policies:

        def show(done: int, total: int, name: str = name) -> None:
            progress.show(f"replaying under {name}: {done:,} of {total:,} events")

        results.append(
            Replay(policy, log, calibrators, batch=batch, timelines=bool(args.out)).run(show)
        )
    progress.close()
    seconds = time.perf_counter() - started
    names = [name for name, _ in policies]
    if args.out:
        from ..replay._memo import write_memo

        written = write_memo(args.out, names, results, known_good, log)
    if args.json:
        _print_json(names, results, known_good, log.size, seconds)
    else:
        _print_text(names, results, log, batch, seconds, summary_lines(names, results, known_good))
    if args.out:
        print(
            "\n".join(str(path) for path in written),
            file=sys.stdout if not args.json else sys.stderr,
        )
    return 0


def _from_redis(url: str, log: Any, given: list[Any]) -> list[Any]:
    """The deployment's active calibrators of the replayed streams a file did not give."""
    from ..config import Settings
    from ..replay._calibrators import from_redis
    from ..runtime._preflight import check_redis
    from ..store import KeyLayout, connect

    settings = Settings.from_env(redis_url=url)
    client = connect(settings.redis_url, check_redis(settings.redis_url))
    named = {c.stream for c in given}
    streams = sorted({g.subject for g in log.groups if g.topic == "labels"} - named)
    return given + from_redis(client, KeyLayout(settings.redis_prefix), streams)


def _print_json(
    names: list[str], results: list[Any], known_good: list[Any], events: int, seconds: float
) -> None:
    from ..events._decisions import to_builtins
    from ..replay._summary import gate_summaries

    document = {
        "events": events,
        "seconds": seconds,
        "runs": [
            {
                "policy": name,
                "decisions": to_builtins(result.decisions),
                "status": result.status,
                "summary": [
                    {"subject": subject, "gate": gate, **row.to_dict()}
                    for (subject, gate), row in sorted(gate_summaries(result, known_good).items())
                ],
            }
            for name, result in zip(names, results, strict=True)
        ],
    }
    print_json(document)


def _print_text(
    names: list[str],
    results: list[Any],
    log: Any,
    batch: int,
    seconds: float,
    summary: list[str],
) -> None:
    pace = "a look after every event" if batch == 1 else f"batches of {batch:,}"
    files = f"{len(log.paths)} file{'s' if len(log.paths) > 1 else ''}"
    print(
        f"replayed {log.size:,} events from {files} under {len(names)} "
        f"polic{'ies' if len(names) > 1 else 'y'} in {seconds:.2f} s ({pace})"
    )
    for name, result in zip(names, results, strict=True):
        print(f"\npolicy {name}: {len(result.decisions)} decision(s)")
        for d in result.decisions:
            print(
                f"  {d.event_ts}  {d.gate:<14} {d.subject:<20} {d.verdict:<12} "
                f"{d.action:<8} {d.reason}"
            )
        print("  final verdicts:")
        for section in ("streams", "agents"):
            for subject, row in result.status[section].items():
                print(f"    {subject}: {row['verdict']} ({row.get('reason')})")
        for subject, row in result.status["experiments"].items():
            if subject not in result.status["agents"]:
                print(f"    {subject}: {row['verdict']}")
    if summary:
        print("\nper subject and gate" + (", side by side:" if len(names) > 1 else ":"))
        print("\n".join(summary))
