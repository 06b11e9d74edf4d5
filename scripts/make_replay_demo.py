"""Write docs/examples/replay-demo.jsonl.gz: the demo's traffic as 40 s of history.

The judge stream drifts by +0.15 after 10 s and the canary turns toxic after 15 s, as in
``driftgate up``'s demo, at a slower pace (an envelope of 20 labels and one of 50
telemetry events every 0.5 s of event time): 5,601 events from 2026-01-01T00:00:00Z.
Run from the repository root: ``python -m scripts.make_replay_demo``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from monitor.runtime._demo import demo_history

START = 1767225600.0  # 2026-01-01T00:00:00Z
OUT = Path(__file__).resolve().parent.parent / "docs" / "examples" / "replay-demo.jsonl.gz"


def main() -> None:
    lines = b"".join(orjson.dumps(m) + b"\n" for m in demo_history(START, 40.0, step=0.5))
    OUT.write_bytes(gzip.compress(lines, mtime=0))
    print(OUT)


if __name__ == "__main__":
    main()
