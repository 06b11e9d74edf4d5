"""The subjects driftgate watches: a handler per input topic.

Each kind of subject registers its topics and handlers in :data:`monitor.slices.REGISTRY`
(with its policy, status, metrics, API and report); the built-in kinds' handlers by topic
are :data:`monitor.slices.HANDLERS` and :data:`monitor.slices.OTLP_HANDLERS`.
"""

from ._experiments import CanaryHandler, TelemetryHandler
from ._labels import LabelHandler
from ._otlp import OtlpLogHandler, OtlpSpanHandler

__all__ = [
    "CanaryHandler",
    "LabelHandler",
    "OtlpLogHandler",
    "OtlpSpanHandler",
    "TelemetryHandler",
]
