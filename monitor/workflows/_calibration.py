"""Fitting a stream's calibrator from JSONL and making it the active version; its quality
report, the pool of audited probes, and the next step after an audit."""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from estimators import (
    CalibrationQuality,
    Calibrator,
    CalibratorChoice,
    IsotonicCalibrator,
    QuantileSketch,
    TwoStageCalibrator,
    calibration_quality,
    choose_calibrator,
)

from ..config import Policy, Settings
from ..events._decisions import encode
from ..gates import Verdict
from ..pipeline._judge import gate_records, publish
from ..store import KeyLayout, SyncClient
from ..store._calibrators import (
    MAX_STORED_PAIRS,
    Announcement,
    Fresh,
    encode_pairs,
    read_calibration_pairs,
    read_calibrator,
    read_pool,
)
from ..store._calibrators import activate_calibrator as store_calibrator
from ..store._calibrators import decode_pairs as decode_stored_pairs
from ..store._keys import CALIBRATOR, CALIBRATOR_VERSION, STATE
from ..store._write import AUDIT_MAXLEN
from ..subjects._labels import ActiveCalibrator, LabelModel
from ._pairs import InputError, LabeledPairs, Progress, read_pairs

__all__ = [
    "MIN_CALIBRATION_PAIRS",
    "MODES",
    "CalibrationOutcome",
    "RefitRefused",
    "activate_calibrator",
    "calibrate",
    "check_mode",
    "quality_lines",
    "read_fit_file",
]


MIN_CALIBRATION_PAIRS = 20
"""The fewest labeled pairs a calibrator is fitted on."""

MODES = ("isotonic", "two_stage", "auto")
"""``calibrate --mode``: isotonic in ``S``, two-stage on ``S`` and ``--covariates``, or
whichever has the lower out-of-fold error (two-stage only when lower by more than its
standard error)."""


class RefitRefused(ValueError):
    """``calibrate`` has nothing to fit (no FILE, nothing pooled, no calibrator): exit 2."""


def activate_calibrator(
    client: SyncClient,
    layout: KeyLayout,
    policy: Policy,
    stream: str,
    model: Calibrator,
    baseline_scores: QuantileSketch | None = None,
    *,
    decisions_topic: str | None = None,
    pairs: bytes = b"",
    pooled_entries: int = 0,
    based_on: int | None = None,
    residual_variance: float | None = None,
) -> int:
    """Store ``model`` as the stream's next calibrator version and make it active.

    The residual statistics of the retired version are kept as ``history`` (their view)
    and the new version starts empty: a new interval, announced by a ``residual_drift``
    decision (verdict INCONCLUSIVE, action ``none``, reason ``recalibrated``, the old and
    the new version in its evidence) published in the same atomic write. That decision
    is the gate's published verdict from then on, so the new version's first verdict
    (PASS, say, after a FAIL of the old one) is a change that is published too: a refit
    never flips a verdict silently. Running workers recompute any batch computed under
    the old calibrator. ``decisions_topic`` defaults to the one of the environment's
    topic prefix (``DRIFTGATE_TOPIC_PREFIX``).

    ``pairs`` (encoded) are kept with the new version; ``pooled_entries`` pooled probes
    leave the pool in the same write; ``based_on`` is the version a pooled refit started
    from (see :func:`monitor.store._calibrators.activate_calibrator`);
    ``residual_variance`` is the fit's out-of-fold mean squared residual, the prior
    variance of the new interval (:class:`monitor.subjects._labels.ActiveCalibrator`).
    """
    labels = LabelModel(policy)
    record = ActiveCalibrator(0, model, baseline_scores, residual_variance).record()
    topic = decisions_topic or Settings.from_env().topic("decisions")

    def describe(version: int, previous: int) -> Fresh:
        return fresh_records(labels, stream, record, version, previous, time.time(), topic)

    return store_calibrator(
        client,
        layout,
        stream,
        record,
        describe,
        pairs=pairs,
        pooled_entries=pooled_entries,
        based_on=based_on,
    )


ANNOUNCING_GATE = "residual_drift"
RECALIBRATED = "recalibrated"


