"""The recent rate of a stream of timestamped events."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator

__all__ = ["EventRate"]


class EventRate(StatefulEstimator):
    """Events per second lately: an exponentially decayed count over event time.

    Each event counts ``exp(-(T - ts) / half_life * ln 2)`` at the newest time ``T``
    seen, so the count forgets a quiet hour as a person would. At a constant rate
    ``lambda`` since ``t0`` the decayed count is ``lambda tau (1 - exp(-(T - t0) / tau))``
    (``tau = half_life / ln 2``): :attr:`per_second` divides by that factor, so it is
    unbiased from the start and not only after a few half-lives (the first event, which
    starts the clock, is not counted). Event time, not
    arrival time: a replayed backlog keeps the rate it had.

    Parameters
    ----------
    half_life
        Seconds after which an event counts half.

    Examples
    --------
    >>> rate = EventRate(half_life=600).update(range(0, 3600, 2))  # one every 2 s
    >>> round(rate.per_second, 2)
    0.5
    >>> EventRate().update([5.0]).per_second is None  # one instant: no rate yet
    True
    """

    def __init__(self, half_life: float = 600.0) -> None:
        if not half_life > 0:
            raise ValueError("half_life must be positive")
        self.half_life = float(half_life)
        self.count = 0.0
        self.first: float | None = None
        self.last: float | None = None

    @property
    def _tau(self) -> float:
        return self.half_life / math.log(2.0)

    def update(self, timestamps: ArrayLike) -> EventRate:
        ts = np.asarray(timestamps, dtype=np.float64).ravel()
        if ts.size == 0:
            return self
        newest = float(ts.max()) if self.last is None else max(self.last, float(ts.max()))
        if self.last is not None:
            self.count *= math.exp(-(newest - self.last) / self._tau)
        # A late event counts as old as it is; none counts more than 1.
        self.count += float(np.exp(-np.maximum(newest - ts, 0.0) / self._tau).sum())
        oldest = float(ts.min())
        self.first = oldest if self.first is None else min(self.first, oldest)
        self.last = newest
        return self

    @property
    def per_second(self) -> float | None:
        """Events per second lately; ``None`` until the events span some time."""
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        span = self.last - self.first
        # The first event starts the clock: n events span n - 1 gaps, so it is not counted.
        first_weight = math.exp(-span / self._tau)
        return max(self.count - first_weight, 0.0) / (self._tau * -math.expm1(-span / self._tau))

    def seconds_for(self, count: float) -> float | None:
        """How long ``count`` more events take at the recent rate (``None``: no rate yet).

        >>> round(EventRate(600).update(range(0, 600, 2)).seconds_for(30))  # 30 at 0.5/s
        60
        """
        rate = self.per_second
        return None if rate is None or rate <= 0.0 else count / rate

    def to_state(self) -> dict[str, Any]:
        return {
            "half_life": self.half_life,
            "count": self.count,
            "first": self.first,
            "last": self.last,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EventRate:
        rate = cls(float(state["half_life"]))
        rate.count = float(state["count"])
        rate.first = state["first"]
        rate.last = state["last"]
        return rate
