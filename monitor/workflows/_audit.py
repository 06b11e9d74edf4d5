"""``driftgate audit``: the transport audit of a probe slice against the stream's active
calibrator, the pool a probe that passed may join, and the next step after it."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Any

from estimators import (
    AuditResult,
    DecileResidual,
    equivalence_labels_needed,
    residuals_by_decile,
    transport_audit,
)

from ..gates._residual_drift import RECALIBRATION_LABELS
from ..store import KeyLayout, SyncClient
from ..store._calibrators import MAX_STORED_PAIRS, PoolReceipt, add_to_pool, read_calibrator
from ..subjects._labels import ActiveCalibrator
from ._pairs import InputError, LabeledPairs, read_pairs

__all__ = ["Audit", "AuditRefused", "NextStep", "PoolOutcome", "audit", "next_step", "pool_probe"]


class AuditRefused(ValueError):
    """``audit`` has nothing to audit (the stream has no calibrator): exit 2."""


@dataclass(frozen=True)
class Audit:
    """A probe's transport audit, its residuals by score decile, what became of it
    (``--pool``) and the next step."""

    stream: str
    calibrator: ActiveCalibrator
    result: AuditResult
    deciles: list[DecileResidual]
    step: NextStep
    pooled: PoolOutcome | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "calibrator": {"kind": self.calibrator.kind, "version": self.calibrator.version},
            **self.result.to_dict(),
            "next_step": self.step.to_dict(),
            "pool": self.pooled.to_dict() if self.pooled else None,
            "deciles": [d.__dict__ for d in self.deciles],
        }

    def lines(self) -> list[str]:
        result, calibrator = self.result, self.calibrator
        lines = [
            f"Transport: {result.status} | Group: {self.stream} | N={result.n} | "
            f"delta={result.delta:+.4f} [{result.interval.low:+.4f}, "
            f"{result.interval.high:+.4f}] ({result.method}, calibrator {calibrator.kind} "
            f"v{calibrator.version})",
            f"Next step: {self.step.text}",
        ]
        if self.pooled is not None:
            lines.append(self.pooled.reason[0].upper() + self.pooled.reason[1:])
        lines += [
            f"  decile {row.decile:>2}  s in [{row.score_low:.3f}, {row.score_high:.3f}]  "
            f"n={row.n:<4} mean residual {row.mean_residual:+.4f}"
            for row in self.deciles
        ]
        return lines


def audit(
    client: SyncClient,
    layout: KeyLayout,
    stream: str,
    probe: str,
    pairs: LabeledPairs,
    *,
    alpha: float,
    margin: float | None,
    family_size: int,
    pool: bool,
) -> Audit:
    """Audit ``pairs`` (read from the file ``probe``) against ``stream``'s active
    calibrator: the residuals' transport test, their means by score decile, the pool when
    ``pool`` (only a probe that passes joins it) and the playbook's next step."""
    calibrator = ActiveCalibrator.from_fields(*read_calibrator(client, layout, stream))
    if calibrator.version == 0:
        raise AuditRefused(
            f"stream {stream!r} has no calibrator to audit: fit one first "
            f"(driftgate calibrate FILE --stream {stream})"
        )
    covariates = None
    if calibrator.model.covariates:  # a two-stage calibrator: the probe's covariates too
        # (a probe line without one uses the calibrator's declared default, as an event does)
        covariates = read_pairs(probe, None, calibrator.model.covariates).covariates
    residuals = calibrator.model.residuals(pairs.s, pairs.y, covariates)
    try:
        result = transport_audit(
            residuals, alpha=alpha, clusters=pairs.clusters, margin=margin, family_size=family_size
        )
    except ValueError as exc:  # one cluster only
        raise InputError(f"{probe}: {exc}") from exc
    deciles = residuals_by_decile(pairs.s, residuals)
    pooled = pool_probe(client, layout, stream, result, pairs) if pool else None
    step = next_step(
        result,
        deciles,
        stream,
        probe,
        calibrator.version,
        pooled=pooled is not None and pooled.pooled,
    )
    return Audit(stream, calibrator, result, deciles, step, pooled)


@dataclass(frozen=True)
class PoolOutcome:
    """What ``audit --pool`` did with the probe."""

    pooled: bool
    reason: str
    """Why not (or what now), in words."""
    pool_pairs: int | None = None
    pool_probes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_probe(
    client: SyncClient, layout: KeyLayout, stream: str, result: AuditResult, pairs: LabeledPairs
) -> PoolOutcome:
    """Add a probe's pairs to the stream's pool, only when its audit passed."""
    refit = f"driftgate calibrate --stream {shlex.quote(stream)} --pool"
    if result.status != "PASS":
        return PoolOutcome(
            False,
            f"not pooled: the audit is {result.status}, and only a probe that passes joins "
            "the calibration history",
        )
    receipt: PoolReceipt = add_to_pool(client, layout, stream, pairs.s, pairs.y)
    if not receipt.added:
        return PoolOutcome(
            False,
            f"not pooled: the pool holds {receipt.pairs:,} pairs and {pairs.s.size:,} more "
            f"would pass its cap of {MAX_STORED_PAIRS:,}: refit on it first ({refit})",
            receipt.pairs,
            receipt.probes,
        )
    return PoolOutcome(
        True,
        f"pooled: {pairs.s.size:,} labeled pairs join the pool of {stream} ({receipt.pairs:,} "
        f"pairs from {receipt.probes} probe{'s' if receipt.probes != 1 else ''}); "
        f"refit on it with: {refit}",
        receipt.pairs,
        receipt.probes,
    )


