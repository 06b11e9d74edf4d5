"""The subjects driftgate watches: a handler per input topic, registered here.

Adding a subject is a handler file and a line in :data:`HANDLERS`. :data:`OTLP_HANDLERS`
read the same subjects from OpenTelemetry's formats (they have no JSON Schema of their
own, and ``produce`` and ``replay`` take driftgate's events only).
"""

from collections.abc import Callable

from ..config import Policy
from ..pipeline import Handler
from ._experiments import CanaryHandler, TelemetryHandler
from ._labels import LabelHandler
from ._otlp import OtlpLogHandler, OtlpSpanHandler

__all__ = [
    "HANDLERS",
    "OTLP_HANDLERS",
    "CanaryHandler",
    "LabelHandler",
    "OtlpLogHandler",
    "OtlpSpanHandler",
    "TelemetryHandler",
]

HANDLERS: dict[str, Callable[[Policy], Handler]] = {
    LabelHandler.topic: LabelHandler,
    TelemetryHandler.topic: TelemetryHandler,
    CanaryHandler.topic: CanaryHandler,
}

OTLP_HANDLERS: dict[str, Callable[[Policy], Handler]] = {
    OtlpSpanHandler.topic: OtlpSpanHandler,
    OtlpLogHandler.topic: OtlpLogHandler,
}
