"""Ranges of numbers, and the one way a value out of one is refused: "must be <the range>,
got <the value>". The command line's argument types (``config._args``) and the policy's
checks (:func:`in_range`, by the key it names) judge numbers with these."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "AT_LEAST_ONE",
    "NON_NEGATIVE",
    "POSITIVE",
    "PROBABILITY",
    "SHARE_BELOW_ONE",
    "ConfigError",
    "Range",
    "in_range",
    "increasing_pair",
    "probability",
    "require",
]


class ConfigError(ValueError):
    """Bad configuration: reported with exit status 2."""


@dataclass(frozen=True)
class Range:
    """The numbers from ``low`` to ``high``, each end excluded when ``*_open``; ``text``
    names the range in a refusal ("in (0, 1)", "at least 1").

    >>> PROBABILITY.holds(0.5), PROBABILITY.holds(1.0), 0.0 in SHARE_BELOW_ONE
    (True, False, True)
    >>> Range(1, 65535, text="in 1..65535").refusal("0")
    "must be in 1..65535, got '0'"
    >>> POSITIVE.refusal(0)
    'must be positive, got 0'
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    text: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __contains__(self, value: float) -> bool:
        return self.holds(value)

    def refusal(self, value: object) -> str:
        """What a value out of the range is told (``value`` as given: text is quoted)."""
        return f"must be {self.text}, got {value!r}"

    def named(self, text: str) -> Range:
        """The same range named otherwise ("a probability in (0, 1)")."""
        return Range(self.low, self.high, self.low_open, self.high_open, text)


PROBABILITY = Range(0, 1, low_open=True, high_open=True, text="in (0, 1)")
SHARE_BELOW_ONE = Range(0, 1, high_open=True, text="in [0, 1)")
POSITIVE = Range(0, low_open=True, text="positive")
NON_NEGATIVE = Range(0, text="0 or more")
AT_LEAST_ONE = Range(1, text="at least 1")


def require(ok: bool, key: str, what: str) -> None:
    """A policy check: :class:`ConfigError` naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} {what}")


def in_range(value: float, key: str, range_: Range) -> None:
    """A policy check of a number: :class:`ConfigError` naming ``key`` unless ``value`` is
    in ``range_``.

    >>> in_range(0.7, "experiments.e.power", Range(0.8, 1, text="at least 0.8"))
    Traceback (most recent call last):
    ...
    monitor.config._ranges.ConfigError: experiments.e.power must be at least 0.8, got 0.7
    """
    require(range_.holds(value), key, range_.refusal(value))


def probability(value: float, key: str) -> None:
    """A policy check of a probability: in (0, 1), else :class:`ConfigError` naming ``key``."""
    in_range(value, key, PROBABILITY)


def increasing_pair(bounds: tuple[float, ...], key: str) -> None:
    """A policy check of bounds: ``[low, high]`` with ``low < high``, else
    :class:`ConfigError` naming ``key``.

    >>> increasing_pair((1.0, 0.0), "q")
    Traceback (most recent call last):
    ...
    monitor.config._ranges.ConfigError: q must be [low, high] with low < high, got [1.0, 0.0]
    """
    require(
        len(bounds) == 2 and bounds[0] < bounds[1],
        key,
        f"must be [low, high] with low < high, got {list(bounds)}",
    )
