"""The emitter against a real broker and worker: the README's example, and asyncio's flavour."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
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
    deployment.wait_for_count("labels", "ok", 1000)
    deployment.wait_for_count("telemetry", "ok", 1000)
    status = deployment.status()
    stream = status["streams"]["policy:gpt-4-mini"]
    assert (stream["n"], stream["labeled_n"]) == (1000, 100)
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
            await emitter.flush()
            return emitter.sent

    assert asyncio.run(emit()) == 121
    deployment.wait_for_count("labels", "ok", 120)
    deployment.wait_for_count("canary", "ok", 1)
    status = deployment.status()
    assert status["streams"]["async"]["labeled_n"] == 120
    assert status["agents"]["agent-a"]["canary_percent"] == 10


def test_an_unreachable_broker_is_named() -> None:
    with pytest.raises(ConnectionError, match=r"Kafka unreachable at 127\.0\.0\.1:9"):
        Emitter("127.0.0.1:9", connect_timeout=3)
