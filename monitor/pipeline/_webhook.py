"""The optional webhook: every decision that asks for an action, POSTed as its JSON."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..gates import rfc3339
from ..store import AsyncClient
from ..store._keys import OutboxEntry, SubjectKeys
from ..store._write import append_audit

__all__ = ["Webhook"]

log = logging.getLogger(__name__)


def endpoint(url: str) -> str:
    """Where the webhook goes, without what may be secret: credentials, path, query
    (a chat webhook's token is its path)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class Webhook:
    """POSTs each decision whose action is not ``none`` to ``url``, at least once.

    The header ``Idempotency-Key`` carries the ``decision_id``, so a receiver acts once on
    a decision delivered twice (a retry, or a worker that died before it acknowledged the
    outbox entry). Failed attempts are retried with backoff (``attempts`` in all, each
    bounded by ``timeout``; the drainer renews its claim meanwhile, so a slow receiver
    delays the outbox but does not make another drainer repeat the decision); a 4xx other
    than 408 and 429 is not retried. Every attempt's outcome goes to the subject's audit log.
    """

    def __init__(
        self,
        url: str,
        client: AsyncClient,
        attempts: int = 4,
        first_delay: float = 0.5,
        timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.client = client
        self.attempts = attempts
        self.first_delay = first_delay
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, keys: SubjectKeys, entry: OutboxEntry) -> None:
        if entry.kind != "decision":
            return
        decision = orjson.loads(entry.value)
        if decision.get("action", "none") == "none":
            return
        if self._session is None:
            # A connection per request: on a reused one, a receiver's stray second answer
            # to one decision was read as the answer to the next, marked delivered
            # though the receiver never saw it.
            connector = aiohttp.TCPConnector(force_close=True)
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        headers = {"Content-Type": "application/json", "Idempotency-Key": decision["decision_id"]}
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            status: int | None = None
            try:
                async with self._session.post(self.url, data=entry.value, headers=headers) as reply:
                    status = reply.status
                outcome = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            delivered = status is not None and 200 <= status < 300
            final = delivered or attempt == self.attempts
            refused = status is not None and 400 <= status < 500 and status not in (408, 429)
            await self._audit(keys, decision, attempt, outcome, delivered, final or refused)
            if delivered or refused:
                return
            if not final:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "webhook %s did not take decision %s after %d attempts",
            endpoint(self.url),
            decision["decision_id"],
            self.attempts,
        )

    async def _audit(
        self,
        keys: SubjectKeys,
        decision: dict[str, Any],
        attempt: int,
        outcome: str,
        delivered: bool,
        last: bool,
    ) -> None:
        record = {
            "kind": "webhook",
            "ts": rfc3339(time.time()),
            "subject": decision["subject"],
            "decision_id": decision["decision_id"],
            "action": decision["action"],
            "attempt": attempt,
            "outcome": outcome,
            "delivered": delivered,
            "final": last,
            "url": endpoint(self.url),
        }
        await append_audit(self.client, keys, orjson.dumps(record))
