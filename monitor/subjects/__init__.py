"""The subjects driftgate watches: a handler per input topic.

Each kind of subject registers its topics and handlers in :data:`monitor.slices.REGISTRY`
(with its policy, status, metrics, API and report); :data:`HANDLERS` and
:data:`OTLP_HANDLERS` are the built-in kinds' handlers as registered there: those of
driftgate's own JSON events (a schema each in docs/schemas/; ``produce`` and ``replay``
take them), and those that read the same subjects from OpenTelemetry's formats.
"""

from collections.abc import Callable

from ..config import Policy
from ..pipeline import Handler
from ..slices import REGISTRY
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

HANDLERS: dict[str, Callable[[Policy], Handler]] = REGISTRY.handlers(events=True, builtin=True)

OTLP_HANDLERS: dict[str, Callable[[Policy], Handler]] = REGISTRY.handlers(
    events=False, builtin=True
)
