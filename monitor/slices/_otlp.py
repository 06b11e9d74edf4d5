"""OpenTelemetry's slice: GenAI spans and evaluation results, read as the label streams'
and the experiments' events (their subjects are those kinds'; this slice adds topics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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


# No JSON Schema of driftgate's own: produce and replay take driftgate's events only.
OTLP = REGISTRY.register(
    SubjectKind(
        name="otlp",
        handlers={"otlp.spans": _span_handler, "otlp.logs": _log_handler},
        events=False,
    )
)
