"""What driftgate serves: the Prometheus metrics (and, beside them, the HTTP gate API)."""

from ._http import GateAPI
from ._metrics import StateCollector
from ._server import HTTPServer, serve

__all__ = ["GateAPI", "HTTPServer", "StateCollector", "serve"]
