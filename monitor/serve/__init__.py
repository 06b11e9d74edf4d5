"""What driftgate serves: the Prometheus metrics (and, beside them, the HTTP gate API)."""

from ._http import GateAPI, serve
from ._metrics import StateCollector

__all__ = ["GateAPI", "StateCollector", "serve"]
