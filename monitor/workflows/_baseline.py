"""``driftgate baseline``: set a stream's score drift baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from estimators import QuantileSketch

from ..config import Policy
from ..store import KeyLayout, SyncClient
from ..store import _keys as fields
from ..store._score_baseline import StateMissingError, replace_state
from ..subjects._decode import Finite
from ..subjects._labels import LabelModel
from ._pairs import InputError, read_jsonl

__all__ = ["BaselineSet", "read_scores", "set_score_baseline"]


class _Score(msgspec.Struct, frozen=True):
    """One line of a score file (other fields, such as ``y``, are ignored)."""

    s: Finite


_SCORE = msgspec.json.Decoder(_Score)


def read_scores(path: str | Path) -> np.ndarray:
    """The ``s`` of every line of a JSONL file (:func:`~._pairs.read_jsonl`: a bad
    line raises :class:`InputError` naming the file, the line and the problem)."""
    scores = [score.s for _, score in read_jsonl(path, _SCORE, "s")]
    return np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class BaselineSet:
    stream: str
    n: int
    """Scores in the new baseline."""
    source: str
    """The file, or ``recent scores``."""
    median: float


def set_score_baseline(
    client: SyncClient,
    layout: KeyLayout,
    policy: Policy,
    stream: str,
    scores: np.ndarray | None = None,
    source: str = "recent scores",
) -> BaselineSet:
    """Make ``scores`` (or, with none, the stream's recent scores) the reference of its
    score drift gate, from the stream's next batch on; the recent scores start afresh.

    Fewer than ``score_drift.min_n`` scores, or a stream with no events yet, is an
    :class:`InputError`. A new calibrator version brings back its own fitting scores.
    """
    model = LabelModel(policy)
    minimum = policy.score_drift.min_n
    chosen: dict[str, QuantileSketch] = {}

    def change(stored: Mapping[str, bytes | None]) -> bytes:
        state = model.load(stream, stored)
        if scores is None:
            baseline = state.recent_scores().copy()
        else:
            baseline = QuantileSketch(policy.score_drift.relative_accuracy).update(scores)
        if baseline.n < minimum:
            raise InputError(
                f"a baseline needs at least {minimum} scores (score_drift.min_n); "
                f"{source} of stream {stream!r} has {baseline.n}"
            )
        state.set_baseline(baseline)
        chosen["baseline"] = baseline
        written = model.dump(state)[fields.STATE]
        return written if isinstance(written, bytes) else written.encode()

    try:
        replace_state(client, layout, "stream", stream, change)
    except StateMissingError as exc:
        raise InputError(f"no stream {stream!r}: no event of it was processed yet") from exc
    baseline = chosen["baseline"]
    return BaselineSet(stream, baseline.n, source, baseline.quantile(0.5))
