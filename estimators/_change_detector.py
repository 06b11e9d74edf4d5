"""Sequential change detection of a mean shift: a mixture-of-CUSUMs e-detector."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base import StatefulEstimator

__all__ = ["MeanShiftDetector"]

DEFAULT_SHIFTS = (0.05, 0.1, 0.2, 0.4, 0.8)


class MeanShiftDetector(StatefulEstimator):
    """Detects a shift of a stream's mean away from ``baseline`` (two-sided).

    For each shift ``d`` of a grid (in units of ``scale``) and both signs, it runs the
    CUSUM e-detector ``W_t = max(W_{t-1}, 1) L_t`` with the Gaussian likelihood ratio
    ``L_t = exp(d z_t - d^2 / 2)`` of the standardized value ``z_t``, and alarms when the
    equally weighted mixture ``M_t`` of these reaches ``threshold = horizon / alpha``.
    Each CUSUM is below the matching Shiryaev-Roberts statistic, whose mixture minus ``t``
    is a martingale under no change; by Doob's inequality the chance of any false alarm
    within the first ``horizon`` values is at most ``alpha``, and the average run length
    without change is at least ``horizon / alpha`` (Shin, Ramdas and Rinaldo's e-detectors).
    Unlike a cumulative confidence sequence, whose mean is diluted by a long quiet past,
    the recursion restarts whenever the data favour "no change", so a shift that starts
    late is found about as fast as one present from the start.

    A batch is processed in numpy: in logs the recursion is a running minimum over the
    cumulative log-likelihood ratio, ``log W_t = c_t - min(-max(log W_0, 0), c_1..c_{t-1})``.
    After an alarm the detector keeps running; :meth:`reset` starts it afresh (after a
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
        The shifts to mix over, in units of ``scale``.
    clip
        Standardized values are clipped to ``+-clip`` (Huber-style) before the likelihood
        ratio: a Gaussian ratio on heavy-tailed residuals (Student t with 3 degrees of
        freedom, say) lets single outliers build evidence and raises false alarms above
        the bound; clipped values are bounded and keep it closer. ``None`` turns it off.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = MeanShiftDetector(alpha=0.05, horizon=100_000, scale=1.0)
    >>> detector.update(rng.normal(0.0, 1.0, 5_000)).alarm
    False
    >>> detector.update(rng.normal(0.5, 1.0, 400)).alarm
    True
    >>> 5_000 < detector.alarm_time <= 5_400
    True

    References
    ----------
    Shin, J., Ramdas, A. and Rinaldo, A. (2023). E-detectors: a nonparametric framework
    for sequential change detection. New England Journal of Statistics in Data Science.
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
    Lorden, G. (1971). Procedures for reacting to a change in distribution. Annals of
    Mathematical Statistics 42(6).
    """

    def __init__(
        self,
        alpha: float = 0.05,
        horizon: float = 100_000,
        baseline: float = 0.0,
        scale: float | None = None,
        shifts: tuple[float, ...] = DEFAULT_SHIFTS,
        clip: float | None = 3.0,
    ) -> None:
        if not 0 < alpha < 1 or horizon < 1:
            raise ValueError("alpha must be in (0, 1) and horizon at least 1")
        self.alpha, self.horizon, self.baseline, self.scale = alpha, horizon, baseline, scale
        self.shifts = tuple(float(s) for s in shifts)
        self.clip = clip
        self._signed = np.concatenate([np.asarray(self.shifts), -np.asarray(self.shifts)])
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
        self.log_w = np.full(self._signed.size, -np.inf)  # log W_t per signed shift
        self.alarm_time: int | None = None
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
        z = (x - self.baseline) / self._current_scale(x)
        if self.clip is not None:
            np.clip(z, -self.clip, self.clip, out=z)
        d = self._signed[:, None]
        c = np.cumsum(d * z[None, :] - 0.5 * d * d, axis=1)
        floor = np.concatenate([-np.maximum(self.log_w, 0.0)[:, None], c[:, :-1]], axis=1)
        log_w = c - np.minimum.accumulate(floor, axis=1)
        if self.alarm_time is None:
            # The mixture is at most the largest term: look closely only where that is high.
            candidates = np.flatnonzero(log_w.max(axis=0) >= self._log_threshold)
            if candidates.size:
                mixture = _logmeanexp(log_w[:, candidates], axis=0)
                crossed = candidates[mixture >= self._log_threshold]
                if crossed.size:
                    self.alarm_time = self.n + int(crossed[0]) + 1
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
        return float(np.exp(_logmeanexp(self.log_w[:, None], axis=0)[0]))

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
            "clip": self.clip,
            "n": self.n,
            "log_w": [None if math.isinf(v) else float(v) for v in self.log_w],
            "alarm_time": self.alarm_time,
            "scale_n": self._scale_n,
            "sum": self._sum,
            "sum_sq": self._sum_sq,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MeanShiftDetector:
        detector = cls(
            state["alpha"],
            state["horizon"],
            state["baseline"],
            state["scale"],
            tuple(state["shifts"]),
            state["clip"],
        )
        detector.n = int(state["n"])
        detector.log_w = np.array([-np.inf if v is None else v for v in state["log_w"]])
        detector.alarm_time = state["alarm_time"]
        detector._scale_n = int(state["scale_n"])
        detector._sum, detector._sum_sq = float(state["sum"]), float(state["sum_sq"])
        return detector


def _logmeanexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(values, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    result = np.log(np.mean(np.exp(values - top), axis=axis)) + np.squeeze(top, axis=axis)
    return np.asarray(result)
