"""Sequential change detection of a mean shift: mixtures of Shiryaev-Roberts or CUSUM
e-detectors over a grid of shift sizes."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator

__all__ = ["MeanShiftDetector"]

DEFAULT_SHIFTS = (0.05, 0.1, 0.2, 0.4)
STATISTICS = ("shiryaev_roberts", "cusum")

Statistic = Literal["shiryaev_roberts", "cusum"]

# The Shiryaev-Roberts recursion is summed in blocks, each against its own largest term
# (so no exp overflows); a block whose terms span more than ~700 nats (outliers: the
# e-value's increments are at most 1.5, but unbounded below) is summed in logs. With no
# change they drift by d^2/2 a value: ~80 nats a block at d = 0.4.
_BLOCK = 1024


class MeanShiftDetector(StatefulEstimator):
    """Detects a shift of a stream's mean away from ``baseline`` (two-sided).

    For each shift ``d`` of a grid (in units of ``scale``) and both signs, the
    standardized value ``z_t`` gives the e-value

        ``L_t = exp(d z_t - d^2 z_t^2 / 6 - d^2 / 3)``,

    and one e-detector (Shin, Ramdas and Rinaldo) accumulates it:

    * ``"shiryaev_roberts"`` (default): ``R_t = (1 + R_{t-1}) L_t``, the sum over every
      possible change time ``k <= t`` of the evidence for "the mean moved by ``d`` at
      ``k``";
    * ``"cusum"``: ``W_t = max(W_{t-1}, 1) L_t``, the largest of those terms.

    It alarms when the equally weighted mixture ``M_t`` of the ``2 x len(shifts)``
    statistics reaches ``threshold = horizon / alpha``.

    Why this ``L_t``: ``exp(x - x^2 / 6) <= 1 + x + x^2 / 3`` for every real ``x``
    (Delyon 2009), so ``E[L_t] <= 1`` for *any* distribution with mean ``baseline`` and
    standard deviation at most ``scale``: skewed residuals (``y - p`` of rare binary
    labels) and heavy tails included, where the Gaussian likelihood ratio
    ``exp(d z - d^2 / 2)`` has ``E[L] > 1`` and raises false alarms above the bound
    (with the Shiryaev-Roberts statistic, 18% instead of 10% for Bernoulli(0.1) labels).
    On Gaussian data it gathers evidence at the same rate up to ``d^4 / 6`` per value,
    and an outlier costs evidence instead of building it, which is the guard that
    clipping standardized values at 3 used to be.

    The guarantee: with no change, each ``R_t - t`` is a supermartingale from
    ``R_0 = 0``, so ``M_t + horizon - t`` is a nonnegative supermartingale up to
    ``horizon``, and Ville's inequality bounds the chance of any false alarm within the
    first ``horizon`` values by ``alpha``; the average run length is at least
    ``horizon / alpha``. Each CUSUM is at most its Shiryaev-Roberts statistic, so the
    same threshold holds for it. The scale is estimated, so the guarantee is
    asymptotic, like that of the plug-in confidence sequences.

    Why Shiryaev-Roberts by default: for a small shift the bound is nearly attained by
    it and far from attained by the CUSUM (whose false-alarm rate at this threshold is
    smaller by about the Kullback-Leibler divergence ``d^2 / 2``, 0.00125 for
    ``d = 0.05``), so at the same guarantee it alarms about ``log(2 / d^2) / (d^2 / 2)``
    values earlier: about half the delay at ``d = 0.05``. Both restart whenever the data
    favour "no change", so a shift that starts late is found about as fast as one
    present from the start (``bench/detection.py`` compares it with a CUSUM tuned to
    the shift).

    A batch is processed in numpy: with ``c_t`` the cumulative log e-value within the
    batch, ``log R_t = c_t + log(R_0 + sum_{k<t} exp(-c_k))`` (a cumulative sum) and
    ``log W_t = c_t - min(-max(log W_0, 0), c_1..c_{t-1})`` (a running minimum). After
    an alarm the detector keeps running; :meth:`reset` starts it afresh (after a
    recalibration, say). It is sequential by nature: a subject is owned by one worker
    (one Kafka partition), so there is no merge, only an exact state round trip.

    Parameters
    ----------
    alpha
        Bound on the probability of a false alarm within ``horizon`` values.
    horizon
        Number of values the false-alarm bound covers; ``horizon=1`` gives the classical
        guarantee "average run length at least ``1/alpha``".
    baseline
        The mean under "no change" (0 for residuals).
    scale
        Standard deviation of one value; ``None`` estimates it, predictably, from the
        values before each batch (and from the batch itself for the very first one).
    shifts
        The shifts to mix over, in units of ``scale``; the default grid (0.05 to 0.4,
        doubling) loses at most ~9% of the evidence rate to a shift between two of its
        points and covers larger shifts through its largest.
    statistic
        ``"shiryaev_roberts"`` or ``"cusum"`` (kept for comparison).

    Attributes
    ----------
    alarm_time : int or None
        How many values (since the last reset) had been seen when the mixture first
        reached the threshold.
    alarm_shift : float or None
        The signed shift, in the values' units (``d`` times the scale), whose statistic
        was the largest at the alarm: a rough size of the change, not an estimate with
        an interval.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = MeanShiftDetector(alpha=0.05, horizon=100_000, scale=1.0)
    >>> detector.update(rng.normal(0.0, 1.0, 5_000)).alarm
    False
    >>> detector.update(rng.normal(0.5, 1.0, 400)).alarm
    True
    >>> 5_000 < detector.alarm_time <= 5_200, detector.alarm_shift
    (True, 0.4)

    References
    ----------
    Shin, J., Ramdas, A. and Rinaldo, A. (2023). E-detectors: a nonparametric framework
    for sequential change detection. New England Journal of Statistics in Data Science.
    Delyon, B. (2009). Exponential inequalities for sums of weakly dependent variables.
    Electronic Journal of Probability 14.
    Roberts, S. W. (1966). A comparison of some control chart procedures.
    Technometrics 8(3).
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
    """

    def __init__(
        self,
        alpha: float = 0.05,
        horizon: float = 100_000,
        baseline: float = 0.0,
        scale: float | None = None,
        shifts: tuple[float, ...] = DEFAULT_SHIFTS,
        statistic: Statistic = "shiryaev_roberts",
    ) -> None:
        if not 0 < alpha < 1 or horizon < 1:
            raise ValueError("alpha must be in (0, 1) and horizon at least 1")
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        if not shifts or any(not s > 0 for s in shifts):
            raise ValueError("shifts must be positive")
        self.alpha, self.horizon, self.baseline, self.scale = alpha, horizon, baseline, scale
        self.shifts = tuple(float(s) for s in shifts)
        self.statistic_kind: Statistic = statistic
        self._signed = signed_shifts(self.shifts)
        self._log_threshold = math.log(horizon / alpha)
        self._scale_n = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self.reset()

    # Sequential by nature: there is no merge of two detectors.
    __add__ = None  # type: ignore[assignment]

    def reset(self) -> MeanShiftDetector:
        """Start detecting afresh (``n`` and ``alarm_time`` count from here); the
        estimate of the scale, a property of the noise rather than of the mean, is kept."""
        self.n = 0
        self.log_w = np.full(self._signed.size, -np.inf)  # log statistic per signed shift
        self.alarm_time: int | None = None
        self.alarm_shift: float | None = None
        return self

    @property
    def threshold(self) -> float:
        return self.horizon / self.alpha

    def _current_scale(self, batch: np.ndarray) -> float:
        if self.scale is not None:
            return self.scale
        n, total, squares = self._scale_n, self._sum, self._sum_sq
        if n < 2:  # nothing before: the first batch speaks for itself
            n, total, squares = batch.size, float(batch.sum()), float(np.dot(batch, batch))
        variance = (squares - total * total / n) / max(n - 1, 1)
        return math.sqrt(variance) if variance > 0 else 1.0

    def update(self, values: ArrayLike) -> MeanShiftDetector:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        scale = self._current_scale(x)
        increments = log_e_values(self._signed, (x - self.baseline) / scale)
        if self.statistic_kind == "shiryaev_roberts":
            log_w = shiryaev_roberts_log(self.log_w, increments)
        else:
            log_w = cusum_log(self.log_w, increments)
        if self.alarm_time is None:
            crossed = first_crossing(log_w, self._log_threshold)
            if crossed is not None:
                self.alarm_time = self.n + crossed + 1
                self.alarm_shift = float(self._signed[np.argmax(log_w[:, crossed])]) * scale
        self.log_w = log_w[:, -1].copy()
        self.n += x.size
        self._scale_n += x.size
        self._sum += float(x.sum())
        self._sum_sq += float(np.dot(x, x))
        return self

    @property
    def statistic(self) -> float:
        """The mixture e-detector ``M_t`` (compare with :attr:`threshold`)."""
        if self.n == 0:
            return 0.0
        return float(np.exp(log_mixture(self.log_w[:, None])[0]))

    @property
    def alarm(self) -> bool:
        return self.alarm_time is not None

    def to_state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "horizon": self.horizon,
            "baseline": self.baseline,
            "scale": self.scale,
            "shifts": list(self.shifts),
            "statistic": self.statistic_kind,
            "n": self.n,
            "log_w": [None if math.isinf(v) else float(v) for v in self.log_w],
            "alarm_time": self.alarm_time,
            "alarm_shift": self.alarm_shift,
            "scale_n": self._scale_n,
            "sum": self._sum,
            "sum_sq": self._sum_sq,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MeanShiftDetector:
        if "statistic" not in state:
            return cls._from_clipped_cusum(state)
        detector = cls(
            state["alpha"],
            state["horizon"],
            state["baseline"],
            state["scale"],
            tuple(state["shifts"]),
            state["statistic"],
        )
        detector.n = int(state["n"])
        detector.log_w = np.array([-np.inf if v is None else v for v in state["log_w"]])
        detector.alarm_time = state["alarm_time"]
        detector.alarm_shift = state["alarm_shift"]
        detector._scale_n = int(state["scale_n"])
        detector._sum, detector._sum_sq = float(state["sum"]), float(state["sum_sq"])
        return detector

    @classmethod
    def _from_clipped_cusum(cls, state: dict[str, Any]) -> MeanShiftDetector:
        """A state of the earlier detector (CUSUMs of the Gaussian ratio of clipped
        values) goes on as this one, its evidence started afresh (a detector started at
        a fixed time keeps its own guarantee); its count, alarm and scale are kept."""
        detector = cls(state["alpha"], state["horizon"], state["baseline"], state["scale"])
        detector.n = int(state["n"])
        detector.alarm_time = state["alarm_time"]
        detector._scale_n = int(state["scale_n"])
        detector._sum, detector._sum_sq = float(state["sum"]), float(state["sum_sq"])
        return detector


# --- the recursions, for any leading shape (a detector's shifts, or paths x shifts) ------


def signed_shifts(shifts: tuple[float, ...]) -> np.ndarray:
    """The grid with both signs: the first axis of the statistics."""
    return np.concatenate([np.asarray(shifts), -np.asarray(shifts)])


def log_e_values(signed: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``log L = d z - d^2 z^2 / 6 - d^2 / 3`` for each signed shift ``d`` (first axis)
    and standardized value ``z`` (last axis; ``z`` may have leading axes of its own, put
    before the shifts')."""
    d = signed[:, None]
    z = np.asarray(z)[..., None, :]
    return np.asarray(d * z - (d * d) * (z * z / 6.0 + 1.0 / 3.0))