def fresh_records(
    labels: LabelModel,
    stream: str,
    record: bytes,
    version: int,
    previous: int,
    now: float,
    topic: str,
) -> Fresh:
    """What calibrator ``version`` (``record``) of ``stream`` starts with at ``now``: the
    view and gate records of its empty statistics, and the decision announcing it (see
    :func:`activate_calibrator`), for the decisions ``topic``."""
    fresh = labels.load(
        stream, {STATE: None, CALIBRATOR: record, CALIBRATOR_VERSION: str(version).encode()}
    )
    judgement = labels.evaluate(stream, fresh, now)
    verdicts = [
        announce(v, previous) if v.gate == ANNOUNCING_GATE else v for v in judgement.verdicts
    ]
    announced = next(v for v in verdicts if v.gate == ANNOUNCING_GATE)
    published, decision = publish(announced, now)
    # Every gate starts afresh on the new version: its record says so.
    gates = gate_records(
        [replace(v, reason=RECALIBRATED) for v in verdicts], {announced.key: published}, now
    )
    return Fresh(
        encode(labels.view(stream, fresh, replace(judgement, verdicts=verdicts))),
        encode(gates),
        Announcement(
            ANNOUNCING_GATE,
            announced.action,
            encode(decision),
            encode(published),
            topic,
            AUDIT_MAXLEN,
        ),
    )


def announce(fresh: Verdict, previous_version: int) -> Verdict:
    """The residual gate's verdict on a new version's empty interval, as the decision
    that announces it: INCONCLUSIVE, no action, the old and new versions."""
    return Verdict(
        fresh.gate,
        fresh.subject,
        "INCONCLUSIVE",
        "none",
        RECALIBRATED,
        {**fresh.evidence, "previous_calibrator_version": previous_version},
    )


# --- calibrate: the fit, its quality report and the pooled refit ---------------------------


def check_fit_sample(where: str, s: np.ndarray, y: np.ndarray) -> None:
    """A calibrator needs :data:`MIN_CALIBRATION_PAIRS` pairs whose scores differ."""
    if s.size < MIN_CALIBRATION_PAIRS:
        raise InputError(
            f"{where}: a calibrator needs at least {MIN_CALIBRATION_PAIRS} labeled pairs, "
            f"found {s.size}"
        )
    if s.min() == s.max():
        raise InputError(f"{where}: every score is {s[0]:g}: a calibrator needs scores that differ")


@dataclass(frozen=True)
class CalibrationOutcome:
    """A fitted, stored and announced calibrator version, with its quality report."""

    stream: str
    version: int
    previous_version: int
    model: Calibrator
    quality: CalibrationQuality
    file_pairs: int
    """Pairs read from FILE (0 without one)."""
    history_pairs: int
    """Pairs of the previous version reused by a pooled refit."""
    pooled_pairs: int
    pooled_probes: int
    stored_pairs: int
    """Pairs kept with the new version (at most :data:`MAX_STORED_PAIRS`)."""
    refit_of: int | None = None
    """The version a pooled refit (``--pool``) started from."""
    mode: str = "isotonic"
    choice: CalibratorChoice | None = None
    """Both calibrators' out-of-fold errors, when covariates were given."""

    @property
    def knots(self) -> int:
        """Knots of the isotonic map (of the score, or of the two-stage index)."""
        model = self.model
        if isinstance(model, TwoStageCalibrator):
            model = model.index_map
        return int(model.knots_s.size) if isinstance(model, IsotonicCalibrator) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "calibrator": {"kind": self.model.kind, "version": self.version},
            "covariates": list(self.model.covariates),
            "version": self.version,
            "previous_version": self.previous_version,
            "n_pairs": self.model.n,
            "knots": self.knots,
            "mode": self.mode,
            "selection": None if self.choice is None else self.choice.to_dict(),
            "sources": {
                "file": self.file_pairs,
                "history": self.history_pairs,
                "pooled": self.pooled_pairs,
                "pooled_probes": self.pooled_probes,
            },
            "stored_pairs": self.stored_pairs,
            "pooled_refit": self.refit_of is not None,
            "quality": self.quality.to_dict(),
        }

    def lines(self) -> list[str]:
        kept = (
            f"; {self.stored_pairs:,} of its pairs kept (a uniform sample, the cap is "
            f"{MAX_STORED_PAIRS:,})"
            if self.stored_pairs < self.model.n
            else ""
        )
        what = (
            f"two-stage calibrator v{self.version} (isotonic on an index of S and "
            f"{', '.join(self.model.covariates)})"
            if isinstance(self.model, TwoStageCalibrator)
            else f"isotonic calibrator v{self.version}"
        )
        head = [
            f"stream {self.stream}: {what} active ({self.model.n} pairs, {self.knots} knots); "
            "residual statistics start fresh, announced by a residual_drift decision (reason "
            f"recalibrated){kept}"
        ]
        head += selection_lines(self.mode, self.choice, self.model)
        if self.refit_of is not None:
            probes = f"probe{'s' if self.pooled_probes != 1 else ''}"
            head.append(
                f"pooled refit of v{self.refit_of}: {self.history_pairs:,} pairs of its history "
                f"+ {self.pooled_pairs:,} from {self.pooled_probes} pooled {probes}"
                + (f" + {self.file_pairs:,} from the file" if self.file_pairs else "")
                + ("; the pool is empty again" if self.pooled_probes else "")
            )
        return head + quality_lines(self.quality)


