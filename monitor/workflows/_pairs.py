"""Reading labeled pairs (``s``, ``y``, optionally ``cluster``) from JSON Lines, with a
progress line on a terminal: the input of ``calibrate``, ``audit``, ``plan`` and
``baseline``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import msgspec
import numpy as np

from ..subjects._decode import Finite

__all__ = ["InputError", "LabeledPairs", "Progress", "read_jsonl", "read_pairs"]


class InputError(ValueError):
    """Bad input file: exit status 2, with the file and line."""


class Progress:
    """One line of progress on stderr, at most once every ``every`` seconds, and only
    when that stream is a terminal: pipes, logs and captured output never see it.

    The line is redrawn in place and erased by :meth:`close`, so that the command's own
    output follows on a clean line.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = bool(self._stream.isatty())
        except (AttributeError, ValueError):  # a closed or odd stream: stay quiet
            self.enabled = False
        self._every = every
        self._clock = clock
        self._next = clock() + every  # a command done within a second shows nothing
        self._shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


@dataclass(frozen=True)
class LabeledPairs:
    s: np.ndarray
    y: np.ndarray
    clusters: np.ndarray | None
    """The ``cluster`` field (e.g. a prompt id), when every line has one."""
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    """The covariates asked for, per line (object arrays; None where a line lacks one)."""


class _Pair(msgspec.Struct, frozen=True):
    """One line of a calibration, audit or pilot file (other fields are ignored)."""

    s: Finite
    y: Finite
    cluster: str | int | None = None
    covariates: dict[str, Any] | None = None


_PAIR = msgspec.json.Decoder(_Pair)
_UTF8_BOM = b"\xef\xbb\xbf"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}
_PROGRESS_EVERY_LINES = 65_536  # look at the clock this often, not on every line
T = TypeVar("T")


def read_jsonl(
    path: str | Path,
    decoder: msgspec.json.Decoder[T],
    fields_needed: str,
    progress: Progress | None = None,
) -> Iterator[tuple[int, T]]:
    """Each non-blank line of a JSON Lines file, decoded, with its line number.

    A bad line raises :class:`InputError` naming the file, the line and the problem
    (``fields_needed`` says what a line must hold, e.g. ``"s and y"``); a UTF-8 byte order
    mark (as some editors write) is skipped, and a compressed file is named as such rather
    than as malformed JSON. ``progress`` shows the lines read, and is closed at the end.
    """
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for magic, kind in _COMPRESSED.items():
        if content.startswith(magic):
            raise InputError(
                f"{path}:1: a {kind} file, not JSON Lines: decompress it first (one JSON "
                f"object with {fields_needed} per line)"
            )
    lines = content.removeprefix(_UTF8_BOM).splitlines()
    for number, line in enumerate(lines, start=1):
        if progress is not None and number % _PROGRESS_EVERY_LINES == 0:
            progress.show(f"reading {path}: {number:,} of {len(lines):,} lines")
        if not line.strip():
            continue
        try:
            yield number, decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InputError(
                f"{path}:{number}: {exc} (each line must be one JSON object with {fields_needed})"
            ) from exc
    if progress is not None:
        progress.close()


def read_pairs(
    path: str | Path,
    progress: Progress | None = None,
    covariates: Sequence[str] = (),
    *,
    require_covariates: bool = False,
) -> LabeledPairs:
    """``s`` and ``y`` arrays from JSONL (:func:`read_jsonl`); every line must have
    finite ``s`` and ``y``, and a ``cluster`` on every line or on none. The
    ``covariates`` named are read from each line's ``covariates`` object; with
    ``require_covariates`` a line without one of them (or with null) is refused."""
    scores: list[float] = []
    labels: list[float] = []
    clusters: list[str] = []
    given: dict[str, list[Any]] = {name: [] for name in covariates}
    # The first line with a cluster and the first without one: a file must be all one way.
    first_with: int | None = None
    first_without: int | None = None
    for number, pair in read_jsonl(path, _PAIR, "s and y", progress):
        scores.append(pair.s)
        labels.append(pair.y)
        for name, values in given.items():
            value = (pair.covariates or {}).get(name)
            if value is None and require_covariates:
                raise InputError(
                    f"{path}:{number}: no covariate {name!r} (covariates.{name}): every line "
                    "of a calibration with covariates needs each of them"
                )
            values.append(value)
        if pair.cluster is not None:
            clusters.append(str(pair.cluster))
            first_with = first_with or number
        else:
            first_without = first_without or number
    if len(scores) < 2:
        raise InputError(f"{path}: need at least 2 lines with s and y, found {len(scores)}")
    if first_with is not None and first_without is not None:
        raise InputError(
            f"{path}:{first_without}: no cluster, though line {first_with} has one ('cluster' "
            f"is on {len(clusters)} of {len(scores)} lines: give it on every line or on none)"
        )
    return LabeledPairs(
        np.asarray(scores),
        np.asarray(labels),
        np.asarray(clusters) if clusters else None,
        {name: _objects(values) for name, values in given.items()},
    )


def _objects(values: list[Any]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values  # element by element: a list value must not become a new axis
    return column
