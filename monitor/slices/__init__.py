"""Subject kinds as vertical slices: one :class:`SubjectKind` per kind, in :data:`REGISTRY`.

A kind's module builds its entry (topics and handlers, policy sections, status, metrics,
HTTP API, report section, commands) and registers it; the built-in kinds are

- ``labels``: label streams (residual, score and covariate drift), ``_labels``;
- ``experiments``: experiments and agents (guardrails, split, canary), ``_experiments``;
- ``otlp``: OpenTelemetry spans and evaluation results feeding both, ``_otlp``.

More come from ``DRIFTGATE_SUBJECTS`` (modules to import, each registering its kind).
Nothing heavy is imported here: the built-in modules are imported on first use. What the
kinds show is read here too: :func:`status_document` (``status --json``), one snapshot of
the read model in, each kind's section out (``_status``).
"""

from ._registry import REGISTRY, ApiRoute, SubjectKind, SubjectRegistry
from ._status import StatusDocument, agent_status, status_document

__all__ = [
    "REGISTRY",
    "ApiRoute",
    "StatusDocument",
    "SubjectKind",
    "SubjectRegistry",
    "agent_status",
    "status_document",
]
