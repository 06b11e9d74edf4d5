"""``driftgate replay``'s speed: events per second in batches of 10,000 and with a look
after every event, and where the time goes (cProfile of each).

The input is the demo's traffic (``monitor.runtime._demo.demo_history``: one judge stream with
labels and one canary agent with telemetry, 2 of 7 events labels, 5 of 7 telemetry) as a
JSONL file of envelopes, as a user would replay it. Reading (decoding and checking every
line, grouping, sorting) is timed apart from the replay itself (handlers, duplicates,
gates, decisions). Targets (issue 19): 1,000,000 events/s in batches of 10,000, 50,000
events/s with ``--every-event``.

    python -m bench.replay [--events N] [--every-event-events M] [--profile] [--out DIR]

With ``--out`` the table (and with ``--profile`` each pace's top functions by own time)
is also written to ``DIR/replay.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.config import Policy  # noqa: E402
from monitor.replay import Replay, read_events  # noqa: E402
from monitor.runtime._demo import demo_history  # noqa: E402

START = 1767225600.0


def write_history(path: Path, events: int) -> int:
    """About ``events`` events of the demo's traffic (70 a tenth of a second)."""
    seconds = events / 700
    messages = demo_history(START, seconds)
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return sum(len(m) if isinstance(m, list) else 1 for m in messages)


PROFILED: dict[str, str] = {}  # pace -> cProfile's top functions


def timed(label: str, work, profile: bool):  # type: ignore[no-untyped-def]
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = work()
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        print(f"--- profile: {label}\n{out.getvalue()}")
        # Paths relative to the repository and to site-packages, as in the other tables.
        text = out.getvalue().replace(f"{ROOT}/", "")
        PROFILED[label] = re.sub(r"/\S*/site-packages/", "", text)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--every-event-events", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, help="also write DIR/replay.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, count, batch in (
            ("batches of 10,000", args.events, 10_000),
            ("batches of 100", args.every_event_events, 100),
            ("every event", args.every_event_events, 1),
        ):
            path = Path(folder) / f"history-{count}.jsonl"
            if not path.exists():
                write_history(path, count)
            log, read_s = timed(f"read {label}", lambda p=path: read_events([str(p)]), False)
            Replay(Policy(), log, batch=batch).run()  # warm: imports, first scipy calls
            work = lambda b=batch, lg=log: Replay(Policy(), lg, batch=b).run()  # noqa: E731
            _, run_s = timed(label, work, False)
            if args.profile:  # another run under cProfile: the table's times are without it
                timed(label, work, True)
            rows.append((label, log.size, read_s, run_s))
    lines = [
        "| pace | events | read (decode, check, sort) | replay | replay events/s "
        "| end to end events/s |",
        "|---|---|---|---|---|---|",
    ]
    for label, size, read_s, run_s in rows:
        lines.append(
            f"| {label} | {size:,} | {read_s:.2f} s | {run_s:.2f} s | {size / run_s:,.0f} | "
            f"{size / (read_s + run_s):,.0f} |"
        )
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        machine = (
            f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}"
        )
        text = [f"`python -m bench.replay {' '.join(sys.argv[1:])}` ({machine})", "", *lines]
        for label, profile in PROFILED.items():
            text += ["", f"### cProfile: {label} (top functions by own time)", "", "```"]
            text += [line.rstrip() for line in profile.strip().splitlines()]
            text += ["```"]
        (args.out / "replay.md").write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