def selection_lines(mode: str, choice: CalibratorChoice | None, model: Calibrator) -> list[str]:
    """Which calibrator ``--mode`` took, and why (the out-of-fold errors of both)."""
    if choice is None:
        return []
    errors = (
        f"out-of-fold mean squared error {choice.isotonic_mse:.5f} isotonic in S, "
        f"{choice.two_stage_mse:.5f} two-stage; two-stage lower by {choice.improvement:+.5f} "
        f"(standard error {choice.standard_error:.5f}, {choice.folds} folds, paired by item)"
    )
    if mode == "auto":
        why = (
            "more than its standard error: two-stage chosen"
            if choice.chosen == "two_stage"
            else "not more than its standard error: isotonic in S kept"
        )
        lines = [f"mode auto: {errors}; {why}"]
    else:
        lines = [f"mode {mode} (as asked): {errors}"]
    if isinstance(model, TwoStageCalibrator):
        lines += [
            f"  an event without {e.name} uses {e.describe_default()}"
            + (f"; {len(e.levels)} levels" if e.kind == "categorical" else "")
            for e in model.encodings
        ]
    return lines


def quality_lines(quality: CalibrationQuality) -> list[str]:
    """The quality report as a table for people (``--json`` has full precision)."""
    r2 = "undefined (every label is equal)" if math.isnan(quality.r2) else f"{quality.r2:.3f}"
    lines = [
        f"quality on out-of-fold predictions ({quality.folds}-fold cross-fitting, "
        f"{quality.n:,} pairs): R^2 {r2}, mean absolute error {quality.mean_absolute_error:.4f}"
        f", RMSE {quality.rmse:.4f}",
        f"  {'decile':>6} {'n':>7}  {'score range':<18} {'mean S':>7} {'mean Y':>7} "
        f"{'mean f(S)':>9} {'mean residual':>13}",
    ]
    for row in quality.deciles:
        scores = f"[{row.score_low:.3f}, {row.score_high:.3f}]"
        lines.append(
            f"  {row.decile:>6} {row.n:>7,}  {scores:<18} {row.mean_score:>7.3f} "
            f"{row.mean_label:>7.3f} {row.mean_prediction:>9.3f} {row.mean_residual:>+13.4f}"
        )
    return lines


def _stored_sample(s: np.ndarray, y: np.ndarray) -> bytes:
    """The pairs kept with a version: all of them, or a uniform sample of the cap."""
    if s.size > MAX_STORED_PAIRS:
        keep = np.sort(np.random.default_rng(0).choice(s.size, MAX_STORED_PAIRS, replace=False))
        s, y = s[keep], y[keep]
    return encode_pairs(s, y)


def read_fit_file(
    file: str, pool: bool, progress: Progress | None = None, covariates: tuple[str, ...] = ()
) -> LabeledPairs:
    """``calibrate``'s FILE, read and (when it is the whole fit) checked before any
    service is asked: a bad file is exit 2 whether Redis is up or not; so is a line
    without one of ``covariates``."""
    pairs = read_pairs(file, progress, covariates, require_covariates=True)
    if not pool:
        check_fit_sample(file, pairs.s, pairs.y)
    return pairs


