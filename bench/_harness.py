"""Shared plumbing of the benchmarks: services, processes, timing, tables."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.runtime._services import free_port, start_broker, start_redis  # noqa: E402

__all__ = [
    "ROOT",
    "Services",
    "create_topic",
    "free_port",
    "machine_summary",
    "markdown_table",
    "produce",
    "rss_mb",
    "wait_until",
]


class Services:
    """A broker and a Redis of the benchmark's own, on free loopback ports."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="driftgate-bench-"))
        self.broker = start_broker(free_port(), self.workdir / "broker.log")
        self.redis_server = start_redis(free_port(), self.workdir / "redis", appendonly=False)
        self.bootstrap = self.broker.address
        self.redis_url = self.redis_server.address
        self.redis = redis.Redis.from_url(self.redis_url)

    def close(self) -> None:
        self.redis.close()
        self.redis_server.stop()
        self.broker.stop()


async def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    asyncio.run(_create(bootstrap, name, partitions))


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1_048_576,
        max_request_size=8_388_608,
    )
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    asyncio.run(_produce(bootstrap, topic, messages))
    return time.perf_counter() - started


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, every: float = 0.005
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_summary() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT)
