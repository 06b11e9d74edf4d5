"""What a covariate-aware calibrator reads of label events: each event's ``covariates``
object, kept whole, so that the active calibrator (known only once the stream's state is
loaded) takes the covariates it names from them."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from estimators import Calibrator

from ._columnar import Table

__all__ = ["calibrator_inputs", "concat_objects", "objects_of_events", "objects_of_table"]

_get_covariates = attrgetter("covariates")
_PREFIX = "covariates."


def objects_of_events(events: Sequence[Any]) -> np.ndarray:
    """Each row event's ``covariates`` object (None where it has none)."""
    return np.fromiter(map(_get_covariates, events), dtype=object, count=len(events))


def objects_of_table(table: Table) -> np.ndarray | None:
    """A columnar envelope's ``covariates`` per row: from a ``covariates`` column (or
    top-level constant) and dotted columns (``covariates.domain``); None when it has
    neither (the calibrator then uses its defaults)."""
    dotted = [name for name in (*table.columns, *table.constants) if name.startswith(_PREFIX)]
    if not dotted and not table.has("covariates"):
        return None
    objects = np.empty(table.n, dtype=object)
    whole = table.values("covariates") if table.has("covariates") else [None] * table.n
    parts = [(name.removeprefix(_PREFIX), table.values(name)) for name in dotted]
    for row in range(table.n):
        given = dict(whole[row] or {})
        for name, values in parts:
            if values[row] is not None:
                given[name] = values[row]
        objects[row] = given or None
    return objects


def concat_objects(parts: Sequence[np.ndarray | None], sizes: Sequence[int]) -> np.ndarray | None:
    """The ``covariates`` objects of joined blocks (a block without any: all None)."""
    if all(p is None for p in parts):
        return None
    return np.concatenate(
        [
            np.full(n, None, dtype=object) if p is None else p
            for p, n in zip(parts, sizes, strict=True)
        ]
    )


def calibrator_inputs(
    calibrator: Calibrator, objects: np.ndarray | None, rows: np.ndarray | slice | None = None
) -> dict[str, np.ndarray] | None:
    """The covariates ``calibrator`` names, per event of ``objects[rows]`` (None where an
    event lacks one: the calibrator's declared default applies); None for a calibrator
    of the score alone."""
    names = calibrator.covariates
    if not names:
        return None
    if objects is None:
        return {}  # no event of the batch gave covariates: every one is defaulted
    chosen = objects if rows is None else objects[rows]
    columns = {name: np.full(chosen.size, None, dtype=object) for name in names}
    for row, given in enumerate(chosen):
        if given:
            for name in names:
                columns[name][row] = given.get(name)
    return columns
