"""One time of a confidence sequence."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Interval"]


class Interval(NamedTuple):
    """A confidence interval (or one time of a confidence sequence)."""

    estimate: float
    """The point estimate the interval is centred on."""
    low: float
    """Lower end; ``-inf`` when there is no information yet."""
    high: float
    """Upper end; ``+inf`` when there is no information yet."""

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0
