"""A figure of a view as a gauge's sample value."""

from __future__ import annotations

from ..events._decisions import finite_or

__all__ = ["gauge_value"]


def gauge_value(number: float | None, missing: float) -> float:
    """``number``, or ``missing`` for a figure not computed yet (None) or non-finite: NaN
    for an estimate, -inf or +inf for an interval's open end."""
    return float(finite_or(number, missing))
