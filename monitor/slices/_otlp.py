"""OpenTelemetry's slice: GenAI spans and evaluation results, read as the label streams'
and the experiments' events (their subjects are those kinds'; this slice adds topics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config._policy import EVALUATION_ROLES, require
from ._registry import REGISTRY, SubjectKind

if TYPE_CHECKING:
    from ..config import Policy
    from ..pipeline import Handler

__all__ = ["OTLP"]


def _span_handler(policy: Policy) -> Handler:
    from ..subjects._otlp import OtlpSpanHandler

    return OtlpSpanHandler(policy)


def _log_handler(policy: Policy) -> Handler:
    from ..subjects._otlp import OtlpLogHandler

    return OtlpLogHandler(policy)


def _check_policy(policy: Policy) -> None:
    """``otlp``'s prices and evaluation mappings (each error names its key)."""
    for name, price in policy.otlp.prices.items():
        for key in ("input_per_million", "output_per_million"):
            require(getattr(price, key) >= 0, f"otlp.prices.{name}.{key}", "must be 0 or more")
    for name, mapping in policy.otlp.evaluations.items():
        require(
            mapping.role in EVALUATION_ROLES,
            f"otlp.evaluations.{name}.role",
            f"must be one of {', '.join(EVALUATION_ROLES)}, got {mapping.role!r}",
        )


# No JSON Schema of driftgate's own: produce and replay take driftgate's events only.
OTLP = REGISTRY.register(
    SubjectKind(
        name="otlp",
        handlers={"otlp.spans": _span_handler, "otlp.logs": _log_handler},
        events=False,
        check_policy=_check_policy,
    )
)
