"""Offset fences: which events of a batch a subject has not applied yet, and where its
fence moves (per partition, within the partition's log epoch)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..store._keys import Fence
from ._runner_types import _LogRecreated, _StaleEpochs

__all__ = ["plan_fences"]


def plan_fences(
    epochs: Mapping[tuple[str, int], int],
    stored: Mapping[int, Fence | None],
    partitions: np.ndarray,
    offsets: np.ndarray,
    topic: str,
    highwaters: Mapping[int, int | None],
) -> tuple[dict[int, int], dict[int, Fence]]:
    """Per partition, the first offset to apply and the new fence (only where it moves).

    A fence of an older log epoch means nothing was applied from the current log yet;
    one beyond the end of the current log means the log was created anew.
    """
    starts, moved = {}, {}
    one = partitions.size and partitions.min() == partitions.max()
    for partition in [int(partitions[0])] if one else np.unique(partitions).tolist():
        epoch = epochs.get((topic, partition), 0)
        fence = stored.get(partition)
        if fence is not None and fence.epoch > epoch:
            raise _StaleEpochs
        start = fence.offset if fence is not None and fence.epoch == epoch else 0
        end = highwaters.get(partition)
        if fence is not None and fence.epoch == epoch and end and start > end:
            raise _LogRecreated(partition, epoch, start)
        new = Fence(epoch, max(start, int(offsets[partitions == partition].max()) + 1))
        if fence is None or new > fence:
            moved[partition] = new
        starts[partition] = start
    return starts, moved