@dataclass(frozen=True)
class NextStep:
    """What to do after an audit, in words, with the command to run when there is one."""

    action: str
    """``reuse``, ``enlarge_probe``, ``label_more`` or ``recalibrate``."""
    text: str
    command: str | None = None
    worst_decile: DecileResidual | None = None
    labels_needed: int | None = None
    """Equivalence mode, INCONCLUSIVE: more probe labels until the interval may fit."""

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["worst_decile"] = asdict(self.worst_decile) if self.worst_decile else None
        return document


def next_step(
    result: AuditResult,
    deciles: list[DecileResidual],
    stream: str,
    probe: str,
    calibrator_version: int,
    pooled: bool = False,
) -> NextStep:
    """The calibration playbook's decision after an audit, for this probe and stream.

    PASS: reuse the calibrator, optionally pool the labels. WARN: enlarge the next probe
    and look at the residuals by decile (the worst one named). FAIL: collect 100-200 more
    target labels, stratified by score decile, and recalibrate. With a margin
    (equivalence), INCONCLUSIVE asks for the labels that could settle it, or, when the
    estimate itself is outside the margin, is treated as a FAIL.
    """
    name = shlex.quote(stream)
    recalibrate = f"driftgate calibrate TARGET_LABELS.jsonl --stream {name}"
    margin = result.margin
    if result.status == "PASS":
        inside = "no detectable bias" if margin is None else f"the bias is within +-{margin:g}"
        if pooled:
            pool = (
                f"its labels are pooled: refit on the pool when you choose "
                f"(driftgate calibrate --stream {name} --pool)"
            )
            command = f"driftgate calibrate --stream {name} --pool"
        else:
            command = f"driftgate audit {shlex.quote(probe)} --stream {name} --pool"
            pool = f"optionally pool its {result.n} labels into the calibration history: {command}"
        return NextStep(
            "reuse",
            f"reuse calibrator v{calibrator_version} ({inside} on this probe); {pool}",
            command,
        )
    worst = max(deciles, key=lambda d: abs(d.mean_residual)) if deciles else None
    where = (
        f"decile {worst.decile} (s in [{worst.score_low:.3f}, {worst.score_high:.3f}], "
        f"n={worst.n}, mean residual {worst.mean_residual:+.4f})"
        if worst
        else "none"
    )
    fail = NextStep(
        "recalibrate",
        f"do not rely on calibrator v{calibrator_version} (bias {result.delta:+.4f}): collect "
        f"{RECALIBRATION_LABELS} more target labels stratified by score decile (10-20 in each "
        "decile of the table below; the probe's labels may join them), then recalibrate: "
        f"{recalibrate}",
        recalibrate,
        worst,
    )
    if result.status == "WARN":
        bigger = max(2 * result.n, 100)
        return NextStep(
            "enlarge_probe",
            f"a small but detectable bias ({result.delta:+.4f}): enlarge the next probe to at "
            f"least {bigger} labels and look at the residuals by decile; the worst is {where}. "
            "If WARN persists, recalibrate with the probe added to the calibration history: "
            f"driftgate calibrate {shlex.quote(probe)} --stream {name} --pool",
            None,
            worst,
        )
    if result.status == "INCONCLUSIVE" and margin is not None:
        half_width = (result.interval.high - result.interval.low) / 2
        more = equivalence_labels_needed(result.n, result.delta, half_width, margin)
        straddle = (
            f"the interval [{result.interval.low:+.4f}, {result.interval.high:+.4f}] "
            f"straddles the margin +-{margin:g}"
        )
        if more is None:
            return NextStep(
                "recalibrate",
                f"{straddle} and the estimate {result.delta:+.4f} is already outside it: "
                f"more labels are unlikely to show equivalence; treat it as a FAIL. "
                + fail.text[0].upper()
                + fail.text[1:],
                recalibrate,
                worst,
            )
        return NextStep(
            "label_more",
            f"{straddle}: this probe is too small to tell. Label about {more} more probe items "
            f"of the same slice ({result.n + more} in all) and audit again; the worst decile "
            f"so far is {where}",
            None,
            worst,
            more,
        )
    return fail
