"""``driftgate baseline``: set a stream's score drift baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from estimators import QuantileSketch

from ._calibration import InputError
from ._config import Policy
from .store import KeyLayout, SyncClient
from .store import _keys as fields
from .store._score_baseline import StateMissingError, replace_state
from .subjects._labels import LabelModel

__all__ = ["BaselineSet", "read_scores", "set_score_baseline"]


class _Score(msgspec.Struct):
    s: float


_SCORE = msgspec.json.Decoder(_Score)


def read_scores(path: str | Path) -> np.ndarray:
    """The ``s`` of every line of a JSONL file (other fields, such as ``y``, are ignored).

    A bad line raises :class:`InputError` naming the file, the line and the problem.
    """
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    scores: list[float] = []
    for number, line in enumerate(content.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        if not line.strip():
            continue
        try:
            score = _SCORE.decode(line).s
        except msgspec.ValidationError as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InputError(
                f"{path}:{number}: {exc} (each line must be one JSON object with s)"
            ) from exc
        if not np.isfinite(score):
            raise InputError(f"{path}:{number}: s is not a finite number")
        scores.append(score)
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
