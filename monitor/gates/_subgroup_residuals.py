"""The residual drift gate by subgroup: is the mean residual still 0 in each value of a
declared covariate, with the false discovery rate across the groups held at q?"""

from __future__ import annotations

import math
import shlex
from collections.abc import Collection, Mapping
from typing import Any

from estimators import OTHER_CATEGORY, GroupedMeans, e_benjamini_hochberg

from ..config import ResidualDriftPolicy
from ._residual_drift import GATE, RECALIBRATION_LABELS
from ._verdict import Verdict, finite_or_none

__all__ = ["GROUP_METHOD", "group_family_size", "group_part", "subgroup_residual_gates"]

GROUP_METHOD = "e_process_e_bh"
"""The evidence's method: an e-process per group, the groups combined by e-BH."""


def group_part(covariate: str, value: str) -> str:
    """A group's part of the verdict's record key and its metric label: ``covariate=value``.

    >>> group_part("domain", "legal")
    'domain=legal'
    """
    return f"{covariate}={value}"


def group_family_size(policy: ResidualDriftPolicy) -> int:
    """``m`` of e-BH: every group the policy allows, seen or not (``max_groups`` by name
    and ``other`` per covariate). Fixed by the policy, so the false discovery rate holds
    while groups keep appearing; a group not yet seen counts as untested."""
    return len(policy.group_by) * (policy.max_groups + 1)


def _next_step(subject: str, covariate: str, value: str, verdict: str) -> str | None:
    """The calibration playbook's next step for a group that shows bias: relabel the group
    (its FAIL: 100-200 target labels, stratified), then refit with the covariate."""
    group = group_part(covariate, value)
    pooled = (
        f" ({OTHER_CATEGORY} pools the values beyond residual_drift.max_groups: raise it to "
        "see which)"
        if value == OTHER_CATEGORY
        else ""
    )
    if verdict == "FAIL":
        return (
            f"relabel {group}{pooled}: do not rely on this calibrator there; collect "
            f"{RECALIBRATION_LABELS} oracle labels of {subject} with {group}, stratified by "
            "score decile, then refit with the covariate: driftgate calibrate "
            f"TARGET_LABELS.jsonl --stream {subject} --covariates {shlex.quote(covariate)} "
            "--mode auto"
        )
    if verdict == "WARN":
        return (
            f"a small but detectable bias in {group}{pooled}: enlarge the next audit probe "
            f"with labels of {group}; if WARN persists, relabel {group} "
            f"({RECALIBRATION_LABELS} labels) and refit with --covariates {shlex.quote(covariate)}"
        )
    return None


def subgroup_residual_gates(
    subject: str,
    groups: Mapping[str, GroupedMeans],
    policy: ResidualDriftPolicy,
    calibrator_version: int,
    out_of_range: Mapping[str, int] | None = None,
    standing: Collection[str] = (),
) -> list[Verdict]:
    """A ``residual_drift`` verdict per group of each covariate in ``policy.group_by``
    (``part`` and ``evidence.group`` name it), in the policy's order, then by value.

    Each group's residuals feed an e-process against mean 0
    (:class:`estimators.BoundedMeanEProcess`, anytime-valid). e-BH
    (:func:`estimators.e_benjamini_hochberg`) over the family of every group the policy
    allows (:func:`group_family_size`, a group not seen counting as untested) rejects the
    ``k*`` largest: the expected share of false discoveries among the groups rejected is
    at most ``group_fdr`` at any time the verdicts are read (Wang and Ramdas 2022); under
    no bias anywhere the chance of ever rejecting a group at all is at most ``group_fdr``
    (the groups' mean e-process is a test supermartingale: Ville's inequality).

    A group once flagged stays flagged under this calibrator version (``standing``: the
    parts flagged before, as the stream gate's change alarm stands), so a decision does
    not flap while its e-value wanders near the threshold; the evidence says so
    (``standing``). A flagged group is FAIL when its mean residual is at least
    ``bias_threshold`` away from 0, else WARN, as the stream's gate judges its interval;
    the others PASS; fewer than ``min_labeled`` labels: INCONCLUSIVE. The evidence's
    interval holds the means the group's e-process does not reject at e-BH's threshold
    ``m / (max(k*, 1) q)``, so it excludes 0 exactly when e-BH rejects the group now (the
    selected intervals' false coverage rate is at most q). A covariate whose residuals
    left ``label_range`` (which the e-process cannot hold) has its groups untested
    (e-value 1) and INCONCLUSIVE (reason ``residual_out_of_range``).
    """
    out_of_range = out_of_range or {}
    family: list[tuple[str, str, Any]] = [
        (covariate, value, process)
        for covariate in policy.group_by
        if (grouped := groups.get(covariate)) is not None
        for value, process in grouped.items()
    ]
    tested = [
        process.n >= policy.min_labeled and not out_of_range.get(covariate)
        for covariate, _, process in family
    ]
    e_values = [
        1.0 if out_of_range.get(covariate) else process.e_value(0.0)
        for covariate, _, process in family
    ]
    m = group_family_size(policy)
    q = policy.group_fdr
    rejected, discoveries = e_benjamini_hochberg(e_values, q, m)
    e_threshold = m / (max(discoveries, 1) * q)
    verdicts = []
    for (covariate, value, process), test, e, reject in zip(
        family, tested, e_values, rejected, strict=True
    ):
        interval = process.interval(e_threshold)
        evidence: dict[str, Any] = {
            "n": process.n,
            "estimate": finite_or_none(interval.estimate),
            "ci_low": finite_or_none(interval.low),
            "ci_high": finite_or_none(interval.high),
            "threshold": policy.bias_threshold,
            "method": GROUP_METHOD,
            "group": {"covariate": covariate, "value": value},
            "e_value": finite_or_none(e),
            "e_threshold": e_threshold,
            "fdr_q": q,
            "groups": m,
            "discoveries": discoveries,
            "calibrator_version": calibrator_version,
        }

        part = group_part(covariate, value)
        stands = part in standing and not reject
        evidence["standing"] = stands
        outcome, action, reason = _judge(process, test, bool(reject) or stands, policy)
        if out_of_range.get(covariate):
            outcome, action, reason = "INCONCLUSIVE", "none", "residual_out_of_range"
        step = _next_step(shlex.quote(subject), covariate, value, outcome)
        if step is not None:
            evidence["next_step"] = step
        verdicts.append(Verdict(GATE, subject, outcome, action, reason, evidence, part=part))
    return verdicts


def _judge(
    process: Any, tested: bool, rejected: bool, policy: ResidualDriftPolicy
) -> tuple[str, str, str]:
    """A group's verdict, action and reason, as the stream's interval is judged."""
    if not tested:
        return "INCONCLUSIVE", "none", "insufficient_data"
    if not rejected:
        return "PASS", "none", "no_drift"
    if math.isfinite(process.mean) and abs(process.mean) >= policy.bias_threshold:
        return "FAIL", policy.fail_action, "residual_bias"
    return "WARN", policy.warn_action, "residual_bias"
