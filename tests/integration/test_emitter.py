"""The emitter against a real broker and worker: the README's example, and asyncio's flavour."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.emit import AsyncEmitter, Emitter

from .conftest import Deployment

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    [code] = re.findall(
        r"<!-- example: emitter -->\n```python\n(.*?)\n```", README.read_text(), re.DOTALL
    )
    return code


def test_the_readme_example_reaches_status(deployment: Deployment) -> None:
    deployment.start_worker()
    example = readme_example()
    assert len(example.splitlines()) <= 14
    result = subprocess.run(
        [sys.executable, "-c", example],
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dropped: 0"
    deployment.wait_for_count("labels", "ok", 1100)  # 1,000 scores, 100 labels alone
    deployment.wait_for_count("telemetry", "ok", 1000)
    status = deployment.status()
    stream = status["streams"]["policy:gpt-4-mini"]
    assert (stream["n"], stream["labeled_n"]) == (1000, 100)
    assert stream["late_labels"]["joined"] == 100 and stream["late_labels"]["waiting"] == 900
    variants = status["experiments"]["inbox_triage"]["variants"]
    assert (variants["canary"]["n"], variants["control"]["n"]) == (100, 900)
    assert deployment.count("labels", "dlq") == deployment.count("telemetry", "dlq") == 0


def test_async_emitter_and_a_flush_per_batch(deployment: Deployment) -> None:
    deployment.start_worker()

    async def emit() -> int:
        async with AsyncEmitter(
            deployment.kafka, topic_prefix=deployment.prefix, batch_size=50
        ) as emitter:
            for i in range(120):
                await emitter.label("async", i / 120, y=1.0, event_id=f"a{i}")
            await emitter.canary("agent-a", "b1", "deploy", canary_percent=10)
            # A late-labeled pair, its halves in two envelopes of one flush each.
            await emitter.score("async", 0.25, response_id="resp-1")
            await emitter.flush()
            await emitter.late_label("async", "resp-1", 1.0)
            await emitter.flush()
            return emitter.sent

    assert asyncio.run(emit()) == 123
    deployment.wait_for_count("labels", "ok", 122)
    deployment.wait_for_count("canary", "ok", 1)
    status = deployment.status()
    assert status["streams"]["async"]["labeled_n"] == 121
    assert status["streams"]["async"]["late_labels"]["joined"] == 1
    assert status["agents"]["agent-a"]["canary_percent"] == 10


def test_an_unreachable_broker_is_named() -> None:
    with pytest.raises(ConnectionError, match=r"Kafka unreachable at 127\.0\.0\.1:9"):
        Emitter("127.0.0.1:9", connect_timeout=3)


async def test_an_unreachable_broker_is_named_by_the_async_emitter_too() -> None:
    emit = AsyncEmitter("127.0.0.1:9", connect_timeout=3)
    with pytest.raises(ConnectionError, match=r"Kafka unreachable at 127\.0\.0\.1:9"):
        await emit.start()
    assert emit.dropped == 0


def test_scores_now_and_their_labels_later_are_joined_by_the_worker(
    deployment: Deployment,
) -> None:
    deployment.start_worker()
    hour_ago = time.time() - 3600
    with Emitter(deployment.kafka, topic_prefix=deployment.prefix) as emitter:
        for i in range(3):
            emitter.score("judge:late", 0.2 * (i + 1), response_id=f"r{i}", ts=hour_ago + i)
        emitter.flush()
        assert emitter.messages == 1  # one envelope of three scores
        emitter.late_label("judge:late", "r0", 1.0)
        emitter.late_label("judge:late", "r2", 0.0)
    assert (emitter.sent, emitter.messages, emitter.dropped) == (5, 2, 0)
    deployment.wait_for_count("labels", "ok", 5)
    stream = deployment.status()["streams"]["judge:late"]
    assert (stream["n"], stream["labeled_n"]) == (3, 2)
    assert stream["late_labels"]["joined"] == 2 and stream["late_labels"]["waiting"] == 1
    # Residuals y - s of the pairs (0.2 -> 1.0, 0.6 -> 0.0), at the scores' event times.
    assert stream["residual_mean"] == pytest.approx(((1.0 - 0.2) + (0.0 - 0.6)) / 2, rel=1e-9)
    assert deployment.count("labels", "dlq") == 0