def calibrate(
    client: SyncClient,
    layout: KeyLayout,
    settings: Settings,
    stream: str,
    file: str | None,
    *,
    pool: bool = False,
    progress: Progress | None = None,
    pairs: LabeledPairs | None = None,
    covariates: tuple[str, ...] = (),
    mode: str = "auto",
) -> CalibrationOutcome:
    """Fit ``stream``'s calibrator, report its out-of-fold quality, store and announce it.

    Without ``pool`` the fit is on FILE alone. With ``pool`` it is the pooled
    recalibration of the calibration playbook: the active version's pairs, every probe
    pooled since (``audit --pool`` after a PASS) and FILE if given; the probes used leave
    the pool in the write that activates the new version. ``pairs`` are FILE's when the
    caller has read it already (:func:`read_fit_file`).

    ``covariates`` (FILE's ``covariates.NAME`` on every line) let ``mode`` fit the
    two-stage calibrator: ``two_stage`` always, ``auto`` when its out-of-fold error is
    lower than isotonic-in-S's by more than its standard error (both are reported).
    """
    check_mode(mode, covariates, pool)
    progress = progress or Progress()
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    history_pairs = pooled_pairs = probes = file_pairs = 0
    based_on: int | None = None
    if pool:
        active = ActiveCalibrator.from_fields(*read_calibrator(client, layout, stream)).version
        if active == 0:
            raise RefitRefused(
                f"stream {stream!r} has no calibrator to refit: fit one first "
                f"(driftgate calibrate FILE --stream {shlex.quote(stream)})"
            )
        entries = read_pool(client, layout, stream)
        if not entries and file is None:
            raise RefitRefused(
                f"nothing pooled for stream {stream!r}: a probe joins the pool when its audit "
                f"passes (driftgate audit PROBE --stream {shlex.quote(stream)} --pool), or "
                "give a FILE to add to the calibration history"
            )
        history = read_calibration_pairs(client, layout, stream, active)
        if history is None and file is None:
            raise RefitRefused(
                f"calibrator v{active} of stream {stream!r} has no stored calibration pairs "
                "(fitted before driftgate kept them): give its calibration FILE too "
                f"(driftgate calibrate FILE --stream {shlex.quote(stream)} --pool)"
            )
        if history is not None:
            parts.append(history)
            history_pairs = history[0].size
        for entry in entries:
            probe = decode_stored_pairs(entry)
            parts.append(probe)
            pooled_pairs += probe[0].size
        probes, based_on = len(entries), active
    if file is not None:
        pairs = pairs or read_pairs(file, progress, covariates, require_covariates=True)
        parts.append((pairs.s, pairs.y))
        file_pairs = pairs.s.size
    s = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    check_fit_sample(
        file if file is not None and not pool else f"stream {stream!r} (pooled refit)", s, y
    )

    def on_fold(done: int, folds: int) -> None:
        progress.show(f"cross-fitting: fold {done} of {folds}")

    choice = None
    model: Calibrator
    if covariates and pairs is not None:  # check_mode: no covariates with --pool
        try:
            choice = choose_calibrator(s, y, pairs.covariates, on_fold=on_fold)
        except ValueError as exc:  # a covariate that mixes numbers and categories, say
            raise InputError(f"{file}: {exc}") from exc
        two_stage = mode == "two_stage" or (mode == "auto" and choice.chosen == "two_stage")
        if two_stage:
            quality = calibration_quality(
                s, y, choice.folds, predictions=choice.two_stage_predictions
            )
            model = TwoStageCalibrator().fit(s, y, pairs.covariates)
        else:
            quality = calibration_quality(
                s, y, choice.folds, predictions=choice.isotonic_predictions
            )
            model = IsotonicCalibrator().fit(s, y)
    else:
        quality = calibration_quality(s, y, on_fold=on_fold)
        model = IsotonicCalibrator().fit(s, y)
    progress.close()
    baseline = QuantileSketch(settings.policy.score_drift.relative_accuracy).update(s)
    stored = _stored_sample(s, y)
    version = activate_calibrator(
        client,
        layout,
        settings.policy,
        stream,
        model,
        baseline,
        decisions_topic=settings.topic("decisions"),
        pairs=stored,
        pooled_entries=probes,
        based_on=based_on,
        residual_variance=quality.rmse**2 if math.isfinite(quality.rmse) else None,
    )
    return CalibrationOutcome(
        stream,
        version,
        based_on if based_on is not None else version - 1,
        model,
        quality,
        file_pairs,
        history_pairs,
        pooled_pairs,
        probes,
        min(s.size, MAX_STORED_PAIRS),
        based_on,
        mode if covariates else "isotonic",
        choice,
    )


def check_mode(mode: str, covariates: tuple[str, ...], pool: bool) -> None:
    """``--mode`` and ``--covariates`` together: refused (exit 2) when they cannot be."""
    if mode not in MODES:
        raise RefitRefused(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "two_stage" and not covariates:
        raise RefitRefused(
            "--mode two_stage needs --covariates (e.g. --covariates domain,difficulty)"
        )
    if covariates and pool:
        raise RefitRefused(
            "--covariates cannot be used with --pool: the stored calibration pairs and the "
            "pooled probes keep s and y only; fit from a FILE whose lines carry the covariates"
        )
