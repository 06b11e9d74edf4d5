"""The subjects driftgate watches: a handler per input topic, registered here.

Adding a subject is a handler file and a line in :data:`HANDLERS`.
"""

from collections.abc import Callable

from ..config import Policy
from ..pipeline import Handler
from ._experiments import CanaryHandler, TelemetryHandler
from ._labels import LabelHandler

__all__ = ["HANDLERS", "CanaryHandler", "LabelHandler", "TelemetryHandler"]

HANDLERS: dict[str, Callable[[Policy], Handler]] = {
    LabelHandler.topic: LabelHandler,
    TelemetryHandler.topic: TelemetryHandler,
    CanaryHandler.topic: CanaryHandler,
}
