"""driftgate's service side: Faust agents, the batch runner, Redis state, gates, metrics, CLI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The subject kinds' registry, so that every policy read has their sections and checks,
# whichever part of monitor was imported first: config (the bottom layer) imports no slice
# and is called back (config.add_policy_loader). Light: the kinds' own modules, and
# their handlers after them, are imported on first use.
from . import slices as slices

if TYPE_CHECKING:
    from .config import Policy, ResidualDriftPolicy, ScoreDriftPolicy, Settings
    from .gates import Verdict, residual_drift_gate, score_drift_gate
    from .pipeline import BatchResult, BatchRunner, Handler, RawMessage, SubjectModel
    from .slices import HANDLERS
    from .subjects import LabelHandler

__all__ = [
    "HANDLERS",
    "BatchResult",
    "BatchRunner",
    "Handler",
    "LabelHandler",
    "Policy",
    "RawMessage",
    "ResidualDriftPolicy",
    "ScoreDriftPolicy",
    "Settings",
    "SubjectModel",
    "Verdict",
    "residual_drift_gate",
    "score_drift_gate",
]

# Imported on first use (PEP 562): the gates and subjects import scipy, about a second and
# a half that every command line message (`--version`, a usage error) would wait for.
_WHERE = {
    "Policy": ".config",
    "ResidualDriftPolicy": ".config",
    "ScoreDriftPolicy": ".config",
    "Settings": ".config",
    "Verdict": ".gates",
    "residual_drift_gate": ".gates",
    "score_drift_gate": ".gates",
    "BatchResult": ".pipeline",
    "BatchRunner": ".pipeline",
    "Handler": ".pipeline",
    "RawMessage": ".pipeline",
    "SubjectModel": ".pipeline",
    "HANDLERS": ".slices",
    "LabelHandler": ".subjects",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
