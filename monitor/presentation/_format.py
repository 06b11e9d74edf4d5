"""How driftgate writes a figure, an interval, a count, a time and a JSON document: one
spelling for ``status``, ``log``, ``report``, the command line and the decision records.

Pure functions of the standard library and orjson: any layer may use them (the time and
the number as the contract writes them are the events' own: ``events._decisions``).

>>> number(0.01234), number(None), number(12, ",")
('+0.0123', '-', '12')
>>> interval(0.5, 0.25, None, "+.2f")
'+0.50 [+0.25, +inf]'
>>> interval(None, None, 1.0, ".4g", open_ends=("-", "-"))
'[-, 1]'
>>> plural(1, "label"), plural(2_000, "label"), plural(None, "label")
('1 label', '2,000 labels', '- labels')
"""

from __future__ import annotations

from typing import Any

import orjson

from ..events._decisions import finite_or, rfc3339

__all__ = ["count", "finite_or", "interval", "json_text", "number", "plural", "rfc3339"]


def number(value: float | None, form: str = "+.4f", none: str = "-") -> str:
    """``value`` in the format spec ``form``; ``none`` (``-``) when there is none."""
    return none if value is None else format(value, form)


def interval(
    estimate: float | None,
    low: float | None,
    high: float | None,
    form: str = "+.4f",
    open_ends: tuple[str, str] = ("-inf", "+inf"),
) -> str:
    """``estimate [low, high]``; a missing bound is an open end, a missing estimate is
    left out."""
    bounds = f"[{number(low, form, open_ends[0])}, {number(high, form, open_ends[1])}]"
    return bounds if estimate is None else f"{format(estimate, form)} {bounds}"


def count(n: int | None) -> str:
    """``12,345``; ``-`` when unknown."""
    return number(n, ",")


def plural(n: int | None, noun: str) -> str:
    """``1 label``, ``2 labels``, ``- labels`` (unknown): a count and its noun."""
    return f"{count(n)} {noun}{'' if n == 1 else 's'}"


def json_text(document: Any) -> str:
    """A document as ``--json`` prints it: indented by two, numpy values as numbers."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
