"""Subject kinds as vertical slices: one :class:`SubjectKind` per kind, in :data:`REGISTRY`.

A kind's module builds its entry (topics and handlers, policy sections, status, metrics,
HTTP API, report section, commands) and registers it; the built-in kinds are

- ``labels``: label streams (residual, score and covariate drift), ``_labels``;
- ``experiments``: experiments and agents (guardrails, split, canary), ``_experiments``;
- ``otlp``: OpenTelemetry spans and evaluation results feeding both, ``_otlp``.

More come from ``DRIFTGATE_SUBJECTS`` (modules to import, each registering its kind).
What the kinds show is read here too: :func:`status_document` (``status --json``), one
snapshot of the read model in, each kind's section out (``_status``); and the built-in
kinds' handlers by topic (:data:`HANDLERS`: driftgate's own JSON events, each with a
schema in docs/schemas/, which ``produce`` and ``replay`` take; :data:`OTLP_HANDLERS`:
the same subjects read from OpenTelemetry's formats).

Nothing heavy is imported here: the built-in modules are imported on first use, and so
are the read side (the store) and the handlers' factories (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._registry import REGISTRY, ApiRoute, SubjectKind, SubjectRegistry

if TYPE_CHECKING:
    from ._registry import HandlerFactory
    from ._status import StatusDocument, agent_status, status_document

    HANDLERS: dict[str, HandlerFactory]
    OTLP_HANDLERS: dict[str, HandlerFactory]

__all__ = [
    "HANDLERS",
    "OTLP_HANDLERS",
    "REGISTRY",
    "ApiRoute",
    "StatusDocument",
    "SubjectKind",
    "SubjectRegistry",
    "agent_status",
    "status_document",
]

_READ_SIDE = ("StatusDocument", "agent_status", "status_document")


def __getattr__(name: str) -> Any:
    if name in _READ_SIDE:
        value = getattr(importlib.import_module("._status", __name__), name)
    elif name == "HANDLERS":
        value = REGISTRY.handlers(events=True, builtin=True)
    elif name == "OTLP_HANDLERS":
        value = REGISTRY.handlers(events=False, builtin=True)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once: later look-ups do not come here
    return value