def shiryaev_roberts_log(log_start: np.ndarray, increments: np.ndarray) -> np.ndarray:
    """``log R_t`` of ``R_t = (1 + R_{t-1}) exp(increment_t)`` along the last axis.

    ``log_start`` is ``log R_0`` (``-inf`` for ``R_0 = 0``), one per leading index.
    Unrolled, ``R_t = e^{c_t} (R_0 + sum_{k=0}^{t-1} e^{-c_k})`` with ``c`` the cumulative
    increments and ``c_0 = 0``: a cumulative sum, taken in blocks against each block's
    largest term, so that nothing overflows.
    """
    out = np.empty_like(increments)
    start = np.asarray(log_start, dtype=np.float64)
    for low in range(0, increments.shape[-1], _BLOCK):
        part = increments[..., low : low + _BLOCK]
        c = np.cumsum(part, axis=-1)
        # terms[..., j] is log of the j-th summand: log R_0, then -c_0 = 0, -c_1, ...
        terms = np.concatenate(
            [start[..., None], np.zeros((*start.shape, 1)), -c[..., :-1]], axis=-1
        )
        top = terms.max(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            log_sums = np.log(np.cumsum(np.exp(terms - top), axis=-1)[..., 1:]) + top
        if not np.isfinite(log_sums).all():  # a sum underflowed: take this block in logs
            log_sums = np.logaddexp.accumulate(terms, axis=-1)[..., 1:]
        out[..., low : low + _BLOCK] = c + log_sums
        start = out[..., low + part.shape[-1] - 1]
    return out


def cusum_log(log_start: np.ndarray, increments: np.ndarray) -> np.ndarray:
    """``log W_t`` of ``W_t = max(W_{t-1}, 1) exp(increment_t)`` along the last axis."""
    c = np.cumsum(increments, axis=-1)
    start = -np.maximum(np.asarray(log_start, dtype=np.float64), 0.0)
    floor = np.concatenate([start[..., None], c[..., :-1]], axis=-1)
    return np.asarray(c - np.minimum.accumulate(floor, axis=-1))


def log_mixture(log_statistics: np.ndarray) -> np.ndarray:
    """Log of the equally weighted mixture over the first axis (the signed shifts)."""
    top = np.max(log_statistics, axis=0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    mean = np.mean(np.exp(log_statistics - top), axis=0)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(mean) + top[0])


def first_crossing(log_statistics: np.ndarray, log_threshold: float) -> int | None:
    """The first index along the last axis at which the mixture reaches the threshold."""
    # The mixture is at most its largest term: look closely only where that is high.
    candidates = np.flatnonzero(log_statistics.max(axis=0) >= log_threshold)
    if not candidates.size:
        return None
    crossed = candidates[log_mixture(log_statistics[:, candidates]) >= log_threshold]
    return int(crossed[0]) if crossed.size else None
