"""Reads of the state shared by the API's concurrent requests, and kept a moment.

A burst of controllers asking about one agent at once (Flagger's checks, Argo's analysis
runs: bench/http_api.py sends 200) would read the same Redis hash 200 times and encode the
same answer 200 times. :class:`Fresh` makes them one read: the first request of a key
reads it; the requests that come while it reads wait for that read ("single flight"); the
answer is then kept :data:`FRESH_FOR` seconds, during which a request is answered from it
without any I/O (the server answers such requests on its loop, without a thread).

A failed read is shared by the requests that waited for it but never kept: the next
request reads again (the agents' fail-safe counts every request that could not read).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["FRESH_FOR", "Fresh", "NotFresh"]

FRESH_FOR = 0.5
"""Seconds an answer is kept, counted from the start of the read it comes from: an answer
comes from a read that started at most this long before the request, or was under way when
it came. A controller asks every 10-60 s, so it never sees the difference."""
MAX_KEPT = 4096
"""Answers kept at most (one per subject, gate or path asked about): past it, the expired
ones are dropped, and if that is not enough, all of them."""

T = TypeVar("T")


class NotFresh(Exception):
    """Asked with ``cached_only``: the answer is not kept (or no longer), and getting it
    would take a read."""


class _Flight:
    """A read under way, which the requests of the same key wait for."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class Fresh(Generic[T]):
    """Answers by key, each read once however many ask at once, and kept ``fresh_for``
    seconds (0: shared by concurrent requests only, never kept)."""

    def __init__(
        self, fresh_for: float = FRESH_FOR, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fresh_for = fresh_for
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[Hashable, tuple[float, T]] = {}
        self._flights: dict[Hashable, _Flight] = {}

    def get(self, key: Hashable, read: Callable[[], T], cached_only: bool = False) -> T:
        """The answer of ``key``: kept, or of the read under way, or ``read()``.
        ``cached_only``: raise :class:`NotFresh` rather than read or wait."""
        started = self._clock()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] > started:
                return kept[1]
            if cached_only:
                raise NotFresh(key)
            flight = self._flights.get(key)
            leads = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leads:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]
        try:
            value = read()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            if self.fresh_for > 0:
                with self._lock:
                    self._keep(key, started + self.fresh_for, value)
            return value
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _keep(self, key: Hashable, until: float, value: T) -> None:
        if len(self._kept) >= MAX_KEPT and key not in self._kept:
            now = self._clock()
            self._kept = {k: kept for k, kept in self._kept.items() if kept[0] > now}
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
        self._kept[key] = (until, value)
