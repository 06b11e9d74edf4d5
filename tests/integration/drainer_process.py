"""A drainer in a process of its own, so that a test can kill it mid-send.

    python -m tests.integration.drainer_process REDIS_URL KAFKA_BOOTSTRAP MIN_IDLE_SECONDS

Sweeps every outbox until killed (or until nothing is left, with ``--once``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from monitor.config import Settings
from monitor.pipeline._outbox import OutboxDrainer
from monitor.runtime._kafka import start_producer
from monitor.store import KeyLayout, connect_async, is_cluster


async def main(redis_url: str, bootstrap: str, min_idle: float, once: bool) -> None:
    client = connect_async(redis_url, is_cluster(redis_url))
    settings = Settings(kafka_bootstrap=bootstrap, redis_url=redis_url)
    producers: list[Any] = []

    async def producer() -> Any:
        if not producers:
            producers.append(await start_producer(settings))
        return producers[0]

    drainer = OutboxDrainer(client, KeyLayout(), producer, min_idle=min_idle)
    print(f"drainer {drainer.name} up", flush=True)
    while True:
        sent = await drainer.sweep()
        print(f"sent {sent}", flush=True)
        if once and not sent:
            break
        await asyncio.sleep(0.2)
    for started in producers:
        await started.stop()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), "--once" in sys.argv))
