"""A stream's residuals by subgroup: per value of each covariate in
``residual_drift.group_by``, an e-process of the residuals (``estimators.GroupedMeans``),
judged together by ``gates._subgroup_residuals``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from estimators import GroupedMeans

from ..config import ResidualDriftPolicy
from ..gates import Verdict
from ..gates._subgroup_residuals import GROUP_METHOD, subgroup_residual_gates
from ..store import _keys as fields
from ._covariates import category_name

__all__ = ["SubgroupResiduals", "subgroup_gate_keys"]

STATE_KEY = "subgroups"
"""The subgroups' place in a stream's stored statistics."""


def subgroup_gate_keys(stored: Mapping[str, Any]) -> list[str]:
    """The record keys of the group verdicts a stored stream state gives (the runner reads
    their published records with it, as it reads those of the fixed gates): without them
    a worker that loads the stream would announce each standing group verdict again."""
    raw = stored.get(fields.STATE)
    if not raw:
        return []
    state = orjson.loads(raw).get(STATE_KEY) or {}
    return list(state.get("keys", []))


@dataclass
class SubgroupResiduals:
    """Per covariate of ``group_by``, the residuals by value; ``out_of_range`` counts the
    residuals outside the label range a covariate's group got (their groups go untested);
    ``keys`` are the record keys of every group verdict given under this state, and
    ``flagged`` the groups (``covariate=value``) flagged so far: their flag stands."""

    groups: dict[str, GroupedMeans] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    flagged: set[str] = field(default_factory=set)

    def update(
        self,
        residuals: np.ndarray,
        covariates: Mapping[str, np.ndarray],
        policy: ResidualDriftPolicy,
    ) -> None:
        """Fold labeled residuals in by their covariates' values (one per residual; None
        where an event did not give the covariate: no group of it gets that residual)."""
        if not policy.group_by or not residuals.size:
            return
        low, high = policy.label_range
        bound = high - low
        inside = (residuals >= -bound) & (residuals <= bound)
        for name in policy.group_by:
            values = covariates.get(name)
            if values is None:
                continue
            given = values != None  # noqa: E711  (elementwise on an object array)
            if not given.any():
                continue
            outside = int((given & ~inside).sum())
            if outside:
                self.out_of_range[name] = self.out_of_range.get(name, 0) + outside
            rows = given & inside
            grouped = self.groups.get(name)
            if grouped is None:
                grouped = self.groups[name] = GroupedMeans(policy.max_groups, -bound, bound)
            grouped.update([category_name(v) for v in values[rows]], residuals[rows])

    def evaluate(
        self, subject: str, policy: ResidualDriftPolicy, calibrator_version: int
    ) -> list[Verdict]:
        verdicts = subgroup_residual_gates(
            subject, self.groups, policy, calibrator_version, self.out_of_range, self.flagged
        )
        self.keys.update(verdict.key for verdict in verdicts)
        self.flagged.update(v.part for v in verdicts if v.verdict in ("WARN", "FAIL"))
        return verdicts

    @staticmethod
    def view(verdicts: Iterable[Verdict]) -> dict[str, dict[str, Any]]:
        """Per group (``covariate=value``), what ``driftgate status`` shows of it."""
        rows: dict[str, dict[str, Any]] = {}
        for verdict in verdicts:
            evidence = verdict.evidence
            if evidence.get("method") != GROUP_METHOD:
                continue
            rows[verdict.part] = {
                **evidence["group"],
                "n": evidence["n"],
                "residual_mean": evidence["estimate"],
                "ci_low": evidence["ci_low"],
                "ci_high": evidence["ci_high"],
                "e_value": evidence["e_value"],
                "e_threshold": evidence["e_threshold"],
                "verdict": verdict.verdict,
                "reason": verdict.reason,
                "next_step": evidence.get("next_step"),
            }
        return rows

    def to_state(self) -> dict[str, Any]:
        return {
            "groups": {name: g.to_state() for name, g in sorted(self.groups.items())},
            "out_of_range": dict(sorted(self.out_of_range.items())),
            "keys": sorted(self.keys),
            "flagged": sorted(self.flagged),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> SubgroupResiduals:
        """A state written before subgroups were judged has none: they start afresh."""
        if not state:
            return cls()
        return cls(
            {name: GroupedMeans.from_state(g) for name, g in state["groups"].items()},
            {name: int(k) for name, k in state["out_of_range"].items()},
            set(state["keys"]),
            set(state.get("flagged", ())),
        )
