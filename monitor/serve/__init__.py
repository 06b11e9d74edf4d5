"""What driftgate serves: the Prometheus metrics (and, beside them, the HTTP gate API)."""

from ._http import GateAPI, HTTPServer, serve
from ._metrics import StateCollector

__all__ = ["GateAPI", "HTTPServer", "StateCollector", "serve"]
